"""The page section of the diffusion detection comparison (:func:`comparison_markdown`), from the result
:func:`rfo_toolkit.diffusion_comparison.run_comparison` returned (or its ``comparison.json``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _interval(pair: Sequence[Any] | None, digits: int = 3) -> str:
    if not pair or any(v is None or not math.isfinite(v) for v in pair):
        return "n/a"
    return f"[{pair[0]:.{digits}f}, {pair[1]:.{digits}f}]"


def comparison_markdown(result: Mapping[str, Any], command: str) -> str:
    """The page section of a finished :func:`run_comparison` (``result`` as it returned, or its JSON)."""
    from rfo_toolkit.leaderboard.summary import summarize_seeds

    config = result["config"]
    cells = result["cells"]
    seeds = result["seeds"]
    classes = list(config["classes"])
    arms = [a for a in (result.get("arms") or dict.fromkeys(c["arm"] for c in cells))
            if any(c["arm"] == a for c in cells)]
    sets = result["sets"]
    refined_arm = "physics+refined" in arms
    lines = ["## The detection comparison: physics-only vs physics+diffusion"
             + (" and physics+refined" if refined_arm else ""), ""]
    n, half = config["n_train"], config["n_train"] // 2
    gen_cost = result["compute"].get("train diffusion generator", {})
    sample_cost = result["compute"].get("sample diffusion films", {})
    for arm in arms[1:]:
        if f"{arm} - physics" in result["comparisons"]:
            lines += [f"**Result ({arm}):** {headline(result, arm)}.", ""]
    lines += [
        f"Measured by the command at the top of this page (seeds `--detection-seeds {','.join(map(str, seeds))}`):",
        "", "```bash", command, "```", "",
        f"* **Arms** (equal image count {n}, one detector recipe, so equal detector CPU budget): `physics`, {n} "
        f"physics films (`rfo-synth physics`, {config['render_px']} px, classes {', '.join(classes)}); "
        f"`physics+diffusion`, the first {half} of those films and {n - half} object-free physics films into which "
        f"the diffusion generator inpaints {config['objects_per_image']} object(s) each (it draws every object and "
        "its label)" + (f"; `physics+refined`, the same {n} physics films with the second {n - half} refined by "
                        "`rfo-synth diffusion refine` (SDEdit from t0 with a denoiser trained on the real film "
                        "only; boxes, masks and every pixel outside the refined region unchanged)"
                        if refined_arm else "") + ("; `physics_half`, the first "
                    f"{half} physics films alone (what the second half buys)." if "physics_half" in arms else "."),
        "* **Why inpainting into physics backgrounds** rather than whole generated films: the `cpu` generator is a "
        "patch model that draws objects, not anatomy; on object-free films of the same renderer the only thing "
        "that differs between the arms is who drew the objects, so the comparison measures the generated objects.",
        f"* **Seeds** {', '.join(map(str, seeds))}: seed `s` renders its training films with physics seed "
        f"{config['physics_seed_base']}+s and its backgrounds with {config['background_seed_base']}+s, samples "
        "with seed `s` and initialises the detector with seed `s`.",
        f"* **Held-out test**: {sets['test']['images']} physics films ({sets['test']['objects']} objects), physics "
        f"seed {config['test_seed']}, seen by no arm and not by the generator.",
        f"* **Generator**: `rfo-synth diffusion train` (`cpu` preset), {config['generator_steps']} steps, seed "
        f"{config['generator_seed']}, `--scale-groups {config.get('scale_groups', 'fit')}` ("
        + ("objects fitted to the 64-px patch, the geometry before mm-true scale groups"
           if config.get("scale_groups", "fit") == "fit" else "objects cut at their true mm size: mm per patch pixel "
           "of the scale groups") + "), on "
        f"{sets['generator_train']['images']} physics films of their own seed "
        f"{config['generator_data_seed']} ({sets['generator_train']['objects']} objects, disjoint from the test "
        f"set); sampling DDIM {config['sample_steps']} steps, guidance {config['guidance']}. Its own cost, "
        "outside the detector budget, is in the compute table below.",
        *(_refiner_lines(result) if refined_arm else []),
        "* **Fixed in advance, no tuning on the test films**: every setting above and the detector recipe were "
        "chosen before any test film was scored (sampling settings are this page's defaults; generator and "
        "refiner steps from the CPU budget); the one setting chosen on data is the refiner's t0, on validation "
        "renders of their own seed" + ("" if refined_arm else " (not used here)") + ".",
        f"* **Detector**: `{config['detector']}` from its yaml (random initialisation), {config['epochs']} epochs, "
        f"imgsz {config['imgsz']}, batch {config['batch_size']}, {config['optimizer']} lr {config['lr']}, "
        f"mosaic {config['mosaic']}, the last epoch's weights (no validation set), one torch thread.",
        f"* **Metrics** (the toolkit's evaluator, `rfo-bench eval`): AP50 (COCO AP at IoU 0.5, the mean over the "
        f"{len(classes)} classes, i.e. mAP50), per-class AP50, FROC score; per-cell 95 % intervals from "
        f"{config['bootstrap']} bootstrap replicates over test images.",
        "",
        "### Per seed", "",
        "| arm | seed | train images (objects) | AP50 [95 % CI] | FROC [95 % CI] | "
        + " | ".join(f"AP50 {c}" for c in classes) + " | detector train CPU-min |",
        "|---|---|---|---|---|" + "---|" * len(classes) + "---|",
    ]
    for arm in arms:
        for cell in sorted((c for c in cells if c["arm"] == arm), key=lambda c: c["seed"]):
            v, ci = cell["values"], cell["ci95"]
            cpu = cell.get("train_cpu_seconds")
            lines.append(f"| {arm} | {cell['seed']} | {cell['train_images']} ({cell['train_objects']}) | "
                         f"{_fmt(v['AP50'])} {_interval(ci.get('AP50'))} | {_fmt(v['FROC'])} {_interval(ci.get('FROC'))} | "
                         + " | ".join(_fmt(cell["per_class_AP50"].get(c)) for c in classes)
                         + f" | {_fmt(None if cpu is None else cpu / 60, 1)} |")
    lines += ["", "### Mean ± std over seeds", "",
              "| arm | seeds | AP50 | FROC | " + " | ".join(f"AP50 {c}" for c in classes) + " |",
              "|---|---|---|---|" + "---|" * len(classes)]
    for arm in arms:
        runs = [c for c in cells if c["arm"] == arm]

        def stat(values: Sequence[Any]) -> str:
            mean, std = summarize_seeds([math.nan if x is None else float(x) for x in values])
            return "n/a" if not math.isfinite(mean) else f"{_fmt(mean)} ± {_fmt(std)}"

        lines.append(f"| {arm} | {len(runs)} | {stat([c['values']['AP50'] for c in runs])} | "
                     f"{stat([c['values']['FROC'] for c in runs])} | "
                     + " | ".join(stat([c["per_class_AP50"].get(k) for c in runs]) for k in classes) + " |")
    lines += ["", "### Paired differences (arm − physics)", "",
              "| difference | metric | per seed | mean | 95 % CI over seeds (t) | 95 % CI over test images "
              "(paired bootstrap) | verdict |", "|---|---|---|---|---|---|---|"]
    for name, per_metric in result["comparisons"].items():
        for metric, entry in per_metric.items():
            seeds_ci, images_ci = entry["over_seeds"], entry["over_images"]
            lines.append(f"| {name} | {metric} | {', '.join(_fmt(d) for d in entry['per_seed'])} | "
                         f"{_fmt(entry['mean'])} | {_interval((seeds_ci['low'], seeds_ci['high']))} | "
                         f"{_interval((images_ci['low'], images_ci['high']))} | {entry['verdict']} |")
    lines += ["", "The interval over seeds (Student t of the per-seed differences, "
              f"{len(seeds)} seeds) covers the variation of training data, sampling and initialisation; the one "
              "over test images resamples the test films (the same replicates in every cell, so each replicate's "
              "difference is paired) and holds the trained detectors fixed. An arm is called better or worse "
              "only where both intervals exclude 0.", ""]
    detector_wall = sum(c.get("train_seconds") or 0.0 for c in cells)
    detector_cpu = sum(c.get("train_cpu_seconds") or 0.0 for c in cells)
    logged = result.get("generator_train_logged_s")
    fit_cost = result["compute"].get("fit refiner", {})
    refine_cost = result["compute"].get("refine physics films", {})
    recorded = gen_cost.get("cpu_s", 0.0)
    generator_cpu = _fmt(recorded / 60, 1) if logged and recorded > 0.05 * logged else "not recorded"
    lines += ["### Compute", "", "| step | wall min | CPU min | measured by |", "|---|---|---|---|",
              f"| detector training, {len(cells)} cells | {detector_wall / 60:.1f} | {detector_cpu / 60:.1f} | "
              "each detector's record |",
              f"| diffusion generator training ({config['generator_steps']} steps) | "
              f"{_fmt((logged or math.nan) / 60, 1)} | {generator_cpu} | its train log (wall); this folder's ledger |",
              f"| diffusion sampling ({len(seeds)} x {config['n_train'] // 2} films) | "
              f"{_fmt(sample_cost.get('wall_s', math.nan) / 60, 1)} | {_fmt(sample_cost.get('cpu_s', math.nan) / 60, 1)} "
              "| this folder's ledger |",
              *([f"| refiner training ({(result.get('refiner') or {}).get('step')} steps) and t0 choice | "
                 f"{_fmt(fit_cost.get('wall_s', math.nan) / 60, 1)} | {_fmt(fit_cost.get('cpu_s', math.nan) / 60, 1)} "
                 "| this folder's ledger |",
                 f"| refinement ({len(seeds)} x {config['n_train'] - config['n_train'] // 2} films) | "
                 f"{_fmt(refine_cost.get('wall_s', math.nan) / 60, 1)} | "
                 f"{_fmt(refine_cost.get('cpu_s', math.nan) / 60, 1)} | this folder's ledger |"] if refined_arm else []),
              "", "One torch thread per process on a 2-core machine shared with other jobs, so wall time overstates "
              "the CPU time. Finished sets and cells are reused from the work folder, so an interrupted run "
              "resumes; the ledger (`compute.json`) sums what the invocations run there spent.", "",
              "Commands run (or reused) by this invocation:", "", "```bash", *result["commands"], "```", ""]
    return "\n".join(lines)


def headline(result: Mapping[str, Any], arm: str = "physics+diffusion") -> str:
    """One sentence: the AP50 difference of ``arm - physics`` with both intervals and the verdict."""
    entry = result["comparisons"][f"{arm} - physics"]["AP50"]
    seeds_ci, images_ci = entry["over_seeds"], entry["over_images"]
    said = {"better": "better than", "worse": "worse than", "no difference shown": "not distinguishable from"}
    means = {a: float(np.mean([c["values"]["AP50"] for c in result["cells"] if c["arm"] == a]))
             for a in ("physics", arm)}
    count = "with half the films" if arm == "physics_half" else "at equal image count"
    return (f"{arm} is {said[entry['verdict']]} physics-only {count}: AP50 "
            f"{_fmt(means[arm])} vs {_fmt(means['physics'])} (mean of {len(entry['seeds'])} seeds), "
            f"difference {_fmt(entry['mean'])}, 95 % CI {_interval((seeds_ci['low'], seeds_ci['high']))} over seeds "
            f"and {_interval((images_ci['low'], images_ci['high']))} over test images")


def _t0_sentence(refiner: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """Which t0 the arm used and whether the label rule accepted it."""
    t0, accepted = refiner.get("arm_t0") or (refiner.get("t0"), True)
    if accepted:
        return f"**t0 = {_fmt(t0, 2)}, the rule's choice**"
    return (f"**The rule keeps no t0 above 0** (it chooses 0: no refinement, the films of the `physics` arm), so "
            f"the arm refines at the fallback **t0 = {_fmt(t0, 2)}**, fixed in advance as the grid's smallest value "
            "and rejected by the rule: the detector shows what the gentlest refinement does, with objects fainter "
            "than physics drew them")


def _refiner_lines(result: Mapping[str, Any]) -> list[str]:
    """The bullets on the refiner and its t0 choice (with the measured table)."""
    refiner = result.get("refiner") or {}
    config = result["config"]
    chosen = refiner.get("t0_selection") or {}
    rule = chosen.get("rule") or {}
    cfg = refiner.get("config") or {}
    film = refiner.get("film") or {}
    rows = ", ".join(f"t0 {row['t0']:g}: {_fmt(row['kept_fraction'], 2)} of {row['objects_counted']} "
                     f"(median ratio {_fmt(row['median_ratio'], 2)})" for row in chosen.get("table", []))
    return [
        f"* **Refiner** (`rfo-synth diffusion fit-refiner`): an unconditional UNet ({_fmt((refiner.get('parameters') or 0) / 1e6, 2)} M "
        f"parameters, `v`-prediction, cosine schedule) trained {refiner.get('step')} steps of batch "
        f"{cfg.get('batch_size')} on object-free {cfg.get('patch_px')}-px crops of the one real film "
        f"(`{film.get('name')}`, sha256 `{str(film.get('sha256'))[:12]}…`) resampled to the renders' "
        f"{cfg.get('size_px')} px by the renderer's own rule; crops drawn among the {refiner.get('crop_windows')} "
        "windows whose centre lies in the renderer's body mask (where it places objects), with random flips, "
        f"90° rotations, gain {tuple(cfg.get('gain_range') or ())} and offset {tuple(cfg.get('offset_range') or ())} "
        f"(the renders' console curves vary grey levels); loss {_fmt(refiner.get('loss_first_50'))} → "
        f"{_fmt(refiner.get('loss_last_50'))} (mean of the first / last 50 steps). It never saw a physics render.",
        f"* **t0, chosen on validation renders, not on the test films**: the {chosen.get('validation_images')} "
        f"labelled films ({chosen.get('validation_objects')} objects) among {config.get('refine_val_n')} physics "
        f"films of their own seed {config.get('refine_val_seed')}; rule: "
        f"the largest t0 of the grid {', '.join(f'{v:g}' for v in chosen.get('grid', []))} at which (and at every "
        f"smaller value) at least {_fmt(rule.get('coverage'), 2)} of the objects keep ≥ {_fmt(rule.get('keep'), 2)} "
        "of their physics contrast (mean inside the mask minus mean of the 4-px ring just outside the refined "
        f"region; objects fainter than {rule.get('min_contrast')} grey levels not counted); the walk up the grid "
        f"stops at the first failure. Measured fraction keeping it: {rows or 'n/a'}. "
        + _t0_sentence(refiner, config)
        + f" (DDIM {config.get('refine_steps')} steps over the schedule, region = each object mask dilated by "
        f"{config.get('refine_margin_px')} px, {config.get('refine_context_px')} px of context). Boxes and masks are "
        "copied and every pixel outside the region is kept, so the labels' geometry is exact.",
        "* **What this arm can show**: the only real radiograph here is the renderer's own background film, and it "
        "holds no RFO, so the held-out test films are physics renders too. A refiner that learns the real film's "
        "look (its sharpness, grain and processing at 1.44 mm pixels) can help the detector only by making the "
        "training objects' surroundings less of a shortcut; if it moves the training objects away from the "
        "physics test objects it shows as a loss. A gain on real films would need real films with RFOs to test on.",
    ]
