"""YOLO adapter: letterbox, batch format, loss against Ultralytics, groups, hooks, reset, checkpoints, errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit_core.errors import UserInputError
from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec
from vision_unlearn.adapters.yolo_data import DetectionData, boxes_to_original, reference_labels
from vision_unlearn.protocols import ModelAdapter

PAD = 114 / 255


def tiny_data(size: int | tuple[int, int] = 64, in_chans: int = 1, seed: int = 0) -> DetectionData:
    """Four non-square noisy images with bright boxes of 3 classes (one image without boxes)."""
    rng = np.random.default_rng(seed)
    shapes = [(40, 70), (17, 11), (64, 50), (30, 30)]
    boxes = [np.array([[10, 8, 30, 25]]), np.zeros((0, 4)), np.array([[5, 5, 20, 40], [30, 10, 45, 30]]),
             np.array([[2, 3, 12, 14]])]
    labels = [np.array([0]), np.zeros(0), np.array([1, 2]), np.array([2])]
    images = []
    for (h, w), b in zip(shapes, boxes):
        img = (0.2 * rng.random((h, w))).astype(np.float32)
        for x1, y1, x2, y2 in b.astype(int):
            img[y1:y2, x1:x2] = 0.9
        images.append(img)
    return DetectionData.from_arrays(images, boxes, labels, ["needle", "sponge", "clamp"], size, in_chans,
                                     sample_ids=["a.png", "b.png", "c.png", "d.png"],
                                     patient_ids=["p1", "p1", "p2", "p3"])


@pytest.fixture(scope="module")
def data() -> DetectionData:
    return tiny_data()


@pytest.fixture(scope="module")
def adapter() -> YoloAdapter:
    torch.manual_seed(0)
    return YoloAdapter(YoloModelSpec("yolov8n.yaml", num_classes=3, in_chans=1, image_size=64,
                                     class_names=("needle", "sponge", "clamp")))


def test_letterbox_matches_hand_computed_padding_and_round_trips() -> None:
    image = np.full((32, 64), 0.5, dtype=np.float32)  # H=32, W=64 into 64x64: gain 1, 16 rows pad top and bottom
    d = DetectionData.from_arrays([image], [np.array([[10, 5, 20, 15]])], [np.array([0])], ["x"], 64)
    torch.testing.assert_close(d.ratio_pad[0], torch.tensor([1.0, 0.0, 16.0]))
    torch.testing.assert_close(d.boxes_xyxy[0], torch.tensor([10.0, 21.0, 20.0, 31.0]))
    assert torch.allclose(d.images[0, 0, :16], torch.tensor(PAD)) and torch.allclose(d.images[0, 0, 48:], torch.tensor(PAD))
    assert torch.allclose(d.images[0, 0, 16:48], torch.tensor(0.5))
    # non-square input and output: 17x11 into (64, 96): gain 64/17, 41 columns wide, 27 columns padded left
    tall = np.zeros((17, 11), dtype=np.float32)
    d2 = DetectionData.from_arrays([tall], [np.array([[1.0, 2.0, 5.0, 9.0]])], [np.array([0])], ["x"], (64, 96))
    gain, pad_x, pad_y = d2.ratio_pad[0].tolist()
    assert gain == pytest.approx(64 / 17) and pad_x == 27 and pad_y == 0
    assert d2.images.shape == (1, 1, 64, 96)
    back = boxes_to_original(d2.boxes_xyxy, d2.ratio_pad[0], d2.original_hw[0])
    torch.testing.assert_close(back, torch.tensor([[1.0, 2.0, 5.0, 9.0]]))


def test_stream_pads_boxes_and_picks_reference_labels(data: DetectionData) -> None:
    stream = data.stream()
    assert stream["boxes_xyxy"].shape == (4, 2, 4) and stream["box_labels"].shape == (4, 2)
    torch.testing.assert_close(stream["box_labels"], torch.tensor([[0, -1], [-1, -1], [1, 2], [2, -1]]))
    torch.testing.assert_close(stream["labels"], torch.tensor([0, 0, 1, 2]))  # tie 1/2 -> 1; empty -> 0
    torch.testing.assert_close(stream["labels"], stream["image_labels"])
    torch.testing.assert_close(reference_labels(torch.tensor([[2, 2, 1], [-1, -1, -1]]), 3), torch.tensor([2, 0]))
    batch = data.batch([2, 0])
    torch.testing.assert_close(batch["index"], torch.tensor([2, 0]))
    torch.testing.assert_close(batch["box_labels"], torch.tensor([[1, 2], [0, -1]]))


def test_adapter_satisfies_protocol_and_targets_are_normalised_xywh(adapter: YoloAdapter) -> None:
    assert isinstance(adapter, ModelAdapter)
    images = torch.zeros(2, 1, 64, 96)
    batch = {"images": images, "boxes_xyxy": torch.tensor([[[8.0, 16.0, 24.0, 48.0]], [[0, 0, 0, 0]]]),
             "box_labels": torch.tensor([[1], [-1]]), "labels": torch.tensor([1, 0]),
             "image_labels": torch.tensor([1, 0])}
    targets = adapter.targets(batch, images.shape)
    torch.testing.assert_close(targets["bboxes"], torch.tensor([[16 / 96, 32 / 64, 16 / 96, 32 / 64]]))
    torch.testing.assert_close(targets["batch_idx"], torch.tensor([0.0]))
    torch.testing.assert_close(targets["cls"], torch.tensor([[1.0]]))
    # a method replacing "labels" shifts every box class of that image by the same offset (mod K)
    shifted = adapter.targets({**batch, "labels": torch.tensor([0, 2])}, images.shape)
    torch.testing.assert_close(shifted["cls"], torch.tensor([[0.0]]))
    with pytest.raises(ValueError, match="missing box_labels"):
        adapter.targets({"images": images, "boxes_xyxy": batch["boxes_xyxy"], "labels": batch["labels"],
                         "image_labels": batch["labels"]}, images.shape)


def test_loss_matches_ultralytics_and_per_image_reduction(adapter: YoloAdapter, data: DetectionData) -> None:
    batch = data.stream()
    adapter.model.train()
    out = adapter.loss(batch)
    for key in ("loss", "box", "cls", "dfl", "per_sample", "logits", "anchor_logits"):
        assert torch.isfinite(out[key]).all(), key
    assert out["per_sample"].shape == (4,) and out["logits"].shape == (4, 3)
    assert out["anchor_logits"].shape[0] == 4 and out["anchor_logits"].shape[2] == 3
    torch.testing.assert_close(out["loss"], out["per_sample"].mean())
    torch.testing.assert_close(out["loss"], out["box"] + out["cls"] + out["dfl"])
    # reduction "batch" is exactly Ultralytics' own loss divided by the batch size
    batch_adapter = adapter
    original = adapter.spec
    try:
        batch_adapter.spec = replace(original, reduction="batch")
        # Ultralytics' loss is evaluated on the very outputs the adapter's loss saw (captured by a hook):
        # a second forward pass could differ by rounding and flip a tie in the top-k assignment
        seen: list[dict[str, torch.Tensor]] = []
        handle = adapter.detector.register_forward_hook(lambda _m, _i, output: seen.append(output))
        try:
            mine = batch_adapter.loss(batch)["loss"]
        finally:
            handle.remove()
        ultra_batch = {"img": batch["images"], **adapter.targets(batch, batch["images"].shape)}
        theirs, _ = adapter.detector.loss(ultra_batch, seen[0])
        # same criterion on the same tensors: only the division by the batch size is ours (a few ulps)
        torch.testing.assert_close(mine, theirs.sum() / 4, rtol=1e-6, atol=0)
    finally:
        adapter.spec = original
    # per-image losses are the loss of each image alone (eval mode: batch norm without batch statistics)
    adapter.model.eval()
    try:
        together = adapter.loss(batch)["per_sample"]
        alone = adapter.loss(data.batch([2]))["loss"]
    finally:
        adapter.model.train()
    torch.testing.assert_close(alone, together[2], rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # the conformance test covers both families at 1 channel on every CI run
@pytest.mark.parametrize(("model", "in_chans"), [("yolov8n.yaml", 1), ("yolo11n.yaml", 3), ("yolov8n.yaml", 3),
                                                 ("yolo11n.yaml", 1)])
def test_families_and_channels_give_finite_loss_and_gradients(model: str, in_chans: int) -> None:
    torch.manual_seed(0)
    a = YoloAdapter(YoloModelSpec(model, num_classes=3, in_chans=in_chans, image_size=64))
    d = tiny_data(64, in_chans)
    out = a.loss(d.batch([0, 1, 2]))
    out["loss"].backward()
    grads = [p.grad for _, p in a.trainable_parameters()]
    assert torch.isfinite(out["loss"]) and all(g is not None and torch.isfinite(g).all() for g in grads)
    dfl = [n for n, p in a.model.named_parameters() if ".dfl." in n]
    assert dfl and not any(n in dict(a.trainable_parameters()) for n in dfl)  # the fixed DFL projection stays frozen


def test_parameter_groups_partition_trainable_parameters(adapter: YoloAdapter) -> None:
    groups = adapter.parameter_groups()
    assert set(groups) == {"backbone", "neck", "head"} and all(groups.values())
    names = [n for n, _ in adapter.trainable_parameters()]
    assert sorted(sum(groups.values(), [])) == sorted(names)
    head_layer = len(adapter.detector.model) - 1
    assert all(n.startswith(f"detector.model.{head_layer}.") for n in groups["head"])
    assert all(int(n.split(".")[2]) < len(adapter.detector.yaml["backbone"]) for n in groups["backbone"])


def test_feature_hooks(adapter: YoloAdapter, data: DetectionData) -> None:
    seen: dict[str, torch.Tensor] = {}
    handle = adapter.add_feature_hook(lambda name, f: seen.__setitem__(name, f))
    named = adapter.add_feature_hook(lambda name, f: seen.__setitem__(name, f), "detector.model.9")
    adapter.loss(data.batch([0, 2]))
    handle.remove()
    named.remove()
    channels = sum(adapter.detector.model[i].cv2.conv.out_channels if hasattr(adapter.detector.model[i], "cv2")
                   else 0 for i in adapter.detector.model[-1].f)
    assert seen["neck_pooled"].shape == (2, channels)
    assert seen["detector.model.9"].ndim == 4
    seen.clear()
    adapter.loss(data.batch([0]))
    assert not seen  # removed hooks stay silent
    with pytest.raises(UserInputError, match="unknown layer"):
        adapter.add_feature_hook(lambda *_: None, "model.99")


def test_reset_parameters_is_seeded() -> None:
    a = YoloAdapter(YoloModelSpec("yolov8n.yaml", num_classes=2, in_chans=1, image_size=64))
    built = {k: v.clone() for k, v in a.model.state_dict().items()}
    a.reset_parameters(3)
    first = {k: v.clone() for k, v in a.model.state_dict().items()}
    assert any(not torch.equal(built[k], v) for k, v in first.items())
    with torch.no_grad():
        next(iter(a.model.parameters())).add_(1.0)
    a.reset_parameters(3)
    assert all(torch.equal(first[k], v) for k, v in a.model.state_dict().items())


def _condition_outputs(a: YoloAdapter, images: torch.Tensor) -> None:
    """Give a fresh detector varied, well-separated scores and small boxes.

    Untrained, its eval-mode features are ~1e-7 (batch-norm running statistics still at their
    initial values), so every anchor of a level predicts the same score and box: nothing but ties,
    which NMS breaks differently on each code path. The running statistics are set to those of
    ``images`` (one cumulative-average pass) and the last layers of the head are drawn at random.
    """
    norms = [m for m in a.detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one pass, exactly this batch's statistics
    a.detector.train()
    with torch.no_grad():
        a.detector(images)
    for norm in norms:
        norm.momentum = 0.03
    head = a.detector.model[-1]
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for branch in head.cv3:  # class logits: about unit spread across anchors, centred at -2
            last = branch[-1]
            last.weight.copy_(torch.randn(last.weight.shape, generator=generator) * 0.3)
            last.bias.copy_(torch.randn(last.bias.shape, generator=generator) - 2.0)
        for branch in head.cv2:  # DFL logits favour small distances: boxes of a few strides
            last = branch[-1]
            last.weight.copy_(torch.randn(last.weight.shape, generator=generator) * 0.1)
            last.bias.copy_(-0.7 * torch.arange(head.reg_max, dtype=torch.float32).repeat(4))


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` IoU of ``xyxy`` boxes, in float64."""
    from torchvision.ops import box_iou

    return box_iou(a.double(), b.double())


