"""The demo's before/after figure: every film at a readable size, full class labels, the annotated
boxes (dashed) beside the detections (solid) with a legend saying which is which."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.patches import Rectangle
from PIL import Image

from rfo_toolkit.demo import models
from rfo_toolkit.demo.models import DETECTION_STYLE, PANEL_PX, SHOWN_SCORE, TRUTH_STYLE, draw_before_after

CLASSES = ("sponge", "clamp", "guidewire_fragment")


def test_before_after_shows_truth_and_detections_with_full_labels(tmp_path, monkeypatch) -> None:
    films = [np.full((110, 170), 0.4), np.full((110, 170), 0.6)]  # non-square: catches height/width swaps
    truths = [[(10.0, 20.0, 60.0, 50.0, "guidewire_fragment")], [(150.0, 70.0, 165.0, 100.0, "clamp")]]
    before = [torch.tensor([[12.0, 22.0, 58.0, 49.0, 0.91, 2.0], [100.0, 10.0, 120.0, 30.0, 0.1, 0.0]]),
              torch.tensor([[149.0, 69.0, 166.0, 99.0, 0.6, 1.0]])]
    after = [torch.zeros((0, 6)), torch.tensor([[149.0, 69.0, 166.0, 99.0, 0.3, 1.0]])]
    captured = {}
    real_figure = models.__dict__.get("Figure")
    assert real_figure is None  # matplotlib is imported inside the function: nothing at import time
    from matplotlib import figure as figure_module

    class Recording(figure_module.Figure):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            captured["fig"] = self

    monkeypatch.setattr(figure_module, "Figure", Recording)
    path = draw_before_after(tmp_path / "strip.png", films, truths, [before, after], ["original (before)", "ofmu"],
                             CLASSES, ["a.png (p1)", "b.png (p2)"], "Forget the class 'clamp'")
    fig = captured["fig"]
    axes = fig.axes
    # models down the page (rows), films across (columns): axes are [original film a, original film b, ofmu a, ...]
    assert [ax.get_title() for ax in axes[:2]] == ["a.png (p1)", "b.png (p2)"]
    assert [axes[0].get_ylabel(), axes[2].get_ylabel()] == ["original (before)", "ofmu"]
    for ax in axes:  # each film panel at least PANEL_PX wide (>= 320 px) in the saved image
        assert ax.get_window_extent().width >= 0.9 * PANEL_PX >= 0.9 * 320
    with Image.open(path) as image:
        assert 2 * 320 <= image.width <= 1100  # two films wide: a report page shows them at full size

    def boxes(ax, style):
        return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_linestyle() == style["linestyle"]]

    first, first_after = axes[0], axes[2]
    assert len(boxes(first, TRUTH_STYLE)) == 1 and len(boxes(first_after, TRUTH_STYLE)) == 1  # truth in every panel
    assert len(boxes(first, DETECTION_STYLE)) == 1  # the 0.1 detection is below SHOWN_SCORE
    assert 0.1 < SHOWN_SCORE <= 0.3
    assert boxes(first, DETECTION_STYLE)[0].get_xy() == (12.0, 22.0)
    assert boxes(first_after, DETECTION_STYLE) == []
    texts = [t.get_text() for t in first.texts]
    assert "guidewire_fragment" in texts and "guidewire_fragment 0.91" in texts  # full names, never cut
    assert "clamp 0.30" in [t.get_text() for t in axes[3].texts]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("ground truth" in t for t in legend) and any("detection" in t for t in legend)
    assert fig._suptitle.get_text() == "Forget the class 'clamp'"
