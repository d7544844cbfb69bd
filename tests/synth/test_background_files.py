"""Where generators take their backgrounds from: the embedded data, a file, or a folder's files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rfo_bench.io.embedded import embedded_ct_path, embedded_radiograph_path
from rfo_bench.io.images import write_png16
from synth.background_files import list_background_files
from toolkit_core.errors import UserInputError


def test_no_path_or_embedded_names_the_embedded_data() -> None:
    assert list_background_files(None) == list_background_files("embedded") == [embedded_radiograph_path()]
    assert list_background_files(None, volumes=True) == [embedded_ct_path()]


def test_a_folder_lists_its_images_sorted_and_sub_folders_only_when_recursive(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", "deep/c.png"):
        write_png16(tmp_path / name, np.zeros((4, 6)))
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_background_files(tmp_path)] == ["a.png", "b.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_background_files(tmp_path, recursive=True)] == [
        "a.png", "b.png", "deep/c.png"]
    assert list_background_files(tmp_path / "a.png") == [tmp_path / "a.png"]


def test_volumes_leave_out_the_segmentations_next_to_them(tmp_path: Path) -> None:
    for name in ("ct1.nii.gz", "ct1_mask.nii.gz", "mask.nii", "ct2.nii"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_background_files(tmp_path, volumes=True)] == ["ct1.nii.gz", "ct2.nii"]


def test_missing_paths_and_empty_folders_name_the_path_and_the_option(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist") as info:
        list_background_files(tmp_path / "absent", field="--backgrounds")
    assert info.value.field == "--backgrounds" and "absent" in str(info.value)
    with pytest.raises(UserInputError, match="no image"):
        list_background_files(tmp_path)
    with pytest.raises(UserInputError, match="no NIfTI"):
        list_background_files(tmp_path, volumes=True)
