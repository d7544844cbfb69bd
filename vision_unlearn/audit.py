"""Audit records of unlearning runs: the JSON a hospital files with a deletion request.

An :class:`AuditRecord` states *what* was forgotten (the request kind, the number of samples and
patients, and keyed or salted digests of their ids — never the raw ids), *how* (method, its config and
seed), *with what result* (the metrics), and *which model* (SHA-256 of the checkpoint before and after
unlearning), plus timings, library versions and a UTC timestamp. A digest over the whole record
(:attr:`AuditRecord.record_sha256`) reveals later edits of the file.

Id digests are keyed by default: ``HMAC-SHA256(site key, salt + ":" + id)`` with the site's pseudonym
key (:mod:`toolkit_core.pseudonym`) and a salt drawn at random per record (``id_digest: "hmac-sha256"``).
Patient ids and MRNs are short and can be enumerated; with the key no reader of the record can try
them all, while the stored salt keeps two records from being linked. Whoever holds the key (the site,
or whom it shares the key with) and an id can check that the id was included
(:func:`verify_audit_record`). A caller that passes its own ``salt`` gets the unkeyed
``sha256(salt + ":" + id)`` of earlier records (``id_digest: "sha256"``): keep such a salt secret
(``store_salt=False``), because a stored salt lets anyone enumerate short ids. Records without the
``id_digest`` field were written unkeyed.

Raw request values that can identify a person (``patient:ID``, the path of an id file) are not written;
an id file is represented by the SHA-256 of its bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toolkit_core.errors import UserInputError
from toolkit_core.records import environment, jsonable
from toolkit_core.utils import atomic_write_bytes, sha256_file, sha256_text

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the record layout; bumped on incompatible changes."""

VERSIONED_PACKAGES = ("torch", "torchvision", "timm", "numpy", "scikit-learn", "rfo-toolkit")
"""Distributions whose versions every record lists."""

_PUBLIC_VALUE_KINDS = ("class", "random")
"""Request kinds whose value (a class name, a fraction) identifies nobody and is kept verbatim."""


ID_DIGESTS = ("hmac-sha256", "sha256")
"""Digest schemes of :attr:`ForgottenData.id_digest`: keyed with the site's pseudonym key, or unkeyed."""


def hash_id(identifier: str, salt: str) -> str:
    """Salted SHA-256 hex digest of one sample or patient id (the unkeyed ``sha256`` scheme)."""
    return sha256_text(f"{salt}:{identifier}")


def keyed_hash_id(identifier: str, salt: str, *, key: bytes | None = None) -> str:
    """HMAC-SHA256 hex digest of ``salt:id`` under the site's pseudonym key (the ``hmac-sha256`` scheme).

    Args:
        identifier: a sample or patient id.
        salt: the record's salt.
        key: the secret key; default :func:`toolkit_core.pseudonym.load_key`.
    """
    from toolkit_core.pseudonym import load_key

    secret = load_key() if key is None else key
    return hmac.new(secret, f"{salt}:{identifier}".encode(), hashlib.sha256).hexdigest()


def _digest_function(scheme: str):
    if scheme == "sha256":
        return hash_id
    if scheme == "hmac-sha256":
        from toolkit_core.pseudonym import load_key

        key = load_key()  # read once per record, not once per id
        return lambda identifier, salt: keyed_hash_id(identifier, salt, key=key)
    raise UserInputError("unknown id digest scheme; expected " + " or ".join(ID_DIGESTS), field="id_digest",
                         value=scheme)


