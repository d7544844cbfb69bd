"""Detection forget requests: class, images, patients, instances -> forget/retain images and boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit_core.errors import UserInputError
from vision_unlearn.adapters.yolo_data import DetectionData
from vision_unlearn.detection_forget import parse_detection_forget, resolve_detection_forget


@pytest.fixture()
def data() -> DetectionData:
    """Four images (17x11 and friends): a: needle; b: none; c: sponge + clamp; d: clamp."""
    images = [np.zeros((17, 11), np.float32), np.zeros((20, 30), np.float32), np.zeros((32, 32), np.float32),
              np.zeros((11, 17), np.float32)]
    boxes = [np.array([[1, 1, 5, 8]]), np.zeros((0, 4)), np.array([[2, 2, 10, 10], [12, 12, 20, 30]]),
             np.array([[3, 2, 9, 8]])]
    labels = [np.array([0]), np.zeros(0), np.array([1, 2]), np.array([2])]
    return DetectionData.from_arrays(images, boxes, labels, ["needle", "sponge", "clamp"], 32, 1,
                                     sample_ids=["a.png", "b.png", "c.png", "d.png"],
                                     patient_ids=["p1", "p1", "p2", "p3"],
                                     instance_ids=[["10"], [], ["11", "12"], ["13"]])


def test_class_request_forgets_the_boxes_and_keeps_their_images_as_background(data: DetectionData) -> None:
    split = resolve_detection_forget("class:clamp", data)
    assert split.forgotten_classes == (2,)
    np.testing.assert_array_equal(split.forget_images, [2, 3])
    np.testing.assert_array_equal(split.retain_images, [0, 1, 2, 3])
    forget = split.forget_data(data)
    assert forget.sample_ids == ("c.png", "d.png") and forget.instance_ids == ("12", "13")
    assert forget.labels.tolist() == [2, 2]
    retain = split.retain_data(data)
    assert 2 not in retain.labels.tolist() and retain.instance_ids == ("10", "11")
    assert len(retain) == 4 and retain.boxes_of(3)[0].shape == (0, 4)  # d.png stays, as background
    assert resolve_detection_forget("class:1", data).forgotten_classes == (1,)


def test_image_and_patient_requests_remove_whole_images(data: DetectionData, tmp_path: Path) -> None:
    listing = tmp_path / "withdrawn.txt"
    listing.write_text("# consent withdrawn\nc.png\n\nb.png  # no objects\n")
    split = resolve_detection_forget(f"images:{listing}", data)
    np.testing.assert_array_equal(split.forget_images, [1, 2])
    np.testing.assert_array_equal(split.retain_images, [0, 3])
    assert split.forget_data(data).instance_ids == ("11", "12")
    assert split.retain_data(data).sample_ids == ("a.png", "d.png")
    patient = resolve_detection_forget("patient:p1", data)
    np.testing.assert_array_equal(patient.forget_images, [0, 1])
    assert int(patient.forget_boxes.sum()) == 1
    relative = resolve_detection_forget("images:withdrawn.txt", data, root=tmp_path)
    np.testing.assert_array_equal(relative.forget_images, [1, 2])


def test_instance_request_keeps_the_rest_of_the_image(data: DetectionData, tmp_path: Path) -> None:
    listing = tmp_path / "wrong.txt"
    listing.write_text("11\n")
    split = resolve_detection_forget(f"instances:{listing}", data)
    torch.testing.assert_close(split.forget_boxes, torch.tensor([False, True, False, False]))
    np.testing.assert_array_equal(split.forget_images, [2])
    assert split.retain_data(data).instance_ids == ("10", "12", "13")
    assert split.forget_data(data).instance_ids == ("11",)
    stream = split.forget_data(data).stream()
    assert stream["box_labels"].tolist() == [[1]] and stream["labels"].tolist() == [1]


@pytest.mark.parametrize(("text", "message"), [
    ("class:scalpel", "not one of the model's classes: needle, sponge, clamp"),
    ("class:7", "not one of the model's classes"),
    ("patient:p9", "patient ids are not in the training data"),
    ("colour:red", "KIND one of"),
    ("class:", "KIND one of"),
])
def test_bad_requests_are_user_errors(data: DetectionData, text: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        resolve_detection_forget(text, data)


def test_unknown_ids_and_files_name_the_problem(data: DetectionData, tmp_path: Path) -> None:
    listing = tmp_path / "ids.txt"
    listing.write_text("11\n99\n")
    with pytest.raises(UserInputError, match=r"ids.txt: forget: 1 instance id\(s\) do not exist.*'99'"):
        resolve_detection_forget(f"instances:{listing}", data)
    listing.write_text("z.png\n")
    with pytest.raises(UserInputError, match="image ids are not in the training data.*z.png"):
        resolve_detection_forget(f"images:{listing}", data)
    with pytest.raises(UserInputError, match="not found"):
        resolve_detection_forget(f"instances:{tmp_path / 'missing.txt'}", data)
    listing.write_text("# nothing\n")
    with pytest.raises(UserInputError, match="lists no ids"):
        resolve_detection_forget(f"images:{listing}", data)


def test_requests_that_leave_nothing_are_refused(data: DetectionData, tmp_path: Path) -> None:
    listing = tmp_path / "all.txt"
    listing.write_text("a.png\nb.png\nc.png\nd.png\n")
    with pytest.raises(UserInputError, match="nothing would be retained"):
        resolve_detection_forget(f"images:{listing}", data)
    empty_class = DetectionData.from_arrays([np.zeros((8, 8), np.float32)], [np.array([[1, 1, 4, 4]])],
                                            [np.array([0])], ["needle", "sponge"], 32)
    with pytest.raises(UserInputError, match="forget set is empty"):
        resolve_detection_forget("class:sponge", empty_class)
    assert str(parse_detection_forget("Class: needle")) == "class:needle"


def test_coco_and_yolo_layouts_load_through_rfo_bench(tmp_path: Path) -> None:
    import json

    from PIL import Image

    from rfo_bench.io.formats import read_dataset
    from vision_unlearn.adapters.yolo_data import detection_data_from_records

    (tmp_path / "coco").mkdir()
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(tmp_path / "coco" / "a.png")  # H=20, W=40
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "coco" / "b.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 20, "patient_id": "p7"},
                       {"id": 2, "file_name": "b.png", "width": 32, "height": 32}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 3, "bbox": [4, 2, 10, 6], "area": 60, "iscrowd": 0},
                            {"id": 6, "image_id": 2, "category_id": 1, "bbox": [1, 1, 8, 8], "area": 64, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "sponge"}, {"id": 3, "name": "needle"}]}
    (tmp_path / "coco" / "annotations.json").write_text(json.dumps(coco))
    data = detection_data_from_records(read_dataset(tmp_path / "coco" / "annotations.json"), 64, 1)
    assert data.class_names == ("sponge", "needle") and data.sample_ids == ("a.png", "b.png")
    assert data.patient_ids[0] == "p7" and set(data.instance_ids) == {"5", "6"}
    # a.png (20x40) into 64x64: gain 1.6, 16 rows of padding on top
    boxes, labels = data.boxes_of(0)
    torch.testing.assert_close(boxes, torch.tensor([[6.4, 16 + 3.2, 22.4, 16 + 12.8]]))
    assert labels.tolist() == [1]
    split = resolve_detection_forget("class:needle", data)
    assert split.forget_data(data).instance_ids == ("5",)

    yolo = tmp_path / "yolo"
    for sub in ("images/train", "labels/train"):
        (yolo / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(yolo / "images/train/a.png")
    (yolo / "labels/train/a.txt").write_text("1 0.225 0.25 0.25 0.3\n")  # the same needle box
    (yolo / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n  0: sponge\n  1: needle\n")
    from_yolo = detection_data_from_records(read_dataset(yolo), 64, 1)
    torch.testing.assert_close(from_yolo.boxes_xyxy, boxes, atol=1e-4, rtol=0)
