"""The one road: ``vision_unlearn.unlearn`` on a model in memory, the request checked when made, and a
harness that asks a method's capabilities (protocols), never its name."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import vision_unlearn
from toolkit_core.errors import UserInputError
from vision_unlearn import protocols, registry
from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import MethodConfig


def _tiny_classifier():
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=3, in_chans=1, pretrained=False)


def _bars(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k is a bright horizontal band at rows 4k..4k+5 of a dim 16 x 12 image (non-square)."""
    labels = torch.arange(n) % 3
    images = torch.rand(n, 1, 16, 12, generator=torch.Generator().manual_seed(0)) * 0.2
    for k in range(3):
        images[labels == k, :, 4 * k:4 * k + 6, :] += 0.8
    return images, labels


def _forget_loss(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(images), labels))


def test_unlearn_on_a_module_in_memory_forgets_and_leaves_the_input_as_documented() -> None:
    torch.set_num_threads(1)
    images, labels = _bars()
    forget = labels == 0
    forget_data, retain_data = (images[forget], labels[forget]), (images[~forget], labels[~forget])
    trained, record = vision_unlearn.unlearn(_tiny_classifier(), forget=forget_data, retain=(images, labels),
                                             method="finetune", config={"epochs": 8, "lr": 0.05, "batch_size": 16})
    assert record.method == "finetune" and record.steps == 8 * 3 and record.n_retain == 48
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    start = _forget_loss(trained, *forget_data)
    assert start < 0.9  # the model learnt the forget class (chance is ln 3 = 1.10)

    retain_start = _forget_loss(trained, *retain_data)
    unlearned, record = vision_unlearn.unlearn(trained, forget=forget_data, retain=retain_data,
                                               method="grad_ascent", config={"epochs": 2, "lr": 0.03, "batch_size": 8})
    # copy=True (default): a new module; the input keeps its identity and every weight
    assert unlearned is not trained
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    # forgotten: gradient ascent raises the forget loss above chance, by more than the retain loss rose
    # (on this machine: forget 0.03 -> 33, retain 0.01 -> 3.3; an unbounded ascent, so wide margins)
    forget_rise = _forget_loss(unlearned, *forget_data) - start
    assert start + forget_rise > 1.5 and forget_rise > 2 * (_forget_loss(unlearned, *retain_data) - retain_start)
    assert record.steps == 4 and record.seconds > 0 and record.to_dict()["config"]["lr"] == 0.03

    in_place, _ = vision_unlearn.unlearn(trained, forget=forget_data, retain=retain_data, method="grad_ascent",
                                         config={"epochs": 1, "lr": 0.01, "batch_size": 8}, copy=False)
    assert in_place is trained and any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())


def test_unlearn_refuses_data_it_cannot_read() -> None:
    with pytest.raises(UserInputError, match="forget"):
        vision_unlearn.unlearn(_tiny_classifier(), forget=[1, 2, 3], retain=None, method="finetune")


def test_a_request_is_checked_when_made(tmp_path) -> None:
    from vision_unlearn.request import UnlearnRequest

    with pytest.raises(UserInputError, match="for detectors") as err:
        UnlearnRequest(model="model.pt", forget="class:3", method="finetune", out=tmp_path, data="toy:4")
    assert err.value.field == "data"
    with pytest.raises(UserInputError) as err:
        UnlearnRequest(model="yolo:yolov8n.yaml", forget="class:clamp", method="finetune", out=tmp_path)
    assert err.value.field == "data"
    with pytest.raises(UserInputError) as err:
        UnlearnRequest(model="yolo:yolov8n.yaml", forget="class:clamp", method="finetune", out=tmp_path,
                       data="toy:4", config={"lr": "fast"})
    assert err.value.field == "lr"
    with pytest.raises(TypeError):
        UnlearnRequest("yolo:yolov8n.yaml", "class:clamp", "finetune", tmp_path)  # type: ignore[misc]


