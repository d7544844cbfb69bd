"""Writing synthetic datasets: COCO ``annotations.json``, 16-bit ``images/*.png``, ``manifest.json``.

A dataset is assembled in a hidden staging directory next to the destination and renamed into place
only when complete, so a failure never leaves a partial dataset. Output bytes depend only on the
content (sorted keys, no timestamps, no absolute paths), so the same seed gives identical files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolkit_core.output_dirs import staged_output_dir
from toolkit_core.utils import atomic_write_text


@contextmanager
def staged_directory(out: str | os.PathLike[str], overwrite: bool = False,
                     tool: str = "rfo-synth") -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``out`` on success and is deleted on failure.

    Only an empty folder or one this toolkit wrote is replaced (see :mod:`toolkit_core.output_dirs`).

    Raises:
        UserInputError: ``out`` exists and is not empty and ``overwrite`` is false, or ``out`` is not a
            folder this toolkit wrote.
    """
    with staged_output_dir(out, tool, overwrite=overwrite) as staging:
        yield staging


def image_file_name(index: int) -> str:
    """File name of image ``index`` (global over shards)."""
    return f"{index:07d}.png"


def annotation_id(image_index: int, object_index: int) -> int:
    """Globally unique annotation id that does not depend on sharding."""
    return image_index * 1000 + object_index + 1


def coco_document(images: list[dict[str, Any]], annotations: list[dict[str, Any]], categories: list[dict[str, Any]],
                  info: dict[str, Any]) -> dict[str, Any]:
    """A COCO detection document."""
    return {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


def write_json(path: Path, payload: Any) -> None:
    """Deterministic JSON (sorted keys, 1-space indent, trailing newline), written atomically."""
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")


def merge_coco(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Union of COCO documents of shards (images and annotations sorted by id; categories of the first)."""
    if not parts:
        raise ValueError("nothing to merge")
    images = sorted((im for p in parts for im in p["images"]), key=lambda im: im["id"])
    annotations = sorted((a for p in parts for a in p["annotations"]), key=lambda a: a["id"])
    return coco_document(images, annotations, parts[0]["categories"], parts[0].get("info", {}))


def rle_segmentation(mask: Any) -> dict[str, Any]:
    """COCO compressed RLE of a ``(H, W)`` bool mask (counts as an ASCII string)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
