"""The notebooks' key figures copied to docs/ for readers of the repository: every figure the render
script lists exists, is a small PNG, is linked from its notebook's first cell and from docs/notebooks.md."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("render_notebook_figures",
                                                  REPO / "benchmarks" / "render_notebook_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()


@pytest.mark.parametrize("figure", SCRIPT.FIGURES, ids=lambda f: f.file_name)
def test_each_figure_is_a_small_png_linked_from_its_notebook_and_the_docs(figure) -> None:
    path = REPO / "docs" / figure.file_name
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) <= SCRIPT.MAX_BYTES
    notebook = json.loads((REPO / "notebooks" / f"{figure.notebook}.ipynb").read_text())
    first = notebook["cells"][0]
    assert first["cell_type"] == "markdown" and f"../docs/{figure.file_name}" in "".join(first["source"])
    assert f"]({figure.file_name})" in (REPO / "docs" / "notebooks.md").read_text()


def test_every_marker_names_a_code_cell_of_its_notebook() -> None:
    for figure in SCRIPT.FIGURES:
        cells = json.loads((REPO / "notebooks" / f"{figure.notebook}.ipynb").read_text())["cells"]
        assert any(c["cell_type"] == "code" and figure.marker in "".join(c["source"]) for c in cells), figure


def test_shrink_png_keeps_width_and_size_limits() -> None:
    import io

    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (700, 1500, 3), dtype=np.uint8)  # incompressible
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    small = SCRIPT.shrink_png(buffer.getvalue(), max_width=900, max_bytes=150_000)
    with Image.open(io.BytesIO(small)) as image:
        assert image.width <= 900 and image.height == round(700 * image.width / 1500)
    assert len(small) <= 150_000


def test_fewer_colours_keep_a_thin_coloured_box_on_a_grey_picture() -> None:
    """A detection box is a few saturated pixels on a radiograph: fewer colours must not turn it grey (PIL's
    default median cut does, at 64 colours)."""
    from PIL import Image

    grey = np.random.default_rng(0).integers(0, 256, (300, 400), dtype=np.uint8)  # film grain
    rgb = np.stack([grey] * 3, axis=-1)
    rgb[100, 50:150] = rgb[200, 50:150] = rgb[100:201, 50] = rgb[100:201, 149] = (255, 128, 0)  # 1-px orange box
    for colours in (256, 64):
        out = np.asarray(SCRIPT.fewer_colours(Image.fromarray(rgb), colours).convert("RGB")).astype(int)
        assert np.abs(out[100, 60:140] - [255, 128, 0]).max() <= 24