def test_import_is_light_and_lazy() -> None:
    code = ("import sys, vision_unlearn; heavy = [m for m in ('torch', 'timm', 'ultralytics') if m in sys.modules]; "
            "print(heavy, sorted(vision_unlearn.__all__) == vision_unlearn.__all__, 'unlearn' in vision_unlearn.__all__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True True"


# --- the harness asks capabilities ---------------------------------------------------------------------
@dataclass(frozen=True)
class _DimmerConfig(MethodConfig):
    epochs: int = 0


class _Dimmer(BaseUnlearner):
    """A test-time filter not named ``steer``: a forward hook pushes the forget class's logit down."""

    config_class = _DimmerConfig
    epoch_over = "forget"
    needs = frozenset({"forget"})

    def setup(self, adapter, forget, retain, device) -> None:
        self.forgotten = int(forget["labels"][0])
        self.on = True
        self.handle = adapter.model.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, logits):
        if not self.on:
            return None
        logits = logits.clone()
        logits[:, self.forgotten] -= 100.0
        return logits

    @contextlib.contextmanager
    def hooks_disabled(self) -> Iterator[None]:
        self.on = False
        try:
            yield
        finally:
            self.on = True

    def detach(self) -> None:
        self.handle.remove()


def test_the_harness_evaluates_any_test_time_method_with_its_hooks_off(monkeypatch) -> None:
    from vision_unlearn.adapters.timm import TimmAdapter
    from vision_unlearn.benchmark import ModelChoice, evaluate, load_data, run_method, seed_data
    from vision_unlearn.forget import resolve_forget

    torch.set_num_threads(1)
    monkeypatch.setitem(registry._REGISTRY, "dimmer", _Dimmer)
    _Dimmer.name = "dimmer"
    assert isinstance(_Dimmer(_DimmerConfig()), protocols.TestTimeMethod)
    pool = load_data("digits", None, 1, 0)
    data = seed_data(pool, 0)
    split = resolve_forget("class:3", data.train.labels.numpy(), data.train.sample_ids, data.train.patient_ids,
                           data.train.class_names, seed=0)
    model = ModelChoice()
    original = TimmAdapter(model.spec(pool.num_classes, pool.image_size))
    state = {k: v.clone() for k, v in original.model.state_dict().items()}
    metrics, adapter = run_method("dimmer", _DimmerConfig(), state, data, model, split, seed=0)
    assert metrics["UA"] == pytest.approx(100.0)  # hooks on: nothing of class 3 is recognised (UA = 100 - acc)
    assert "weights_only" in metrics and metrics["off_exact"] == 1.0
    plain = evaluate(original, data.train, data.test, split, 0)
    for key in ("UA", "RA", "TA"):  # hooks off: the weights are the original's, and so are the scores
        assert metrics["weights_only"][key] == pytest.approx(plain[key], abs=1e-9)


@pytest.mark.slow
def test_unlearn_takes_an_ultralytics_yolo_model_and_leaves_it_untouched(tmp_path) -> None:
    from ultralytics import YOLO

    from rfo_toolkit.cli import vision_unlearn_main
    from vision_unlearn.detection_data import toy_detection_data
    from vision_unlearn.detection_forget import resolve_detection_forget

    torch.set_num_threads(1)
    out = tmp_path / "run"
    assert vision_unlearn_main(["run", "--model", "yolo:yolov8n.yaml", "--data", "toy:6", "--imgsz", "64", "--method",
                                "finetune", "--set", "epochs=1", "--set", "batch_size=4", "--forget", "class:clamp",
                                "--out", str(out), "--no-eval", "--no-progress"]) == 0
    train = toy_detection_data(8, 0, 64)
    split = resolve_detection_forget("class:clamp", train)
    model = YOLO(str(out / "unlearned.pt"))
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    unlearned, record = vision_unlearn.unlearn(model, forget=split.forget_data(train), retain=split.retain_data(train),
                                               method="finetune", config={"epochs": 1, "batch_size": 4}, image_size=64)
    assert isinstance(unlearned, YOLO) and unlearned is not model and record.steps == 2
    assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in unlearned.model.state_dict().items())
