"""Readers and writers: COCO, object-CXR / Hopkins CSV, folders, YOLO layout, path safety."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rfo_bench.errors import UserInputError
from rfo_bench.io.coco import read_coco, write_coco
from rfo_bench.io.folders import read_image_folders
from rfo_bench.io.formats import read_dataset
from rfo_bench.io.images import write_png16
from rfo_bench.io.records import Category, DetectionDataset, ImageRecord, RFOObject, resolve_inside
from rfo_bench.io.rfo_csv import read_rfo_csv, write_rfo_csv
from rfo_bench.io.yolo_format import read_yolo, write_yolo

HOPKINS = """image_path,annotation
a.png,1_1_0 10 20 30 40;2_0_1 5 5 15 5 10 12
b.png,
"""
OBJECT_CXR = """image_name,annotation
a.png,0 10 20 30 40;1 1 2 9 8;2 5 5 15 5 10 12
b.png,
"""


def test_hopkins_csv(tmp_path):
    (tmp_path / "gt.csv").write_text(HOPKINS)
    ds = read_rfo_csv(tmp_path / "gt.csv")
    assert [c.name for c in ds.categories] == ["critical_rfo", "non_critical_rfo"]
    a, b = ds.images
    assert b.objects == () and not b.is_positive
    box, poly = a.objects
    assert box.bbox_xyxy == (10, 20, 30, 40) and box.shape == "box" and ds.is_critical(box)
    assert poly.shape == "polygon" and poly.bbox_xyxy == (5, 5, 15, 12) and ds.is_critical(poly) is False
    assert poly.area == pytest.approx(35.0)  # triangle base 10, height 7
    assert ds.stratum(a) == "critical" and ds.stratum(b) == "none"


def test_object_cxr_csv_and_round_trip(tmp_path):
    (tmp_path / "gt.csv").write_text(OBJECT_CXR)
    ds = read_rfo_csv(tmp_path / "gt.csv")
    assert [o.shape for o in ds.images[0].objects] == ["box", "ellipse", "polygon"]
    assert ds.images[0].objects[1].area == pytest.approx(np.pi * 8 * 6 / 4)
    write_rfo_csv(ds, tmp_path / "out.csv", convention="object_cxr")
    again = read_rfo_csv(tmp_path / "out.csv")
    assert [o.bbox_xyxy for o in again.images[0].objects] == [o.bbox_xyxy for o in ds.images[0].objects]
    assert [o.shape for o in again.images[0].objects] == ["box", "ellipse", "polygon"]


def test_csv_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image_path,annotation\na.png,0 1 2 3\n")
    with pytest.raises(UserInputError, match=r"bad.csv: line 2 object 1: a box needs 4 numbers"):
        read_rfo_csv(bad)
    bad.write_text("image_path,annotation\na.png,0 1 2 x 4\n")
    with pytest.raises(UserInputError, match="line 2 object 1: coordinates must be finite"):
        read_rfo_csv(bad)
    bad.write_text("image_path,annotation\na.png,0 1 2 3 4,extra\n")
    with pytest.raises(UserInputError, match="line 2: expected 2 comma-separated columns"):
        read_rfo_csv(bad)
    bad.write_text("image_path,annotation\na.png,0 1 2 3 4\nb.png,1_1_0 1 2 3 4\n")
    with pytest.raises(UserInputError, match="mixes the Hopkins"):
        read_rfo_csv(bad)
    problems: list[str] = []
    read_rfo_csv(bad, problems=problems)
    assert len(problems) == 1 and "mixes" in problems[0]


def test_csv_patient_column(tmp_path):
    (tmp_path / "gt.csv").write_text("image_path,annotation,patient_id\na.png,,P1\nb.png,,P2\n")
    assert [r.patient_id for r in read_rfo_csv(tmp_path / "gt.csv").images] == ["P1", "P2"]


def _coco(tmp_path, **changes):
    data = {
        "images": [{"id": 5, "file_name": "x/a.png", "width": 17, "height": 11, "patient_id": "P9"},
                   {"id": 6, "file_name": "b.png", "width": 17, "height": 11}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [1, 2, 4, 5], "area": 20, "iscrowd": 0,
                         "segmentation": [[1, 2, 5, 2, 5, 7]]}],
        "categories": [{"id": 3, "name": "needle", "supercategory": "critical"}],
    }
    data.update(changes)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_read_write_round_trip(tmp_path):
    ds = read_coco(_coco(tmp_path))
    record = ds.images[0]
    assert (record.image_id, record.width, record.height, record.patient_id) == (5, 17, 11, "P9")
    obj = record.objects[0]
    assert obj.bbox_xyxy == (1, 2, 5, 7) and obj.shape == "polygon" and obj.area == 20
    assert ds.is_critical(obj)
    write_coco(ds, tmp_path / "copy.json")
    again = read_coco(tmp_path / "copy.json")
    assert again.images == ds.images and again.categories == ds.categories


def test_coco_structural_errors(tmp_path):
    path = _coco(tmp_path)
    data = json.loads(path.read_text())
    del data["images"]
    path.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match="gt.json: images: COCO json has no `images` list"):
        read_coco(path)
    path.write_text("{not json")
    with pytest.raises(UserInputError, match="not valid json"):
        read_coco(path)
    path = _coco(tmp_path, annotations=[{"id": 1, "image_id": 5, "category_id": 3, "bbox": [1, 2, 3]}])
    with pytest.raises(UserInputError, match=r"annotations\[0\]: `bbox` must be 4 finite numbers"):
        read_coco(path)


def test_paths_escaping_the_root_are_refused(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for name in ("../secret.png", "/etc/passwd", "a/../../x.png"):
        with pytest.raises(UserInputError, match="refused|relative"):
            resolve_inside(root, name)
    assert resolve_inside(root, "a/../b.png") == root / "b.png"


def test_folders_layout(tmp_path):
    for folder, n in (("Positive", 2), ("negative", 1)):
        for i in range(n):
            write_png16(tmp_path / folder / f"{i}.png", np.zeros((11, 17)))
    ds = read_image_folders(tmp_path)
    assert [r.positive for r in ds.images] == [True, True, False]
    assert read_dataset(tmp_path).images == ds.images


def test_yolo_round_trip(tmp_path):
    root = tmp_path / "src"
    write_png16(root / "a.png", np.zeros((11, 17)))
    write_png16(root / "b.png", np.zeros((11, 17)))
    ds = DetectionDataset(root, (
        ImageRecord("a.png", 1, 17, 11, objects=(RFOObject((1.0, 2.0, 9.0, 7.0), 4), RFOObject((0.0, 0.0, 3.0, 3.0), 9))),
        ImageRecord("b.png", 2, 17, 11),
    ), (Category(4, "blade", True), Category(9, "button", False)))
    yaml_path = write_yolo(ds, tmp_path / "yolo", {"train": [1], "val": [2]})
    text = (tmp_path / "yolo" / "labels" / "train" / "a.txt").read_text().splitlines()
    assert text[0] == "0 0.294118 0.409091 0.470588 0.454545"  # cx = 5/17, cy = 4.5/11, w = 8/17, h = 5/11
    back = read_yolo(yaml_path)
    assert [c.name for c in back.categories] == ["blade", "button"]
    assert back.categories[0].critical is True and back.categories[1].critical is False
    a = next(r for r in back.images if r.file_name.endswith("a.png"))
    np.testing.assert_allclose(a.objects[0].bbox_xyxy, (1, 2, 9, 7), atol=1e-5)
    assert (a.width, a.height) == (17, 11)
    assert (tmp_path / "yolo" / "images" / "train" / "a.png").is_file()
