"""One unlearning request on one timm classifier: the classifier leg of :func:`vision_unlearn.road.run_request`.

The road, forward only: read the model file (written by ``vision-unlearn train``) and its dataset
-> resolve the forget request on the training split -> run the method
(:func:`vision_unlearn.run.run_method`, under ``torchrun`` too) -> write the steering state of a
test-time method -> evaluate (UA, RA, TA, MIA) -> write the unlearned model and the audit record.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from toolkit_core.errors import UserInputError

if TYPE_CHECKING:
    from vision_unlearn.request import UnlearnRequest


def run_classifier_unlearning(request: UnlearnRequest) -> dict[str, Any] | None:
    """Forget ``request.forget`` from the classifier in ``request.model``; write ``unlearned.pt``,
    ``audit.json`` (and ``steering.safetensors`` for a steering run) into ``request.out``.

    Returns:
        The summary (``n_forget``, ``n_retain``, ``metrics``, ``seconds``, ``steps``, ``world_size``,
        ``resumed_from_step``, and ``steering`` for a steering run); ``None`` on a non-main process of
        a distributed run.

    Raises:
        UserInputError: a model file without a dataset, a dataset whose classes differ from the
            model's, a bad forget request, bad config fields.
    """
    import torch

    from vision_unlearn.adapters.timm import adapter_from_description
    from vision_unlearn.api import config_class_of, config_from_dict
    from vision_unlearn.audit import make_audit_record, summarise_forgotten, write_audit_record
    from vision_unlearn.benchmark_eval import evaluate
    from vision_unlearn.benchmark_protocol import load_data, streams_for
    from vision_unlearn.checkpoint import load_model_file, save_model
    from vision_unlearn.distributed import init_distributed, local_device, shutdown
    from vision_unlearn.forget import resolve_forget
    from vision_unlearn.loop import LoopSettings
    from vision_unlearn.methods.steer import STEERING_FILE, save_steering_state
    from vision_unlearn.run import run_method

    config = config_from_dict(config_class_of(request.method), dict(request.config),
                              source=request.config_source or f"method {request.method}")
    out = request.out
    _, meta = load_model_file(request.model)
    dataset = request.dataset or meta.get("dataset")
    if not dataset:
        raise UserInputError("the model file names no dataset; pass --data", file=request.model)
    prepared = load_data(dataset, meta.get("image_size"), int(meta.get("in_chans", 1)), int(meta.get("data_seed", 0)))
    model_classes = int(meta["model"]["num_classes"])
    if model_classes != prepared.num_classes:
        raise UserInputError(f"the model has {model_classes} classes but {dataset} has {prepared.num_classes}",
                             file=request.model, field="num_classes")
    split = resolve_forget(request.forget, prepared.train.labels.numpy(), prepared.train.sample_ids,
                           prepared.train.patient_ids, prepared.train.class_names, seed=request.seed)
    adapter = adapter_from_description(meta["model"], checkpoint=request.model)
    forget, retain = streams_for(prepared.train, split)
    device = local_device(request.device)
    dist = init_distributed(device)
    try:
        torch.manual_seed(request.seed)
        run = run_method(request.method, adapter, forget, retain, config=config, dist=dist,
                         settings=LoopSettings(seed=request.seed, device=str(device), checkpoint_path=out / "run.ckpt",
                                               checkpoint_every=request.checkpoint_every, resume=request.resume,
                                               progress=request.progress))
        result = run.result
        adapter.model.to("cpu")
        if not dist.is_main:
            return None
        steering = save_steering_state(run.method, out / STEERING_FILE,
                                       {"model": adapter.describe(), "forget": request.forget, "seed": request.seed})
        started = time.perf_counter()
        metrics = evaluate(adapter, prepared.train, prepared.test, split, request.seed) if request.evaluate else {}
        eval_seconds = time.perf_counter() - started
        save_model(out / "unlearned.pt", adapter.model.state_dict(), adapter.describe(),
                   {**{k: v for k, v in meta.items() if k != "model"}, "unlearning": {
                       "method": request.method, "forget": request.forget, "seed": request.seed}})
        rows = split.forget_indices
        request_file = split.request.value if split.request.kind in ("ids", "patients") else None
        forgotten = summarise_forgotten(split.request.kind, split.request.value,
                                        [prepared.train.sample_ids[i] for i in rows],
                                        [prepared.train.patient_ids[i] for i in rows], request_file=request_file)
        record = make_audit_record(forgotten=forgotten, method=request.method, config=config, seed=request.seed,
                                   metrics=metrics, checkpoint_before=request.model,
                                   checkpoint_after=out / "unlearned.pt",
                                   timings_s={"unlearn": result.seconds, "evaluate": eval_seconds}, dataset=dataset,
                                   artifacts=[steering] if steering is not None else [])
        write_audit_record(out / "audit.json", record)
        summary: dict[str, Any] = {
            "n_forget": int(rows.size), "n_retain": int(split.retain_indices.size), "metrics": metrics,
            "seconds": result.seconds, "cpu_seconds": run.cpu_seconds, "steps": result.total_steps,
            "world_size": dist.world_size, "resumed_from_step": result.resumed_from_step}
        if steering is not None:
            summary["steering"] = str(steering)
        return summary
    finally:
        shutdown(dist)
