"""Reading training data in any layout; an Ultralytics ``data.yaml`` is checked before anything is trained.

The layout reader itself is :func:`rfo_bench.io.formats.read_dataset`; this module checks what a
trainer needs first - that the file parses, names its classes, and that the folder of the requested
split exists - so that a ``data.yaml`` pointing to missing folders fails with one clear message
(exit code 2) instead of an Ultralytics traceback mid-training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rfo_bench.io.records import DetectionDataset
from toolkit_core.errors import UserInputError


def data_yaml_path(path: str | Path) -> Path:
    """The ``data.yaml`` of a YOLO dataset given as the file or its directory."""
    file = Path(path)
    if file.is_dir():
        file = file / "data.yaml"
    if not file.is_file():
        raise UserInputError("YOLO data.yaml does not exist", file=file)
    return file


def check_data_yaml(path: str | Path, splits: tuple[str, ...] = ("train",)) -> dict[str, Any]:
    """Parse a ``data.yaml`` and verify that the folders of ``splits`` exist.

    Returns:
        The parsed mapping.

    Raises:
        UserInputError: invalid YAML, no ``names``, a missing split entry, or a split folder (or list
            entry) that does not exist, naming the file and the entry.
    """
    import yaml

    file = data_yaml_path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserInputError(f"not valid YAML: {err}".splitlines()[0], file=file) from None
    if not isinstance(data, dict):
        raise UserInputError("expected a YAML mapping with path, train, val and names", file=file)
    if not data.get("names"):
        raise UserInputError("data.yaml lists no class names", file=file, field="names")
    base = Path(str(data.get("path") or file.parent))
    if not base.is_absolute():
        base = (file.parent / base).resolve()
    if not base.is_dir():
        raise UserInputError("dataset root folder does not exist", file=file, field="path", value=str(base))
    for split in splits:
        entry = data.get(split)
        if not entry:
            raise UserInputError(f"data.yaml has no '{split}' entry", file=file, field=split)
        for item in entry if isinstance(entry, list) else [entry]:
            target = Path(str(item))
            target = target if target.is_absolute() else base / target
            if not target.exists():
                raise UserInputError(f"the '{split}' folder does not exist", file=file, field=split,
                                     value=str(target))
    return data


def read_yolo_split(path: str | Path, split: str) -> DetectionDataset:
    """The images of one split of a YOLO layout, after :func:`check_data_yaml`."""
    from rfo_bench.io import yolo_format

    check_data_yaml(path, (split,))
    return yolo_format.read_yolo(data_yaml_path(path), splits=(split,))


def load_training_data(path: str | Path, *, split: str = "train") -> DetectionDataset:
    """Read a dataset for training or prediction in any supported layout.

    COCO json, object-CXR / Hopkins CSV, image folders, or an Ultralytics ``data.yaml`` (its ``split``
    entry is used). A ``data.yaml`` whose folders are missing is refused naming the entry.
    """
    from rfo_bench.io.formats import detect_format, read_dataset

    file = Path(path)
    if not file.exists():
        raise UserInputError("dataset path does not exist", file=file)
    if detect_format(file) == "yolo":
        return read_yolo_split(file, split)
    return read_dataset(file)
