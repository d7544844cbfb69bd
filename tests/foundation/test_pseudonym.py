"""Keyed patient pseudonyms: not reproducible without the key, stable with it, a key file kept private."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.foundation.dicom_files import write_dicom
from toolkit_core.errors import UserInputError
from toolkit_core.pseudonym import (
    KEY_ENV,
    KEY_FILE_ENV,
    PSEUDONYM_HEX_CHARS,
    file_name_pseudonym,
    key_file_path,
    load_key,
    patient_pseudonym,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
PATIENT = "004711"  # the id the issue recovered from splits/*.json in 0.01 s


@pytest.fixture
def key_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No key in the environment; the key file lives in a fresh folder (never the real home)."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "cache" / "pseudonym.key"))
    return tmp_path / "cache"


def _dicom(path: Path, patient_id: str) -> Path:
    return write_dicom(path, rows=17, columns=11, pixel_data=np.zeros((17, 11), dtype=np.uint16).tobytes(),
                       patient_id=patient_id, BitsStored=12)


def test_same_key_same_pseudonym_other_key_other_pseudonym() -> None:
    first = patient_pseudonym(PATIENT, key=KEY_A)
    assert first == patient_pseudonym(PATIENT, key=KEY_A) == patient_pseudonym(f" {PATIENT} ", key=KEY_A)
    assert len(first) == PSEUDONYM_HEX_CHARS == 32 and int(first, 16) >= 0  # 128 bits kept
    assert first != patient_pseudonym(PATIENT, key=KEY_B)
    assert first != patient_pseudonym("004712", key=KEY_A)
    # domains are separated: a file called like a patient id gets an unrelated pseudonym
    assert not file_name_pseudonym(PATIENT, key=KEY_A).startswith(first)


def test_dicom_patient_key_is_not_found_by_brute_force_without_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rfo_bench.io.formats import dicom_patient_key
    from rfo_bench.io.images import read_image

    path = _dicom(tmp_path / "p.dcm", PATIENT)
    monkeypatch.setenv(KEY_ENV, KEY_A.hex())
    key = read_image(path).patient_key
    assert key == dicom_patient_key(path) == patient_pseudonym(PATIENT, key=KEY_A)
    monkeypatch.setenv(KEY_ENV, KEY_B.hex())
    assert read_image(path).patient_key != key  # another site, another pseudonym
    # the attack of the issue: every 6-digit id through the former public-salt scheme
    public_salt = "rfo-toolkit/patient"
    digests = (hashlib.sha256(f"{public_salt}:{k:06d}".encode()).hexdigest() for k in range(1_000_000))
    assert not any(d[:16] == key[:16] for d in digests)
    assert hashlib.sha256(f"{public_salt}:{PATIENT}".encode()).hexdigest()[:16] != key[:16]


def test_key_from_environment_as_hex_or_base64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY_A.hex())
    assert load_key() == KEY_A
    monkeypatch.setenv(KEY_ENV, base64.b64encode(KEY_A).decode())
    assert load_key() == KEY_A
    monkeypatch.setenv(KEY_ENV, base64.urlsafe_b64encode(KEY_A).decode().rstrip("="))
    assert load_key() == KEY_A
    monkeypatch.setenv(KEY_ENV, KEY_A[:16].hex())
    with pytest.raises(UserInputError, match="too short") as info:
        load_key()
    assert info.value.field == KEY_ENV
    monkeypatch.setenv(KEY_ENV, "not a key!")
    with pytest.raises(UserInputError, match="hex or base64"):
        load_key()


def test_key_file_is_created_private_once_and_reused(key_dir: Path) -> None:
    path = key_file_path()
    assert path == key_dir / "pseudonym.key"  # the suite never writes to $HOME
    assert not path.exists()
    first = patient_pseudonym(PATIENT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(bytes.fromhex(path.read_text().strip())) == 32
    assert [p.name for p in key_dir.iterdir()] == ["pseudonym.key"]  # no staging file left
    assert patient_pseudonym(PATIENT) == first  # the same key file: the same pseudonym
    assert patient_pseudonym(PATIENT) == patient_pseudonym(PATIENT, key=load_key())


def test_existing_key_file_is_used_and_never_overwritten(key_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = key_dir.parent / "site.key"
    shared.write_text(KEY_A.hex() + "\n")
    shared.chmod(0o600)
    monkeypatch.setenv(KEY_FILE_ENV, str(shared))
    assert key_file_path() == shared and load_key() == KEY_A
    assert patient_pseudonym(PATIENT) == patient_pseudonym(PATIENT, key=KEY_A)
    assert shared.read_text() == KEY_A.hex() + "\n"


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_file_readable_by_others_is_refused(key_dir: Path, mode: int) -> None:
    key_dir.mkdir()
    path = key_dir / "pseudonym.key"
    path.write_text(KEY_A.hex())
    path.chmod(mode)
    with pytest.raises(UserInputError, match="chmod 600") as info:
        patient_pseudonym(PATIENT)
    assert str(path) in str(info.value)


def test_short_key_file_is_refused(key_dir: Path) -> None:
    key_dir.mkdir()
    path = key_dir / "pseudonym.key"
    path.write_text(KEY_A[:31].hex())
    path.chmod(0o600)
    with pytest.raises(UserInputError, match="too short"):
        load_key()


def test_default_key_location_is_the_user_config_not_the_cache(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("RFO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert key_file_path() == tmp_path / "config" / "rfo-toolkit" / "pseudonym.key"


def test_no_key_is_read_or_written_at_import(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, KEY_FILE_ENV)}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cache")
    code = "import toolkit_core.pseudonym, rfo_bench.io.images, rfo_bench.io.formats, rfo_bench.splits"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert not (tmp_path / "cache").exists()


def test_file_name_pseudonym_drops_every_part_of_the_name() -> None:
    name = file_name_pseudonym("Smith_John/Smith_John_CXR.DCM", key=KEY_A)
    assert name.endswith(".dcm") and len(name) == PSEUDONYM_HEX_CHARS + 4
    assert "Smith" not in name and "John" not in name and "/" not in name
    assert name == file_name_pseudonym("Smith_John\\Smith_John_CXR.DCM", key=KEY_A)
    assert name != file_name_pseudonym("Smith_John/Smith_John_CXR.DCM", key=KEY_B)


def _named_dataset(root: Path):
    from rfo_bench.io.images import write_png16
    from rfo_bench.io.records import Category, DetectionDataset, ImageRecord, RFOObject

    records = []
    for k in range(8):
        name = f"Smith_John_{k}/Smith_John_CXR_{k}.png"
        write_png16(root / name, np.zeros((11, 17)))
        objects = (RFOObject((1.0, 2.0, 9.0, 7.0), 1),) if k % 2 else ()
        records.append(ImageRecord(name, k + 1, 17, 11, patient_id=f"MRN-{k // 2:04d}", objects=objects))
    return DetectionDataset(root, tuple(records), (Category(1, "needle", True),))


def test_pseudonymised_dataset_keeps_ids_annotations_and_patients(tmp_path: Path) -> None:
    from rfo_bench.splits import pseudonymised_dataset, split_dataset

    dataset = _named_dataset(tmp_path / "data")
    shared = pseudonymised_dataset(dataset, root=tmp_path / "out", key=KEY_A)
    assert shared.root == (tmp_path / "out").resolve()
    assert [r.image_id for r in shared.images] == [r.image_id for r in dataset.images]
    assert [r.objects for r in shared.images] == [r.objects for r in dataset.images]
    for original, copy in zip(dataset.images, shared.images):
        assert copy.file_name == file_name_pseudonym(original.file_name, key=KEY_A)
        assert copy.patient_id == patient_pseudonym(original.patient_id, key=KEY_A)
    # the same patients: every split of the copy keeps each patient's images together
    split = split_dataset(shared, {"train": 0.5, "test": 0.5}, seed=1)
    side = {i: name for name, ids in split.items() for i in ids}
    assert all(side[2 * k + 1] == side[2 * k + 2] for k in range(4))
    assert pseudonymised_dataset(dataset, key=KEY_B).images != shared.images


def test_split_command_writes_pseudonymised_names_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rfo_bench.io.coco import write_coco
    from rfo_toolkit.cli import rfo_bench_main as main

    monkeypatch.setenv(KEY_ENV, KEY_A.hex())
    dataset = _named_dataset(tmp_path / "data")
    write_coco(dataset, tmp_path / "data" / "gt.json")
    out = tmp_path / "Smith_John_splits"
    assert main(["split", str(tmp_path / "data" / "gt.json"), "--out", str(out), "--seed", "2",
                 "--pseudonymise-names"]) == 0
    plain = tmp_path / "plain"
    assert main(["split", str(tmp_path / "data" / "gt.json"), "--out", str(plain), "--seed", "2"]) == 0
    assert json.loads((out / "splits.json").read_text()) == json.loads((plain / "splits.json").read_text())
    for written in sorted(out.glob("[!.]*.json")):  # the split files, not the hidden ownership marker
        text = written.read_text()
        assert "Smith" not in text and "John" not in text and "MRN-" not in text, written.name
    images = {e["id"]: e for f in out.glob("[!.]*.json") if f.name != "splits.json"
              for e in json.loads(f.read_text())["images"]}
    assert len(images) == len(dataset.images)
    for record in dataset.images:
        assert images[record.image_id]["file_name"] == file_name_pseudonym(record.file_name, key=KEY_A)
        assert images[record.image_id]["patient_id"] == patient_pseudonym(record.patient_id, key=KEY_A)
    # default: the original names, so that the split files still point at the images
    assert "Smith_John_CXR_0.png" in "".join(f.read_text() for f in plain.glob("*.json"))


def test_audit_patient_digests_need_the_site_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from vision_unlearn.audit import hash_id, keyed_hash_id, summarise_forgotten

    monkeypatch.setenv(KEY_ENV, KEY_A.hex())
    summary = summarise_forgotten("patient", None, ["img.png"], [PATIENT])
    assert summary.id_digest == "hmac-sha256" and summary.id_salt is not None
    salt = summary.id_salt
    assert summary.patient_id_sha256 == (keyed_hash_id(PATIENT, salt, key=KEY_A),)
    # the salt is in the record, yet trying every 6-digit id without the key finds nothing
    listed = set(summary.patient_id_sha256)
    assert not any(hash_id(f"{k:06d}", salt) in listed for k in range(1_000_000))
    assert keyed_hash_id(PATIENT, salt, key=KEY_B) not in listed


def test_convert_writes_pseudonymised_names_on_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    from rfo_bench.io.coco import read_coco, write_coco
    from rfo_toolkit.cli import rfo_bench_main as main

    monkeypatch.setenv(KEY_ENV, KEY_A.hex())
    dataset = _named_dataset(tmp_path / "data")
    dataset = dataset.with_images(replace(r, width=None, height=None) for r in dataset.images)  # sizes unknown
    write_coco(dataset, tmp_path / "data" / "gt.json")
    gt = str(tmp_path / "data" / "gt.json")
    assert main(["convert", gt, "--to", "coco", "--out", str(tmp_path / "shared.json"), "--pseudonymise-names"]) == 0
    assert main(["convert", gt, "--to", "csv", "--out", str(tmp_path / "shared.csv"), "--with-patient",
                 "--pseudonymise-names"]) == 0
    for name in ("shared.json", "shared.csv"):
        text = (tmp_path / name).read_text()
        assert "Smith" not in text and "John" not in text and "MRN-" not in text and "data" not in text, name
    shared = read_coco(tmp_path / "shared.json")
    assert [(r.width, r.height) for r in shared.images] == [(17, 11)] * len(dataset.images)  # from the real files
    assert [r.file_name for r in shared.images] == [file_name_pseudonym(r.file_name, key=KEY_A)
                                                    for r in dataset.images]
    capsys.readouterr()
    assert main(["convert", gt, "--to", "yolo", "--out", str(tmp_path / "yolo"), "--pseudonymise-names"]) == 2
    assert "--pseudonymise-names" in capsys.readouterr().err and not (tmp_path / "yolo").exists()


def test_reading_a_dicom_needs_no_key_until_a_pseudonym_is_asked_for(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    key_file = tmp_path / "keys" / "pseudonym.key"
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    from rfo_bench.io.images import read_image

    image = read_image(_dicom(tmp_path / "a.dcm", PATIENT))
    assert not key_file.exists()  # synthesis over a film never creates the site's secret
    assert "004711" not in repr(image)
    assert image.patient_key == patient_pseudonym(PATIENT) and key_file.exists()
