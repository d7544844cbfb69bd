"""Validator (every problem in one pass), patient-level splits, and the torch Dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rfo_bench.dataset import RFOTorchDataset, bbox_safe_compose, detection_collate
from rfo_bench.io.images import write_png16
from rfo_bench.io.records import Category, DetectionDataset, ImageRecord, RFOObject
from rfo_bench.splits import kfold_splits, split_dataset
from rfo_bench.validate import check_dataset, require_valid_annotations
from toolkit_core.errors import UserInputError


def test_validate_reports_every_problem_in_one_pass(tmp_path):
    write_png16(tmp_path / "ok.png", np.zeros((11, 17)))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    data = {
        "images": [
            {"id": 1, "file_name": "ok.png", "width": 17, "height": 11},
            {"id": 1, "file_name": "missing.png", "width": 17, "height": 11},
            {"id": 3, "file_name": "../outside.png", "width": 17, "height": 11},
            {"id": 4, "file_name": "broken.png", "width": 17, "height": 11},
            {"id": 5, "file_name": "ok.png", "width": 30, "height": 11},
            {"file_name": "no-id.png"},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 10, 3]},
            {"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]},
            {"id": 3, "image_id": 4, "category_id": 1, "bbox": [1, 1, 0, 2]},
            {"id": 4, "image_id": 4, "category_id": 1, "bbox": [1, 1, 2]},
        ],
        "categories": [{"id": 1, "name": "sponge"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(data))
    _, problems = check_dataset(tmp_path / "gt.json")
    kinds = {p.kind for p in problems}
    assert kinds == {
        "malformed_entry", "duplicate_image_id", "duplicate_file_name", "duplicate_annotation_id",
        "unknown_category", "degenerate_box", "box_outside_image", "path_escapes_root", "missing_image",
        "unreadable_image", "size_mismatch",
    }
    assert not (tmp_path.parent / "outside.png").exists()  # never opened, only refused


def test_require_valid_annotations_blocks_evaluation(tmp_path):
    ds = DetectionDataset(tmp_path, (ImageRecord("a.png", 1, objects=(RFOObject((1, 1, 1, 5), 1),)),),
                          (Category(1, "sponge", True),), source="gt.json")
    with pytest.raises(UserInputError, match="gt.json: a.png object 1: box has zero or negative size"):
        require_valid_annotations(ds)


def _patients_dataset(tmp_path, n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    records = []
    for p in range(n_patients):
        kind = p % 4  # 0, 1 critical; 2 non-critical; 3 none
        for _ in range(int(rng.integers(1, 4))):
            objects = () if kind == 3 else (RFOObject((1, 1, 5, 5), 1 if kind < 2 else 2),)
            records.append(ImageRecord(f"{len(records)}.png", len(records) + 1, patient_id=f"P{p}", objects=objects))
    return DetectionDataset(tmp_path, tuple(records), (Category(1, "needle", True), Category(2, "zipper", False)))


def test_patient_level_stratified_split(tmp_path):
    ds = _patients_dataset(tmp_path, n_patients=80)
    split = split_dataset(ds, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=7)
    patient = {r.image_id: r.patient_id for r in ds.images}
    owners = {name: {patient[i] for i in ids} for name, ids in split.items()}
    assert not owners["train"] & owners["val"] and not owners["train"] & owners["test"] and not owners["val"] & owners["test"]
    assert sorted(sum(split.values(), [])) == sorted(patient)
    # 40 critical, 20 non-critical, 20 negative patients: 50/25/25 exactly per stratum
    stratum = {0: "critical", 1: "critical", 2: "non_critical", 3: "none"}
    for name, share in (("train", 0.5), ("val", 0.25), ("test", 0.25)):
        counts = {s: sum(stratum[int(pid[1:]) % 4] == s for pid in owners[name]) for s in set(stratum.values())}
        assert counts == {"critical": 40 * share, "non_critical": 20 * share, "none": 20 * share}
    assert split_dataset(ds, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=7) == split
    assert split_dataset(ds, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=8) != split
    with pytest.raises(UserInputError, match="sum to 1"):
        split_dataset(ds, {"train": 0.5, "test": 0.2})


def test_small_datasets_give_every_split_its_share_of_all_patients(tmp_path):
    # 9 patients in three strata (5 critical, 2 non-critical, 2 negative): 70/10/20 of 9 is 6/1/2 patients. Rounding
    # each stratum on its own gave the validation split nobody (0.5, 0.2 and 0.2 patients all round down).
    ds = _patients_dataset(tmp_path, n_patients=9)
    patient = {r.image_id: r.patient_id for r in ds.images}
    for seed in range(20):
        split = split_dataset(ds, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=seed)
        assert [len({patient[i] for i in split[name]}) for name in ("train", "val", "test")] == [6, 1, 2]
    # three patients, one per stratum, a quarter held out: one patient is
    three = _patients_dataset(tmp_path, n_patients=3)
    owners = {r.image_id: r.patient_id for r in three.images}
    for seed in range(20):
        split = split_dataset(three, {"train": 0.75, "test": 0.25}, seed=seed)
        assert len({owners[i] for i in split["test"]}) == 1 and len({owners[i] for i in split["train"]}) == 2


def test_kfold_is_patient_disjoint_and_covers_everything(tmp_path):
    ds = _patients_dataset(tmp_path, seed=1)
    folds = kfold_splits(ds, 4, seed=0)
    patient = {r.image_id: r.patient_id for r in ds.images}
    tests = [set(f["test"]) for f in folds]
    assert set().union(*tests) == set(patient) and sum(len(t) for t in tests) == len(patient)
    for fold in folds:
        assert not {patient[i] for i in fold["train"]} & {patient[i] for i in fold["test"]}


def test_torch_dataset_flip_moves_boxes_and_masks(tmp_path):
    import albumentations as A
    from monai.transforms import ScaleIntensityRange

    pixels = np.zeros((11, 17))
    pixels[2:6, 1:9] = 1.0
    write_png16(tmp_path / "a.png", pixels)
    ds = DetectionDataset(tmp_path, (ImageRecord("a.png", 1, 17, 11, objects=(
        RFOObject((1.0, 2.0, 9.0, 6.0), 5),
        RFOObject((10.0, 1.0, 16.0, 9.0), 5, "polygon", (10.0, 1.0, 16.0, 1.0, 10.0, 9.0)),
    )),), (Category(5, "clamp", True),))
    plain = RFOTorchDataset(ds, with_masks=True)
    image, target = plain[0]
    assert image.shape == (1, 11, 17) and image.dtype == torch.float32
    assert target["boxes"].tolist() == [[1, 2, 9, 6], [10, 1, 16, 9]]
    assert target["labels"].tolist() == [1, 1] and plain.label_names == ["background", "clamp"]
    assert target["masks"].shape == (2, 11, 17)
    assert target["masks"][1, 2, 11] == 1 and target["masks"][1, 8, 15] == 0  # triangle: inside / outside
    flipped = RFOTorchDataset(
        ds, transform=bbox_safe_compose([A.HorizontalFlip(p=1.0)]), with_masks=True, in_chans=3,
        intensity_transform=ScaleIntensityRange(a_min=0.0, a_max=1.0, b_min=0.0, b_max=2.0),
    )
    image, target = flipped[0]
    assert image.shape == (3, 11, 17) and float(image.max()) == pytest.approx(2.0)
    np.testing.assert_allclose(target["boxes"][0].tolist(), [17 - 9, 2, 17 - 1, 6])  # x' = W - x
    assert float(image[0, 3, 17 - 2]) == pytest.approx(2.0)  # the bright block moved with its box
    np.testing.assert_array_equal(target["masks"][1].numpy(), plain[0][1]["masks"][1].numpy()[:, ::-1])
    images, targets = detection_collate([flipped[0], plain[0]])
    assert len(images) == 2 and targets[1]["image_id"] == 1


def test_patient_ids_from_dicom_keep_a_patient_in_one_split(tmp_path):
    import shutil

    from pydicom.data import get_testdata_file

    from rfo_bench.io.formats import fill_patient_ids
    from rfo_bench.io.images import read_image

    for k in range(3):
        shutil.copyfile(get_testdata_file("CT_small.dcm"), tmp_path / f"ct{k}.dcm")
        shutil.copyfile(get_testdata_file("MR_small.dcm"), tmp_path / f"mr{k}.dcm")
    write_png16(tmp_path / "x.png", np.zeros((11, 17)))
    names = [f"ct{k}.dcm" for k in range(3)] + [f"mr{k}.dcm" for k in range(3)] + ["x.png"]
    ds = DetectionDataset(tmp_path, tuple(ImageRecord(n, i + 1) for i, n in enumerate(names)), (Category(1, "sponge"),))
    filled = fill_patient_ids(ds)
    keys = [r.patient_id for r in filled.images]
    assert keys[0] == keys[1] == keys[2] == read_image(tmp_path / "ct0.dcm").patient_key
    assert keys[3] == keys[4] == keys[5] != keys[0]
    assert keys[6] is None and "1CT1" not in keys[0]  # pseudonymised
    split = split_dataset(filled, {"a": 0.5, "b": 0.5}, seed=0)
    for ids in split.values():
        assert {1, 2, 3} <= set(ids) or not {1, 2, 3} & set(ids)


def test_validate_cli_prints_one_line_per_problem_and_exits_1(tmp_path, capsys):
    from rfo_toolkit.cli import rfo_bench_main as main

    (tmp_path / "gt.csv").write_text("image_path,annotation\na.png,0 1 2 3\nb.png,1_1_0 1 2 3 4\nc.png,0 1 1 5 5\n")
    assert main(["validate", str(tmp_path / "gt.csv"), "--no-images"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("gt.csv: malformed_entry: line 2 object 1: a box needs 4 numbers x1 y1 x2 y2 (got '0 1 2 3')")
    assert ": mixed_conventions: " in lines[1]
    assert lines[2] == "2 problem(s): malformed_entry 1, mixed_conventions 1"
    write_png16(tmp_path / "c.png", np.zeros((11, 17)))
    (tmp_path / "ok.csv").write_text("image_path,annotation\nc.png,0 1 1 5 5\n")
    assert main(["validate", str(tmp_path / "ok.csv")]) == 0


def test_validate_absolute_paths_need_a_root_above_them(tmp_path, capsys):
    from rfo_toolkit.cli import rfo_bench_main as main

    image = tmp_path / "images" / "a.png"
    write_png16(image, np.zeros((11, 17)))
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "gt.csv").write_text(f"image_path,annotation\n{image},1_1_0 1 1 5 5;\n")
    assert main(["validate", str(tmp_path / "csv" / "gt.csv")]) == 1
    out = capsys.readouterr().out
    assert "path_escapes_root" in out and "--root /" in out
    assert main(["validate", str(tmp_path / "csv" / "gt.csv"), "--root", "/"]) == 0
    assert "no problem" in capsys.readouterr().out


def test_ids_beyond_64_bits_are_reported(tmp_path, capsys):
    from rfo_toolkit.cli import rfo_bench_main as main

    write_png16(tmp_path / "a.png", np.zeros((11, 17)))
    data = {"images": [{"id": 2**64, "file_name": "a.png", "width": 17, "height": 11}],
            "annotations": [{"id": 1, "image_id": 2**64, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 4}],
            "categories": [{"id": 1, "name": "sponge"}, {"id": 2**63, "name": "clip"}]}
    (tmp_path / "gt.json").write_text(json.dumps(data))
    assert main(["validate", str(tmp_path / "gt.json")]) == 1
    out = capsys.readouterr().out
    assert "categories[1].id: id does not fit a signed 64-bit integer" in out
    assert "images[0].id: id does not fit a signed 64-bit integer" in out
    assert "annotations[0].image_id: id does not fit" in out
    # a dataset built in code: the validator names the id, the evaluator refuses it
    ds = DetectionDataset(tmp_path, (ImageRecord("a.png", 2**63, objects=(RFOObject((1, 1, 5, 5), 1),)),),
                          (Category(1, "sponge", True),), source="gt.json")
    from rfo_bench.validate import check_annotations

    assert [p.kind for p in check_annotations(ds)] == ["id_out_of_range"]
    with pytest.raises(UserInputError, match="gt.json: a.png image_id: image id 9223372036854775808"):
        require_valid_annotations(ds)
