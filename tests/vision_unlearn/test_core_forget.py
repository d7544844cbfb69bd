"""Specification of forget requests."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit_core.errors import UserInputError
from vision_unlearn.forget import parse_forget_request, read_id_file, resolve_forget

LABELS = np.array([0, 1, 2, 1, 0, 2, 1])
SAMPLES = [f"s{i}" for i in range(7)]
PATIENTS = ["p0", "p0", "p1", "p2", "p2", "p2", "p3"]
CLASSES = ["sponge", "needle", "blade"]


def _resolve(text: str, **kw):
    return resolve_forget(text, LABELS, SAMPLES, PATIENTS, CLASSES, **kw)


def test_class_by_name_and_index() -> None:
    split = _resolve("class:needle")
    assert split.forget_indices.tolist() == [1, 3, 6]
    assert split.retain_indices.tolist() == [0, 2, 4, 5]
    assert split.forgotten_classes == (1,)
    assert _resolve("class:2").forget_indices.tolist() == [2, 5]


def test_ids_file_with_comments(tmp_path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("# withdrawn consent\ns4\n\ns0  # second\n")
    split = _resolve(f"ids:{path}")
    assert split.forget_indices.tolist() == [0, 4]
    assert split.forgotten_classes == ()


def test_patient_and_patients_file(tmp_path) -> None:
    assert _resolve("patient:p2").forget_indices.tolist() == [3, 4, 5]
    assert _resolve("patient:p0,p3").forget_indices.tolist() == [0, 1, 6]
    (tmp_path / "p.txt").write_text("p1\n")
    assert _resolve("patients:p.txt", root=tmp_path).forget_indices.tolist() == [2]


def test_random_fraction_is_seeded_and_sized() -> None:
    a = _resolve("random:0.3", seed=1)
    b = _resolve("random:0.3", seed=1)
    assert a.forget_indices.size == 2  # round(0.3 * 7)
    assert np.array_equal(a.forget_indices, b.forget_indices)
    assert sorted([*a.forget_indices, *a.retain_indices]) == list(range(7))


@pytest.mark.parametrize("text", ["class:scalpel", "class:7", "patient:p9", "random:1.0", "random:0", "random:x",
                                  "bogus:1", "class:", "nocolon"])
def test_bad_requests(text) -> None:
    with pytest.raises(UserInputError):
        _resolve(text)


def test_empty_file_and_unknown_ids(tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(UserInputError, match="lists no ids"):
        _resolve(f"ids:{empty}")
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("s1\nzz\n")
    with pytest.raises(UserInputError, match="not in the training data") as info:
        _resolve(f"ids:{unknown}")
    assert "zz" in str(info.value)
    with pytest.raises(UserInputError, match="not found"):
        read_id_file(tmp_path / "missing.txt")


def test_forget_everything_is_an_error(tmp_path) -> None:
    with pytest.raises(UserInputError, match="covers every"):
        resolve_forget("class:a", np.zeros(3, dtype=int), ["a", "b", "c"], ["x", "y", "z"], ["a", "b"])
    with pytest.raises(UserInputError, match="empty"):
        resolve_forget("class:b", np.zeros(3, dtype=int), ["a", "b", "c"], ["x", "y", "z"], ["a", "b"])


def test_parse_round_trip() -> None:
    request = parse_forget_request(" Class : 3 ")
    assert (request.kind, request.value, str(request)) == ("class", "3", "class:3")