def _stable_detections(dets: torch.Tensor, candidates: torch.Tensor, conf: float, iou_threshold: float) -> torch.Tensor:
    """Rows of ``dets`` (``[N, 6]``) whose survival of thresholding and NMS no rounding error can flip.

    A detection is kept when its score clears ``conf`` by ``SCORE_MARGIN`` and no other candidate
    (``[A, 6]`` before NMS: box, best score, class) of its class competes with it in NMS by a
    near-tie: a score within ``SCORE_MARGIN`` at an overlap that is suppressing or within
    ``IOU_MARGIN`` of ``iou_threshold``. Only then does the math guarantee that two paths whose
    raw outputs agree to within the tolerances below keep it both.
    """
    keep = []
    for row in dets:
        if row[4] < conf + SCORE_MARGIN:
            continue
        same = candidates[candidates[:, 5] == row[5]]
        overlap = _box_iou(row[None, :4], same[:, :4])[0]
        close_score = (same[:, 4] - row[4]).abs() < SCORE_MARGIN
        competing = overlap > iou_threshold - IOU_MARGIN
        near_cut = (overlap - iou_threshold).abs() < IOU_MARGIN
        itself = overlap > 1 - 1e-6
        if ((close_score & competing & ~itself) | (near_cut & (same[:, 4] > row[4] - SCORE_MARGIN))).any():
            continue
        keep.append(row)
    return torch.stack(keep) if keep else dets[:0]


