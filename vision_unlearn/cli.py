"""``vision-unlearn``: remove data from trained vision models and prove it was forgotten.

Sub-commands: ``train`` (the original model), ``run`` (one unlearning run with its audit record),
``benchmark`` (methods vs retraining over seeds), ``list-methods``, plus ``demo`` and ``report``.
``train`` and ``run`` also work under ``torchrun --nproc_per_node=N`` (DistributedDataParallel;
gloo on CPU, NCCL on GPU). Bad input exits with code 2 and one line, before anything is written.

Two model families share ``run`` and ``benchmark``:

* timm classifiers: ``run --model-file FILE`` (from ``train``) and ``benchmark --model TIMM_NAME``;
* Ultralytics YOLO detectors: ``run --model yolo:PATH_OR_YAML --data DATA`` and ``benchmark --model
  yolo:MODEL.yaml`` (:func:`~vision_unlearn.detection_benchmark.run_detection_benchmark`;
  ``benchmark --merge-results`` joins finished runs). A flag of the other family is refused (exit 2) rather
  than ignored.

The flags follow the toolkit's one grammar (:mod:`toolkit_core.cli_support`, ``docs/cli.md``):
``--data`` is the dataset of either family, ``--imgsz`` the image side, ``--overwrite`` replaces an
existing output, ``--seeds`` is a list ``0,1,2`` or a range ``0-2``, and ``--device``/``--threads``/
``--no-progress`` are on every command that computes. The old spellings (``--dataset``,
``--image-size``, ``--force``, ``--merge``, ``--progress``, ``--seed-start``, a bare ``--seeds N``
count) still work for one release, with one warning line naming the new one.

``run`` only parses its flags into an :class:`~vision_unlearn.request.UnlearnRequest` and runs it
(:func:`~vision_unlearn.road.run_request`), the road :func:`vision_unlearn.unlearn` also takes.

``run --method steer`` also writes the steering state alone, ``OUT/steering.safetensors``: the
weights do not change, the erasure is a forward hook. Load it onto the model with
``Steer.from_file(path, adapter)`` (:mod:`vision_unlearn.methods.steer`).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit_core.cli_support import (
    DEPRECATED_DEST,
    FLAG_MEANINGS,
    add_batch,
    add_command,
    add_deprecated_alias,
    add_deprecated_switch,
    add_imgsz,
    add_output_options,
    add_runtime_options,
    add_seeds,
    parse_seeds,
    set_threads,
    warn_deprecated,
)
from toolkit_core.errors import UserInputError
from toolkit_core.output_dirs import check_output_file
from vision_unlearn.api import parse_method_groups, split_method_overrides
from vision_unlearn.request import refuse_overwrite

logger = logging.getLogger(__name__)


# --- shared helpers ---------------------------------------------------------------------------------
def _threads(args: argparse.Namespace) -> None:
    set_threads(getattr(args, "threads", None))


def _refuse_flags(flags: Sequence[tuple[str, Any]], why: str) -> None:
    """One error for the first flag of ``(name, value)`` that was given (value not ``None``/``False``)."""
    for name, value in flags:
        if value is not None and value is not False:
            raise UserInputError(why, field=name, value=value)


def _add_runtime(parser: argparse.ArgumentParser) -> None:
    add_runtime_options(parser, device="cpu", device_help="cpu, cuda or cuda:N")


FORGET_HELP = ("forget request: classifier class:NAME | ids:FILE | patient:ID | patients:FILE | random:F; detector "
               "class:NAME | images:FILE | patient:ID | patients:FILE | instances:FILE (benchmark: also images:F, "
               "that share of the patients; repeat for several scenarios; class:clamp and images:0.1 when not given)")
GROUPS_HELP = ("detector: parameter groups (backbone, neck, head) the method may update (benchmark: "
               "METHOD=GROUP[,GROUP...], repeatable); the method's preset when not given (head for scrub and both "
               "ofmu variants, all for the others)")
HELDOUT_HELP = ("detector: other images the model never saw, to measure --set forget_loss_ceiling=heldout "
                "(grad_ascent, neggrad_plus; image and patient requests); the benchmark's toy set draws its own")
IN_CHANS_HELP = "image channels, 1 or 3; 1 when not given (run: only for a detector model yaml)"
SET_HELP = ("override a config field (train: the training config, e.g. epochs, lr, batch_size; run: the method's; "
            "benchmark: METHOD.FIELD=VALUE, or original.FIELD for the original training)")
TEST_DATA_HELP = ("detector: held-out data for the before/after metrics (run: when not given, 20 %% of the patients "
                  "of --data, seeded by --seed, are split off, listed in OUT/heldout_images.txt and not unlearned "
                  "on; benchmark: --data when not given)")
IMG_SIZE_KWARG_HELP = "classifier: pass img_size to timm (ViTs)"
DATA_SEED_HELP = "seed of the train/test split of a classifier dataset (0 when not given)"
CHECKPOINT_EVERY_HELP = FLAG_MEANINGS["--checkpoint-every"] + " (0: only at the end)"


class _SeedCount(int):
    """A bare ``--seeds N``: the old count of seeds, read for one release (see :func:`_benchmark_seeds`)."""


def _seeds_or_count(text: str) -> tuple[int, ...] | _SeedCount:
    """``--seeds``: a list ``0,1,2`` or a range ``0-2``; a bare integer N >= 1 is still the old count for one
    release (``--seeds 0``, never a valid count, is seed 0)."""
    if text.strip().isdigit() and int(text) >= 1:
        return _SeedCount(int(text))
    try:
        return parse_seeds(text)
    except UserInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class _SeedStart(argparse.Action):
    """``--seed-start S`` (deprecated): the first seed of a bare ``--seeds N``; one warning line."""

    deprecated_for = "--seeds S-(S+N-1)"

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        said = getattr(namespace, DEPRECATED_DEST, [])
        setattr(namespace, DEPRECATED_DEST, [*said, (parser.prog, option_string or "--seed-start", self.deprecated_for)])
        setattr(namespace, self.dest, values)


def _benchmark_seeds(args: argparse.Namespace) -> tuple[int, ...]:
    """The benchmark's seeds: ``--seeds`` as written, or the old ``--seeds N`` count from ``--seed-start``.

    Raises:
        UserInputError: no seed, or ``--seed-start`` with a list or range of seeds.
    """
    start = args.seed_start
    if isinstance(args.seeds, _SeedCount) or (args.seeds is None and start is not None):
        count = 3 if args.seeds is None else int(args.seeds)
        first = start or 0
        if args.seeds is not None:
            warn_deprecated("vision-unlearn benchmark", f"--seeds {count} (a count)",
                            f"--seeds {first}-{first + count - 1} (a bare number will be one seed)")
        return tuple(range(first, first + count))
    if start is not None:
        raise UserInputError("--seed-start only shifts the old count form; write the seeds, e.g. --seeds 3-5",
                             field="--seed-start", value=start)
    return args.seeds if args.seeds is not None else (0, 1, 2)


# --- train ---------------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
    from vision_unlearn.benchmark import ORIGINAL_CONFIG, load_data
    from vision_unlearn.checkpoint import save_model
    from vision_unlearn.distributed import init_distributed, local_device, shutdown
    from vision_unlearn.loop import LoopSettings, make_stream
    from vision_unlearn.metrics import accuracy
    from vision_unlearn.run import run_method

    _threads(args)
    args.in_chans = args.in_chans or 1
    out = check_output_file(args.out, overwrite=args.overwrite or args.resume)
    ckpt = out.with_name(out.name + ".run.ckpt")
    from vision_unlearn.api import config_class_of, config_from_dict, parse_overrides

    fields = {**ORIGINAL_CONFIG, **parse_overrides(args.set)}
    if args.batch is not None:  # --batch wins over --set batch_size=
        fields["batch_size"] = args.batch
    config = config_from_dict(config_class_of("retrain"), fields, source="--set")
    data_seed = args.data_seed or 0
    prepared = load_data(args.data, args.imgsz, args.in_chans, data_seed)
    spec = TimmModelSpec(args.model, num_classes=prepared.num_classes, in_chans=args.in_chans,
                         img_size=prepared.image_size[0] if args.img_size_kwarg else None)
    device = local_device(args.device)
    dist = init_distributed(device)
    try:
        torch.manual_seed(args.seed)
        adapter = TimmAdapter(spec)
        result = run_method("retrain", adapter, None, make_stream(prepared.train.images, prepared.train.labels),
                            config=config, dist=dist,
                            settings=LoopSettings(seed=args.seed, device=str(device), checkpoint_path=ckpt,
                                                  checkpoint_every=args.checkpoint_every, resume=args.resume,
                                                  progress=not args.no_progress, label="train")).result
        adapter.model.to("cpu")
        test_acc = accuracy(adapter.predict(prepared.test.images).numpy(), prepared.test.labels.numpy())
        if dist.is_main:
            meta = {"dataset": args.data, "image_size": args.imgsz, "in_chans": args.in_chans,
                    "data_seed": data_seed, "class_names": prepared.train.class_names, "seed": args.seed,
                    "training": {"config": dict(config.__dict__), "seconds": result.seconds,
                                 "steps": result.total_steps, "world_size": dist.world_size},
                    "test_accuracy": test_acc}
            save_model(out, adapter.model.state_dict(), adapter.describe(), meta)
            ckpt.unlink(missing_ok=True)  # the run finished: nothing left to resume
            print(json.dumps({"model_file": str(out), "test_accuracy": test_acc, "seconds": result.seconds,
                              "steps": result.total_steps}, indent=2))
    finally:
        shutdown(dist)
    return 0


# --- run -----------------------------------------------------------------------------------------------
def _cmd_run(args: argparse.Namespace) -> int:
    """Parse the flags into an :class:`~vision_unlearn.request.UnlearnRequest` and run it
    (:func:`~vision_unlearn.road.run_request`); a flag of the other model family is refused."""
    import sys

    from vision_unlearn.api import parse_overrides
    from vision_unlearn.request import UnlearnRequest, read_config_fields
    from vision_unlearn.road import run_request

    detector = args.model is not None
    if detector:
        if not args.model.startswith("yolo:"):
            raise UserInputError("expected yolo:PATH_OR_YAML (a classifier is given with --model-file)",
                                 field="--model", value=args.model)
        _refuse_flags([("--model-file", args.model_file), ("--resume", args.resume),
                       ("--checkpoint-every", args.checkpoint_every or None)],
                      "this flag is for classifiers (--model-file); a detector run has no resume")
        if args.data is None:
            raise UserInputError("a detector run needs its training data (a dataset path or toy:N)", field="--data")
    else:
        if args.model_file is None:
            raise UserInputError("give --model-file (a classifier written by `train`) or --model "
                                 "yolo:PATH_OR_YAML (a detector)", field="--model-file")
        _refuse_flags([("--imgsz", args.imgsz), ("--in-chans", args.in_chans),
                       ("--test-data", args.test_data), ("--heldout-data", args.heldout_data),
                       ("--groups", args.groups)],
                      "this flag is for detectors (--model yolo:...); a classifier keeps the image size and "
                      "channels it was trained with")
    _threads(args)
    request = UnlearnRequest(
        model=args.model if detector else args.model_file, forget=args.forget, method=args.method,
        out=Path(args.out), config=read_config_fields(args.config, parse_overrides(args.set)),
        config_source=args.config or "--set", seed=args.seed,
        device=args.device, evaluate=not args.no_eval, progress=not args.no_progress, force=args.overwrite,
        dataset=None if detector else args.data, resume=args.resume, checkpoint_every=args.checkpoint_every,
        data=args.data if detector else None,
        test_data=args.test_data, heldout_data=args.heldout_data, image_size=args.imgsz, in_chans=args.in_chans,
        groups=tuple(args.groups) if args.groups else None)
    result = run_request(request)
    if result.summary:
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        print(json.dumps(result.summary, indent=2, default=str))
    return 0


# --- benchmark -----------------------------------------------------------------------------------------
def _command_text(args: argparse.Namespace) -> str:
    import shlex
    import sys

    return "vision-unlearn " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if args.argv is None else args.argv))


def _cmd_benchmark(args: argparse.Namespace) -> int:
    if args.merge_results:
        return _cmd_benchmark_merge(args)
    args.seeds = _benchmark_seeds(args)
    args.in_chans = args.in_chans or 1
    if args.model.startswith("yolo:"):
        return _cmd_benchmark_detection(args)
    _refuse_flags([("--n-train", args.n_train), ("--n-test", args.n_test),
                   ("--test-data", args.test_data), ("--heldout-data", args.heldout_data),
                   ("--original-epochs", args.original_epochs),
                   ("--models-dir", args.models_dir),
                   ("--groups", args.groups or None)],
                  "this flag is for detectors (--model yolo:MODEL.yaml); classifiers take --data, "
                  "--imgsz and --set original.epochs=N")
    if not args.forget:
        raise UserInputError("give at least one forget request (class:3, random:0.1, ids:FILE)", field="--forget")
    return _cmd_benchmark_classifier(args)


def _cmd_benchmark_merge(args: argparse.Namespace) -> int:
    """``--merge-results A.json B.json --out DIR``: one detector table from several runs (e.g. one per seed)."""
    from vision_unlearn.detection_tables import results_markdown, write_merged_results

    _refuse_flags([("--forget", args.forget or None), ("--methods", None if args.methods == "all" else args.methods),
                   ("--data", args.data), ("--resume", args.resume or None), ("--sweep", args.sweep or None)],
                  "--merge-results only joins finished results; it runs nothing")
    merged = write_merged_results(args.merge_results, args.out)
    print(results_markdown(merged["summary"], None))
    print(json.dumps({"results": str(Path(args.out) / "results.json")}))
    return 0


def _cmd_benchmark_detection(args: argparse.Namespace) -> int:
    from vision_unlearn.detection_benchmark import (
        DetectionBenchmarkConfig,
        make_benchmark_config,
        results_markdown,
        run_detection_benchmark,
    )

    _refuse_flags([("--img-size-kwarg", args.img_size_kwarg),
                   ("--lira-shadows", args.lira_shadows), ("--data-seed", args.data_seed),
                   ("--resume", args.resume or None), ("--no-relearn", args.no_relearn or None)],
                  "this flag is for classifiers; a detector benchmark takes --data (or --n-train/--n-test for the "
                  "toy set) and --imgsz")
    _threads(args)
    out = Path(args.out)
    refuse_overwrite([out / "results.json"], args.overwrite)
    methods = None if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    preset = DetectionBenchmarkConfig()
    config = make_benchmark_config(
        model=args.model, image_size=args.imgsz or preset.image_size, n_train=args.n_train or preset.n_train,
        n_test=args.n_test or preset.n_test, data=args.data, test_data=args.test_data,
        heldout_data=args.heldout_data, scenarios=args.forget or None,
        methods=methods, seeds=args.seeds,
        original_epochs=args.original_epochs, overrides=split_method_overrides(args.set), device=args.device,
        in_chans=args.in_chans,
        reference_retrains=1 if args.reference_retrains is None else args.reference_retrains,
        models_dir=args.models_dir, groups=parse_method_groups(args.groups), select=args.sweep)
    results = run_detection_benchmark(config, out, command=_command_text(args), progress=not args.no_progress)
    print(results_markdown(results["summary"], None))
    print(json.dumps({"results": str(out / "results.json")}))
    return 0


def _cmd_benchmark_classifier(args: argparse.Namespace) -> int:
    from vision_unlearn.api import config_class_of, config_from_dict, list_unlearners
    from vision_unlearn.benchmark import ORIGINAL_CONFIG, BenchmarkSpec, ModelChoice, run_benchmark
    from vision_unlearn.forget import parse_forget_request

    _threads(args)
    out = Path(args.out)
    refuse_overwrite([out / "results.json"], args.overwrite, resume=args.resume)
    methods = list_unlearners() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    known = set(list_unlearners())
    for name in methods:
        if name not in known:
            raise UserInputError(f"unknown unlearning method; known: {', '.join(sorted(known))}", field="--methods",
                                 value=name)
    for request in args.forget:
        parse_forget_request(request)
    per_method = split_method_overrides(args.set)
    for name, values in per_method.items():
        if name != "original":
            config_from_dict(config_class_of(name), values, source=f"--set {name}")
    original = {**ORIGINAL_CONFIG, **per_method.pop("original", {})}
    config_from_dict(config_class_of("retrain"), original, source="--set original")
    spec = BenchmarkSpec(
        dataset=args.data or "digits", forget=tuple(args.forget),
        methods=tuple(m for m in methods if m != "retrain"),
        seeds=tuple(args.seeds),
        model=ModelChoice(name=args.model, image_size=args.imgsz, in_chans=args.in_chans,
                          img_size_kwarg=args.img_size_kwarg),
        original=original, method_configs=per_method, sweep=args.sweep,
        lira_shadows=16 if args.lira_shadows is None else args.lira_shadows, device=args.device,
        data_seed=args.data_seed or 0, relearn=not args.no_relearn,
        reference_retrains=2 if args.reference_retrains is None else args.reference_retrains)
    results = run_benchmark(spec, out, command=_command_text(args), resume=args.resume,
                            progress=not args.no_progress)
    print((out / "results.md").read_text(encoding="utf-8"))
    print((out / "evidence.md").read_text(encoding="utf-8"))
    print(json.dumps({"results": str(out / "results.json"), "seconds": results["total_seconds"]}))
    return 0


# --- list-methods --------------------------------------------------------------------------------------
def _cmd_list_methods(args: argparse.Namespace) -> int:
    from vision_unlearn.api import config_class_of, config_to_dict, list_unlearners

    listing = {name: config_to_dict(config_class_of(name)()) for name in list_unlearners()}
    if args.json:
        print(json.dumps(listing, indent=2))
    else:
        for name, fields in listing.items():
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in fields.items()))
    return 0


def register(sub: argparse._SubParsersAction, argv: Sequence[str] | None = None) -> None:
    """Add the library's sub-commands to the ``vision-unlearn`` parser (built in :mod:`rfo_toolkit.cli`);
    ``argv`` (when given) is what ``benchmark`` records as its command."""

    train = add_command(sub, "train", _cmd_train, "train the original classifier (timm) on a dataset")
    train.add_argument("--data", default="digits", help="dataset: digits, folder:DIR, csv:FILE, cifar10:DIR, ...")
    add_deprecated_alias(train, "--dataset", "--data")
    train.add_argument("--model", default="test_resnet", help="model: timm model name (built with pretrained=False)")
    add_imgsz(train, "resize the images to this side (their own size when not given)")
    add_deprecated_alias(train, "--image-size", "--imgsz")
    train.add_argument("--in-chans", type=int, default=None, choices=(1, 3), help=IN_CHANS_HELP)
    train.add_argument("--img-size-kwarg", action="store_true", help=IMG_SIZE_KWARG_HELP)
    train.add_argument("--seed", type=int, default=0, help="random seed of the training")
    train.add_argument("--data-seed", type=int, default=None, help=DATA_SEED_HELP)
    add_batch(train, "wins over --set batch_size=; the training config's when not given")
    train.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help=SET_HELP)
    add_output_options(train, "the model file to write", refused="an existing model file is refused")
    add_deprecated_alias(train, "--force", "--overwrite")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.run.ckpt")
    train.add_argument("--checkpoint-every", type=int, default=0, help=CHECKPOINT_EVERY_HELP)
    _add_runtime(train)

    run = add_command(sub, "run", _cmd_run, "unlearn a forget request from a trained model; write an audit record")
    run.add_argument("--model-file", default=None, help="classifier: the original model (from `train`)")
    run.add_argument("--model", default=None, metavar="yolo:PATH_OR_YAML",
                     help="model: a detector, a local Ultralytics detection checkpoint (.pt) or a model yaml")
    run.add_argument("--method", required=True, help="method name (see list-methods)")
    run.add_argument("--forget", required=True, help=FORGET_HELP)
    run.add_argument("--data", default=None,
                     help="dataset: classifier: the one the model was trained on when not given; detector "
                          "(required): training data (COCO json, YOLO data.yaml, ... or toy:N)")
    add_deprecated_alias(run, "--dataset", "--data")
    run.add_argument("--test-data", default=None, help=TEST_DATA_HELP)
    run.add_argument("--heldout-data", default=None, help=HELDOUT_HELP)
    add_imgsz(run, "detector network input, a multiple of 32; the checkpoint's training size "
                   "(train_args.imgsz) when not given, 640 for a model yaml")
    run.add_argument("--in-chans", type=int, default=None, choices=(1, 3), help=IN_CHANS_HELP)
    run.add_argument("--groups", nargs="+", default=None, choices=("backbone", "neck", "head"), help=GROUPS_HELP)
    run.add_argument("--config", default=None, help="file of settings: YAML of the method's config fields")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help=SET_HELP)
    run.add_argument("--seed", type=int, default=0, help="random seed (data order, random labels, random:F requests)")
    add_output_options(run, "directory", refused="existing outputs are refused")
    add_deprecated_alias(run, "--force", "--overwrite")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT/run.ckpt")
    run.add_argument("--checkpoint-every", type=int, default=0, help=CHECKPOINT_EVERY_HELP)
    run.add_argument("--no-eval", action="store_true", help="skip UA/RA/TA/MIA")
    _add_runtime(run)

    bench = add_command(sub, "benchmark", _cmd_benchmark, "compare methods with retraining over seeds")
    bench.add_argument("--model", default="test_resnet",
                       help="model: timm model name, or yolo:MODEL.yaml for a detector trained from scratch")
    bench.add_argument("--data", default=None,
                       help="dataset: classifier: a dataset spec, digits when not given; detector: a dataset "
                            "path instead of the toy set")
    add_deprecated_alias(bench, "--dataset", "--data")
    add_imgsz(bench, "classifier: resize images to this side (their own size when not given); "
                     "detector: network input side, 128 when not given")
    add_deprecated_alias(bench, "--image-size", "--imgsz")
    bench.add_argument("--in-chans", type=int, default=None, choices=(1, 3), help=IN_CHANS_HELP)
    bench.add_argument("--img-size-kwarg", action="store_true", help=IMG_SIZE_KWARG_HELP)
    bench.add_argument("--forget", action="append", default=[], help=FORGET_HELP)
    bench.add_argument("--methods", default="all", help="comma-separated names or 'all'")
    seeds = add_seeds(bench, "0-2 when not given (for one release a bare N >= 1 is still the old count of N seeds)")
    seeds.type = _seeds_or_count
    seeds.metavar = "SEEDS"
    bench.add_argument("--seed-start", type=int, default=None, action=_SeedStart, help=argparse.SUPPRESS)
    bench.add_argument("--sweep", action="store_true",
                       help="choose each method's configuration on validation data of a separate data seed, never "
                            "on the reported test data (classifiers: from grids, and methods with presets choose "
                            "among them without this flag too; detectors: among the per-request presets, "
                            "recorded in selection.json)")
    bench.add_argument("--lira-shadows", type=int, default=None,
                       help="classifier: LiRA shadow models (one bank for all seeds); 16 when not given, 0 disables")
    bench.add_argument("--no-relearn", action="store_true", help="classifier: skip the relearning attack")
    bench.add_argument("--resume", action="store_true",
                       help="continue an interrupted run from OUT/results.json (classifier)")
    bench.add_argument("--set", action="append", default=[], metavar="METHOD.FIELD=VALUE",
                       help=SET_HELP)
    bench.add_argument("--data-seed", type=int, default=None, help=DATA_SEED_HELP)
    bench.add_argument("--test-data", default=None, help=TEST_DATA_HELP)
    bench.add_argument("--heldout-data", default=None, help=HELDOUT_HELP)
    bench.add_argument("--n-train", type=int, default=None, help="detector: toy training images; 240 when not given")
    bench.add_argument("--n-test", type=int, default=None, help="detector: toy test images; 200 when not given")
    bench.add_argument("--reference-retrains", type=int, default=None,
                       help="retrained models per request and seed. Detector: gaps are taken to their mean (1 when "
                            "not given); classifier: gaps to the first, the others are the noise floor (2 when not "
                            "given)")
    bench.add_argument("--groups", action="append", default=[], metavar="METHOD=GROUP[,GROUP...]", help=GROUPS_HELP)
    bench.add_argument("--models-dir", default=None,
                       help="detector: keep trained original/retrained detectors here and reuse them when "
                            "everything their training depends on matches")
    bench.add_argument("--original-epochs", type=int, default=None,
                       help="detector: epochs of the original training and of retrain; 60 when not given")
    bench.add_argument("--merge-results", nargs="+", default=None, metavar="RESULTS_JSON",
                       help="detector: run nothing; join these results.json (e.g. one per seed) into one "
                            "results.json, results.md and results.png in --out")
    add_deprecated_alias(bench, "--merge", "--merge-results")
    add_output_options(bench, "directory", refused="an existing OUT/results.json is refused")
    add_deprecated_alias(bench, "--force", "--overwrite")
    bench.set_defaults(argv=None if argv is None else list(argv))
    _add_runtime(bench)
    add_deprecated_switch(bench, "--progress", "nothing: progress is on by default (--no-progress hides it)")

    listing = add_command(sub, "list-methods", _cmd_list_methods, "list the registered methods and their configs")
    listing.add_argument("--json", action="store_true", help=FLAG_MEANINGS["--json"])
