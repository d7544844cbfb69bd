"""``vision-unlearn benchmark`` shows its progress: a bar on stderr over the model runs by default
(one run per reference retrain, the original's measures and each method), none with progress=False."""

from __future__ import annotations

from vision_unlearn.benchmark import BenchmarkSpec, run_benchmark

TINY = {"epochs": 1, "lr": 0.05, "batch_size": 128}


def _spec() -> BenchmarkSpec:
    return BenchmarkSpec(forget=("class:3",), methods=("finetune",), seeds=(0,), reference_retrains=1, relearn=False,
                         original=TINY, method_configs={"retrain": TINY, "finetune": {"epochs": 1}})


def test_benchmark_bar_counts_runs_on_stderr_and_is_quiet_without_progress(tmp_path, capsys) -> None:
    run_benchmark(_spec(), tmp_path / "on")
    err = capsys.readouterr().err
    # 1 reference retrain + the original + finetune = 3 runs for the one (seed, request)
    assert "benchmark" in err and "3/3" in err and "run" in err
    run_benchmark(_spec(), tmp_path / "off", progress=False)
    assert "benchmark" not in capsys.readouterr().err
