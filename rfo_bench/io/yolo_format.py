"""Ultralytics YOLO detection layout <-> :class:`~rfo_bench.io.records.DetectionDataset`.

Layout written by :func:`write_yolo` (what ``ultralytics`` trains on)::

    OUT/data.yaml                 path: <absolute OUT>, train/val/test: images/<split>, names: {0: ...}
    OUT/images/<split>/<stem>.png (a symbolic link to the source PNG/JPEG, or a 16-bit PNG for DICOM)
    OUT/labels/<split>/<stem>.txt one ``class cx cy w h`` line per object, normalised to [0, 1]

Class indices are the dataset's categories in id order. Boxes only: polygon and ellipse shapes, patient
ids and image-level labels do not survive the trip (a warning says so); reading back gives boxes.
Ultralytics reads images with OpenCV, so DICOM files are converted to 16-bit PNG; PNG/JPEG sources are
linked (``copy=True`` copies them instead). ``OUT/.rfo-yolo-files.json`` lists the files written, so
that a second run into the same folder replaces those and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from rfo_bench.io.images import IMAGE_SUFFIXES
from rfo_bench.io.records import Category, DetectionDataset, ImageRecord, RFOObject
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_output, atomic_write_text

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_LINKABLE = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

WRITTEN_RECORD = ".rfo-yolo-files.json"
"""File in the output folder listing the files :func:`write_yolo` wrote there (the ones it may replace)."""


def _unique_stem(record: ImageRecord, used: set[str]) -> str:
    stem = Path(record.file_name).with_suffix("").as_posix().replace("/", "__")
    if stem in used:
        stem = f"{stem}__{record.image_id}"
    used.add(stem)
    return stem


def _written_before(out: Path) -> set[str]:
    """Paths (relative to ``out``) that an earlier :func:`write_yolo` recorded in :data:`WRITTEN_RECORD`."""
    record = out / WRITTEN_RECORD
    if record.is_symlink() or not record.is_file():
        return set()
    try:
        names = json.loads(record.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _link_atomically(source: Path, target: Path) -> None:
    """Point ``target`` at ``source`` in one rename; the caller has checked that ``target`` may be replaced."""
    with atomic_output(target) as tmp:
        tmp.symlink_to(source)


def _write_text_atomically(target: Path, text: str) -> None:
    with atomic_output(target) as tmp:
        tmp.write_text(text, encoding="utf-8")  # no fsync per label file: rename is enough against a kill


def write_yolo(
    dataset: DetectionDataset,
    out_dir: str | os.PathLike[str],
    splits: Mapping[str, list[int]] | None = None,
    *,
    copy: bool = False,
) -> Path:
    """Write the YOLO layout; returns the path of ``data.yaml``.

    Every file is written atomically (temporary name + rename). Files already at the destination are
    replaced only when an earlier :func:`write_yolo` wrote them (they are listed in ``out/``
    :data:`WRITTEN_RECORD`); any other file in the way, such as the images of a user's own YOLO folder,
    makes the call fail before anything is written. An image that already is its own destination (a
    layout converted into itself) is left as it is.

    Args:
        dataset: the dataset (image sizes are read from file headers when unknown).
        out_dir: output directory (created).
        splits: split name (``train``/``val``/``test``) -> image ids; default every image in ``train``
            and ``val`` (Ultralytics needs both).
        copy: copy PNG/JPEG files instead of linking them.

    Raises:
        UserInputError: an unknown split name or image id, or a file in the way that this function did
            not write.
    """
    import yaml

    from rfo_bench.io.headers import fill_image_sizes
    from rfo_bench.io.images import read_image, write_png16

    out = Path(out_dir).resolve()
    dataset = fill_image_sizes(dataset)
    all_ids = [r.image_id for r in dataset.images]
    chosen = dict(splits) if splits is not None else {"train": all_ids, "val": all_ids}
    unknown = [name for name in chosen if name not in SPLITS]
    if unknown:
        raise UserInputError("YOLO split names must be train, val or test", field="splits", value=unknown)
    categories = sorted(dataset.categories, key=lambda c: c.id)
    class_of = {c.id: k for k, c in enumerate(categories)}
    by_id = dataset.image_by_id()

    # plan every file first, so that a refusal leaves the folder as it was
    plan: list[tuple[ImageRecord, Path, Path, Path]] = []  # record, source, image target, label target
    for split, ids in chosen.items():
        used: set[str] = set()
        for image_id in ids:
            if image_id not in by_id:
                raise UserInputError("split lists an image id that is not in the dataset", field=split, value=image_id)
            record = by_id[image_id]
            source = dataset.resolve(record)
            stem = _unique_stem(record, used)
            suffix = source.suffix.lower()
            image_name = f"{stem}{suffix}" if suffix in _LINKABLE else f"{stem}.png"
            plan.append((record, source, out / "images" / split / image_name, out / "labels" / split / f"{stem}.txt"))
    owned = _written_before(out)
    source_of = {image: source for _, source, image, _ in plan}
    targets = [t for _, _, image, label in plan for t in (image, label)] + [out / "data.yaml"]
    foreign: set[Path] = set()  # a user's image that is its own destination: kept, never recorded as ours
    for target in targets:
        if not (target.exists() or target.is_symlink()) or target.relative_to(out).as_posix() in owned:
            continue
        source = source_of.get(target)
        if source is not None and not target.is_symlink() and _same_file(source, target):
            foreign.add(target)  # the image is its own destination
            continue
        raise UserInputError("refusing to replace a file that write_yolo did not write; choose a new or "
                             "empty output folder", file=target, field="--out")

    lost_shapes = 0
    written: set[str] = set()
    for record, source, image_target, label_target in plan:
        image_target.parent.mkdir(parents=True, exist_ok=True)
        label_target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix.lower() not in _LINKABLE:
            write_png16(image_target, read_image(source).pixels)
        elif _same_file(source, image_target) and (not image_target.is_symlink() or not copy):
            pass  # already the source itself, or a link to it
        elif copy:
            with atomic_output(image_target) as tmp:
                shutil.copyfile(source, tmp)
        else:
            try:
                _link_atomically(Path(os.path.realpath(source)), image_target)
            except OSError:  # no symbolic links here (e.g. Windows without the privilege)
                with atomic_output(image_target) as tmp:
                    shutil.copyfile(source, tmp)
        lines = []
        w, h = float(record.width), float(record.height)  # type: ignore[arg-type]
        for obj in record.objects:
            if obj.shape != "box":
                lost_shapes += 1
            x1, y1, x2, y2 = obj.bbox_xyxy
            x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
            y1, y2 = max(0.0, min(y1, h)), max(0.0, min(y2, h))
            if x2 <= x1 or y2 <= y1:
                logger.warning("%s: object outside the image dropped from the YOLO labels", record.file_name)
                continue
            lines.append(f"{class_of[obj.category_id]} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                         f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
        _write_text_atomically(label_target, "\n".join(lines) + ("\n" if lines else ""))
        written.update(t.relative_to(out).as_posix() for t in (image_target, label_target) if t not in foreign)
    if lost_shapes:
        logger.warning("%d polygon/ellipse objects were written as their bounding boxes", lost_shapes)
    for split in chosen:  # Ultralytics expects the folders of every listed split, even an empty one
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    config = {"path": str(out), **{s: f"images/{s}" for s in chosen},
              "names": {k: c.name for k, c in enumerate(categories)}}
    target = out / "data.yaml"
    atomic_write_text(target, yaml.safe_dump(config, sort_keys=False))
    written.add("data.yaml")
    still_there = {name for name in owned if (out / name).exists() or (out / name).is_symlink()}
    record_text = json.dumps({"tool": "rfo_bench.io.yolo_format.write_yolo",
                              "files": sorted(written | still_there)}, indent=0)
    atomic_write_text(out / WRITTEN_RECORD, record_text + "\n")
    return target


def read_yolo(path: str | os.PathLike[str], splits: tuple[str, ...] = SPLITS) -> DetectionDataset:
    """Read a YOLO layout (``data.yaml`` or its directory) back into a dataset of boxes.

    Class ``k`` becomes category id ``k + 1`` with its name; critical flags come from the shared
    vocabulary when the names are known. Images listed under several splits appear once.

    Raises:
        UserInputError: missing ``data.yaml`` / ``names``, a malformed label line (file and line named),
            or mixed box and segment lines in one file.
    """
    import yaml

    from rfo_bench.io.headers import image_size
    from rfo_bench.io.records import category_from_name

    file = Path(path)
    if file.is_dir():
        file = file / "data.yaml"
    if not file.is_file():
        raise UserInputError("YOLO data.yaml not found", file=file)
    try:
        config = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise UserInputError(f"not valid YAML: {err}", file=file) from None
    if not isinstance(config, dict) or "names" not in config:
        raise UserInputError("data.yaml needs a `names` entry", file=file, field="names")
    names = config["names"]
    names = dict(enumerate(names)) if isinstance(names, list) else {int(k): str(v) for k, v in names.items()}
    root = Path(config.get("path") or file.parent)
    if not root.is_absolute():
        root = (file.parent / root).resolve()
    categories = tuple(category_from_name(k + 1, n) for k, n in sorted(names.items()))
    records: list[ImageRecord] = []
    seen: set[Path] = set()
    for split in splits:
        entry = config.get(split)
        if not entry:
            continue
        image_dir = (root / entry).resolve()
        if not image_dir.is_dir():
            raise UserInputError("split image folder does not exist", file=file, field=split, value=str(image_dir))
        images = (p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))  # hidden: temporary files of an interrupted write
        for image in sorted(images):
            if image.resolve() in seen:
                continue
            seen.add(image.resolve())
            rel = image.relative_to(image_dir)
            label = _labels_dir(image_dir) / rel.with_suffix(".txt")
            width, height = image_size(image)
            objects = _read_label_file(label, width, height, names) if label.is_file() else ()
            records.append(ImageRecord(
                file_name=image.relative_to(root).as_posix() if image.is_relative_to(root) else image.as_posix(),
                image_id=len(records) + 1, width=width, height=height, objects=objects,
            ))
    return DetectionDataset(root=root, images=tuple(records), categories=categories, source=str(file))


def _labels_dir(image_dir: Path) -> Path:
    parts = list(image_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    raise UserInputError("YOLO image folders must have an `images` component (labels go to `labels`)",
                         file=image_dir)


def _read_label_file(label: Path, width: int, height: int, names: Mapping[int, str]) -> tuple[RFOObject, ...]:
    objects: list[RFOObject] = []
    kinds: set[str] = set()
    for number, line in enumerate(label.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            cls = int(tokens[0])
            values = [float(t) for t in tokens[1:]]
        except ValueError:
            raise UserInputError("label line must be `class cx cy w h` numbers", file=label, field=f"line {number}",
                                 value=line) from None
        if cls not in names:
            raise UserInputError("class index not in data.yaml names", file=label, field=f"line {number}", value=cls)
        if len(values) == 4:
            kinds.add("box")
            cx, cy, w, h = values
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            objects.append(RFOObject(box, cls + 1))
        elif len(values) >= 6 and len(values) % 2 == 0:
            kinds.add("segment")
            pts = [v * (width if k % 2 == 0 else height) for k, v in enumerate(values)]
            from rfo_bench.io.records import polygon_bbox

            objects.append(RFOObject(polygon_bbox(pts), cls + 1, "polygon", tuple(pts)))
        else:
            raise UserInputError("label line must have 4 box values or >= 3 polygon points", file=label,
                                 field=f"line {number}", value=line)
    if len(kinds) > 1:
        raise UserInputError("label file mixes box and segment lines", file=label)
    return tuple(objects)


def yolo_categories(dataset: DetectionDataset) -> list[Category]:
    """Categories in YOLO class-index order (ascending id)."""
    return sorted(dataset.categories, key=lambda c: c.id)
