"""The main job behind ``vision-unlearn demo`` / ``make demo``.

The demo is a list of stages. Each stage writes into its own folder under the run directory and
finishes by writing ``stage.json`` (its summary) atomically; a re-run skips every stage that has
its ``stage.json`` unless ``force`` is set, so an interrupted demo resumes where it stopped. A
stage is first written into ``<name>.partial/`` and renamed when complete, so a half-written stage
is never mistaken for a finished one. The report (``report.html``, ``report.md``) is rebuilt from
the saved summaries alone (:func:`build_report`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit_core.errors import UserInputError
from toolkit_core.html_report import Figure, Section, Table, run_header, write_report
from toolkit_core.output_dirs import (
    claim_output_dir,
    read_marker,
    release_output_dir,
    remove_owned,
    write_marker,
)
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
DEMO_TOOL = "vision-unlearn demo"


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run (recorded in ``run.json``).

    Attributes:
        out_dir: run directory.
        fast: smaller data and shorter schedules (used by tests).
        force: re-run stages that already finished.
        seed: the one seed every stage derives its randomness from.
        radiograph: chest radiograph background (PNG/JPEG/DICOM); ``None`` = embedded.
        ct: chest CT background (NIfTI); ``None`` = embedded.
        detector: a recipe-trained detector folder (``rfo-bench train --config``, e.g. the shipped one):
            the demo evaluates it on films rendered at its resolution and answers the deletion requests
            on its tiles (:mod:`rfo_toolkit.demo.clinical`); ``None`` = a YOLO trained from scratch.
        device: torch device every stage trains, unlearns and predicts on (``cpu``, ``cuda``, ``cuda:N``).
        threads: torch CPU threads (``None``: torch's default).
    """

    out_dir: str
    fast: bool = False
    force: bool = False
    seed: int = 0
    radiograph: str | None = None
    ct: str | None = None
    detector: str | None = None
    device: str = "cpu"
    threads: int | None = None


@dataclass(frozen=True)
class Stage:
    """One step of the demo: ``run`` fills a folder and returns a JSON summary; ``section`` turns
    the saved summary into a report section."""

    name: str
    title: str
    run: Callable[[DemoConfig, Path, dict[str, dict[str, Any]]], dict[str, Any]]
    section: Callable[[dict[str, Any], Path], Section]


