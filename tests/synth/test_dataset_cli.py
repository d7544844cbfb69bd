"""End-to-end: the rfo-synth physics / preview commands, COCO validity, determinism, shards, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rfo_toolkit.cli import rfo_synth_main as main

ARGS = ["--imgsz", "160", "--max-objects", "2", "--negative-fraction", "0.2", "--no-progress"]


def _run(out, *extra) -> int:
    return main(["physics", "--n", "4", "--out", str(out), "--seed", "11", *ARGS, *extra])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "full"
    assert _run(out) == 0
    return out


def test_coco_is_valid_and_labels_match_masks(dataset) -> None:
    from pycocotools.coco import COCO

    coco = COCO(str(dataset / "annotations.json"))
    assert len(coco.imgs) == 4
    assert len(coco.anns) > 0
    for ann in coco.anns.values():
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        assert mask.sum() == ann["area"] > 0
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["iscrowd"] == 0 and ann["supercategory"] in ("critical", "non_critical")
        assert ann["material"] and ann["object_params"]
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["config"]["size"] == 160 and manifest["libraries"]["xraydb"]
    from rfo_bench.io.images import read_image

    image = read_image(dataset / coco.imgs[1]["file_name"])
    assert image.bits_stored == 16 and image.shape == (160, 160)


def test_same_seed_is_byte_identical_and_shards_union_equals_full(dataset, tmp_path) -> None:
    again = tmp_path / "again"
    assert _run(again, "--workers", "2") == 0
    for name in ("annotations.json", "images/0000000.png", "images/0000003.png"):
        assert (again / name).read_bytes() == (dataset / name).read_bytes()
    full = json.loads((dataset / "annotations.json").read_text())
    images, annotations = [], []
    for k in range(2):
        shard = tmp_path / f"shard{k}"
        assert _run(shard, "--shard", f"{k}/2") == 0
        doc = json.loads((shard / "annotations.json").read_text())
        images += doc["images"]
        annotations += doc["annotations"]
        for record in doc["images"]:
            assert (shard / record["file_name"]).read_bytes() == (dataset / record["file_name"]).read_bytes()
    assert sorted(images, key=lambda r: r["id"]) == full["images"]
    assert sorted(annotations, key=lambda a: a["id"]) == sorted(full["annotations"], key=lambda a: a["id"])
    from synth.export import merge_coco

    merged = merge_coco([json.loads((tmp_path / f"shard{k}" / "annotations.json").read_text()) for k in range(2)])
    assert merged["images"] == full["images"] and merged["categories"] == full["categories"]
    assert merged["annotations"] == sorted(full["annotations"], key=lambda a: a["id"])


def test_preview(dataset, tmp_path) -> None:
    out = tmp_path / "sheet.png"
    assert main(["preview", str(dataset), "--out", str(out), "--imgsz", "64"]) == 0
    from PIL import Image

    with Image.open(out) as sheet:
        assert sheet.size == (4 * 64, 64)  # 4 images, 4 columns
        rgb = np.asarray(sheet.convert("RGB")).astype(int)
    coco = json.loads((dataset / "annotations.json").read_text())
    for k in range(min(4, len(coco["images"]))):  # every tile shows a radiograph, not a blank square
        tile = rgb[:, 64 * k:64 * (k + 1)]
        assert tile.std() > 5, f"tile {k} is blank"
    # boxes are drawn in colour (red critical, blue other) on grey radiographs: coloured pixels exist
    # exactly when one of the shown images has an object
    shown = {r["id"] for r in coco["images"][:4]}
    coloured = np.abs(rgb[..., 0] - rgb[..., 2]) > 60
    assert coloured.any() == any(a["image_id"] in shown for a in coco["annotations"])
    assert main(["preview", str(dataset), "--out", str(out), "--imgsz", "64"]) == 2  # no silent overwrite
    assert main(["preview", str(dataset), "--out", str(out), "--imgsz", "64", "--overwrite"]) == 0
    crops = tmp_path / "crops.png"
    assert main(["preview", str(dataset), "--crops", "--n", "3", "--columns", "3", "--out", str(crops),
                 "--imgsz", "48"]) == 0
    with Image.open(crops) as sheet:
        assert sheet.size == (3 * 48, 48)
        crop_rgb = np.asarray(sheet.convert("RGB")).astype(int)
    assert all(crop_rgb[:, 48 * k:48 * (k + 1)].std() > 5 for k in range(3))
    assert (np.abs(crop_rgb[..., 0] - crop_rgb[..., 2]) > 60).any()  # each close-up shows its box
    assert main(["preview", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("extra,needle", [
    (["--shard", "3/2"], "shard"),
    (["--classes", "teapot"], "unknown RFO class"),
    (["--backgrounds", "/nonexistent/x.dcm"], "does not exist"),
])
def test_bad_input_exit_2_no_partial_dataset(tmp_path, capsys, extra, needle) -> None:
    out = tmp_path / "bad"
    assert _run(out, *extra) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()
    assert not any(p.name.startswith(".bad") for p in tmp_path.iterdir())


def test_bad_mesh_folder_and_ct_without_spacing(tmp_path, capsys) -> None:
    import nibabel as nib

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    (meshes / "needle_x.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")  # a single open triangle
    assert _run(tmp_path / "o1", "--objects", str(meshes)) == 2
    assert "watertight" in capsys.readouterr().err
    import trimesh

    (meshes / "needle_x.obj").unlink()
    trimesh.creation.capsule(radius=0.4, height=12).export(meshes / "rod.stl")
    (meshes / "objects.yaml").write_text("rod.stl: {class: needle, material: kryptonite}\n")
    assert _run(tmp_path / "o1", "--objects", str(meshes)) == 2
    assert "unknown material" in capsys.readouterr().err
    (meshes / "objects.yaml").write_text("rod.stl: {class: needle, material: titanium}\n")
    # A 0.8 mm rod on 160² pixels (~2.2 mm) is below visibility; this checks the mesh road, not visibility.
    assert _run(tmp_path / "o3", "--objects", str(meshes), "--classes", "needle", "--negative-fraction", "0",
                "--label-min-cnr", "0") == 0
    annotations = json.loads((tmp_path / "o3" / "annotations.json").read_text())["annotations"]
    assert annotations and all(a["object_params"] == {"mesh": "rod"} and a["material"] == "titanium"
                               for a in annotations)
    ct = tmp_path / "ct.nii"
    image = nib.Nifti1Image(np.zeros((8, 7, 6), dtype=np.int16), np.eye(4))
    image.header.set_zooms((0.0, 0.0, 0.0))
    nib.save(image, ct)
    assert _run(tmp_path / "o2", "--mode", "ct", "--backgrounds", str(ct)) == 2
    assert "spacing" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def _synthetic_ct(path) -> None:
    """A 48x40x32 mm chest-like phantom: water body, lungs, and a bone block on the patient's right."""
    import nibabel as nib

    hu = np.full((48, 40, 32), -1000.0, dtype=np.float32)
    x, y = np.meshgrid(np.arange(48) - 23.5, np.arange(40) - 19.5, indexing="ij")
    body = (x / 22.0) ** 2 + (y / 17.0) ** 2 < 1.0
    hu[body, :] = 40.0
    hu[30:44, 12:28, 4:28] = 900.0  # high RAS x = patient's right
    nib.save(nib.Nifti1Image(hu, np.diag([1.0, 1.0, 1.0, 1.0])), path)


