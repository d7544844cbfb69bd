"""The patch cutter of the demo's classifier (:func:`vision_unlearn.data.rfo_patches.cut_patch_set`): exact
film geometry at a stated spacing, background windows that overlap no box, jitter only where asked, and
per-patch windowing that keeps a faint object visible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.io.coco import read_coco
from rfo_bench.io.images import read_image, write_png16
from toolkit_core.errors import UserInputError
from vision_unlearn.data.rfo_patches import (
    PatchCut,
    background_window,
    crop_window,
    cut_patch_set,
    window_percentiles,
)

HEIGHT, WIDTH = 170, 300  # not square: a height/width swap shows
SPACING_MM = 0.2


def _films(directory: Path, boxes: list[list[tuple[int, int, int, int]]], contrast: float = 0.6,
           spacing: float | None = SPACING_MM) -> Path:
    """One film per entry of ``boxes`` (``x, y, w, h``, class ``clamp``): flat 0.2 with each object at 0.2 + contrast."""
    (directory / "images").mkdir(parents=True)
    images, annotations = [], []
    for number, film_boxes in enumerate(boxes, start=1):
        pixels = np.full((HEIGHT, WIDTH), 0.2)
        for x, y, w, h in film_boxes:
            pixels[y:y + h, x:x + w] = 0.2 + contrast
            annotations.append({"id": len(annotations) + 1, "image_id": number, "category_id": 2, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0})
        write_png16(directory / "images" / f"{number}.png", pixels)
        image = {"id": number, "file_name": f"images/{number}.png", "width": WIDTH, "height": HEIGHT,
                 "patient_id": f"patient-{(number - 1) // 2}"}
        images.append({**image, "pixel_spacing_mm": spacing} if spacing else image)
    categories = [{"id": 1, "name": "sponge"}, {"id": 2, "name": "clamp"}]
    path = directory / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_a_patch_at_native_spacing_is_the_film_window_of_the_stated_millimetres(tmp_path: Path) -> None:
    path = _films(tmp_path / "films", [[(200, 40, 30, 8)]])  # a 6 x 1.6 mm object, box centre (215, 44)
    cut = PatchCut(patch_px=100, context_mm=20.0)  # 20 mm at 0.2 mm/px = 100 film px: no resampling
    assert cut.side_px(30, 8, SPACING_MM) == 100 and cut.side_px(30, 8, 0.4) == 50
    data = cut_patch_set(read_coco(path), cut, seed=0, annotations_file=path)  # spacing read from the COCO file
    assert data.class_names == ["none", "clamp"]
    obj = data.sample_ids.index("image1-ann1")
    x0, y0 = crop_window(215, 44, 100, HEIGHT, WIDTH)
    assert (x0, y0) == (165, 0)  # the window is shifted inside the film at its top border, not padded
    film = read_image(tmp_path / "films" / "images" / "1.png").pixels
    np.testing.assert_allclose(data.images[obj, 0].numpy(), film[y0:y0 + 100, x0:x0 + 100], atol=1e-6)
    patch = data.images[obj, 0].numpy()
    bright = np.argwhere(patch > 0.5)  # the whole object, at its film position minus the window's corner
    assert bright.min(0).tolist() == [40, 35] and bright.max(0).tolist() == [47, 64]


def test_the_relative_rule_and_a_missing_spacing(tmp_path: Path) -> None:
    path = _films(tmp_path / "films", [[(100, 60, 40, 10)]], spacing=None)
    assert PatchCut(context=1.5).side_px(40, 10, None) == 60
    with pytest.raises(UserInputError) as info:
        cut_patch_set(read_coco(path), PatchCut(context_mm=20.0), annotations_file=path)
    assert info.value.field == "pixel_spacing_mm"
    data = cut_patch_set(read_coco(path), PatchCut(patch_px=60), annotations_file=path)
    patch = data.images[data.sample_ids.index("image1-ann1"), 0].numpy()
    assert np.argwhere(patch > 0.5).min(0).tolist() == [25, 10]  # 60 px window from (90, 35): object at (100, 60)


def test_background_windows_overlap_no_box() -> None:
    boxes = [(10.0, 10.0, 120.0, 90.0), (150.0, 60.0, 290.0, 160.0), (0.0, 120.0, 60.0, 170.0)]
    rng = np.random.default_rng(0)
    found = 0
    for _ in range(300):
        corner = background_window(boxes, 30, HEIGHT, WIDTH, rng)
        if corner is None:
            continue
        found += 1
        x0, y0 = corner
        assert 0 <= x0 <= WIDTH - 30 and 0 <= y0 <= HEIGHT - 30
        assert all(x0 + 30 <= b[0] or b[2] <= x0 or y0 + 30 <= b[1] or b[3] <= y0 for b in boxes)
    assert found > 250
    assert background_window([(0.0, 0.0, WIDTH, HEIGHT)], 30, HEIGHT, WIDTH, rng) is None


def test_background_patches_hold_no_object_pixels(tmp_path: Path) -> None:
    path = _films(tmp_path / "films", [[(20, 20, 60, 40), (200, 100, 50, 50)], [(120, 30, 40, 100)]] * 3)
    data = cut_patch_set(read_coco(path), PatchCut(patch_px=40, context_mm=8.0), seed=3, annotations_file=path)
    background = data.images[data.labels == 0]
    assert len(background) == 6  # one per film
    assert float(background.max()) < 0.25


def test_jittered_copies_only_when_augmenting(tmp_path: Path) -> None:
    path = _films(tmp_path / "films", [[(100, 60, 40, 10)], [(30, 30, 20, 20), (200, 100, 30, 30)]])
    cut = PatchCut(patch_px=32, context_mm=16.0, jitter_copies=2)
    plain = cut_patch_set(read_coco(path), cut, seed=1, annotations_file=path)
    assert sorted(plain.sample_ids) == ["image1-ann1", "image1-bg0", "image2-ann2", "image2-ann3", "image2-bg0"]
    augmented = cut_patch_set(read_coco(path), cut, seed=1, augment=True, annotations_file=path)
    assert len(augmented) == 3 * 3 + 2 and "image2-ann3-j2" in augmented.sample_ids
    patient_of = dict(zip(augmented.sample_ids, augmented.patient_ids))
    assert patient_of["image2-ann3-j1"] == patient_of["image2-ann3"] == "patient-0"
    assert augmented.class_counts().tolist() == [2, 9]


def test_per_patch_window_keeps_a_faint_object_visible(tmp_path: Path) -> None:
    path = _films(tmp_path / "films", [[(140, 70, 4, 30)]], contrast=0.01)  # 1 % contrast, 0.8 mm wide
    raw = cut_patch_set(read_coco(path), PatchCut(patch_px=50, context_mm=10.0), annotations_file=path)
    windowed = cut_patch_set(read_coco(path), PatchCut(patch_px=50, context_mm=10.0, window="patch"),
                             annotations_file=path)
    k = raw.sample_ids.index("image1-ann1")
    assert float(raw.images[k].max() - raw.images[k].min()) < 0.011
    assert float(windowed.images[k].min()) == 0.0 and float(windowed.images[k].max()) == 1.0
    np.testing.assert_array_equal(window_percentiles(np.full((5, 7), 0.3), 1, 99), np.full((5, 7), 0.5))


def test_bad_cut_settings_name_their_field() -> None:
    for kwargs, field in (({"window": "log"}, "window"), ({"context_mm": -1.0}, "context_mm"),
                          ({"jitter_copies": -1}, "jitter_copies"), ({"patch_px": 2}, "patch_px")):
        with pytest.raises(UserInputError) as info:
            PatchCut(**kwargs)
        assert info.value.field == field
