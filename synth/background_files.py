"""Where a generator's backgrounds come from: the embedded real data, one file, or the files of a folder.

One home for both generators: ``rfo-synth physics`` (radiographs or CT volumes, the folder's own files)
and ``rfo-synth diffusion sample`` (radiographs, the folder and its sub-folders).
"""

from __future__ import annotations

import os
from pathlib import Path

from toolkit_core.errors import UserInputError

EMBEDDED = "embedded"
"""The name that selects the embedded real background (also the default when no path is given)."""

VOLUME_SUFFIXES = (".nii", ".nii.gz")


def list_background_files(
    path: str | os.PathLike[str] | None, *, volumes: bool = False, recursive: bool = False,
    field: str = "--backgrounds",
) -> list[Path]:
    """The background files a path names, sorted.

    Args:
        path: ``None`` or ``"embedded"`` (the embedded chest radiograph, or chest CT with ``volumes``), an
            image / volume file, or a folder.
        volumes: list CT volumes (NIfTI, segmentations next to them left out) instead of radiographs
            (:data:`rfo_bench.io.images.IMAGE_SUFFIXES`).
        recursive: also list the files of the folder's sub-folders.
        field: the option the path came from (named in errors).

    Raises:
        UserInputError: the path does not exist, or the folder holds no file of the wanted kind.
    """
    from rfo_bench.io.embedded import embedded_ct_path, embedded_radiograph_path
    from rfo_bench.io.images import IMAGE_SUFFIXES

    if path is None or str(path) == EMBEDDED:
        return [embedded_ct_path() if volumes else embedded_radiograph_path()]
    source = Path(path)
    if not source.exists():
        raise UserInputError("backgrounds path does not exist", file=source, field=field)
    if source.is_file():
        return [source]
    candidates = source.rglob("*") if recursive else source.iterdir()
    if volumes:
        from synth.physics.placement import is_segmentation_file

        files = sorted(p for p in candidates if p.is_file() and p.name.endswith(VOLUME_SUFFIXES)
                       and not is_segmentation_file(p))
        kind = "NIfTI (" + "/".join(VOLUME_SUFFIXES) + ")"
    else:
        files = sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        kind = "image (" + ", ".join(IMAGE_SUFFIXES) + ")"
    if not files:
        raise UserInputError(f"no {kind} files in the backgrounds folder", file=source, field=field)
    return files
