"""Specification of ``vision_unlearn.data``: every dataset spec, the splits, and the errors."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rfo_bench.io.images import write_png8, write_png16
from toolkit_core.errors import UserInputError
from vision_unlearn.data import (
    DIGITS_PATIENT_BLOCK,
    ClassificationData,
    grouped_stratified_split,
    load_classification_data,
)


def _tiny(n: int = 6) -> ClassificationData:
    return ClassificationData(
        images=torch.arange(n * 17 * 11, dtype=torch.float32).reshape(n, 1, 17, 11) / (n * 17 * 11),
        labels=torch.tensor([i % 3 for i in range(n)], dtype=torch.int64),
        sample_ids=[f"s{i}" for i in range(n)],
        patient_ids=[f"p{i // 2}" for i in range(n)],
        class_names=["a", "b", "c"],
    )


def test_container_subset_and_dataset_view() -> None:
    data = _tiny()
    part = data.subset([4, 1])
    assert len(part) == 2
    assert part.sample_ids == ["s4", "s1"]
    assert part.patient_ids == ["p2", "p0"]
    assert part.labels.tolist() == [1, 1]
    assert torch.equal(part.images[0], data.images[4])
    assert part.image_size == (17, 11)
    item = data.as_dataset()[3]
    assert set(item) == {"images", "labels", "ids", "index"}
    assert item["ids"] == "s3" and item["index"] == 3 and int(item["labels"]) == 0
    batch = next(iter(DataLoader(data.as_dataset(), batch_size=4)))
    assert batch["images"].shape == (4, 1, 17, 11)
    assert batch["ids"] == ["s0", "s1", "s2", "s3"]
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert data.class_counts().tolist() == [2, 2, 2]


def test_container_rejects_inconsistent_fields() -> None:
    data = _tiny()
    with pytest.raises(ValueError, match="unique"):
        ClassificationData(data.images, data.labels, ["x"] * 6, data.patient_ids, data.class_names)
    with pytest.raises(ValueError, match="length mismatch"):
        ClassificationData(data.images, data.labels[:5], data.sample_ids, data.patient_ids, data.class_names)
    with pytest.raises(ValueError, match="labels must lie"):
        ClassificationData(data.images, data.labels + 1, data.sample_ids, data.patient_ids, data.class_names)
    with pytest.raises(IndexError):
        data.subset([6])


def test_digits_splits_are_seeded_stratified_and_patient_disjoint() -> None:
    splits = load_classification_data("digits", seed=3)
    train, test = splits["train"], splits["test"]
    assert len(train) + len(test) == 1797  # sklearn's digits
    assert train.images.shape[1:] == (1, 8, 8)
    assert float(train.images.max()) == 1.0 and float(train.images.min()) == 0.0  # 16/16 and 0/16
    assert not set(train.patient_ids) & set(test.patient_ids)
    assert not set(train.sample_ids) & set(test.sample_ids)
    # pseudo-patients are consecutive blocks of DIGITS_PATIENT_BLOCK samples
    all_ids = dict(zip(train.sample_ids + test.sample_ids, train.patient_ids + test.patient_ids))
    assert all_ids["digits-0000"] == all_ids[f"digits-{DIGITS_PATIENT_BLOCK - 1:04d}"] == "digits-p0000"
    assert all_ids[f"digits-{DIGITS_PATIENT_BLOCK:04d}"] == "digits-p0001"
    share = test.class_counts() / (train.class_counts() + test.class_counts())
    assert np.all(np.abs(share - 0.3) < 0.06), share
    again = load_classification_data("digits", seed=3)
    assert again["test"].sample_ids == test.sample_ids
    other = load_classification_data("digits", seed=4)
    assert other["test"].sample_ids != test.sample_ids


def test_digits_resize_and_channels_keep_height_width_order() -> None:
    splits = load_classification_data("digits", image_size=(17, 11), in_chans=3)
    images = splits["train"].images
    assert images.shape[1:] == (3, 17, 11)
    assert torch.equal(images[:, 0], images[:, 2])
    assert images.min() >= 0 and images.max() <= 1


def test_grouped_split_by_hand() -> None:
    # 4 patients of 2 samples (labels 0,1 each); classes count 4 each; target test count 0.5*4 = 2 per class.
    # Whole patients move, so exactly 2 patients (4 samples) end up in test.
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    groups = ["a", "a", "b", "b", "c", "c", "d", "d"]
    train, test = grouped_stratified_split(labels, groups, test_fraction=0.5, seed=0)
    assert len(test) == 4 and len(train) == 4
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(8))
    assert {groups[i] for i in train}.isdisjoint({groups[i] for i in test})
    # every sample its own patient: the plain stratified sklearn split, exact size
    train, test = grouped_stratified_split(np.array([0] * 10 + [1] * 10), [str(i) for i in range(20)],
                                           test_fraction=0.3, seed=1)
    assert len(test) == 6 and int(np.sum(np.array([0] * 10 + [1] * 10)[test])) == 3
    with pytest.raises(UserInputError, match="test_fraction"):
        grouped_stratified_split(labels, groups, test_fraction=1.0, seed=0)
    # 10 classes x 2 samples with a 10 % test share: 2 test samples cannot hold 10 classes
    with pytest.raises(UserInputError, match="cannot split 20 samples of 10 classes"):
        grouped_stratified_split(np.repeat(np.arange(10), 2), [str(i) for i in range(20)], test_fraction=0.1, seed=0)


def _write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name, count in (("needle", 4), ("sponge", 5)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            write_png16(root / name / f"{i}.png", rng.random((17, 11)))


def test_folder_spec(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set")
    splits = load_classification_data("folder:set", root=tmp_path, test_fraction=0.4, seed=0)
    train, test = splits["train"], splits["test"]
    assert train.class_names == ["needle", "sponge"]
    assert len(train) + len(test) == 9
    assert train.images.shape[1:] == (1, 17, 11)
    assert "needle/0.png" in train.sample_ids + test.sample_ids
    both = np.concatenate([train.class_counts(), test.class_counts()]).reshape(2, 2).sum(0)
    assert both.tolist() == [4, 5]


def test_folder_mixing_gray_and_rgb_files(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set")
    rgb = np.zeros((17, 11, 3))
    rgb[..., 0] = 1.0  # pure red
    write_png8(tmp_path / "set" / "sponge" / "rgb.png", rgb)
    color = load_classification_data(f"folder:{tmp_path / 'set'}", in_chans=3, test_fraction=0.4)
    gray = load_classification_data(f"folder:{tmp_path / 'set'}", in_chans=1, test_fraction=0.4)
    for part in (color, gray):
        data = part["train"] if "sponge/rgb.png" in part["train"].sample_ids else part["test"]
        image = data.images[data.sample_ids.index("sponge/rgb.png")]
        if part is color:
            assert image.shape == (3, 17, 11) and float(image[0].min()) == 1.0 and float(image[1].max()) == 0.0
        else:
            assert image.shape == (1, 17, 11) and torch.allclose(image, torch.full_like(image, 0.299), atol=1e-3)


def test_folder_empty_class_names_the_directory(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set")
    (tmp_path / "set" / "blade").mkdir()
    with pytest.raises(UserInputError, match="blade") as info:
        load_classification_data(f"folder:{tmp_path / 'set'}")
    assert info.value.field == "class"


def test_folder_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    _write_folder(tmp_path / "set")
    write_png8(tmp_path / "set" / "needle" / "big.png", np.zeros((20, 20)))
    with pytest.raises(UserInputError, match="image size"):
        load_classification_data(f"folder:{tmp_path / 'set'}")
    splits = load_classification_data(f"folder:{tmp_path / 'set'}", image_size=(9, 7))
    assert splits["train"].images.shape[1:] == (1, 9, 7)


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_csv_spec_with_patients_and_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        write_png16(tmp_path / f"img{i}.png", rng.random((17, 11)))
        rows.append({"image_path": f"img{i}.png", "label": str(10 - i % 2 * 8), "patient_id": f"P{i // 2}",
                     "split": "test" if i >= 6 else "train"})
    _write_csv(tmp_path / "list.csv", rows)
    splits = load_classification_data(f"csv:{tmp_path / 'list.csv'}")
    assert splits["train"].class_names == ["2", "10"]  # numeric order, not "10" < "2"
    assert splits["test"].sample_ids == ["img6.png", "img7.png"]
    assert splits["test"].patient_ids == ["P3", "P3"]
    assert splits["test"].labels.tolist() == [1, 0]
    assert "both the train and the test split" not in caplog.text
    rows[5]["split"] = "test"  # patient P2 now has one image on each side
    _write_csv(tmp_path / "leaky.csv", rows)
    load_classification_data(f"csv:{tmp_path / 'leaky.csv'}")
    assert "1 patient(s) have images in both the train and the test split" in caplog.text
    rows[5]["split"] = "train"
    # without the split column the split is by patient
    for row in rows:
        del row["split"]
    _write_csv(tmp_path / "nosplit.csv", rows)
    splits = load_classification_data(f"csv:{tmp_path / 'nosplit.csv'}", test_fraction=0.5, seed=2)
    assert set(splits["train"].patient_ids).isdisjoint(splits["test"].patient_ids)


def test_csv_errors_name_file_and_field(tmp_path: Path) -> None:
    _write_csv(tmp_path / "bad.csv", [{"path": "x.png", "label": "1"}])
    with pytest.raises(UserInputError) as info:
        load_classification_data(f"csv:{tmp_path / 'bad.csv'}")
    assert info.value.field == "image_path" and info.value.file == str(tmp_path / "bad.csv")
    _write_csv(tmp_path / "missing.csv", [{"image_path": "nope.png", "label": "1"}])
    with pytest.raises(UserInputError, match="does not exist") as info:
        load_classification_data(f"csv:{tmp_path / 'missing.csv'}")
    assert info.value.field == "image_path"
    with pytest.raises(UserInputError, match="does not exist"):
        load_classification_data(f"csv:{tmp_path / 'absent.csv'}")


def _write_cifar10(directory: Path, per_batch: int = 4) -> None:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        data[0, :1024] = 255  # first image: red channel saturated
        data[0, 1024:] = 0
        batch = {b"data": data, b"labels": [(k + i) % 10 for i in range(per_batch)]}
        with open(directory / name, "wb") as handle:
            pickle.dump(batch, handle)
    with open(directory / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, handle)


def test_cifar10_local_batches(tmp_path: Path) -> None:
    _write_cifar10(tmp_path / "cifar-10-batches-py")
    rgb = load_classification_data(f"cifar10:{tmp_path}", in_chans=3)
    assert len(rgb["train"]) == 20 and len(rgb["test"]) == 4
    assert rgb["train"].class_names[3] == "c3"
    assert rgb["train"].images.shape[1:] == (3, 32, 32)
    first = rgb["train"].images[0]
    assert float(first[0].min()) == 1.0 and float(first[1].max()) == 0.0  # channel order R, G, B
    gray = load_classification_data(f"cifar10:{tmp_path}", in_chans=1)
    assert torch.allclose(gray["train"].images[0], torch.full((1, 32, 32), 0.299))  # luma of pure red
    assert gray["test"].sample_ids[0] == "cifar10-test-00000"


def test_cifar_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="data_batch_1") as info:
        load_classification_data(f"cifar10:{tmp_path}")
    assert info.value.file == str(tmp_path)
    with pytest.raises(UserInputError, match="meta"):
        load_classification_data(f"cifar100:{tmp_path}")


def _write_coco(directory: Path) -> None:
    (directory / "images").mkdir(parents=True)
    images, annotations = [], []
    ann_id = 1
    for image_id in range(1, 7):
        pixels = np.full((60, 90), 0.2)
        pixels[10:20, 10:30] = 0.9  # a "needle" at x 10..30, y 10..20
        write_png16(directory / "images" / f"{image_id}.png", pixels)
        # both conventions of the code base: relative to DIR/images/ and relative to DIR
        name = f"{image_id}.png" if image_id % 2 else f"images/{image_id}.png"
        images.append({"id": image_id, "file_name": name, "width": 90, "height": 60,
                       "patient_id": f"pat{(image_id - 1) // 2}"})
        annotations.append({"id": ann_id, "image_id": image_id, "category_id": 3, "bbox": [10, 10, 20, 10],
                            "area": 200, "iscrowd": 0})
        ann_id += 1
        if image_id % 2:
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": 1,
                                "bbox": [50, 30, 16, 16], "area": 256, "iscrowd": 0})
            ann_id += 1
    categories = [{"id": 1, "name": "sponge"}, {"id": 3, "name": "needle"}, {"id": 4, "name": "blade"}]
    (directory / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def test_rfo_patches_from_coco(tmp_path: Path) -> None:
    _write_coco(tmp_path / "coco")
    splits = load_classification_data(f"rfo-patches:{tmp_path / 'coco'}", image_size=(24, 20), test_fraction=0.34)
    train, test = splits["train"], splits["test"]
    assert train.class_names == ["none", "sponge", "needle"]  # blade has no objects: left out
    everything = {sid: (int(lbl), pid) for part in (train, test)
                  for sid, lbl, pid in zip(part.sample_ids, part.labels, part.patient_ids)}
    assert len(everything) == 6 + 3 + 6  # six needles, three sponges, one background per image
    assert everything["image1-ann1"] == (2, "pat0")
    assert everything["image1-ann2"][0] == 1
    assert everything["image4-bg0"][0] == 0
    assert train.images.shape[1:] == (1, 24, 20)
    assert set(train.patient_ids).isdisjoint(test.patient_ids)
    # the needle patch is centred on the bright object; the background patch avoids it
    needle = (train if "image1-ann1" in train.sample_ids else test)
    patch = needle.images[needle.sample_ids.index("image1-ann1"), 0]
    assert float(patch[12, 10]) > 0.8
    bg_part = train if "image2-bg0" in train.sample_ids else test
    bg = bg_part.images[bg_part.sample_ids.index("image2-bg0"), 0]
    assert float(bg.max()) < 0.3


def test_rfo_patches_near_the_border_are_shifted_not_padded(tmp_path: Path) -> None:
    directory = tmp_path / "edge"
    (directory / "images").mkdir(parents=True)
    pixels = np.full((40, 70), 0.3)
    pixels[0:6, 60:70] = 1.0  # an object in the top-right corner: x 60..70, y 0..6
    write_png16(directory / "images" / "1.png", pixels)
    write_png16(directory / "images" / "2.png", np.full((40, 70), 0.3))  # a second patient, no object
    coco = {"images": [{"id": 1, "file_name": "images/1.png", "width": 70, "height": 40},
                       {"id": 2, "file_name": "images/2.png", "width": 70, "height": 40}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [60, 0, 10, 6], "area": 60}],
            "categories": [{"id": 3, "name": "needle"}]}
    (directory / "annotations.json").write_text(json.dumps(coco))
    splits = load_classification_data(f"rfo-patches:{directory}", image_size=(16, 16), test_fraction=0.5)
    everything = {sid: img for part in splits.values() for sid, img in zip(part.sample_ids, part.images)}
    patch = everything["image1-ann1"][0]
    # side = max(16, 1.5 * 10) = 16 source pixels: window x 54..70, y 0..16 -> object in its top-right corner
    assert float(patch.min()) >= 0.29  # no black padding anywhere
    assert float(patch[0, -1]) > 0.95 and float(patch[-1, 0]) < 0.31


def test_rfo_patches_missing_annotations_or_images(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="annotations.json"):
        load_classification_data(f"rfo-patches:{tmp_path}")
    _write_coco(tmp_path / "coco")
    (tmp_path / "coco" / "images" / "3.png").unlink()
    with pytest.raises(UserInputError, match="not found") as info:
        load_classification_data(f"rfo-patches:{tmp_path / 'coco'}")
    assert info.value.field == "images.file_name" and info.value.value == "3.png"


@pytest.mark.parametrize("spec", ["mnist", "folder:", "digits:x", "imagenet:/data"])
def test_unknown_or_incomplete_spec(spec: str) -> None:
    with pytest.raises(UserInputError) as info:
        load_classification_data(spec)
    assert info.value.field == "dataset"


def test_bad_channels() -> None:
    with pytest.raises(UserInputError, match="in_chans"):
        load_classification_data("digits", in_chans=2)


def _write_dicom(path: Path, pixels: np.ndarray, patient: str) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # computed radiography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PhotometricInterpretation = "CR", patient, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_folder_of_dicoms_groups_by_pseudonymous_patient(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for patient in ("MRN-001", "MRN-002", "MRN-003", "MRN-004"):
        for label in ("needle", "none"):
            (tmp_path / "set" / label).mkdir(parents=True, exist_ok=True)
            _write_dicom(tmp_path / "set" / label / f"{patient}.dcm", rng.integers(0, 4096, (17, 11)), patient)
    splits = load_classification_data(f"folder:{tmp_path / 'set'}", test_fraction=0.5, seed=0)
    train, test = splits["train"], splits["test"]
    patients = train.patient_ids + test.patient_ids
    ids = train.sample_ids + test.sample_ids
    assert len(set(patients)) == 4
    assert not any(p.startswith("MRN") for p in patients)  # a pseudonym, never the DICOM PatientID
    key = dict(zip(ids, patients))
    assert key["needle/MRN-002.dcm"] == key["none/MRN-002.dcm"] != key["none/MRN-003.dcm"]
    assert set(train.patient_ids).isdisjoint(test.patient_ids)
    assert len(test) == 4 and test.class_counts().tolist() == [2, 2]


@pytest.mark.slow
def test_rfo_patches_from_the_physics_generator(tmp_path: Path) -> None:
    from synth.physics.generate import PhysicsConfig, generate_dataset

    generate_dataset(tmp_path / "phys", n=6, seed=0, config=PhysicsConfig(size=192, n_energy_bins=4),
                     progress=False)
    coco = json.loads((tmp_path / "phys" / "annotations.json").read_text())
    splits = load_classification_data(f"rfo-patches:{tmp_path / 'phys'}", test_fraction=0.34)
    everything = [sid for part in splits.values() for sid in part.sample_ids]
    assert len(everything) == len(coco["annotations"]) + len(coco["images"])  # every object + one background each
    assert splits["train"].class_names[0] == "none"
    assert splits["train"].images.shape[1:] == (1, 64, 64)
    assert set(splits["train"].patient_ids).isdisjoint(splits["test"].patient_ids)


def test_package_keeps_its_public_names_and_one_module_per_job() -> None:
    """``vision_unlearn.data`` re-exports the container, the splits and the source constants."""
    import vision_unlearn.data as data
    from vision_unlearn.data import container, rfo_patches, sources, splits
    from vision_unlearn.image_set import ImageSet

    assert data.ClassificationData is container.ClassificationData
    assert data.ClassificationDataset is container.ClassificationDataset
    assert data.grouped_stratified_split is splits.grouped_stratified_split
    assert data.DIGITS_PATIENT_BLOCK == sources.DIGITS_PATIENT_BLOCK
    assert data.RFO_BACKGROUND_CLASS == rfo_patches.RFO_BACKGROUND_CLASS == "none"
    assert issubclass(data.ClassificationData, ImageSet)
    tiny = _tiny()
    assert (len(tiny), tiny.num_classes, tiny.in_chans, tiny.image_size) == (6, 3, 1, (17, 11))
    with pytest.raises(ValueError, match="sample_ids must be unique"):
        ClassificationData(images=tiny.images, labels=tiny.labels, sample_ids=["s"] * 6,
                           patient_ids=tiny.patient_ids, class_names=tiny.class_names)
