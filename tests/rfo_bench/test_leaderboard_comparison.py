"""The leaderboard's paired differences between arms (pure math), their replicates file, and their Markdown.

Synthetic replicates stand in for the evaluator's: replicate ``b`` of every run resamples the same test
patients, so a patient draw that is hard for one arm is hard for the other too. The tolerances below are
margins of constructed cases, not values measured on one machine.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.metrics.bootstrap import percentile_interval
from rfo_toolkit.leaderboard.comparison import (
    HIGHER,
    LOWER,
    NO_DIFFERENCE,
    SINGLE_SEED_NOTE,
    Cell,
    compare_cells,
    comparison_pairs,
    paired_difference,
    two_level_replicates,
    verdict,
)
from rfo_toolkit.leaderboard.config import METRICS
from rfo_toolkit.leaderboard.markdown import COMPARISON_TITLE, render_markdown
from rfo_toolkit.leaderboard.runs import (
    NO_FINE_TUNING,
    REPLICATE_KEYS,
    RunMetrics,
    RunOutcome,
    read_replicates,
    write_replicates,
)
from rfo_toolkit.leaderboard.summary import aggregate
from toolkit_core.errors import UserInputError

B = 400


def _patient_difficulty(seeds: int, seed: int = 0) -> np.ndarray:
    """``(S, B)`` replicates of one arm whose spread comes from the patient draw: wide unpaired intervals."""
    rng = np.random.default_rng(seed)
    hard = rng.uniform(0.2, 0.8, size=B)  # how hard patient replicate b is, shared by every run
    return hard[None, :] + rng.normal(0.0, 0.005, size=(seeds, B))


def test_a_constant_paired_difference_has_a_zero_width_interval_while_each_arm_alone_is_wide() -> None:
    reference = _patient_difficulty(seeds=3)
    treatment = reference + 0.05
    found = paired_difference(treatment.mean(axis=1), reference.mean(axis=1), treatment, reference, seed=0)
    assert found.low == pytest.approx(0.05, abs=1e-12) and found.high == pytest.approx(0.05, abs=1e-12)
    assert found.mean == pytest.approx(0.05, abs=1e-12) and found.std == pytest.approx(0.0, abs=1e-12)
    assert found.verdict == HIGHER and found.replicates_used == B and found.replicates_left_out == 0
    # unpaired, each arm's interval spans most of the patient spread (uniform 0.2..0.8) and the two overlap
    treated, untreated = percentile_interval(treatment[0]), percentile_interval(reference[0])
    assert treated.high - treated.low > 0.4 and untreated.high - untreated.low > 0.4
    assert treated.low < untreated.high


def _noisy_difference(mean: float, seeds: int = 5, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    reference = _patient_difficulty(seeds, seed)
    rng = np.random.default_rng(seed + 100)
    treatment = reference + mean + rng.normal(0.0, 0.05, size=(seeds, 1)) + rng.normal(0.0, 0.05, size=(seeds, B))
    return treatment, reference


@pytest.mark.parametrize(("mean", "expected"), [(0.2, HIGHER), (-0.2, LOWER), (0.0, NO_DIFFERENCE)])
def test_verdict_follows_the_paired_interval(mean: float, expected: str) -> None:
    """Seed effects of sd 0.05 over 5 seeds and patient noise of sd 0.05: the interval of the mean is about
    ±0.05 wide, so ±0.2 lies four half-widths from 0 and 0 lies in the middle."""
    treatment, reference = _noisy_difference(mean)
    found = paired_difference(treatment.mean(axis=1), reference.mean(axis=1), treatment, reference, seed=0)
    assert found.verdict == expected
    assert found.low < found.mean < found.high
    assert found.high - found.low < 0.15


def test_verdict_words_are_only_the_intervals() -> None:
    assert verdict(0.01, 0.2) == HIGHER
    assert verdict(-0.2, -0.01) == LOWER
    assert verdict(-0.1, 0.1) == NO_DIFFERENCE
    assert verdict(0.0, 0.1) == NO_DIFFERENCE  # touching 0 is not above it
    assert verdict(math.nan, math.nan) == NO_DIFFERENCE


def test_two_level_replicates_draw_seeds_and_keep_the_patient_replicate() -> None:
    # seed 0 differs by 0 at every patient replicate, seed 1 by 1: a replicate's mean over two drawn seeds
    # is 0, 0.5 or 1, and with many replicates all three occur
    differences = np.vstack([np.zeros(B), np.ones(B)])
    values = two_level_replicates(differences, seed=3)
    assert values.shape == (B,) and set(np.unique(values)) == {0.0, 0.5, 1.0}
    # one seed: the seed level has no spread, the replicate is that seed's difference at b
    column = np.linspace(-1.0, 1.0, B)[None, :]
    np.testing.assert_allclose(two_level_replicates(column, seed=3), column[0])


def test_seed_spread_widens_the_interval() -> None:
    """No patient noise, per-seed differences 0.1, -0.1, 0.3: the interval is the spread of seed means."""
    differences = np.array([0.1, -0.1, 0.3])
    reference = np.zeros((3, B))
    treatment = reference + differences[:, None]
    found = paired_difference(differences, np.zeros(3), treatment, reference, seed=0)
    assert found.mean == pytest.approx(0.1) and found.std == pytest.approx(0.2)
    assert -0.1 - 1e-12 <= found.low < 0.0 < found.high <= 0.3 + 1e-12
    assert found.verdict == NO_DIFFERENCE


def test_undefined_replicates_are_left_out_and_counted() -> None:
    reference = _patient_difficulty(seeds=2)
    treatment = reference + 0.1
    reference[:, :7] = np.nan  # e.g. no positive patient drawn: AUROC undefined on both sides
    treatment[1, 7] = np.nan   # undefined on one side only
    found = paired_difference(treatment.mean(axis=1), reference.mean(axis=1), treatment, reference, seed=0)
    assert found.replicates_left_out >= 7 and found.replicates_used + found.replicates_left_out == B
    assert found.verdict == HIGHER
    # fewer usable replicates than the evaluator's minimum: no interval, no verdict
    reference[:, : B - 1] = np.nan
    few = paired_difference([0.6, 0.6], [0.5, 0.5], treatment, reference, seed=0)
    assert few.replicates_used == 1 and math.isnan(few.low) and few.verdict == NO_DIFFERENCE
    assert few.mean == pytest.approx(0.1)


def test_without_replicates_there_is_no_interval() -> None:
    found = paired_difference([0.6, 0.7], [0.5, 0.5])
    assert found.mean == pytest.approx(0.15) and math.isnan(found.low) and found.verdict == NO_DIFFERENCE


def test_shapes_that_do_not_pair_are_refused() -> None:
    with pytest.raises(ValueError, match="pair up"):
        paired_difference([0.5, 0.6], [0.5, 0.5], np.zeros((2, 4)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([0.5, 0.6, 0.7], [0.5, 0.5])


def _cell(seed: int | None, offset: float, reps: np.ndarray) -> Cell:
    return Cell(seed=seed, values={m: float(reps.mean()) + offset for m in ("AP50", "FROC")},
                replicates={m: reps + offset for m in ("AP50", "FROC")})


def test_a_deterministic_reference_pairs_with_every_seed() -> None:
    patients = _patient_difficulty(seeds=1)[0]
    start = _cell(None, 0.0, patients)
    tuned = [_cell(seed, 0.1 + 0.01 * seed, patients) for seed in (0, 1, 2)]
    found = compare_cells(tuned, [start], ("AP50", "FROC"), seed=0)
    assert found["seeds"] == [0, 1, 2] and found["notes"] == []
    ap50 = found["metrics"]["AP50"]
    assert ap50["mean"] == pytest.approx(0.11) and ap50["std"] == pytest.approx(0.01)
    assert 0.1 - 1e-12 <= ap50["ci95"][0] <= ap50["ci95"][1] <= 0.12 + 1e-12 and ap50["verdict"] == HIGHER


def test_seeds_of_one_side_only_are_left_out_and_one_seed_is_said() -> None:
    patients = _patient_difficulty(seeds=1)[0]
    found = compare_cells([_cell(0, 0.1, patients), _cell(1, 0.1, patients)], [_cell(0, 0.0, patients)],
                          ("AP50",), seed=0)
    assert found["seeds"] == [0]
    assert found["notes"][0] == "seeds run on one side only, left out: 1"
    assert SINGLE_SEED_NOTE in found["notes"]
    assert found["metrics"]["AP50"]["verdict"] == HIGHER and math.isnan(found["metrics"]["AP50"]["std"])


def test_comparison_pairs_reference_arm_and_no_fine_tuning() -> None:
    arms = {"scratch": ["real", "real+physics", "real+diffusion"],
            "start": [NO_FINE_TUNING, "real", "real+physics"], "no-real": ["real+physics"]}
    assert comparison_pairs(arms, "real", NO_FINE_TUNING) == [
        ("scratch", "real+physics", "real"), ("scratch", "real+diffusion", "real"),
        ("start", "real+physics", "real"), ("start", "real", NO_FINE_TUNING),
        ("start", "real+physics", NO_FINE_TUNING)]


def test_replicates_round_trip_and_refuse_object_arrays(tmp_path: Path) -> None:
    path = tmp_path / "run" / "replicates.npz"
    evaluator = {"AP50": np.array([0.5, np.nan]), "froc": np.array([0.25, 0.75]), "AP50_critical": np.zeros(2)}
    write_replicates(path, evaluator, evaluation_seed=0, bootstrap=2, key="abc")
    found = read_replicates(path)
    assert (found.evaluation_seed, found.bootstrap, found.key) == (0, 2, "abc")
    assert sorted(found.metrics) == ["AP50", "FROC"]
    np.testing.assert_array_equal(found.metrics["AP50"], [0.5, np.nan])
    assert [p.name for p in path.parent.iterdir()] == ["replicates.npz"]  # no temporary file left behind

    crafted = tmp_path / "crafted.npz"
    np.savez(crafted, AP50=np.array([{"a": 1}], dtype=object), evaluation_seed=np.int64(0), bootstrap=np.int64(1),
             key=np.array("abc"))
    with pytest.raises(UserInputError) as info:
        read_replicates(crafted)
    assert info.value.file == str(crafted) and "\n" not in str(info.value)
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match="garbage.npz"):
        read_replicates(tmp_path / "garbage.npz")


def _outcome(model: str, arm: str, seed: int | None, value: float) -> RunOutcome:
    values = {m: value for m in METRICS}
    metrics = RunMetrics(values=values, intervals={m: (value - 0.1, value + 0.1) for m in METRICS},
                         froc_fp_per_image=(0.125, 1.0), froc_sensitivity=(value, value))
    return RunOutcome(model=model, arm=arm, seed=seed, run_dir="", train_seconds=0.0 if seed is None else 10.0,
                      train_images=0 if seed is None else 8, metrics=metrics,
                      compute={"train_cpu_seconds": 0.0, "train_accelerator_seconds": 0.0, "cpu_seconds": 1.0},
                      evaluation="sliced")


def test_markdown_states_the_paired_differences_and_the_do_nothing_row() -> None:
    patients = _patient_difficulty(seeds=1)[0]
    outcomes = [_outcome("m+start", NO_FINE_TUNING, None, 0.4)]
    outcomes += [_outcome("m+start", "real", s, 0.5 + 0.01 * s) for s in (0, 1, 2)]
    outcomes += [_outcome("m+start", "real+physics", s, 0.45 + 0.01 * s) for s in (0, 1, 2)]
    reps = {(o.arm, o.seed): {m: patients + o.metrics.values[m] for m in METRICS} for o in outcomes}
    cells = {arm: [Cell(o.seed, o.metrics.values, reps[(o.arm, o.seed)]) for o in outcomes if o.arm == arm]
             for arm in (NO_FINE_TUNING, "real", "real+physics")}
    comparisons = [{"model": "m+start", "arm": arm, "reference": ref, **compare_cells(cells[arm], cells[ref], METRICS)}
                   for _, arm, ref in comparison_pairs({"m+start": list(cells)}, "real", NO_FINE_TUNING)]
    comparisons.append({"model": "m+start", "arm": "real+diffusion", "reference": "real", "seeds": [0], "notes": [],
                        "metrics": {"AP50": {"mean": -1e-6, "std": math.nan, "ci95": [-2e-4, 1e-4],
                                             "verdict": NO_DIFFERENCE}}})
    rows = aggregate(outcomes)
    assert rows[0]["deterministic"] and rows[0]["seeds"] == [] and math.isnan(rows[0]["AP50"]["std"])
    summary = {"name": "t", "seeds": [0, 1, 2], "bootstrap": B, "evaluation_seed": 0, "rows": rows,
               "reference_arm": "real", "comparisons": comparisons, "starts": [], "notes": [], "plot": "froc.png",
               "command": "rfo-bench benchmark --config t.yaml",
               "data": {"test_images": 4, "test_positive_images": 2, "test_objects": 2, "test_patients": 2,
                        "train_images": 8}}
    markdown = render_markdown(summary)
    print(markdown[markdown.index("## "):])
    assert "| m+start | none (no fine-tuning) | 0 | 0.400 ± n/a [0.300, 0.500] |" in markdown
    assert "| m+start | real | 8 | 0.510 ± 0.010 [0.410, 0.610] |" in markdown
    section = markdown[markdown.index(f"## {COMPARISON_TITLE}"):]
    assert "| Model | Arm vs reference | Seeds | Δ AP50 mean ± std over seeds [95 % paired CI] | Verdict |" in section
    assert "| m+start | real+physics vs real | 3 | -0.050 ± 0.000 [-0.050, -0.050] | lower |" in section
    assert "| m+start | real vs none (no fine-tuning) | 3 | +0.110 ± 0.010 [+0.100, +0.120] | higher |" in section
    assert "| m+start | real+diffusion vs real | 1 | 0.000 [0.000, 0.000] | no difference shown |" in section
    assert "two-level bootstrap" in section and "the test patients (the evaluator's replicate, the same draw for both arms" in section
    for word in ("better", "worse"):
        assert word not in markdown
    assert set(REPLICATE_KEYS) == set(METRICS)


def test_the_do_nothing_curve_is_drawn_dashed_in_every_panel() -> None:
    from rfo_toolkit.leaderboard.plots import NOT_FINE_TUNED_SUFFIX, froc_figure

    outcomes = [_outcome("m+start", NO_FINE_TUNING, None, 0.4), _outcome("m+start", "real", 0, 0.5),
                _outcome("m+start", "real+physics", 0, 0.6)]
    figure = froc_figure(aggregate(outcomes), ["real", "real+physics"])
    assert [ax.get_title() for ax in figure.axes] == ["real", "real+physics"]
    for ax, value in zip(figure.axes, (0.5, 0.6), strict=True):
        tuned, start = ax.get_lines()
        assert tuned.get_label() == "m+start" and tuned.get_linestyle() == "-"
        np.testing.assert_allclose(tuned.get_ydata(), [value, value])
        assert start.get_label() == "m+start" + NOT_FINE_TUNED_SUFFIX and start.get_linestyle() == "--"
        np.testing.assert_allclose(start.get_ydata(), [0.4, 0.4])
