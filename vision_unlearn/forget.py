"""Forget requests: which training samples must be forgotten, and the retain set (the rest).

A request is written as ``KIND:VALUE``:

====================  ==============================================================
``class:NAME``        every sample of one class (``NAME`` is a class name, or an index)
``ids:FILE``          the sample ids listed in a text file (one per line, ``#`` comments)
``patient:ID``        every image of one patient (``ID`` may be comma separated)
``patients:FILE``     every image of the patients listed in a file (one per line)
``random:F``          a seeded random fraction ``0 < F < 1`` of the training set
====================  ==============================================================

Resolving a request against the training split gives a :class:`ForgetSplit` (index arrays into
that split). An empty forget set, or one that covers every sample, is an error: neither is an
unlearning problem.

:class:`ForgetRequestBase` is what a classification request and a detection request
(:class:`vision_unlearn.detection_forget.DetectionForgetRequest`) share: the ``KIND:VALUE`` form and
its parsing, the ids a request lists (comma separated after ``patient:``, else in an id file), and
the class a ``class:`` request names (:func:`class_index`). They differ in their kinds: a classifier
forgets samples (``ids``) or a ``random`` fraction; a detector forgets whole ``images`` or single
boxes (``instances``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

import numpy as np

from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

ForgetKind = Literal["class", "ids", "patient", "patients", "random"]
KINDS: tuple[str, ...] = ("class", "ids", "patient", "patients", "random")


_Request = TypeVar("_Request", bound="ForgetRequestBase")


@dataclass(frozen=True)
class ForgetRequestBase:
    """A deletion request ``KIND:VALUE``: the fields, parsing and id lists every task shares.

    Subclasses name their kinds in :attr:`kinds` and may check the value in :meth:`check_value`.

    Attributes:
        kind: one of the subclass's :attr:`kinds` (lower case).
        value: the text after the colon (class name, file path, patient ids, fraction), stripped.
    """

    kind: str
    value: str
    kinds: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parse(cls: type[_Request], text: str) -> _Request:
        """Parse ``KIND:VALUE`` (case-insensitive kind, spaces around either part ignored).

        Raises:
            UserInputError: unknown kind, missing colon or value, or a value :meth:`check_value` refuses.
        """
        kind, sep, value = text.partition(":")
        kind, value = kind.strip().lower(), value.strip()
        if not sep or kind not in cls.kinds or not value:
            raise UserInputError(f"expected KIND:VALUE with KIND one of {', '.join(cls.kinds)}", field="forget",
                                 value=text)
        cls.check_value(kind, value, text)
        return cls(kind=kind, value=value)

    @classmethod
    def check_value(cls, kind: str, value: str, text: str) -> None:
        """Refuse a value that cannot be right for ``kind`` (``text``: the request as written)."""

    @property
    def is_classwise(self) -> bool:
        return self.kind == "class"

    def listed_ids(self, root: str | os.PathLike[str] | None = None) -> tuple[list[str], str | None]:
        """``(ids, source)``: the ids a ``patient:`` request lists after the colon (comma separated;
        ``source`` ``None``), or those of the id file the value names (relative to ``root``;
        ``source`` the file), read with :func:`read_id_file`."""
        if self.kind == "patient":
            return [v.strip() for v in self.value.split(",") if v.strip()], None
        path = Path(self.value)
        if root is not None and not path.is_absolute():
            path = Path(root) / path
        return read_id_file(path), str(path)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class ForgetRequest(ForgetRequestBase):
    """A parsed classification request (see the module docstring for the syntax).

    Attributes:
        kind: ``class``, ``ids``, ``patient``, ``patients`` or ``random``.
        value: the text after the colon (class name, file path, patient ids or fraction).
    """

    kind: ForgetKind
    kinds: ClassVar[tuple[str, ...]] = KINDS

    @classmethod
    def check_value(cls, kind: str, value: str, text: str) -> None:
        """A ``random`` fraction must be a number in ``(0, 1)``."""
        if kind != "random":
            return
        try:
            fraction = float(value)
        except ValueError:
            raise UserInputError("random fraction must be a number", field="forget", value=text) from None
        if not 0.0 < fraction < 1.0:
            raise UserInputError("random fraction must lie strictly between 0 and 1", field="forget", value=text)


def class_index(name: str, class_names: Sequence[str], unknown: str = "class is not one of the model's classes") -> int:
    """Index of class ``name`` (or of a decimal index) in ``class_names``.

    Args:
        name: a class name, or a decimal index below ``len(class_names)``.
        class_names: the vocabulary.
        unknown: the start of the error message; the classes are listed after it.

    Raises:
        UserInputError: not a class of the vocabulary, listing the classes.
    """
    names = [str(c) for c in class_names]
    if name in names:
        return names.index(name)
    if name.isdigit() and int(name) < len(names):
        return int(name)
    raise UserInputError(f"{unknown}: {', '.join(names)}", field="forget", value=name)


@dataclass(frozen=True)
class ForgetSplit:
    """The forget / retain partition of a training split.

    Attributes:
        request: the request it came from.
        forget_indices: ``int64 [F]`` sorted row numbers of the samples to forget.
        retain_indices: ``int64 [N - F]`` sorted row numbers of the rest.
        forgotten_classes: class indices removed entirely (class-wise requests), else empty.
    """

    request: ForgetRequest
    forget_indices: np.ndarray
    retain_indices: np.ndarray
    forgotten_classes: tuple[int, ...] = ()


def parse_forget_request(text: str) -> ForgetRequest:
    """Parse ``KIND:VALUE`` (:meth:`ForgetRequestBase.parse`).

    Raises:
        UserInputError: unknown kind, missing value, or a fraction outside ``(0, 1)``.
    """
    return ForgetRequest.parse(text)


def read_id_file(path: str | os.PathLike[str]) -> list[str]:
    """Ids from a text file: one per line, blank lines and ``#`` comments ignored.

    Raises:
        UserInputError: missing file or a file with no ids.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError("forget id file not found", file=file) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(f"cannot read the forget id file ({type(err).__name__})", file=file) from None
    ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise UserInputError("forget id file lists no ids", file=file)
    return ids