# Where the tolerances come from: both paths run the same float32 network, once as saved (conv, then
# batch norm) and once with each batch norm folded into its conv by Ultralytics' predictor. The two
# differ by rounding only, amplified by the randomly drawn network (batch-norm scales up to
# 1 / sqrt(eps) = 32 in channels of almost constant activation): 8e-5 on the scores and 0.012 px on
# the boxes on the machine that wrote this test. The tolerances sit about ten times above; the
# margins that decide which detections no rounding can flip sit ten times above the score tolerance.
BOX_ATOL_PX, SCORE_ATOL = 0.1, 1e-3
SCORE_MARGIN, IOU_MARGIN = 1e-2, 1e-2


def test_saved_checkpoint_loads_in_ultralytics_and_predicts_the_same(tmp_path: Path) -> None:
    from ultralytics import YOLO

    torch.manual_seed(1)
    d = tiny_data(64, 3)
    a = YoloAdapter(YoloModelSpec("yolov8n.yaml", num_classes=3, in_chans=3, image_size=64,
                                  class_names=("needle", "sponge", "clamp")))
    _condition_outputs(a, d.images)
    with torch.no_grad():  # make the weights exactly representable in the checkpoint's half precision
        for value in a.model.state_dict().values():
            if value.is_floating_point():
                value.copy_(value.half().float())
    image = (d.images[2].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0)
    conf, iou_threshold = 0.01, a.spec.iou_threshold
    mine = a.detect(x, conf_threshold=conf)[0]
    a.detector.eval()
    with torch.no_grad():
        raw_mine = a.detector(x)[0][0]  # [4 + K, A]: xywh in input pixels, then class scores
    path = a.save(tmp_path / "unlearned.pt", record={"method": "test"})
    loaded = YOLO(str(path))
    assert loaded.task == "detect" and loaded.names == {0: "needle", 1: "sponge", 2: "clamp"}
    theirs = loaded.predict(image[..., ::-1].copy(), imgsz=64, conf=conf, verbose=False)[0].boxes.data.cpu()
    with torch.no_grad():  # the predictor's own (fused) network on the same input
        raw_theirs = loaded.predictor.model(x)
    raw_theirs = (raw_theirs[0] if isinstance(raw_theirs, (list, tuple)) else raw_theirs)[0]
    # 1. the raw head outputs: same network, float32 rounding apart
    torch.testing.assert_close(raw_theirs[:4], raw_mine[:4], rtol=0, atol=BOX_ATOL_PX)
    torch.testing.assert_close(raw_theirs[4:], raw_mine[4:], rtol=0, atol=SCORE_ATOL)
    # 2. detections away from the threshold and from NMS near-ties are found by both, same box and score
    xywh = raw_mine[:4].T
    scores, classes = raw_mine[4:].max(dim=0)
    candidates = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2, scores[:, None],
                            classes[:, None].float()], dim=1)
    compared = 0
    for first, second in ((mine, theirs), (theirs, mine)):
        for row in _stable_detections(first, candidates, conf, iou_threshold):
            same_class = second[second[:, 5] == row[5]]
            # NMS keeps boxes as they are and clipping to the image cannot widen a difference; boxes
            # clipped to the whole image coincide, so the match is the one agreeing in box and score
            box_close = (same_class[:, :4] - row[:4]).abs().amax(dim=1) <= BOX_ATOL_PX
            score_close = (same_class[:, 4] - row[4]).abs() <= SCORE_ATOL
            assert (box_close & score_close).any(), f"no match for {row.tolist()} among {same_class.tolist()}"
            compared += 1
    assert compared >= 20  # the comparison is not vacuous: most of the ~84 detections are unambiguous
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written above
    assert ckpt["train_args"]["box"] == 7.5 and ckpt["vision_unlearn"] == {"method": "test"}
    # and the adapter reads its own checkpoint back
    again = YoloAdapter(YoloModelSpec(str(path), image_size=64))
    assert again.class_names == ("needle", "sponge", "clamp") and again.in_chans == 3
    assert torch.isfinite(again.loss(d.batch([0]))["loss"])


