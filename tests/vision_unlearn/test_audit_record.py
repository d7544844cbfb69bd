"""Audit records: content, absence of raw identifiers, atomic writing, verification and tampering."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from toolkit_core.errors import UserInputError
from vision_unlearn.audit import (
    SCHEMA_VERSION,
    hash_id,
    make_audit_record,
    read_audit_record,
    summarise_forgotten,
    verify_audit_record,
    write_audit_record,
)

SAMPLES = ["patient-JDOE-001/img_07.png", "patient-JDOE-001/img_08.png", "patient-MROE-77/img_01.png"]
PATIENTS = ["MRN-0042", "MRN-0042", "MRN-1337"]


@dataclasses.dataclass(frozen=True)
class _Config:
    epochs: int = 2
    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)


def _checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    before, after = tmp_path / "original.pt", tmp_path / "unlearned.pt"
    before.write_bytes(b"weights before")
    after.write_bytes(b"weights after")
    return before, after


def _record(tmp_path: Path, **forgotten_kw):
    before, after = _checkpoints(tmp_path)
    kw = {"salt": "fixed-salt"} | forgotten_kw
    forgotten = summarise_forgotten("patient", "MRN-0042,MRN-1337", SAMPLES, PATIENTS, **kw)
    return make_audit_record(
        forgotten=forgotten, method="ofmu", config=_Config(), seed=3,
        metrics={"UA": 12.5, "RA": 99.0, "TA": 97.25, "MIA": float("nan")},
        checkpoint_before=before, checkpoint_after=after, timings_s={"unlearn": 1.5},
        dataset="digits", created_utc=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    )


def test_hash_is_salted_sha256() -> None:
    assert hash_id("s1", "abc") == hashlib.sha256(b"abc:s1").hexdigest()
    assert hash_id("s1", "abc") != hash_id("s1", "abd")


def test_forgotten_summary_counts_and_digests() -> None:
    summary = summarise_forgotten("patient", "MRN-0042", SAMPLES, PATIENTS, salt="k")
    assert summary.sample_count == 3 and summary.patient_count == 2
    assert summary.request_value is None  # a patient id is never kept verbatim
    assert summary.sample_id_sha256 == tuple(sorted(hash_id(s, "k") for s in SAMPLES))
    reordered = summarise_forgotten("patient", "x", SAMPLES[::-1], PATIENTS, salt="k")
    assert reordered.set_sha256 == summary.set_sha256
    assert summarise_forgotten("class", "needle", SAMPLES, PATIENTS, salt="k").request_value == "needle"
    fresh = [summarise_forgotten("ids", None, SAMPLES, PATIENTS) for _ in range(2)]
    assert fresh[0].id_salt != fresh[1].id_salt and len(fresh[0].id_salt) == 32
    with pytest.raises(UserInputError, match="empty"):
        summarise_forgotten("ids", None, [], [])


def test_record_round_trip_without_raw_identifiers(tmp_path: Path) -> None:
    record = _record(tmp_path)
    path = write_audit_record(tmp_path / "audit" / "run.json", record)
    text = path.read_text()
    for raw in [*SAMPLES, *PATIENTS, "JDOE", "MROE"]:
        assert raw not in text
    payload = json.loads(text)
    assert payload["schema_version"] == SCHEMA_VERSION
    assert payload["created_utc"] == "2026-01-02T03:04:05+00:00"
    assert payload["config"] == {"epochs": 2, "lr": 0.01, "betas": [0.9, 0.99]}
    assert payload["metrics"]["MIA"] is None  # non-finite values become null, never invalid JSON
    assert payload["checkpoint_before_sha256"] == hashlib.sha256(b"weights before").hexdigest()
    assert payload["checkpoint_after_sha256"] == hashlib.sha256(b"weights after").hexdigest()
    assert payload["checkpoint_after_name"] == "unlearned.pt"
    assert {"python", "torch", "numpy"} <= set(payload["versions"])
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary file left behind
    assert read_audit_record(path) == record


def test_verify_detects_other_checkpoints_edits_and_missing_ids(tmp_path: Path) -> None:
    record = _record(tmp_path)
    path = write_audit_record(tmp_path / "run.json", record)
    result = verify_audit_record(path, tmp_path / "unlearned.pt", sample_ids=SAMPLES[:1], patient_ids=["MRN-1337"])
    assert result.ok and result.ids_found == 2 and result.ids_checked == 2
    # the original model is not the unlearned one
    assert not verify_audit_record(path, tmp_path / "original.pt").checkpoint_matches
    # an id that was not forgotten is reported missing
    assert not verify_audit_record(path, tmp_path / "unlearned.pt", sample_ids=["someone-else.png"]).ok
    # any edit of the record breaks its digest
    payload = json.loads(path.read_text())
    payload["metrics"]["UA"] = 99.0
    path.write_text(json.dumps(payload))
    assert not verify_audit_record(path, tmp_path / "unlearned.pt").record_intact


def test_secret_salt_is_not_stored(tmp_path: Path) -> None:
    record = _record(tmp_path, salt="hospital-secret", store_salt=False)
    path = write_audit_record(tmp_path / "run.json", record)
    assert "hospital-secret" not in path.read_text()
    with pytest.raises(UserInputError, match="salt"):
        verify_audit_record(path, tmp_path / "unlearned.pt", patient_ids=["MRN-0042"])
    assert verify_audit_record(path, tmp_path / "unlearned.pt", patient_ids=["MRN-0042"],
                               salt="hospital-secret").ok


def test_errors_name_file_and_field(tmp_path: Path) -> None:
    forgotten = summarise_forgotten("class", "3", ["a"], ["p"])
    with pytest.raises(UserInputError) as info:
        make_audit_record(forgotten=forgotten, method="ofmu", config={}, seed=0, metrics={},
                          checkpoint_before=tmp_path / "nope.pt", checkpoint_after=tmp_path / "nope.pt")
    assert info.value.field == "checkpoint_before"
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserInputError, match="not valid JSON"):
        read_audit_record(tmp_path / "broken.json")
    (tmp_path / "partial.json").write_text(json.dumps({"method": "ofmu"}))
    with pytest.raises(UserInputError, match="lacks fields"):
        read_audit_record(tmp_path / "partial.json")
    with pytest.raises(UserInputError, match="does not exist"):
        read_audit_record(tmp_path / "absent.json")
    with pytest.raises(UserInputError, match="request file"):
        summarise_forgotten("ids", None, ["a"], ["p"], request_file=tmp_path / "ids.txt")


def test_record_from_a_resolved_forget_request(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from vision_unlearn.audit import forgotten_from_split
    from vision_unlearn.data import ClassificationData
    from vision_unlearn.forget import resolve_forget

    train = ClassificationData(
        images=torch.zeros(6, 1, 17, 11), labels=torch.tensor([0, 1, 2, 0, 1, 2]),
        sample_ids=[f"img{i}.png" for i in range(6)], patient_ids=["MRN-1", "MRN-1", "MRN-2", "MRN-2", "MRN-3", "MRN-3"],
        class_names=["sponge", "needle", "blade"],
    )
    by_class = forgotten_from_split(resolve_forget("class:needle", train.labels.numpy(), train.sample_ids,
                                                   train.patient_ids, train.class_names), train, salt="s")
    assert by_class.request_value == "needle" and by_class.sample_count == 2 and by_class.patient_count == 2
    assert by_class.sample_id_sha256 == tuple(sorted(hash_id(f"img{i}.png", "s") for i in (1, 4)))
    (tmp_path / "ids.txt").write_text("img0.png\nimg5.png\n")
    by_ids = forgotten_from_split(resolve_forget("ids:ids.txt", train.labels.numpy(), train.sample_ids,
                                                 train.patient_ids, train.class_names, root=tmp_path),
                                  train, salt="s", root=tmp_path)
    assert by_ids.request_value is None
    assert by_ids.request_file_sha256 == hashlib.sha256(b"img0.png\nimg5.png\n").hexdigest()
    assert by_ids.patient_id_sha256 == tuple(sorted(hash_id(p, "s") for p in ("MRN-1", "MRN-3")))
    by_patient = forgotten_from_split(resolve_forget("patient:MRN-2", np.asarray(train.labels), train.sample_ids,
                                                     train.patient_ids, train.class_names), train, salt="s")
    assert by_patient.request_value is None and by_patient.sample_count == 2


def test_record_unlearning_run_in_one_call(tmp_path: Path) -> None:
    import torch

    from vision_unlearn.audit import record_unlearning_run
    from vision_unlearn.data import ClassificationData
    from vision_unlearn.forget import resolve_forget

    train = ClassificationData(
        images=torch.zeros(4, 1, 17, 11), labels=torch.tensor([0, 1, 0, 1]),
        sample_ids=["a", "b", "c", "d"], patient_ids=["P1", "P1", "P2", "P2"], class_names=["x", "y"],
    )
    split = resolve_forget("patient:P2", train.labels.numpy(), train.sample_ids, train.patient_ids,
                           train.class_names)
    before, after = _checkpoints(tmp_path)
    record = record_unlearning_run(
        tmp_path / "audit.json", split=split, train=train, method="salun", config={"lr": 0.01}, seed=1,
        metrics={"UA": 50.0}, checkpoint_before=before, checkpoint_after=after, timings_s={"unlearn": 0.5},
    )
    assert record.forgotten.sample_count == 2 and record.forgotten.patient_count == 1
    assert read_audit_record(tmp_path / "audit.json") == record
    assert verify_audit_record(tmp_path / "audit.json", after, patient_ids=["P2"], sample_ids=["c", "d"]).ok
    assert not verify_audit_record(tmp_path / "audit.json", after, patient_ids=["P1"]).ok
    assert '"P2"' not in (tmp_path / "audit.json").read_text()


def test_artifacts_are_hashed_and_older_records_still_read(tmp_path: Path) -> None:
    before, after = _checkpoints(tmp_path)
    steering = tmp_path / "steering.safetensors"
    steering.write_bytes(b"erasure directions")
    forgotten = summarise_forgotten("class", "needle", SAMPLES, PATIENTS, salt="s")
    record = make_audit_record(forgotten=forgotten, method="steer", config=_Config(), seed=0, metrics={},
                               checkpoint_before=before, checkpoint_after=after, artifacts=[steering])
    assert record.artifacts_sha256 == {"steering.safetensors": hashlib.sha256(b"erasure directions").hexdigest()}
    path = write_audit_record(tmp_path / "run.json", record)
    assert read_audit_record(path) == record and verify_audit_record(path, after).record_intact
    # A record written before the field existed: still readable, still intact, no artifacts.
    payload = json.loads(path.read_text())
    del payload["artifacts_sha256"]
    payload["record_sha256"] = ""
    from vision_unlearn.audit import _record_digest

    payload["record_sha256"] = _record_digest(payload)
    path.write_text(json.dumps(payload))
    assert read_audit_record(path).artifacts_sha256 == {}
    assert verify_audit_record(path, after).record_intact
    with pytest.raises(UserInputError, match="artifacts"):
        make_audit_record(forgotten=forgotten, method="steer", config=_Config(), seed=0, metrics={},
                          checkpoint_before=before, checkpoint_after=after, artifacts=[tmp_path / "missing.bin"])
