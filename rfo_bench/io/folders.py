"""The Hopkins image-level layout: ``ROOT/positive/...`` and ``ROOT/negative/...`` image folders.

Images carry an image-level label only (no boxes): :attr:`ImageRecord.positive` is set and
``objects`` is empty. Folder names are matched case-insensitively (``positive``/``pos``/``1`` and
``negative``/``neg``/``0``); images may sit in sub-folders of those.
"""

from __future__ import annotations

import os
from pathlib import Path

from rfo_bench.io.images import IMAGE_SUFFIXES
from rfo_bench.io.records import Category, DetectionDataset, ImageRecord
from toolkit_core.errors import UserInputError

POSITIVE_NAMES = ("positive", "pos", "1")
NEGATIVE_NAMES = ("negative", "neg", "0")


def label_folders(root: Path) -> dict[bool, Path]:
    """The positive / negative sub-folders of ``root`` keyed by label (empty dict if it is not this layout)."""
    found: dict[bool, Path] = {}
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        name = child.name.lower()
        if name in POSITIVE_NAMES:
            found[True] = child
        elif name in NEGATIVE_NAMES:
            found[False] = child
    return found


def read_image_folders(root: str | os.PathLike[str]) -> DetectionDataset:
    """Read the positive/negative folder layout into an image-level :class:`DetectionDataset`.

    Raises:
        UserInputError: ``root`` is not a directory, lacks both label folders, or holds no image.
    """
    base = Path(root)
    if not base.is_dir():
        raise UserInputError("expected a directory with positive/ and negative/ sub-folders", file=base)
    folders = label_folders(base)
    if not folders:
        raise UserInputError("no positive/ or negative/ sub-folder found", file=base)
    images: list[ImageRecord] = []
    for label in (True, False):
        folder = folders.get(label)
        if folder is None:
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            images.append(ImageRecord(
                file_name=path.relative_to(base).as_posix(), image_id=len(images) + 1, positive=label,
            ))
    if not images:
        raise UserInputError("the positive/ and negative/ folders hold no image", file=base)
    return DetectionDataset(
        root=base, images=tuple(images), categories=(Category(1, "foreign_object", None),), source=str(base)
    )
