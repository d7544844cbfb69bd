"""``rfo-bench report RUN_DIR`` rebuilds a self-contained page from saved evaluation results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rfo_bench.io.images import write_png8
from rfo_toolkit.cli import rfo_bench_main as main


def test_report_rebuilds_html_from_eval_results(tmp_path: Path, capsys) -> None:
    report = {"coco": {"AP": 0.25, "AP50": 0.5}, "froc": {"score": 0.4, "fps_per_image": [0.125, 1.0],
                                                          "sensitivity": [0.2, 0.6]},
              "auroc": 0.75, "ci95": {"AP50": [0.3, 0.7]}, "per_category": {"needle": {"AP50": 0.5, "AP": 0.25}}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    write_png8(tmp_path / "froc.png", np.linspace(0, 1, 17 * 11).reshape(17, 11))
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "<td>AP50</td><td>0.500</td><td>[0.300, 0.700]</td>" in page
    assert "<td>image AUROC</td><td>0.750</td>" in page
    assert 'src="data:image/png;base64,' in page


def test_report_without_results_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "report.json" in capsys.readouterr().err
