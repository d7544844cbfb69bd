"""The demo's classifier stage in its --fast setting: films at clinical resolution, a patient-disjoint split,
a complete summary, and a report section that states what the classifier was trained on."""

from __future__ import annotations

import json
from pathlib import Path

from rfo_bench.io.coco import read_coco
from rfo_toolkit.demo.classifier import PATCH_FILM_SEED_OFFSET, patch_classifier_plan
from rfo_toolkit.demo.pipeline import DEMO_TOOL, DemoConfig, _section_classifier, _stage_classifier
from toolkit_core.html_report import render_html
from toolkit_core.output_dirs import claim_output_dir

SUMMARY_KEYS = {"model", "epochs", "train_seconds", "n_films", "film_px", "spacing_mm", "cut", "patch_px", "n_train",
                "n_test", "n_train_patients", "n_test_patients", "train_counts", "test_counts", "class_names",
                "test_accuracy", "per_class_accuracy", "figures"}


def test_fast_classifier_stage_trains_on_clinical_resolution_patches_of_disjoint_patients(tmp_path: Path) -> None:
    out = claim_output_dir(tmp_path / "run", DEMO_TOOL)
    stage_dir = out / "classifier.partial"
    stage_dir.mkdir()
    summary = _stage_classifier(DemoConfig(out_dir=str(out), fast=True), stage_dir, {})

    assert SUMMARY_KEYS <= set(summary)
    assert summary["film_px"] == 1024 and summary["spacing_mm"] <= 0.4  # clinical resolution, stated
    assert summary["class_names"] == ["none", "sponge", "clamp", "blade", "chain"]
    assert set(summary["per_class_accuracy"]) == set(summary["class_names"])
    assert 0.0 <= summary["test_accuracy"] <= 100.0
    assert sum(summary["test_counts"].values()) == summary["n_test"] > 0
    assert sum(summary["train_counts"].values()) == summary["n_train"] > summary["n_test"]
    films = stage_dir / "films" / "all"
    train, test = read_coco(films / "train.json"), read_coco(films / "test.json")
    assert {r.patient_id for r in train.images}.isdisjoint({r.patient_id for r in test.images})
    assert len({r.patient_id for r in test.images}) == summary["n_test_patients"] > 0
    assert json.loads((films / "annotations.json").read_text())["images"]  # the films' labels are kept
    assert not (films / "images").exists()  # film pixels are not kept once cut
    assert (stage_dir / "classifier.pt").is_file() and (stage_dir / "patches.png").is_file()
    assert json.loads((stage_dir / "results.json").read_text())["test_accuracy"] == summary["test_accuracy"]

    section = _section_classifier(json.loads(json.dumps(summary)), stage_dir)
    page = render_html("demo", [section])
    assert f"at {summary['film_px']} px ({summary['spacing_mm']:.2f} mm per pixel" in page
    assert f"resized to {summary['patch_px']} px" in page and "split by pseudo-patient" in page
    assert f"<td>all</td><td>{summary['n_train']}</td><td>{summary['n_test']}</td>" in page


def test_the_stage_draws_films_no_other_stage_or_recipe_draws() -> None:
    assert PATCH_FILM_SEED_OFFSET not in (0, 1, 2)  # synth stage (radiograph, CT) and clinical films
    assert all(seed * 1000 + PATCH_FILM_SEED_OFFSET not in (1701, 1702) for seed in range(10))
    default, fast = patch_classifier_plan(False), patch_classifier_plan(True)
    assert default.film_px == fast.film_px == 1024 and default.cut.context_mm == fast.cut.context_mm
