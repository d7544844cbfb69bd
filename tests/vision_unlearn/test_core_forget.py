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


def test_classification_and_detection_requests_share_one_base(tmp_path) -> None:
    """One home for ``KIND:VALUE``: parsing, the listed ids and the class lookup; the kinds differ."""
    from vision_unlearn.detection_forget import DetectionForgetRequest, parse_detection_forget
    from vision_unlearn.forget import ForgetRequest, ForgetRequestBase, class_index

    classification, detection = parse_forget_request("random:0.5"), parse_detection_forget("Instances : ids.txt")
    assert isinstance(classification, ForgetRequest) and isinstance(detection, DetectionForgetRequest)
    assert isinstance(classification, ForgetRequestBase) and isinstance(detection, ForgetRequestBase)
    assert str(detection) == "instances:ids.txt" and not detection.is_classwise
    assert parse_detection_forget("class:needle").is_classwise and not detection.removes_images
    with pytest.raises(UserInputError, match="KIND one of class, images"):
        parse_detection_forget("random:0.5")  # a kind of classification requests only
    with pytest.raises(UserInputError, match="KIND one of class, ids"):
        parse_forget_request("instances:ids.txt")  # a kind of detection requests only
    with pytest.raises(UserInputError, match="strictly between 0 and 1"):
        ForgetRequest.parse("random:1.5")

    (tmp_path / "ids.txt").write_text("a\n# comment\nb  # trailing\n\n")
    assert detection.listed_ids(root=tmp_path) == (["a", "b"], str(tmp_path / "ids.txt"))
    assert parse_detection_forget("patient: p1, p2 ,").listed_ids() == (["p1", "p2"], None)

    assert class_index("b", ["a", "b"]) == 1 and class_index("0", ["a", "b"]) == 0
    with pytest.raises(UserInputError, match="not one of the model's classes: a, b") as info:
        class_index("2", ["a", "b"])
    assert info.value.field == "forget"