def _save_foreign(tmp_path: Path, kind: str) -> Path:
    from ultralytics.nn.tasks import ClassificationModel, PoseModel, SegmentationModel

    builders = {"segment": lambda: SegmentationModel("yolov8n-seg.yaml", ch=1, nc=2, verbose=False),
                "pose": lambda: PoseModel("yolov8n-pose.yaml", ch=1, nc=1, verbose=False),
                "classify": lambda: ClassificationModel("yolov8n-cls.yaml", ch=1, nc=2, verbose=False)}
    model = builders[kind]()
    path = tmp_path / f"{kind}.pt"
    torch.save({"model": model.half(), "train_args": {"task": kind}}, path)
    return path


@pytest.mark.parametrize("kind", ["segment", "pose", "classify"])
def test_other_task_checkpoints_are_refused(tmp_path: Path, kind: str) -> None:
    with pytest.raises(UserInputError, match=f"{kind} checkpoint"):
        YoloAdapter(YoloModelSpec(str(_save_foreign(tmp_path, kind))))


def test_bad_model_inputs_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="segment model"):
        YoloAdapter(YoloModelSpec("yolov8n-seg.yaml", num_classes=2))
    with pytest.raises(UserInputError, match="not found"):
        YoloAdapter(YoloModelSpec(str(tmp_path / "missing.pt")))
    with pytest.raises(UserInputError, match="unknown model yaml"):
        YoloAdapter(YoloModelSpec("yolov99z.yaml", num_classes=2))
    with pytest.raises(UserInputError, match="num_classes"):
        YoloAdapter(YoloModelSpec("yolov8n.yaml"))
    with pytest.raises(UserInputError, match="class names"):
        YoloAdapter(YoloModelSpec("yolov8n.yaml", num_classes=2, class_names=("a", "b", "c")))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="junk.pt"):
        YoloAdapter(YoloModelSpec(str(junk)))