def _stage_data(config: DemoConfig, stage_dir: Path, _done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from synth.embedded import write_embedded_previews

    manifest = write_embedded_previews(stage_dir, radiograph=config.radiograph, ct=config.ct)
    return {
        "radiograph": manifest["radiograph"],
        "ct": manifest["ct"],
        "figures": ["radiograph_preview.png", "ct_pa_projection.png", "ct_axial_mid.png"],
    }


def _section_data(summary: dict[str, Any], stage_dir: Path) -> Section:
    rg, ct = summary["radiograph"], summary["ct"]
    table = Table(
        header=["background", "file", "shape", "spacing (mm)", "notes"],
        rows=[
            ["radiograph", rg["file"], " × ".join(map(str, rg["shape"])),
             " × ".join(f"{s:g}" for s in rg["pixel_spacing_mm"]),
             f"{rg['bits_stored']}-bit {rg['photometric']}" + (", spacing assumed" if rg["spacing_is_default"] else "")],
            ["CT", ct["file"], " × ".join(map(str, ct["shape"])), " × ".join(f"{s:g}" for s in ct["spacing_mm"]),
             f"HU {ct['hu_range'][0]:g} … {ct['hu_range'][1]:g}"],
        ],
        caption="Real backgrounds used by every later stage",
    )
    figures = [Figure(stage_dir / name, DATA_CAPTIONS.get(name) or _unlisted_caption(name))
               for name in summary["figures"]]
    return Section("Real data", tables=[table], figures=figures)


DATA_CAPTIONS = {
    "radiograph_preview.png": "The real PA chest radiograph every radiograph-mode image is rendered over "
                              "(bright = dense).",
    "ct_pa_projection.png": "PA water-equivalent projection of the real chest CT that CT-mode images are "
                            "rendered from (head up, patient right on the left).",
    "ct_axial_mid.png": "Mid axial slice of the real chest CT (anterior up).",
}
SYNTH_CAPTION = ("Synthetic radiographs of both modes (over the real radiograph, and projected through the real "
                 "CT) with their exact labels: red boxes critical objects, blue boxes the others.")
CLINICAL_CAPTION = ("Films for the trained detector, rendered over the real radiograph at its resolution, with their "
                    "exact labels: red boxes critical objects, blue boxes the others.")
UNLEARN_CAPTIONS = {
    "detections_class.png": "Two training images holding the forgotten class (columns; whole films, or the detector's "
                            "tiles when the demo runs on a trained detector), each shown whole, under every "
                            "model (rows): the detector before unlearning, the detector retrained without the "
                            "class (the target), and each method's result. Dashed cyan boxes: annotated ground "
                            "truth with its class; solid orange boxes: detections scoring at least 0.25 with class "
                            "and score. Forgetting worked where the forgotten class's detections vanish as they do "
                            "under retraining while the other objects stay detected.",
    "detections_patient.png": "Two training images of the withdrawn patient (columns; films, or tiles of them) under "
                              "every model (rows): before "
                              "unlearning, retrained without the patient (the target), and each method's result. "
                              "Dashed cyan boxes: annotated ground truth with its class; solid orange boxes: "
                              "detections scoring at least 0.25 with class and score. A patient request asks the "
                              "model to behave on these images as one that never saw them: detections may remain.",
}


def _unlisted_caption(name: str) -> str:
    """The caption of a figure a stage lists but the report does not know (a stage of a newer release)."""
    return f"{Path(name).stem.replace('_', ' ')} (a figure the stage saved)"


def _stage_synth(config: DemoConfig, stage_dir: Path, _done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from rfo_toolkit.demo.data import demo_data_plan, synthesise_demo_data

    summary = synthesise_demo_data(stage_dir, demo_data_plan(config.fast), config.seed, config.radiograph, config.ct)
    if config.detector:
        from rfo_toolkit.demo.clinical import clinical_plan, render_clinical

        summary["clinical"] = render_clinical(stage_dir / "clinical", config.detector, clinical_plan(config.fast),
                                              config.seed, config.radiograph)
    return summary


def _section_synth(summary: dict[str, Any], stage_dir: Path) -> Section:
    plan, spectrum = summary["plan"], summary["spectrum"]
    classes = sorted({name for counts in summary["objects_per_class"].values() for name in counts})
    rows = [[split, *(summary["objects_per_class"].get(split, {}).get(c, 0) for c in classes)]
            for split in summary["objects_per_class"]]
    split_rows = [[split, *(values.get(k) for k in ("images", "critical", "non_critical", "none"))]
                  for split, values in summary["splits"].items()]
    text = (
        f"{plan['n_radiograph']} images were rendered by inserting RFO meshes into the real radiograph and "
        f"{plan['n_ct']} by projecting the real CT with the objects placed inside the body, at "
        f"{plan['size']} px, with a {spectrum.get('kvp')} kVp spectrum (mean {spectrum.get('mean_energy_kev')} keV, "
        f"HVL {spectrum.get('hvl_mm_al')} mm Al), scatter, quantum noise and detector blur. Consecutive images form "
        f"{summary['n_patients']} pseudo-patients of {plan['images_per_patient']} images; the split is by "
        "pseudo-patient. Test images are new renders over the same two real backgrounds, not new anatomy."
    )
    paragraphs, tables = [text], [Table(["split", "images", "critical", "non-critical", "no RFO"], split_rows,
                                        caption="Images per split and image-level stratum"),
                                  Table(["split", *classes], rows, caption="Objects per class")]
    figures = [Figure(stage_dir / name, SYNTH_CAPTION) for name in summary["figures"]]
    clinical = summary.get("clinical")
    if clinical:
        tiles = clinical["tiles"]
        paragraphs.append(
            f"For the trained detector, {clinical['plan']['n_radiograph']} more films were rendered over the real "
            f"radiograph at its own resolution ({clinical['film_px']} px, native spacing; other seeds than its "
            f"training films), split by pseudo-patient, and cut into its {clinical['tile_px']} px tiles "
            f"({clinical['bit_depth']}-bit, windowed as in its training).")
        tables.append(Table(["split", "films", "positive tiles", "object-free tiles", "whole-film tiles"],
                            [[split, clinical["splits"][split]["images"], counts.get("positive"),
                              counts.get("negative"), counts.get("whole_film")] for split, counts in tiles.items()],
                            caption="Films and tiles at the detector's resolution"))
        figures += [Figure(stage_dir / "clinical" / name, CLINICAL_CAPTION) for name in clinical["figures"]]
    return Section("Synthetic radiographs (physics)", paragraphs=paragraphs, tables=tables, figures=figures)


def _stage_detector(config: DemoConfig, stage_dir: Path, _done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from rfo_toolkit.demo.models import demo_model_plan, train_and_evaluate_detector

    if config.detector:
        from rfo_toolkit.demo.clinical import clinical_plan, evaluate_and_finetune

        return evaluate_and_finetune(stage_dir, config.detector, Path(config.out_dir) / "synth" / "clinical",
                                     clinical_plan(config.fast), config.seed, device=config.device)
    synth_dir = Path(config.out_dir) / "synth" / "all"
    return train_and_evaluate_detector(stage_dir, synth_dir, demo_model_plan(config.fast), config.seed,
                                       device=config.device)


def _section_detector(summary: dict[str, Any], stage_dir: Path) -> Section:
    from rfo_toolkit.eval_sections import eval_figures, headline_table, per_category_table

    if "detector" in summary:
        return _section_trained_detector(summary, stage_dir)
    text = (
        f"YOLOv8n built from its yaml (no pretrained weights), trained from scratch for {summary['epochs']} epochs "
        f"at {summary['image_size']} px on {summary['n_train']} synthetic images in {summary['train_seconds']:.0f} s, "
        f"evaluated on {summary['n_test']} held-out images with rfo-bench eval (COCO stats, FROC as in the "
        "object-CXR protocol, image-level AUROC; 95% bootstrap intervals over patients)."
    )
    return Section(
        "Detector and its evaluation", paragraphs=[text],
        tables=[headline_table(summary, caption="Test-set detection performance"),
                per_category_table(summary, caption="Per class")],
        figures=eval_figures([stage_dir / name for name in summary["figures"]], _eval_record(stage_dir)),
    )


def _groups_text(groups: list[str] | None) -> str:
    """How much of the detector fine-tuning updated, in words."""
    if not groups or set(groups) >= {"backbone", "neck", "head"}:
        return "every layer"
    return f"its {' and '.join(groups)} only; the rest keeps the detector's weights"


def _section_trained_detector(summary: dict[str, Any], stage_dir: Path) -> Section:
    from rfo_bench.detectors.bundled import detector_name
    from rfo_toolkit.eval_sections import eval_figures, headline_table, per_category_table

    detector, finetune = summary["detector"], summary["finetune"]
    compute = detector.get("compute") or {}
    unseen_classes = detector.get("unseen_classes") or []
    unseen = ", ".join(unseen_classes) or "none"
    name = detector_name(detector["dir"])
    text = (
        f"The detector {'bundled with the toolkit' if name == 'shipped' else 'of ' + name} (recipe {detector.get('recipe')}, weights SHA-256 "
        f"{str(detector.get('weights_sha256'))[:12]}…, checked before loading; trained with "
        f"{(compute.get('cpu_seconds') or 0) / 3600:.1f} CPU-hours and {(compute.get('accelerator_seconds') or 0) / 3600:.2f} "
        f"accelerator-hours; classes it never saw: {unseen}) was evaluated sliced over {summary['n_test']} held-out "
        f"films of {summary['film_px']} px ({summary['image_size']} px tiles with overlap plus a whole-film pass, "
        "detections merged into film coordinates) with rfo-bench eval: COCO stats, FROC as in the object-CXR "
        "protocol, image-level AUROC, 95% bootstrap intervals over patients. Boxes of classes it never saw are "
        "left out of this evaluation, as in its own held-out test. Its detections of classes the films do not "
        "hold count as false positives; FROC is class-agnostic (any detection inside an object finds it). The "
        "per-class table lists the classes the films hold. It was then fine-tuned on the "
        f"{finetune['n_tiles']} training tiles ({_groups_text(finetune.get('groups'))}; "
        f"{finetune['epochs']} epoch{'s' if finetune['epochs'] != 1 else ''}, {finetune['seconds']:.0f} s): "
        "the original detector of the deletion requests below."
    )
    held = {k: v for k, v in (summary.get("per_category") or {}).items()
            if (v or {}).get("num_objects", 1) or k in unseen_classes}  # the films' classes, not all the detector's
    return Section(
        "Detector and its evaluation", paragraphs=[text],
        tables=[headline_table(summary, caption="Held-out films, sliced inference"),
                per_category_table({"per_category": held}, caption="Per class")],
        figures=eval_figures([stage_dir / name for name in summary["figures"]], _eval_record(stage_dir)),
    )


def _eval_record(stage_dir: Path) -> dict[str, Any]:
    """The detector stage's ``eval/report.json`` (its figure captions), or ``{}`` when absent or unreadable."""
    try:
        record = json.loads((stage_dir / "eval" / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _stage_classifier(config: DemoConfig, stage_dir: Path, _done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from rfo_toolkit.demo.classifier import patch_classifier_plan, train_patch_classifier

    return train_patch_classifier(stage_dir, patch_classifier_plan(config.fast), config.seed, config.radiograph,
                                  device=config.device)


def _section_classifier(summary: dict[str, Any], stage_dir: Path) -> Section:
    names = list(summary["per_class_accuracy"])
    train_counts, test_counts = summary.get("train_counts") or {}, summary.get("test_counts") or {}
    rows = [[name, train_counts.get(name), test_counts.get(name), summary["per_class_accuracy"][name]]
            for name in names]
    rows.append(["all", summary["n_train"], summary["n_test"], summary["test_accuracy"]])
    model = (f"A timm {summary['model']} (1 input channel, random initialisation) was trained for {summary['epochs']} "
             f"epochs in {summary['train_seconds']:.0f} s")
    if "film_px" not in summary:  # a run of an earlier release: 32 px patches of the synthetic set
        text = (f"{model} on {summary['n_train']} 32 px patches cut around the synthetic objects and from "
                f"object-free background, tested on {summary['n_test']} patches of held-out patients.")
        table = Table(["class", "test accuracy (%)"], [[r[0], r[3]] for r in rows], caption="Patch classification",
                      digits=1)
        return Section("Patch classifier", paragraphs=[text], tables=[table])
    cut = summary["cut"]
    spacing = summary["spacing_mm"]
    spacing_text = f"{spacing:.2f}" if isinstance(spacing, (int, float)) else "–".join(f"{s:.2f}" for s in spacing)
    context = (f"{cut['context_mm']:g} mm on a side (from the film's spacing) around each box centre"
               if cut.get("context_mm") else f"{cut['context']:g} times the box's longer side around its centre")
    window = {"patch": "each patch's 1–99 percentiles of its 16-bit values stretched to the full range",
              "film": "each film's 0.5–99.5 percentiles stretched to the full range",
              "none": "the 16-bit values as written"}[cut["window"]]
    text = (
        f"{summary['n_films']} films were rendered for this stage over the real radiograph at {summary['film_px']} px "
        f"({spacing_text} mm per pixel; seeds of their own) and split by pseudo-patient "
        f"({summary['n_train_patients']} training, {summary['n_test_patients']} held-out). Patches were cut from the "
        f"full films, labels in film pixels: {context}, resized to {summary['patch_px']} px, windowed with {window}; "
        "one background patch per film overlaps no box. Training objects were cut "
        f"{1 + cut['jitter_copies']} times each (centre, size and orientation jittered); held-out objects once. "
        f"{model} on the {summary['n_train']} training patches and tested on the {summary['n_test']} held-out "
        "patches" + (" (each scored by its mean softmax over its eight flips and quarter turns)"
                     if summary.get("dihedral_average") else "")
        + ". The settings were chosen on validation patients carved from the training ones "
        "(benchmarks/bench_patch_classifier.py, which states their accuracy over five seeds)."
    )
    table = Table(["class", "training patches", "held-out patches", "held-out accuracy (%)"], rows,
                  caption="Patch classification (held-out patients)", digits=1)
    figures = [Figure(stage_dir / name, CLASSIFIER_CAPTIONS.get(Path(name).name) or _unlisted_caption(name))
               for name in summary.get("figures", [])]
    return Section("Patch classifier", paragraphs=[text], tables=[table], figures=figures)


CLASSIFIER_CAPTIONS = {
    "patches.png": "Held-out patches as the classifier sees them (after windowing and resizing), one row per class, "
                   "with the predicted class above each: green where right, red where wrong.",
}


def _stage_unlearn(config: DemoConfig, stage_dir: Path, _done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from rfo_toolkit.demo.models import demo_model_plan, unlearn_detector

    out = Path(config.out_dir)
    if config.detector:
        from dataclasses import replace

        from rfo_toolkit.demo.clinical import (
            clinical_plan,
            detector_record,
            forget_class_of,
            prepare_start,
            start_weights,
        )

        record = detector_record(config.detector)
        clinical = clinical_plan(config.fast)
        plan = replace(demo_model_plan(config.fast), image_size=int(record["config"]["tiling"]["tile_size"]),
                       methods=clinical.methods)
        summary = unlearn_detector(stage_dir, out / "synth" / "clinical" / "tiles", out / "detector", plan,
                                   config.seed, forget_class=forget_class_of(record),
                                   retrain_config=clinical.finetune,
                                   retrain_start=start_weights(config.detector),
                                   prepare_start=lambda start: prepare_start(start, record, config.seed),
                                   trainable_groups=clinical.finetune_groups,
                                   device=config.device)
        return {**summary, "reference": "finetuned", "trainable_groups": list(clinical.finetune_groups)}
    return unlearn_detector(stage_dir, out / "synth" / "all", out / "detector", demo_model_plan(config.fast),
                            config.seed, device=config.device)


UNLEARN_COLUMNS = (("forget_ap50", "forget AP50"), ("retain_map50", "retain mAP50"), ("forget_recall", "forget recall"),
                   ("misattribution_rate", "misattribution"), ("mia_auc", "MIA AUC"), ("seconds", "seconds"),
                   ("cpu_seconds", "CPU-s"), ("time_ratio", "CPU time / retrain"))


def _section_unlearn(summary: dict[str, Any], stage_dir: Path) -> Section:
    requests = summary["requests"]
    tables = []
    for scenario, caption in (("class", f"Forget the class '{requests.get('class')}'"),
                              ("patient", f"Forget every image of {requests['patient']}")):
        rows = [[row["method"], *(row.get(key) for key, _ in UNLEARN_COLUMNS)]
                for row in summary["rows"] if row["scenario"] == scenario]
        if rows:
            tables.append(Table(["method", *(label for _, label in UNLEARN_COLUMNS)], rows, caption=caption))
    if summary.get("reference") == "finetuned":
        reference = (
            "Retrain, the gold standard the methods are measured against, is the trained detector fine-tuned with "
            "the original's budget on the retained tiles only; the original is the same detector fine-tuned on "
            "all training tiles. Both start from weights that never saw the demo's films, nor the forgotten "
            "class (one the detector's recipe left unseen). "
            + ("Fine-tuning, the references and every method update the same layers "
               f"({_groups_text(summary.get('trainable_groups'))}), so the demo's films reach only those. "
               if summary.get("trainable_groups") else "")
            + ("" if requests.get("class") else "The detector's record names no unseen demo class, so a class "
               "request would have no correct reference and is not made. ")
            + "The methods' budgets were chosen on the demo's films of other seeds, never these "
              "(benchmarks/bench_demo_unlearn.py: the lowest average gap to the retrained reference). ")
        unit = "tiles of the films at the detector's resolution"
    else:
        reference = ("Retrain, from scratch on the retained data only, is the gold standard the methods are "
                     "measured against. ")
        unit = "images"
    text = (
        "Deletion requests reach the trained detector: a class whose labels must no longer be "
        "used, and a patient who withdrew consent. OFMU (its first-order variant on a trained detector's "
        f"tiles, for cost) and two baselines start from the trained weights. {reference}The requests are answered on {unit}. Forget AP50 is measured on held-out {unit}; "
        "forget recall and misattribution on the forgotten training data; MIA AUC is a loss-based membership "
        "attack (0.5 = indistinguishable from unseen data). Every run wrote an audit record: "
        + ", ".join(summary["audit_records"]) + "."
    )
    return Section("Deletion requests and unlearning", paragraphs=[text], tables=tables,
                   figures=[Figure(stage_dir / n, UNLEARN_CAPTIONS.get(n) or _unlisted_caption(n))
                            for n in summary["figures"]])


STAGES: list[Stage] = [
    Stage("data", "Read the real backgrounds", _stage_data, _section_data),
    Stage("synth", "Synthesise radiographs with RFOs (physics)", _stage_synth, _section_synth),
    Stage("detector", "Evaluate the YOLO detector on held-out films and fine-tune it (or train one from scratch)",
          _stage_detector, _section_detector),
    Stage("classifier", "Train a timm patch classifier", _stage_classifier, _section_classifier),
    Stage("unlearn", "Answer deletion requests by unlearning", _stage_unlearn, _section_unlearn),
]


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def load_stage_summaries(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Summaries of the finished stages of a run directory, in stage order."""
    done: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        path = out_dir / stage.name / STAGE_FILE
        if path.is_file():
            try:
                done[stage.name] = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise UserInputError(f"corrupt stage summary: {err.msg}", file=path) from None
    return done


def build_report(out_dir: Path) -> dict[str, Path]:
    """Rebuild ``report.html`` and ``report.md`` of a run directory from its saved summaries."""
    out_dir = Path(out_dir)
    done = load_stage_summaries(out_dir)
    if not done:
        raise UserInputError("no finished demo stage found; run `vision-unlearn demo` first", file=out_dir)
    sections = [stage.section(done[stage.name], out_dir / stage.name) for stage in STAGES if stage.name in done]
    missing = [stage.name for stage in STAGES if stage.name not in done]
    subtitle = "Stages finished: " + ", ".join(done)
    if missing:
        subtitle += "; not yet run: " + ", ".join(missing)
    return write_report(out_dir / "report.html", REPORT_TITLE, sections, subtitle=subtitle,
                        header=report_header(out_dir), markdown_path=out_dir / "report.md")


REPORT_TITLE = "Retained-foreign-object detection: synthesis, evaluation and unlearning"


def demo_command(config: dict[str, Any]) -> str:
    """The ``vision-unlearn demo`` command line of a recorded :class:`DemoConfig` (defaults left out)."""
    import shlex

    words = [*DEMO_TOOL.split(), "--out", str(config.get("out_dir", "runs/demo"))]
    words += ["--fast"] if config.get("fast") else []
    words += ["--rerun"] if config.get("force") else []
    words += ["--seed", str(config["seed"])] if config.get("seed") not in (None, 0) else []
    for flag in ("radiograph", "ct"):
        words += [f"--{flag}", str(config[flag])] if config.get(flag) else []
    if config.get("detector"):
        from rfo_bench.detectors.bundled import detector_name

        words += ["--detector", detector_name(str(config["detector"]))]
    if "detector" in config and not config["detector"]:  # --detector auto would take a bundled detector today
        words += ["--detector", "scratch"]
    words += ["--device", str(config["device"])] if config.get("device") not in (None, "cpu") else []
    words += ["--threads", str(config["threads"])] if config.get("threads") else []
    return shlex.join(words)


def report_header(out_dir: Path) -> list[tuple[str, str]]:
    """Toolkit version, source commit, command and seed of a run, from its ``run.json``.

    The version and commit are those ``run.json`` recorded when present (``environment``), else this
    toolkit's; a run folder without a readable ``run.json`` has no command or seed line.
    """
    try:
        recorded = json.loads((out_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = {}
    recorded = recorded if isinstance(recorded, dict) else {}
    config = recorded.get("config") if isinstance(recorded.get("config"), dict) else None
    env = recorded.get("environment") if isinstance(recorded.get("environment"), dict) else {}
    seed = config.get("seed") if config else None
    return run_header(command=demo_command(config) if config else None,
                      seed=seed if isinstance(seed, int) else None,
                      toolkit_version=env.get("rfo-toolkit"), commit=env.get("commit"))


def _adopt_earlier_run(out_dir: Path) -> None:
    """Mark a run folder of an earlier release (no ownership marker yet) as the demo's, so it resumes.

    It is recognised by its ``run.json`` listing exactly the demo's stages and by holding nothing but
    those stages, their partial folders, the report and ``run.json``.
    """
    run_json = out_dir / "run.json"
    if read_marker(out_dir) is not None or not run_json.is_file() or run_json.stat().st_size > 1 << 20:
        return
    try:
        recorded = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    stages = [s.name for s in STAGES]
    if not isinstance(recorded, dict) or recorded.get("stages") != stages:
        return
    allowed = {"run.json", "report.html", "report.md", *stages, *(f"{s}.partial" for s in stages)}
    if all(p.name in allowed for p in out_dir.iterdir()):
        write_marker(out_dir, DEMO_TOOL, state="in-use")


RESULT_SETTINGS = ("fast", "seed", "radiograph", "ct", "detector")
"""The settings that shape what a stage computes: a resumed run must have the same ones."""


def _refuse_other_settings(out_dir: Path, config: DemoConfig) -> None:
    """Refuse to resume a run whose finished stages were computed with other settings (their results would mix).

    Raises:
        UserInputError: naming ``run.json`` and the first setting that differs.
    """
    run_json = out_dir / "run.json"
    if not run_json.is_file() or run_json.stat().st_size > 1 << 20 or not load_stage_summaries(out_dir):
        return
    try:
        document = json.loads(run_json.read_text(encoding="utf-8"))
        recorded = document.get("config") or {}
        release = (document.get("environment") or {}).get("rfo-toolkit")
    except (OSError, ValueError, AttributeError):
        return
    from toolkit_core.records import package_versions

    current = package_versions(("rfo-toolkit",)).get("rfo-toolkit")
    if release and current and release != current:  # another release sizes and trains its stages otherwise
        raise UserInputError(f"this folder holds a demo run of rfo-toolkit {release}, not {current}; its finished "
                             "stages would mix with this run's (use --rerun to redo them all, or another --out)",
                             file=run_json, field="environment.rfo-toolkit")
    defaults = asdict(DemoConfig(out_dir=str(out_dir)))
    for name in RESULT_SETTINGS:
        before, now = recorded.get(name, defaults[name]), getattr(config, name)
        if before != now:
            raise UserInputError(f"this folder holds a demo run with {name} {before!r}, not {now!r}; its finished "
                                 "stages would mix with this run's (use --rerun to redo them all, or another --out)",
                                 file=run_json, field=name)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run (or resume) every stage into ``config.out_dir`` and build the report.

    Returns:
        ``{"stages": {name: "ran"|"skipped"}, "report": {...}, "seconds": {...}}``.
    """
    from tqdm.auto import tqdm

    from toolkit_core.records import environment

    out_dir = Path(config.out_dir)
    if config.detector:  # a folder that is not a recipe-trained detector, or weights not its record's: before any work
        from rfo_toolkit.demo.clinical import start_weights

        start_weights(config.detector)
    _adopt_earlier_run(out_dir)
    claim_output_dir(out_dir, DEMO_TOOL)
    if not config.force:
        _refuse_other_settings(out_dir, config)
    _write_json(out_dir / "run.json", {"config": asdict(config), "stages": [s.name for s in STAGES],
                                        "environment": environment()})
    done = {} if config.force else load_stage_summaries(out_dir)
    status: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for stage in tqdm(STAGES, desc="demo", unit="stage"):
        if stage.name in done:
            status[stage.name] = "skipped"
            logger.info("stage %s already finished; skipping (use --force to re-run)", stage.name)
            continue
        final_dir, partial_dir = out_dir / stage.name, out_dir / f"{stage.name}.partial"
        remove_owned(partial_dir, out_dir)
        partial_dir.mkdir(parents=True)
        logger.info("stage %s: %s", stage.name, stage.title)
        start = time.perf_counter()
        try:
            summary = stage.run(config, partial_dir, done)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES):
                raise UserInputError(f"cannot write stage {stage.name!r}: {err.strerror}", file=partial_dir) from None
            raise
        seconds[stage.name] = round(time.perf_counter() - start, 3)
        summary = {**summary, "seconds": seconds[stage.name]}
        _write_json(partial_dir / STAGE_FILE, summary)
        remove_owned(final_dir, out_dir)
        os.replace(partial_dir, final_dir)
        done[stage.name] = summary
        status[stage.name] = "ran"
    report = build_report(out_dir)
    release_output_dir(out_dir, DEMO_TOOL)
    return {"stages": status, "seconds": seconds, "report": {k: str(v) for k, v in report.items()}}
