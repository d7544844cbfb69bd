"""What the evaluation's figures draw (curves, bands, labels, one image per error panel), the report's
header and captions, and how its numbers are printed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from rfo_bench.evaluate import EvalConfig, error_examples, evaluate_detailed, froc_curves, write_report
from rfo_bench.io.coco import read_coco
from rfo_bench.io.images import write_png16
from rfo_bench.plots import FROC_XLABEL, FROC_YLABEL, error_figure, error_panels, froc_figure, pr_figure
from rfo_bench.predictions import read_predictions
from rfo_bench.report_markdown import format_estimate, format_seconds, report_markdown

CATEGORIES = [{"id": 1, "name": "sponge", "supercategory": "critical"},
              {"id": 3, "name": "needle", "supercategory": "critical"},
              {"id": 7, "name": "chain", "supercategory": "non_critical"}]


@pytest.fixture
def scene(tmp_path):
    """24 images of 40x23 px (12 patients): objects of three classes, a shifted hit per object on most,
    stray boxes; image 0 holds two false positives and a missed object."""
    rng = np.random.default_rng(5)
    images, anns, preds = [], [], []
    for i in range(24):
        write_png16(tmp_path / f"im{i}.png", rng.random((23, 40)))
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": 40, "height": 23, "patient_id": f"p{i // 2}"})
        for k in range(i % 3):
            cat = (1, 3, 7)[(i + k) % 3]
            box = [2 + 15 * k, 2, 10, 8]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": box, "area": 80,
                         "iscrowd": 0})
            if (i + k) % 4:
                preds.append({"image_id": i + 1, "category_id": cat, "bbox": [box[0] + 1, 2, 10, 8],
                              "score": float(rng.uniform(0.4, 1))})
        preds.append({"image_id": i + 1, "category_id": (1, 3, 7)[i % 3], "bbox": [30, 14, 6, 6],
                      "score": float(rng.uniform(0, 0.6))})
    # image 0: a missed needle and two confident false positives
    anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 3, "bbox": [3, 3, 9, 9], "area": 81, "iscrowd": 0})
    preds += [{"image_id": 1, "category_id": 1, "bbox": [25, 2, 6, 6], "score": 0.99},
              {"image_id": 1, "category_id": 7, "bbox": [25, 12, 6, 6], "score": 0.98}]
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    gt = read_coco(tmp_path / "gt.json")
    return gt, read_predictions(tmp_path / "pred.json", gt)


def _bands(ax) -> list[PolyCollection]:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_froc_figure_draws_the_band_the_strata_and_each_class(scene):
    gt, preds = scene
    evaluation = evaluate_detailed(gt, preds, EvalConfig(bootstrap=60, seed=2))
    report = evaluation.report
    overall, strata, per_class, band = froc_curves(evaluation)
    figure = froc_figure(overall, strata=strata, per_class=per_class, band_description=band)
    all_ax, strata_ax, class_ax = figure.axes
    for ax in figure.axes:
        assert ax.get_xlabel() == FROC_XLABEL and ax.get_ylabel() == FROC_YLABEL
    # panel 1: the operating points of the score, and the band of each sensitivity from the bootstrap
    score, (low, high) = report["froc"]["score"], report["ci95"]["froc"]
    assert _legend(all_ax) == [f"FROC score {score:.3f} [{low:.3f}, {high:.3f}] (object-CXR reference)",
                               "95% bootstrap band (60 replicates over patients)"]
    points = [line for line in all_ax.lines if line.get_label().startswith("FROC score")]
    assert len(points) == 1 and np.allclose(points[0].get_ydata(), report["froc"]["sensitivity"])
    (band_collection,) = _bands(all_ax)
    band_y = band_collection.get_paths()[0].vertices[:, 1]
    for low_t, high_t in report["froc"]["sensitivity_ci"]:
        assert np.isclose(band_y, low_t).any() and np.isclose(band_y, high_t).any()
    assert all(lo <= s <= hi for s, (lo, hi) in zip(report["froc"]["sensitivity"], report["froc"]["sensitivity_ci"]))
    # panel 2: critical and non-critical, each with its band
    labels = _legend(strata_ax)
    assert [t.split(" (")[0] for t in labels] == ["critical", "critical band", "non-critical", "non-critical band"]
    assert f"FROC score {report['froc_strata']['critical']['score']:.3f}" in labels[0]
    assert len(_bands(strata_ax)) == 2
    # panel 3: one curve per class with objects, no band
    assert [t.split(" (")[0] for t in _legend(class_ax)] == ["sponge", "needle", "chain"]
    assert not _bands(class_ax)


def test_froc_figure_without_bootstrap_has_no_band_and_names_the_variant(scene):
    gt, preds = scene
    evaluation = evaluate_detailed(gt, preds, EvalConfig(bootstrap=0, froc_variant="corrected"))
    overall, strata, per_class, band = froc_curves(evaluation)
    figure = froc_figure(overall, band_description=band)
    (ax,) = figure.axes
    assert not _bands(ax)
    assert _legend(ax) == [f"FROC score {evaluation.report['froc']['score']:.3f} (corrected protocol)"]


def test_pr_figure_one_curve_per_class(scene):
    gt, preds = scene
    evaluation = evaluate_detailed(gt, preds, EvalConfig(bootstrap=0))
    precision = evaluation.coco.precision[0, :, :, 0, -1]  # IoU 0.5
    curves = {c["name"]: (precision[:, k], 1) for k, c in enumerate(CATEGORIES)}
    figure = pr_figure(np.linspace(0, 1, 101), curves)
    (ax,) = figure.axes
    assert len(ax.lines) == 3
    assert [t.split(" (")[0] for t in _legend(ax)] == ["sponge", "needle", "chain"]
    assert all("AP50" in t for t in _legend(ax))
    assert ax.get_xlabel().startswith("recall") and ax.get_ylabel().startswith("precision")


def test_error_grid_shows_each_image_once(scene):
    gt, preds = scene
    evaluation = evaluate_detailed(gt, preds, EvalConfig(bootstrap=0))
    examples = error_examples(evaluation, gt, max_examples=8)
    on_first = [e for e in examples if e[1] == 0]
    assert len(on_first) >= 3  # two false positives and the missed needle of image 0 are among the worst
    panels = error_panels(examples, [r.file_name for r in gt.images], max_panels=8)
    indices = [p.image_index for p in panels]
    assert len(indices) == len(set(indices)) and len(panels) <= 8
    first = next(p for p in panels if p.image_index == 0)
    assert len(first.boxes) == len(on_first)
    figure = error_figure(panels, lambda index: np.zeros((23, 40)))
    shown = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title().splitlines()[0] for ax in shown] == [p.title for p in panels]
    first_ax = shown[indices.index(0)]
    assert len(first_ax.patches) == len(first.boxes)
    fps = sum(title.startswith("FP") for title, _, _ in on_first)  # the two confident ones and the stray box
    assert fps == 3 and first_ax.get_title().endswith("\n3 false positives, 1 missed")
    # an unreadable image keeps its panel and says so
    unreadable = error_figure(panels[:1], lambda index: None)
    assert unreadable.axes[0].get_title().endswith("(image unreadable)")


def test_report_header_captions_and_markdown(scene, tmp_path):
    gt, preds = scene
    evaluation = evaluate_detailed(gt, preds, EvalConfig(bootstrap=30, seed=4), command="rfo-bench eval --gt gt.json")
    run = evaluation.report["run"]
    assert list(evaluation.report)[0] == "run"
    assert (run["seed"], run["bootstrap"], run["command"]) == (4, 30, "rfo-bench eval --gt gt.json")
    assert run["toolkit_version"] and run["environment"]["python"]
    written = write_report(evaluation, tmp_path / "out", gt, preds, command="rfo-bench eval --gt other.json")
    report = json.loads(written["json"].read_text())
    assert report["run"]["command"] == "rfo-bench eval --gt other.json"
    assert evaluation.report["run"]["command"] == "rfo-bench eval --gt gt.json"  # the caller's dict is untouched
    assert {written[k].name for k in ("froc", "pr_curves", "errors")} == set(report["figures"])
    markdown = written["md"].read_text()
    assert "Command: `rfo-bench eval --gt other.json`" in markdown
    assert "30 bootstrap replicates over patients, seed 4" in markdown
    for file, caption in report["figures"].items():
        assert f"![{file}]({file})" in markdown and caption in markdown


def test_markdown_without_bootstrap_has_no_interval_column(scene):
    gt, preds = scene
    report = evaluate_detailed(gt, preds, EvalConfig(bootstrap=0)).report
    text = report_markdown(report)
    assert "| metric | value |\n" in text and "CI" not in text and "±" not in text
    assert "no bootstrap (no intervals)" in text
    assert "| FP / image | 0.125 | 0.25 | 0.5 | 1 | 2 | 4 | 8 | score |" in text


def test_one_bootstrap_replicate_gives_no_interval(scene):
    gt, preds = scene
    report = evaluate_detailed(gt, preds, EvalConfig(bootstrap=1)).report
    assert set(report["ci95"].values()) == {None}  # one value has no spread: no [x, x] interval
    assert report["froc"]["sensitivity_ci"] == [[None, None]] * 7
    assert report["bootstrap"]["replicates_used"]["froc"] == 1
    assert "CI" not in report_markdown(report)


@pytest.mark.parametrize("seconds, text", [(0.42, "0.42 s"), (12.34, "12.3 s"), (431.0, "431 s"),
                                           (1135.0, "18.9 min"), (4 * 3600 + 360, "4.1 h"), (None, "n/a")])
def test_seconds_are_printed_as_people_read_them(seconds, text):
    assert format_seconds(seconds) == text


def test_one_value_has_no_spread():
    assert format_estimate([0.5]) == "0.500"
    assert format_estimate([0.5, 0.7]) == "0.600 ± 0.141"
    assert format_estimate([None, 0.25], digits=2) == "0.25"
    assert format_estimate([]) == "n/a"