def test_predict_pads_detections(adapter: YoloAdapter, data: DetectionData) -> None:
    out = adapter.predict(data.images[:2])
    assert out.ndim == 3 and out.shape[0] == 2 and out.shape[2] == 6
    per_image = adapter.detect(data.images[:2], ratio_pad=data.ratio_pad[:2], original_hw=data.original_hw[:2])
    for det, (h, w) in zip(per_image, data.original_hw[:2].tolist()):
        assert (det[:, [0, 2]] <= w).all() and (det[:, [1, 3]] <= h).all() and (det[:, :4] >= 0).all()


@pytest.mark.slow
def test_saved_checkpoint_validates_in_ultralytics(tmp_path: Path) -> None:
    from PIL import Image
    from ultralytics import YOLO

    d = tiny_data(64, 3)
    root = tmp_path / "yolo"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for row in range(len(d)):
            pixels = (d.images[row].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / split / f"{row}.png")
            boxes, labels = d.boxes_of(row)
            lines = [f"{int(c)} {(b[0] + b[2]) / 128:.6f} {(b[1] + b[3]) / 128:.6f} {(b[2] - b[0]) / 64:.6f} "
                     f"{(b[3] - b[1]) / 64:.6f}" for b, c in zip(boxes.tolist(), labels.tolist())]
            (root / "labels" / split / f"{row}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: needle\n  1: sponge\n"
                         "  2: clamp\n")
    a = YoloAdapter(YoloModelSpec("yolov8n.yaml", num_classes=3, in_chans=3, image_size=64,
                                  class_names=("needle", "sponge", "clamp")))
    path = a.save(tmp_path / "unlearned.pt", data_yaml=str(data_yaml))
    metrics = YOLO(str(path)).val(data=str(data_yaml), imgsz=64, batch=2, device="cpu", workers=0, plots=False,
                                  verbose=False, project=str(tmp_path / "val"), name="v")
    assert 0.0 <= float(metrics.box.map50) <= 1.0


