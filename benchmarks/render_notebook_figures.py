"""Render the key figures of the tutorial notebooks as small PNGs in ``docs/`` for readers of the repository.

The notebooks are stored without outputs (``tests/foundation/test_notebooks.py`` insists), so a
reader browsing the repository sees no figure. This script executes each notebook with ``nbclient``
in a fresh kernel, writing its outputs into a temporary folder (``RFO_NOTEBOOK_OUT``), takes the
figures listed in :data:`FIGURES` from the executed cells, shrinks each to at most
:data:`MAX_WIDTH_PX` wide and :data:`MAX_BYTES` (fewer colours if need be), writes them as
``docs/notebook_NN_<name>.png`` and lists them with captions in ``docs/notebooks.md``. The stored
notebooks are never modified.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/render_notebook_figures.py \\
        [--fast [NOTEBOOK ...]] [--only NOTEBOOK ...] [--out docs] [--timeout 1800]

``--fast`` runs the named notebooks (all, with no name) at their smoke-test sizes
(``RFO_NOTEBOOK_FAST=1``: about a minute each, numbers not meaningful); the others run at their
tutorial sizes. On one thread of a shared two-core machine notebook 01 then took 30 s, 02 six
minutes and 03 (YOLOv8n detectors trained for 30 epochs) eleven minutes: the figures in ``docs/``
come from that run; ``docs/notebooks.md`` states the setting each notebook's figures were made at.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MAX_WIDTH_PX = 900
"""Widest PNG written (the figures are read on a repository page, not printed)."""

MAX_BYTES = 200_000
"""Largest PNG written; above it the palette shrinks, then the width."""


@dataclass(frozen=True)
class NotebookFigure:
    """One figure to copy: the ``index``-th PNG output of the first code cell containing ``marker``."""

    notebook: str
    marker: str
    index: int
    name: str
    caption: str

    @property
    def file_name(self) -> str:
        return f"notebook_{self.notebook[:2]}_{self.name}.png"


FIGURES = (
    NotebookFigure("01_synthetic_data", 'set_title("real PA chest radiograph")', 0, "backgrounds",
                   "The two real backgrounds shipped with the toolkit: the PA chest radiograph and the PA "
                   "water-equivalent projection of the chest CT."),
    NotebookFigure("01_synthetic_data", "contact_sheet(", 0, "contact_sheet",
                   "Physics-rendered radiographs with retained foreign objects and their COCO boxes (red: "
                   "critical classes, blue: the others); first row over the real radiograph, second through "
                   "the CT."),
    NotebookFigure("01_synthetic_data", 'max(coco.anns.values(), key=lambda a: a["area"])', 0, "object_mask",
                   "The largest rendered object: its crop and the RLE mask pycocotools decodes from the "
                   "labels."),
    NotebookFigure("02_rfo_benchmark", 'for kind in ("froc", "pr_curves")', 0, "froc",
                   "FROC of the YOLOv8n trained in the notebook on the patient-level test split (object-CXR "
                   "protocol), with its bootstrap band over patients."),
    NotebookFigure("02_rfo_benchmark", 'for kind in ("froc", "pr_curves")', 1, "pr_curves",
                   "Per-class precision-recall curves of the same detector (COCO interpolation, IoU 0.5)."),
    NotebookFigure("03_unlearning_a_detector", "draw_before_after(", 0, "before_after",
                   "The class request `class:clamp`: two forgotten training images under the original, the "
                   "retrained reference and each unlearning method; dashed boxes annotated truth, solid "
                   "boxes detections (score at least 0.25)."),
)
"""The key figures, in the order ``docs/notebooks.md`` lists them."""


def execute(notebook: str, out_root: Path, fast: bool, timeout_s: int):
    """Run ``notebooks/<notebook>.ipynb`` in a fresh kernel (repository root as its folder); the executed copy."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["RFO_NOTEBOOK_OUT"] = str(out_root)
    os.environ["RFO_NOTEBOOK_FAST"] = "1" if fast else "0"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend turns plt.show() into PNG outputs
    nb = nbformat.read(REPO / "notebooks" / f"{notebook}.ipynb", as_version=4)
    NotebookClient(nb, timeout=timeout_s, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        raise RuntimeError(f"{notebook}: {errors[0].get('ename')}: {errors[0].get('evalue')}")
    return nb


def png_outputs(nb, marker: str) -> list[bytes]:
    """The PNG outputs of the first code cell whose source contains ``marker``, in output order."""
    for cell in nb.cells:
        if cell.cell_type == "code" and marker in cell.source:
            return [base64.b64decode(o["data"]["image/png"]) for o in cell.get("outputs", [])
                    if "image/png" in o.get("data", {})]
    raise KeyError(f"no code cell contains {marker!r}")


def fewer_colours(image, colours: int):
    """``image`` (PIL, RGB) with at most ``colours`` colours. Octree quantisation keeps a figure's rare
    saturated colours (thin coloured boxes on grey radiographs), which PIL's default median cut merges into
    the greys."""
    from PIL import Image

    return image.quantize(colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)


def shrink_png(data: bytes, max_width: int = MAX_WIDTH_PX, max_bytes: int = MAX_BYTES) -> bytes:
    """``data`` at most ``max_width`` wide and ``max_bytes`` long: fewer colours first, then smaller."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    width = min(image.width, max_width)
    while True:
        scaled = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS) \
            if width != image.width else image
        for colours in (None, 256, 128, 64):
            candidate = scaled if colours is None else fewer_colours(scaled, colours)
            buffer = io.BytesIO()
            candidate.save(buffer, format="PNG", optimize=True)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        width = int(width * 0.85)


def notebooks_markdown(figures: tuple[NotebookFigure, ...], fast: set[str]) -> str:
    """``docs/notebooks.md``: every copied figure with its caption, grouped by notebook, and the
    setting (tutorial or smoke-test sizes) each notebook ran at."""
    names = list(dict.fromkeys(f.notebook for f in figures))
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/render_notebook_figures.py"
    if fast:
        command += " --fast" + "".join(f" {n}" for n in names if n in fast)
    lines = ["# Figures of the tutorial notebooks", "",
             "The notebooks in [`notebooks/`](../notebooks/README.md) are stored without outputs. These are "
             "copies of their key figures, rendered by executing them in a fresh kernel with",
             "", "```bash", command, "```", ""]
    for notebook in names:
        setting = ("smoke-test sizes (`RFO_NOTEBOOK_FAST=1`, a detector trained for a few epochs on a few "
                   "images: the figures show what the notebook draws, not what a trained model reaches)"
                   if notebook in fast else "its tutorial sizes")
        lines += [f"## [`{notebook}.ipynb`](../notebooks/{notebook}.ipynb)", "", f"Run at {setting}.", ""]
        for figure in (f for f in figures if f.notebook == notebook):
            lines += [f"![{figure.name.replace('_', ' ')}]({figure.file_name})", "", f"*{figure.caption}*", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", nargs="*", metavar="NOTEBOOK",
                        help="smoke-test sizes (RFO_NOTEBOOK_FAST=1) for these notebooks (no name: all)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook names (default: all three)")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder of the PNGs and notebooks.md")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per notebook cell")
    args = parser.parse_args(argv)
    wanted = tuple(f for f in FIGURES if not args.only or f.notebook in args.only)
    names = set(f.notebook for f in FIGURES)
    fast = set() if args.fast is None else set(args.fast or names)
    if fast - names or set(args.only or ()) - names:
        parser.error(f"unknown notebook; known: {', '.join(sorted(names))}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rfo_notebooks_") as tmp:
        for notebook in dict.fromkeys(f.notebook for f in wanted):
            start = time.perf_counter()
            nb = execute(notebook, Path(tmp), notebook in fast, args.timeout)
            print(f"{notebook}: executed in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            for figure in (f for f in wanted if f.notebook == notebook):
                data = shrink_png(png_outputs(nb, figure.marker)[figure.index])
                (args.out / figure.file_name).write_bytes(data)
                print(f"  {figure.file_name}: {len(data) / 1000:.0f} kB", file=sys.stderr)
    if not args.only:
        (args.out / "notebooks.md").write_text(notebooks_markdown(FIGURES, fast))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
