"""The YOLO layout writer replaces only files it wrote, never a user's, and writes atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.io.images import write_png16
from rfo_bench.io.records import Category, DetectionDataset, ImageRecord, RFOObject
from rfo_bench.io.yolo_format import WRITTEN_RECORD, read_yolo, write_yolo
from toolkit_core.errors import UserInputError

H, W = 11, 17


def _dataset(root: Path) -> DetectionDataset:
    for name, value in (("a.png", 0.25), ("b.png", 0.75)):
        write_png16(root / name, np.full((H, W), value))
    return DetectionDataset(root, (
        ImageRecord("a.png", 1, W, H, objects=(RFOObject((1.0, 2.0, 9.0, 7.0), 4),)),
        ImageRecord("b.png", 2, W, H),
    ), (Category(4, "blade", True),))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_second_run_replaces_its_own_files(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "src")
    out = tmp_path / "yolo"
    write_yolo(dataset, out, {"train": [1], "val": [2]})
    recorded = set(json.loads((out / WRITTEN_RECORD).read_text())["files"])
    assert recorded == {"data.yaml", "images/train/a.png", "labels/train/a.txt", "images/val/b.png",
                        "labels/val/b.txt"}
    assert (out / "images" / "train" / "a.png").resolve() == (tmp_path / "src" / "a.png").resolve()
    write_yolo(dataset, out, {"train": [1, 2], "val": [2]}, copy=True)  # links become copies
    link = out / "images" / "train" / "a.png"
    assert not link.is_symlink() and link.read_bytes() == (tmp_path / "src" / "a.png").read_bytes()
    assert (tmp_path / "src" / "a.png").is_file() and not (tmp_path / "src" / "a.png").is_symlink()
    assert "images/train/b.png" in json.loads((out / WRITTEN_RECORD).read_text())["files"]
    assert sorted(r.file_name for r in read_yolo(out).images) == [
        "images/train/a.png", "images/train/b.png", "images/val/b.png"]
    assert not [p for p in out.rglob(".*") if p.name != WRITTEN_RECORD]  # no temporary file left


def test_a_users_file_in_the_way_is_never_replaced(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "src")
    out = tmp_path / "mine"
    (out / "images" / "train").mkdir(parents=True)
    (out / "images" / "train" / "a.png").write_bytes(b"my own radiograph")
    (out / "notes.txt").write_text("keep")
    before = _snapshot(out)
    with pytest.raises(UserInputError, match="did not write") as info:
        write_yolo(dataset, out, {"train": [1], "val": [2]})
    assert "a.png" in str(info.value)
    assert _snapshot(out) == before  # refused before anything was written


def test_converting_a_users_yolo_folder_into_itself_loses_nothing(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "src")
    theirs = tmp_path / "theirs"
    write_yolo(dataset, theirs, {"train": [1], "val": [2]}, copy=True)
    (theirs / WRITTEN_RECORD).unlink()  # as if made by another tool: a user's own YOLO folder
    before = _snapshot(theirs)
    with pytest.raises(UserInputError, match="did not write"):
        write_yolo(read_yolo(theirs), theirs, {"train": [1], "val": [2]})
    assert _snapshot(theirs) == before
    assert not any(p.is_symlink() for p in theirs.rglob("*"))


def test_own_layout_written_into_itself_keeps_its_images(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "src")
    out = tmp_path / "yolo"
    write_yolo(dataset, out, {"train": [1, 2]}, copy=True)
    images_before = {k: v for k, v in _snapshot(out).items() if k.startswith("images/")}
    again = read_yolo(out)  # its sources are the copies inside ``out``
    write_yolo(again, out, {"train": [r.image_id for r in again.images]})
    after = _snapshot(out)
    assert all(after[name] == data for name, data in images_before.items())  # every source intact
    links = [p for p in (out / "images").rglob("*") if p.is_symlink()]
    assert links and all(p.resolve().is_file() and not p.resolve().is_symlink() for p in links)


def test_read_yolo_skips_hidden_temporary_files(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "src")
    out = tmp_path / "yolo"
    write_yolo(dataset, out, {"train": [1], "val": [2]})
    (out / "images" / "train" / ".a.png.tmp-123-abcd.png").write_bytes(b"half a png")  # a killed writer's
    assert sorted(r.file_name for r in read_yolo(out).images) == ["images/train/a.png", "images/val/b.png"]


@pytest.mark.parametrize("copy", [False, True])
def test_an_image_that_is_its_own_destination_is_kept(tmp_path: Path, copy: bool) -> None:
    out = tmp_path / "yolo"
    write_yolo(_dataset(tmp_path / "src"), out, {"train": [1, 2]}, copy=True)
    before = (out / "images" / "train" / "a.png").read_bytes()
    inside = DetectionDataset(out / "images" / "train", (ImageRecord("a.png", 1, W, H),), (Category(4, "blade"),))
    write_yolo(inside, out, {"train": [1]}, copy=copy)  # source and destination are one file
    target = out / "images" / "train" / "a.png"
    assert not target.is_symlink() and target.read_bytes() == before