# --- detector forget objectives (grad_ascent, neggrad_plus, scrub) ----------------------------------
LEVELS_64 = [(8, 8), (4, 4), (2, 2)]
STRIDES = [8.0, 16.0, 32.0]


def test_forget_anchor_mask_matches_hand_computed_anchors() -> None:
    from vision_unlearn.adapters.yolo import forget_anchor_mask

    boxes = torch.tensor([[[10.0, 10.0, 30.0, 20.0], [1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]]])
    valid = torch.tensor([[True, True, False]])
    mask = forget_anchor_mask(LEVELS_64, STRIDES, boxes, valid)
    assert mask.shape == (1, 3, 64 + 16 + 4)
    # stride 8: centres 12, 20, 28 inside x (10, 30), 12 inside y (10, 20) -> row 1, cols 1..3;
    # stride 16: no centre inside, the centre (20, 15) lies in cell (row 0, col 1) -> 64 + 1;
    # stride 32: centre (16, 16) inside -> 80
    assert torch.nonzero(mask[0, 0]).flatten().tolist() == [9, 10, 11, 65, 80]
    # a box smaller than every stride keeps the cell holding its centre on each level
    assert torch.nonzero(mask[0, 1]).flatten().tolist() == [0, 64, 80]
    assert not mask[0, 2].any()  # padding


def test_bounded_class_ascent_is_clamped_and_moves_only_the_box_class_on_its_anchors() -> None:
    import math

    from vision_unlearn.adapters.yolo import bounded_class_ascent, forget_anchor_mask

    torch.manual_seed(0)
    logits = torch.randn(1, 84, 3)
    logits[0, 10, 2] = -20.0  # already forgotten: below the floor
    logits = logits.requires_grad_()
    region = forget_anchor_mask(LEVELS_64, STRIDES, torch.tensor([[[10.0, 10.0, 30.0, 20.0]]]),
                                torch.tensor([[True]]))
    tau = 1e-4
    value = bounded_class_ascent(logits, region, torch.tensor([[2]]), tau)
    anchors = [9, 10, 11, 65, 80]
    expected = sum(min(math.log1p(math.exp(-float(logits.detach()[0, a, 2]))), -math.log(tau)) for a in anchors) / 5
    assert float(value.detach()) == pytest.approx(expected, rel=1e-6)
    (grad,) = torch.autograd.grad(value, logits)
    moved = torch.nonzero(grad).tolist()
    assert moved == [[0, a, 2] for a in (9, 11, 65, 80)]  # anchor 10 is clamped; no other class or anchor
    assert all(float(grad[0, a, 2]) < 0 for a in (9, 11, 65, 80))  # ascent lowers the class logit
    # bounded whatever the logits, and exactly 0 without any forget anchor
    very_low = torch.full((1, 84, 3), -1e4)
    assert float(bounded_class_ascent(very_low, region, torch.tensor([[2]]), tau)) == pytest.approx(-math.log(tau))
    assert float(bounded_class_ascent(logits.detach(), torch.zeros_like(region), torch.tensor([[2]]), tau)) == 0.0


def test_binary_kl_matches_hand_values() -> None:
    import math

    from vision_unlearn.adapters.yolo import binary_kl

    teacher = torch.tensor([0.5, 0.8, 0.0, 1.0])
    student_logits = torch.tensor([0.0, 0.0, 1.5, 0.0])
    kl = binary_kl(teacher, student_logits)
    assert kl.tolist() == pytest.approx([0.0, 0.8 * math.log(1.6) + 0.2 * math.log(0.4), math.log1p(math.exp(1.5)),
                                         math.log(2.0)], abs=1e-6)