@dataclasses.dataclass(frozen=True)
class ForgottenData:
    """What was forgotten, without raw identifiers.

    Attributes:
        request_kind: ``class``, ``ids``, ``patient``, ``patients``, ``random`` (or another kind).
        request_value: the class name or fraction for ``class`` / ``random``; ``None`` otherwise.
        request_file_sha256: SHA-256 of the id file of ``ids:FILE`` / ``patients:FILE`` requests.
        sample_count: number of forgotten samples.
        patient_count: number of distinct patients among them.
        id_salt: the salt of the digests, or ``None`` when a secret salt was kept out of the record.
        sample_id_sha256: sorted digests of the forgotten sample ids.
        patient_id_sha256: sorted digests of the distinct patient ids.
        set_sha256: digest of the sorted sample digests: one fingerprint of the whole forget set.
        id_digest: the digest scheme of the ids (:data:`ID_DIGESTS`); ``sha256`` in records written
            before the field existed.
    """

    request_kind: str
    request_value: str | None
    request_file_sha256: str | None
    sample_count: int
    patient_count: int
    id_salt: str | None
    sample_id_sha256: tuple[str, ...]
    patient_id_sha256: tuple[str, ...]
    set_sha256: str
    id_digest: str = "sha256"


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    """One unlearning run, as filed with a deletion request (see the module docstring).

    Attributes:
        schema_version: :data:`SCHEMA_VERSION`.
        created_utc: ISO-8601 UTC timestamp of the record.
        forgotten: :class:`ForgottenData`.
        method: registered method name.
        config: the method's config as a JSON-compatible dict.
        seed: seed of the run.
        metrics: evaluation metrics (UA, RA, TA, MIA, ... in percent).
        checkpoint_before_sha256 / checkpoint_after_sha256: SHA-256 of the model files.
        checkpoint_before_name / checkpoint_after_name: their file names (no directories).
        timings_s: named durations in seconds.
        versions: the run environment: Python, platform, machine, source commit, library versions.
        dataset: a short description of the training data (as given by the caller), or ``None``.
        artifacts_sha256: SHA-256 of further files that carry the forgetting, by file name (e.g. the
            steering state of a ``steer`` run, whose weights do not change). Absent in older records.
        record_sha256: SHA-256 of the canonical JSON of every other field.
    """

    schema_version: int
    created_utc: str
    forgotten: ForgottenData
    method: str
    config: dict[str, Any]
    seed: int
    metrics: dict[str, Any]
    checkpoint_before_sha256: str
    checkpoint_after_sha256: str
    checkpoint_before_name: str
    checkpoint_after_name: str
    timings_s: dict[str, float]
    versions: dict[str, Any]
    dataset: str | None
    artifacts_sha256: dict[str, str] = dataclasses.field(default_factory=dict)
    record_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        return json.loads(_canonical_json(dataclasses.asdict(self)))


@dataclasses.dataclass(frozen=True)
class AuditVerification:
    """Outcome of :func:`verify_audit_record`.

    Attributes:
        record_intact: the record's digest matches its content (no edits since writing).
        checkpoint_matches: the checkpoint's SHA-256 equals the record's after-unlearning digest.
        checkpoint_sha256: the digest just computed.
        ids_checked / ids_found: how many of the given sample/patient ids were checked / are listed.
    """

    record_intact: bool
    checkpoint_matches: bool
    checkpoint_sha256: str
    ids_checked: int = 0
    ids_found: int = 0

    @property
    def ok(self) -> bool:
        return self.record_intact and self.checkpoint_matches and self.ids_found == self.ids_checked