def test_ct_mode_labels_and_pa_orientation(tmp_path) -> None:
    from pycocotools.coco import COCO

    from rfo_bench.io.images import read_image

    ct = tmp_path / "phantom.nii.gz"
    _synthetic_ct(ct)
    out = tmp_path / "ct"
    code = main(["physics", "--n", "3", "--out", str(out), "--seed", "2", "--mode", "ct", "--backgrounds", str(ct),
                 "--imgsz", "64", "--negative-fraction", "0", "--max-objects", "1", "--classes", "needle", "clamp",
                 "--off", "noise", "--no-progress"])
    assert code == 0
    coco = COCO(str(out / "annotations.json"))
    assert len(coco.anns) >= 1
    image = read_image(out / coco.imgs[1]["file_name"]).pixels
    # PA display: the patient's right (the bone block) on the image left.
    assert image[:, :28].mean() > image[:, 36:].mean() + 0.05


def test_public_names_load_on_first_use() -> None:
    import subprocess
    import sys

    code = ("import sys, synth; assert 'numpy' not in sys.modules and 'torch' not in sys.modules;"
            "from synth import PhysicsConfig, generate_dataset; import synth.physics.generate as g;"
            "assert generate_dataset is g.generate_dataset and PhysicsConfig().size > 0;"
            "assert sorted(synth.__all__) == synth.__all__ and 'generate_dataset' in synth.__all__")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