def test_distillation_is_zero_on_the_teacher_and_suppression_pushes_the_class_down() -> None:
    from vision_unlearn.adapters.yolo import detection_distillation

    torch.manual_seed(1)
    logits, boxes = torch.randn(2, 84, 3), torch.randn(2, 84, 64)
    assert float(detection_distillation(logits, boxes, logits, boxes, 4.0)) == pytest.approx(0.0, abs=1e-6)
    student = logits.clone().requires_grad_()
    value = detection_distillation(student, boxes, logits, boxes, 4.0, suppressed_classes=(1,))
    assert float(value) > 0
    (grad,) = torch.autograd.grad(value, student)
    assert (grad[..., 1] > 0).all()  # descent lowers every anchor's score of the suppressed class
    assert grad[..., [0, 2]].abs().max() < 1e-6  # the other classes already match the teacher


def test_forget_distillation_only_lowers_scores_and_stops_at_the_floor() -> None:
    from vision_unlearn.adapters.yolo import forget_distillation

    teacher = torch.zeros(1, 4, 2)
    teacher[0, :, 1] = 2.0
    student = torch.tensor([[[0.0, 1.0], [0.0, 3.0], [0.0, -20.0], [0.0, 1.0]]], requires_grad=True)
    region = torch.tensor([[[True, True, True, False]]])
    value = forget_distillation(student, teacher, region, torch.tensor([[1]]), temperature=1.0, floor_prob=1e-4)
    (grad,) = torch.autograd.grad(value, student)
    assert float(grad[0, 0, 1]) < 0  # below the teacher: raising the divergence lowers the score further
    assert float(grad[0, 1, 1]) == 0.0  # above the teacher: raising it would create a detection
    assert float(grad[0, 2, 1]) == 0.0  # below the floor
    assert float(grad[0, 3, 1]) == 0.0  # not an anchor of the box
    assert grad[..., 0].abs().max() == 0.0  # other classes are not pushed away


def test_grad_ascent_on_a_detector_lowers_the_forget_class_and_stays_bounded(adapter: YoloAdapter,
                                                                          data: DetectionData) -> None:
    import copy
    import math

    from vision_unlearn.api import create_unlearner
    from vision_unlearn.detection_forget import resolve_detection_forget
    from vision_unlearn.loop import LoopSettings, run_loop
    from vision_unlearn.methods.grad_ascent import forget_ascent_loss

    local = copy.deepcopy(adapter)
    split = resolve_detection_forget("class:clamp", data)
    forget = split.forget_data(data).stream()
    region, classes = local.forget_region(forget)
    assert torch.equal(classes[classes >= 0], torch.tensor([2, 2]))

    def clamp_scores() -> torch.Tensor:
        with torch.no_grad():
            scores = local.model(forget["images"], raw=True)["scores"].permute(0, 2, 1)[..., 2]
        return scores[region.any(dim=1)]

    before = clamp_scores()
    # a large learning rate: the unbounded objective would diverge; this one cannot exceed -log(tau)
    method = create_unlearner("grad_ascent", local, {"epochs": 6, "lr": 0.05, "batch_size": 2, "optimizer": "adam",
                                                     "weight_decay": 0.0})
    result = run_loop(local, method, forget, None, LoopSettings(seed=0))
    assert result.completed
    after = clamp_scores()
    assert float(after.mean()) < float(before.mean()) - 1.0
    value = float(forget_ascent_loss(local, forget).detach())
    assert math.isfinite(value) and value <= -math.log(local.spec.forget_floor_prob) + 1e-6


def test_yolo_adapter_has_the_optional_capabilities_and_a_timm_adapter_none(adapter: YoloAdapter) -> None:
    """Methods ask ``isinstance(adapter, Capability)``; the YOLO adapter has all three, timm none."""
    from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
    from vision_unlearn.methods.ofmu import resolved_objective
    from vision_unlearn.protocols import AscentLossAdapter, DistillationAdapter, ForgetOnlyClassesAdapter

    capabilities = (AscentLossAdapter, DistillationAdapter, ForgetOnlyClassesAdapter)
    classifier = TimmAdapter(TimmModelSpec("test_resnet", num_classes=3, in_chans=1))
    for capability in capabilities:
        assert isinstance(adapter, capability), capability.__name__
        assert not isinstance(classifier, capability), capability.__name__
    assert resolved_objective(adapter, "auto") == "adapter"
    assert resolved_objective(classifier, "auto") == "log1mp"
    forget = {"box_labels": torch.tensor([[0, 2], [2, -1]])}
    retain = {"box_labels": torch.tensor([[1, -1], [2, 1]])}
    assert adapter.forget_only_classes(forget, retain) == (0,)