def _canonical_json(payload: Any) -> str:
    return json.dumps(jsonable(payload), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _record_digest(payload: Mapping[str, Any]) -> str:
    content = {k: v for k, v in payload.items() if k != "record_sha256"}
    return sha256_text(_canonical_json(content))


def library_versions() -> dict[str, Any]:
    """The run environment (:func:`toolkit_core.records.environment`): Python, platform, machine, source
    commit and the :data:`VERSIONED_PACKAGES` versions (``"not installed"`` when absent)."""
    return environment(VERSIONED_PACKAGES)


def _checkpoint_digest(path: str | os.PathLike[str], field: str) -> tuple[str, str]:
    file = Path(path)
    if not file.is_file():
        raise UserInputError("checkpoint file does not exist", file=file, field=field)
    return sha256_file(file), file.name


def summarise_forgotten(
    request_kind: str,
    request_value: str | None,
    sample_ids: Iterable[str],
    patient_ids: Iterable[str],
    *,
    salt: str | None = None,
    store_salt: bool = True,
    request_file: str | os.PathLike[str] | None = None,
    keyed: bool | None = None,
) -> ForgottenData:
    """Describe a forget set without raw identifiers.

    Args:
        request_kind: the request kind (``class``, ``ids``, ``patient``, ``patients``, ``random``).
        request_value: the text after the colon; kept only for ``class`` and ``random``.
        sample_ids: ids of the forgotten samples.
        patient_ids: patient ids of the forgotten samples (one per sample, repeats allowed).
        salt: digest salt; default a fresh random 128-bit salt.
        store_salt: write the salt into the record (set False for a secret salt).
        request_file: the id file of a file-based request; its bytes are hashed.
        keyed: digest with the site's pseudonym key (``hmac-sha256``); default keyed unless ``salt``
            is given (see the module docstring).

    Raises:
        UserInputError: an empty forget set, a missing request file, or an unusable pseudonym key.
    """
    samples = sorted({str(s) for s in sample_ids})
    if not samples:
        raise UserInputError("the forget set is empty; nothing to record", field="forget")
    patients = sorted({str(p) for p in patient_ids})
    used_salt = secrets.token_hex(16) if salt is None else str(salt)
    scheme = "hmac-sha256" if (salt is None if keyed is None else keyed) else "sha256"
    hash_one = _digest_function(scheme)
    sample_digests = tuple(sorted(hash_one(s, used_salt) for s in samples))
    patient_digests = tuple(sorted(hash_one(p, used_salt) for p in patients))
    file_digest = None
    if request_file is not None:
        file = Path(request_file)
        if not file.is_file():
            raise UserInputError("forget request file does not exist", file=file, field="forget")
        file_digest = sha256_file(file)
    kind = str(request_kind)
    return ForgottenData(
        request_kind=kind,
        request_value=str(request_value) if kind in _PUBLIC_VALUE_KINDS and request_value is not None else None,
        request_file_sha256=file_digest,
        sample_count=len(samples),
        patient_count=len(patients),
        id_salt=used_salt if store_salt else None,
        sample_id_sha256=sample_digests,
        patient_id_sha256=patient_digests,
        set_sha256=sha256_text("\n".join(sample_digests)),
        id_digest=scheme,
    )


def forgotten_from_split(
    split: Any,
    train: Any,
    *,
    salt: str | None = None,
    store_salt: bool = True,
    root: str | os.PathLike[str] | None = None,
) -> ForgottenData:
    """:func:`summarise_forgotten` for a resolved forget request.

    Args:
        split: a :class:`vision_unlearn.forget.ForgetSplit`.
        train: the :class:`vision_unlearn.data.ClassificationData` the split indexes.
        salt, store_salt: see :func:`summarise_forgotten`.
        root: directory a relative id-file path of the request is resolved against.
    """
    rows = [int(i) for i in split.forget_indices]
    request = split.request
    value: str | None = request.value
    if request.kind == "class" and split.forgotten_classes:
        value = ",".join(train.class_names[c] for c in split.forgotten_classes)
    request_file = None
    if request.kind in ("ids", "patients"):
        request_file = Path(request.value)
        if root is not None and not request_file.is_absolute():
            request_file = Path(root) / request_file
    return summarise_forgotten(
        request.kind, value, [train.sample_ids[i] for i in rows], [train.patient_ids[i] for i in rows],
        salt=salt, store_salt=store_salt, request_file=request_file,
    )


def make_audit_record(
    *,
    forgotten: ForgottenData,
    method: str,
    config: Any,
    seed: int,
    metrics: Mapping[str, Any],
    checkpoint_before: str | os.PathLike[str],
    checkpoint_after: str | os.PathLike[str],
    timings_s: Mapping[str, float] | None = None,
    dataset: str | None = None,
    created_utc: datetime | None = None,
    artifacts: Sequence[str | os.PathLike[str]] = (),
) -> AuditRecord:
    """Assemble an :class:`AuditRecord`, hashing both checkpoints.

    Args:
        forgotten: from :func:`summarise_forgotten`.
        method: the method's registered name.
        config: its config (a dataclass or a mapping).
        seed: seed of the run.
        metrics: evaluation metrics.
        checkpoint_before: model file before unlearning (the original model).
        checkpoint_after: model file after unlearning.
        timings_s: named durations in seconds (e.g. ``{"unlearn": 12.3, "evaluate": 1.2}``).
        dataset: short description of the training data.
        created_utc: timestamp; default now.
        artifacts: further files the unlearned model needs (hashed by file name; see
            :attr:`AuditRecord.artifacts_sha256`).
    """
    artifact_digests = dict(_checkpoint_digest(path, "artifacts")[::-1] for path in artifacts)
    before_sha, before_name = _checkpoint_digest(checkpoint_before, "checkpoint_before")
    after_sha, after_name = _checkpoint_digest(checkpoint_after, "checkpoint_after")
    when = (created_utc or datetime.now(timezone.utc)).astimezone(timezone.utc)
    record = AuditRecord(
        schema_version=SCHEMA_VERSION,
        created_utc=when.isoformat(timespec="seconds"),
        forgotten=forgotten,
        method=str(method),
        config=jsonable(config),
        seed=int(seed),
        metrics=jsonable(dict(metrics)),
        checkpoint_before_sha256=before_sha,
        checkpoint_after_sha256=after_sha,
        checkpoint_before_name=before_name,
        checkpoint_after_name=after_name,
        timings_s={str(k): float(v) for k, v in (timings_s or {}).items()},
        versions=library_versions(),
        dataset=dataset,
        artifacts_sha256=artifact_digests,
    )
    if not isinstance(record.config, dict):
        raise TypeError(f"config must be a dataclass or a mapping, got {type(config).__name__}")
    payload = json.loads(_canonical_json(dataclasses.asdict(record)))
    return dataclasses.replace(record, record_sha256=_record_digest(payload))


def write_audit_record(path: str | os.PathLike[str], record: AuditRecord) -> Path:
    """Write ``record`` as indented JSON, atomically (temporary file + rename)."""
    target = Path(path)
    text = json.dumps(record.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(target, text.encode("utf-8"))
    logger.info("audit record written to %s", target)
    return target


def read_audit_record(path: str | os.PathLike[str]) -> AuditRecord:
    """Read a record written by :func:`write_audit_record`.

    Raises:
        UserInputError: missing file, invalid JSON, or missing / unexpected fields.
    """
    file = Path(path)
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError("audit record does not exist", file=file) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"audit record is not valid JSON: {err}", file=file) from None
    if not isinstance(payload, dict):
        raise UserInputError("audit record must be a JSON object", file=file)
    names = {f.name for f in dataclasses.fields(AuditRecord)}
    payload.setdefault("artifacts_sha256", {})  # records written before the field existed
    missing = sorted(names - set(payload))
    if missing:
        raise UserInputError("audit record lacks fields", file=file, field=missing[0], value=missing)
    forgotten = payload["forgotten"]
    if isinstance(forgotten, dict):
        forgotten.setdefault("id_digest", "sha256")  # records written before keyed digests
    forgotten_names = {f.name for f in dataclasses.fields(ForgottenData)}
    if not isinstance(forgotten, dict) or forgotten_names - set(forgotten):
        raise UserInputError("audit record has an incomplete 'forgotten' section", file=file, field="forgotten")
    values = {k: payload[k] for k in names}
    values["forgotten"] = ForgottenData(**{
        k: tuple(v) if k.endswith("_sha256") and isinstance(v, list) else v
        for k, v in forgotten.items() if k in forgotten_names
    })
    return AuditRecord(**values)


def verify_audit_record(
    path: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    *,
    sample_ids: Iterable[str] = (),
    patient_ids: Iterable[str] = (),
    salt: str | None = None,
) -> AuditVerification:
    """Re-hash ``checkpoint`` and the record; optionally check ids appear among the digests.

    Args:
        path: the audit record.
        checkpoint: the model file that is claimed to be the unlearned model.
        sample_ids, patient_ids: ids whose forgetting should be confirmed.
        salt: the secret salt when the record does not store it.

    Raises:
        UserInputError: unreadable record, missing checkpoint, or ids to check without a salt.
    """
    file = Path(path)
    record = read_audit_record(file)
    intact = _record_digest(json.loads(file.read_text(encoding="utf-8"))) == record.record_sha256
    digest, _ = _checkpoint_digest(checkpoint, "checkpoint")
    wanted_samples = [str(s) for s in sample_ids]
    wanted_patients = [str(p) for p in patient_ids]
    found = 0
    if wanted_samples or wanted_patients:
        used_salt = salt if salt is not None else record.forgotten.id_salt
        if used_salt is None:
            raise UserInputError("the record does not store its salt; pass the secret salt to check ids",
                                 file=file, field="id_salt")
        hash_one = _digest_function(record.forgotten.id_digest)
        listed_samples = set(record.forgotten.sample_id_sha256)
        listed_patients = set(record.forgotten.patient_id_sha256)
        found = sum(hash_one(s, used_salt) in listed_samples for s in wanted_samples)
        found += sum(hash_one(p, used_salt) in listed_patients for p in wanted_patients)
    return AuditVerification(
        record_intact=intact,
        checkpoint_matches=digest == record.checkpoint_after_sha256,
        checkpoint_sha256=digest,
        ids_checked=len(wanted_samples) + len(wanted_patients),
        ids_found=found,
    )


def record_unlearning_run(
    path: str | os.PathLike[str],
    *,
    split: Any,
    train: Any,
    method: str,
    config: Any,
    seed: int,
    metrics: Mapping[str, Any],
    checkpoint_before: str | os.PathLike[str],
    checkpoint_after: str | os.PathLike[str],
    timings_s: Mapping[str, float] | None = None,
    dataset: str | None = None,
    salt: str | None = None,
    store_salt: bool = True,
    root: str | os.PathLike[str] | None = None,
) -> AuditRecord:
    """One call for a finished run: summarise the forget set, hash the checkpoints, write the JSON.

    Args:
        path: where the record goes (written atomically).
        split: the :class:`vision_unlearn.forget.ForgetSplit` that was forgotten.
        train: the :class:`vision_unlearn.data.ClassificationData` it indexes.
        method, config, seed, metrics, checkpoint_before, checkpoint_after, timings_s, dataset: see
            :func:`make_audit_record`.
        salt, store_salt, root: see :func:`forgotten_from_split`.

    Returns:
        The record written.
    """
    record = make_audit_record(
        forgotten=forgotten_from_split(split, train, salt=salt, store_salt=store_salt, root=root),
        method=method, config=config, seed=seed, metrics=metrics, checkpoint_before=checkpoint_before,
        checkpoint_after=checkpoint_after, timings_s=timings_s, dataset=dataset,
    )
    write_audit_record(path, record)
    return record