def resolve_forget(
    request: ForgetRequest | str,
    labels: Sequence[int] | np.ndarray,
    sample_ids: Sequence[str],
    patient_ids: Sequence[str],
    class_names: Sequence[str],
    *,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
) -> ForgetSplit:
    """Split a training set into forget and retain rows.

    Args:
        request: a :class:`ForgetRequest` or its text form.
        labels: ``int [N]`` class indices.
        sample_ids: ``N`` unique sample ids.
        patient_ids: ``N`` patient ids.
        class_names: class vocabulary (``labels`` index it).
        seed: seed of ``random:F`` requests.
        root: directory relative id-file paths are resolved against.

    Returns:
        The :class:`ForgetSplit`.

    Raises:
        UserInputError: unknown class, ids or patients that are not in the data, an empty forget
            set, or a forget set covering every sample.
    """
    req = parse_forget_request(request) if isinstance(request, str) else request
    labels_arr = np.asarray(labels, dtype=np.int64)
    n = labels_arr.shape[0]
    forgotten_classes: tuple[int, ...] = ()
    if req.kind == "class":
        cls = class_index(req.value, class_names, "class not in the data; classes")
        mask = labels_arr == cls
        forgotten_classes = (cls,)
    elif req.kind == "random":
        rng = np.random.default_rng(seed)
        count = max(1, round(float(req.value) * n))
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, size=min(count, n), replace=False)] = True
    else:
        wanted, source = req.listed_ids(root)
        pool = list(sample_ids) if req.kind == "ids" else list(patient_ids)
        unknown = sorted(set(wanted) - set(pool))
        if unknown:
            what = "sample ids" if req.kind == "ids" else "patient ids"
            raise UserInputError(f"{len(unknown)} {what} are not in the training data", file=source,
                                 field="forget", value=unknown[0])
        wanted_set = set(wanted)
        mask = np.fromiter((p in wanted_set for p in pool), dtype=bool, count=n)
    forget = np.flatnonzero(mask).astype(np.int64)
    retain = np.flatnonzero(~mask).astype(np.int64)
    if forget.size == 0:
        raise UserInputError("the forget set is empty", field="forget", value=str(req))
    if retain.size == 0:
        raise UserInputError("the forget set covers every training sample; nothing would be retained",
                             field="forget", value=str(req))
    logger.info("forget request %s: %d forget / %d retain samples", req, forget.size, retain.size)
    return ForgetSplit(request=req, forget_indices=forget, retain_indices=retain,
                       forgotten_classes=forgotten_classes)