def test_adapter_module_re_exports_the_losses_and_the_model_spec() -> None:
    """``vision_unlearn.adapters.yolo`` keeps the names it had before the losses and the spec moved out."""
    import vision_unlearn.adapters.yolo as yolo
    import vision_unlearn.adapters.yolo_losses as losses
    import vision_unlearn.adapters.yolo_model as model

    for name in ("image_class_logits", "forget_anchor_mask", "bounded_class_ascent", "binary_kl",
                 "box_distribution_kl", "detection_distillation", "forget_distillation"):
        assert getattr(yolo, name) is getattr(losses, name)
    for name in ("YoloModelSpec", "YoloLossGains", "PARAMETER_GROUPS", "build_detection_model"):
        assert getattr(yolo, name) is getattr(model, name)


def test_image_class_logits_is_a_smooth_maximum_over_anchors() -> None:
    """Hand case: anchors agreeing on ``v`` give ``v``; logits ``0`` and ``ln 3`` give
    ``ln(1 + 3) - ln 2 = ln 2``."""
    import math

    from vision_unlearn.adapters.yolo_losses import image_class_logits

    agreeing = torch.full((2, 5, 3), 1.25)
    torch.testing.assert_close(image_class_logits(agreeing), torch.full((2, 3), 1.25))
    two = torch.tensor([[[0.0], [math.log(3.0)]]])  # [B=1, A=2, K=1]
    torch.testing.assert_close(image_class_logits(two), torch.tensor([[math.log(2.0)]]))


def test_box_class_logits_reads_each_box_class_on_every_anchor() -> None:
    from vision_unlearn.adapters.yolo_losses import box_class_logits

    anchor_logits = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])  # [B=1, A=2, C=3]
    out = box_class_logits(anchor_logits, torch.tensor([[2, 0, -1]]))  # [B=1, K=3]; -1 padding reads class 0
    torch.testing.assert_close(out, torch.tensor([[[3.0, 6.0], [1.0, 4.0], [1.0, 4.0]]]))  # [B, K, A]


def test_box_distribution_kl_matches_hand_values() -> None:
    """Two bins per side; teacher logits ``(ln 3, 0)`` give ``(3/4, 1/4)``, a zero student ``(1/2, 1/2)``:
    ``KL = 4 (3/4 ln 1.5 + 1/4 ln 0.5)`` over the four sides; 0 against itself."""
    import math

    from vision_unlearn.adapters.yolo_losses import box_distribution_kl

    teacher = torch.tensor([math.log(3.0), 0.0]).repeat(4).reshape(1, 1, 8)  # [B=1, A=1, 4 * R], R = 2
    student = torch.zeros(1, 1, 8)
    expected = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    torch.testing.assert_close(box_distribution_kl(student, teacher), torch.tensor([[expected]]))
    torch.testing.assert_close(box_distribution_kl(teacher, teacher), torch.zeros(1, 1))
    # a temperature flattens both distributions: the divergence shrinks
    assert float(box_distribution_kl(student, teacher, temperature=4.0)) < expected


def test_detection_data_shares_the_image_set_base(data: DetectionData) -> None:
    """``DetectionData`` and ``ClassificationData`` are one concept: sizes and id checks from one base."""
    from vision_unlearn.data import ClassificationData
    from vision_unlearn.image_set import ImageSet

    assert issubclass(DetectionData, ImageSet) and issubclass(ClassificationData, ImageSet)
    assert (len(data), data.num_classes, data.in_chans, data.image_size) == (4, 3, 1, (64, 64))
    part = data.subset([2, 0])
    assert part.sample_ids == ("c.png", "a.png") and part.num_boxes == 3
    with pytest.raises(ValueError, match="sample_ids must be unique"):
        replace(data, sample_ids=("a.png", "a.png", "c.png", "d.png"))
    with pytest.raises(ValueError, match=r"images must be float32 \[N, C, H, W\]"):
        replace(data, images=data.images.double())
