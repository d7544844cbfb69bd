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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

ForgetKind = Literal["class", "ids", "patient", "patients", "random"]
KINDS: tuple[str, ...] = ("class", "ids", "patient", "patients", "random")


@dataclass(frozen=True)
class ForgetRequest:
    """A parsed request (see the module docstring for the syntax).

    Attributes:
        kind: ``class``, ``ids``, ``patient``, ``patients`` or ``random``.
        value: the text after the colon (class name, file path, patient ids or fraction).
    """

    kind: ForgetKind
    value: str

    @property
    def is_classwise(self) -> bool:
        return self.kind == "class"

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


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
    """Parse ``KIND:VALUE``.

    Raises:
        UserInputError: unknown kind, missing value, or a fraction outside ``(0, 1)``.
    """
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    value = value.strip()
    if not sep or kind not in KINDS or not value:
        raise UserInputError(f"expected KIND:VALUE with KIND one of {', '.join(KINDS)}", field="forget", value=text)
    if kind == "random":
        try:
            fraction = float(value)
        except ValueError:
            raise UserInputError("random fraction must be a number", field="forget", value=text) from None
        if not 0.0 < fraction < 1.0:
            raise UserInputError("random fraction must lie strictly between 0 and 1", field="forget", value=text)
    return ForgetRequest(kind=kind, value=value)  # type: ignore[arg-type]


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
        names = [str(c) for c in class_names]
        if req.value in names:
            cls = names.index(req.value)
        elif req.value.lstrip("-").isdigit() and 0 <= int(req.value) < len(names):
            cls = int(req.value)
        else:
            raise UserInputError(f"class not in the data; classes: {', '.join(names)}", field="forget",
                                 value=req.value)
        mask = labels_arr == cls
        forgotten_classes = (cls,)
    elif req.kind == "random":
        rng = np.random.default_rng(seed)
        count = max(1, round(float(req.value) * n))
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, size=min(count, n), replace=False)] = True
    else:
        if req.kind == "patient":
            wanted = [v.strip() for v in req.value.split(",") if v.strip()]
            source: str | None = None
        else:
            path = Path(req.value)
            if root is not None and not path.is_absolute():
                path = Path(root) / path
            wanted = read_id_file(path)
            source = str(path)
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
