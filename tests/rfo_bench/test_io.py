"""Readers and writers: COCO, object-CXR / Hopkins CSV, folders, YOLO layout, path safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.io.coco import read_coco, write_coco
from rfo_bench.io.folders import read_image_folders
from rfo_bench.io.formats import read_dataset
from rfo_bench.io.images import read_image, write_png16
from rfo_bench.io.records import Category, DetectionDataset, ImageRecord, RFOObject, resolve_inside
from rfo_bench.io.rfo_csv import read_rfo_csv, write_rfo_csv
from rfo_bench.io.yolo_format import read_yolo, write_yolo
from toolkit_core.errors import UserInputError

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


def test_trailing_semicolon_of_the_hopkins_readme_is_accepted(tmp_path):
    # the Hopkins README example ends the annotation with `;`
    (tmp_path / "gt.csv").write_text("image_path,annotation\na.png,1_1_0 10 20 30 40;\n"
                                     "b.png,1_0_0 1 2 3 4;2_1_1 5 5 15 5 10 12; \nc.png,\n")
    a, b, c = read_rfo_csv(tmp_path / "gt.csv").images
    assert [o.bbox_xyxy for o in a.objects] == [(10, 20, 30, 40)]
    assert [o.shape for o in b.objects] == ["box", "polygon"] and c.objects == ()
    # an empty object between two others is still an error
    (tmp_path / "bad.csv").write_text("image_path,annotation\na.png,1_1_0 10 20 30 40;;2_1_0 1 2 3 4\n")
    with pytest.raises(UserInputError, match="line 2 object 2: empty object"):
        read_rfo_csv(tmp_path / "bad.csv")


def test_hopkins_object_ids_survive_csv_coco_csv(tmp_path):
    (tmp_path / "gt.csv").write_text("image_path,annotation\na.png,7_1_0 10 20 30 40;3_0_1 5 5 15 5 10 12\n"
                                     "b.png,7_0_0 1 2 3 4\nc.png,\n")
    ds = read_rfo_csv(tmp_path / "gt.csv")
    write_coco(ds, tmp_path / "gt.json")
    coco = json.loads((tmp_path / "gt.json").read_text())
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3]  # unique COCO ids, as pycocotools needs
    assert [a["rfo_object_id"] for a in coco["annotations"]] == [7, 3, 7]
    write_rfo_csv(read_coco(tmp_path / "gt.json"), tmp_path / "back.csv")
    lines = (tmp_path / "back.csv").read_text().splitlines()
    assert lines[1].startswith("a.png,7_1_0 10 20 30 40;3_0_1 5 5")
    assert lines[2] == "b.png,7_0_0 1 2 3 4"
    again = read_rfo_csv(tmp_path / "back.csv")
    assert [[o.object_id for o in r.objects] for r in again.images] == [[7, 3], [7], []]
    assert [r.objects for r in again.images] == [r.objects for r in ds.images]


def test_absolute_image_paths_inside_the_root_are_used_as_is(tmp_path):
    root = tmp_path / "data"
    write_png16(root / "x" / "a.png", np.zeros((11, 17)))
    absolute = str(root / "x" / "a.png")
    assert resolve_inside(root, absolute) == root / "x" / "a.png"
    assert resolve_inside(Path("/"), absolute) == root / "x" / "a.png"  # --root /
    with pytest.raises(UserInputError, match=r"outside the dataset root .*refused \(pass --root /"):
        resolve_inside(tmp_path / "elsewhere", absolute)
    (tmp_path / "gt.csv").write_text(f"image_path,annotation\n{absolute},1_1_0 1 1 5 5;\n")
    # a root that is not above the image: refused, never opened
    with pytest.raises(UserInputError, match="outside the dataset root"):
        read_dataset(tmp_path / "gt.csv", root=tmp_path / "elsewhere").resolve(absolute)
    for given in ("/", str(root)):
        ds = read_dataset(tmp_path / "gt.csv", root=given)
        assert ds.images[0].file_name == absolute
        assert ds.resolve(ds.images[0]) == root / "x" / "a.png"
        assert read_image(ds.resolve(ds.images[0])).pixels.shape == (11, 17)


def test_dataset_directory_annotations_are_found_or_refused_naming_the_folder(tmp_path):
    from rfo_bench.io.coco import dataset_annotations_path, load_dataset_coco

    with pytest.raises(UserInputError, match="dataset directory does not exist") as info:
        load_dataset_coco(tmp_path / "absent")
    assert "absent" in str(info.value)
    with pytest.raises(UserInputError, match="annotations.json is missing"):
        dataset_annotations_path(tmp_path)
    (tmp_path / "annotations.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(UserInputError, match="missing list") as info:
        load_dataset_coco(tmp_path)
    assert info.value.field == "categories" and "annotations.json" in str(info.value)
    (tmp_path / "annotations.json").write_text("[1, 2]")
    with pytest.raises(UserInputError, match="JSON object"):
        load_dataset_coco(tmp_path)
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(UserInputError, match="not valid json"):
        load_dataset_coco(tmp_path)
    document = {"images": [{"id": 1}], "annotations": [], "categories": []}
    (tmp_path / "annotations.json").write_text(json.dumps(document))
    assert load_dataset_coco(tmp_path) == document


def test_dataset_images_are_found_next_to_the_json_or_in_images_and_never_outside(tmp_path):
    from rfo_bench.io.coco import resolve_dataset_image

    write_png16(tmp_path / "images" / "a.png", np.zeros((3, 5)))
    expected = (tmp_path / "images" / "a.png").resolve()
    assert resolve_dataset_image(tmp_path, "images/a.png").resolve() == expected
    assert resolve_dataset_image(tmp_path, "a.png").resolve() == expected
    with pytest.raises(UserInputError, match="not found") as info:
        resolve_dataset_image(tmp_path, "b.png")
    assert info.value.field == "images.file_name" and info.value.value == "b.png"
    with pytest.raises(UserInputError, match="outside the dataset root"):
        resolve_dataset_image(tmp_path / "images", "../../etc/passwd")


@pytest.mark.parametrize(("recorded", "expected"), [
    (0.2, 0.2), ([0.1, 0.3], 0.2), ([0.15], 0.15), (None, None), (0, None), ([0.1, -0.1], None),
    ("0.2", None), (True, None), ([0.1, 0.2, 0.3], None),
])
def test_recorded_pixel_spacing_is_one_positive_number_or_a_pair(recorded, expected):
    from rfo_bench.io.coco import coco_pixel_spacing_mm

    entry = {"id": 1} if recorded is None else {"id": 1, "pixel_spacing_mm": recorded}
    assert coco_pixel_spacing_mm(entry) == (None if expected is None else pytest.approx(expected))


def test_header_look_ups_have_one_home_that_formats_re_exports():
    from rfo_bench.io import formats, headers

    for name in ("image_size", "fill_image_sizes", "dicom_patient_key", "fill_patient_ids"):
        assert getattr(formats, name) is getattr(headers, name)
