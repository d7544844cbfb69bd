"""The demo runner (resume, --force, unwritable output) and the self-contained report."""

from __future__ import annotations

import base64
import errno
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.detectors.bundled import bundle_location
from rfo_bench.io.images import write_png8
from rfo_toolkit.demo import pipeline as demo_module
from rfo_toolkit.demo.pipeline import DemoConfig, Stage, build_report, demo_command, run_demo
from toolkit_core.errors import UserInputError
from toolkit_core.html_report import Figure, Section, Table, render_html
from toolkit_core.records import source_commit


def _fake_stages(calls: list[str], fail_on: str | None = None):
    def make(name: str, value: float):
        def run(config, stage_dir: Path, done):
            calls.append(name)
            if name == fail_on:
                (stage_dir / "half-written.bin").write_bytes(b"x")
                raise KeyboardInterrupt
            write_png8(stage_dir / "plot.png", np.linspace(0, 1, 17 * 11).reshape(17, 11))
            return {"value": value, "upstream": sorted(done)}

        def section(summary, stage_dir: Path) -> Section:
            table = Table(["stage", "value"], [[name, summary["value"]]], digits=4)
            return Section(name, tables=[table], figures=[Figure(stage_dir / "plot.png", f"{name} plot")])

        return Stage(name, name, run, section)

    return [make("first", 0.12345), make("second", 2.5), make("third", 7.0)]


def test_interrupted_run_resumes_and_force_reruns(tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(demo_module, "STAGES", _fake_stages(calls, fail_on="second"))
    with pytest.raises(KeyboardInterrupt):
        run_demo(DemoConfig(out_dir=str(tmp_path)))
    assert (tmp_path / "first" / "stage.json").is_file()
    assert not (tmp_path / "second").exists() and (tmp_path / "second.partial").exists()

    calls.clear()
    monkeypatch.setattr(demo_module, "STAGES", _fake_stages(calls))
    result = run_demo(DemoConfig(out_dir=str(tmp_path)))
    assert calls == ["second", "third"]
    assert result["stages"] == {"first": "skipped", "second": "ran", "third": "ran"}
    assert not (tmp_path / "second.partial").exists()
    assert json.loads((tmp_path / "third" / "stage.json").read_text())["upstream"] == ["first", "second"]

    calls.clear()
    run_demo(DemoConfig(out_dir=str(tmp_path), force=True))
    assert calls == ["first", "second", "third"]


def test_report_numbers_equal_saved_json_and_assets_are_embedded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(demo_module, "STAGES", _fake_stages([]))
    run_demo(DemoConfig(out_dir=str(tmp_path)))
    page = (tmp_path / "report.html").read_text()
    for name in ("first", "second", "third"):
        saved = json.loads((tmp_path / name / "stage.json").read_text())["value"]
        assert f"<td>{name}</td><td>{saved:.4f}</td>" in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 3
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert not re.search(r'(src|href)="(http|//|file:)', page)
    (tmp_path / "report.html").unlink()
    build_report(tmp_path)  # `vision-unlearn report RUN_DIR` rebuilds the same page from the saved files
    assert (tmp_path / "report.html").read_text() == page


def test_missing_figure_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="missing"):
        render_html("t", [Section("s", figures=[Figure(tmp_path / "nope.png", "a plot")])])


@pytest.mark.parametrize("caption", ["", "   "])
def test_a_figure_needs_a_caption(tmp_path: Path, caption: str) -> None:
    with pytest.raises(ValueError, match="caption"):
        Figure(tmp_path / "plot.png", caption)


def test_report_header_states_version_commit_command_and_seed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(demo_module, "STAGES", _fake_stages([]))
    run_demo(DemoConfig(out_dir=str(tmp_path / "run"), seed=7, fast=True))
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["environment"]
    assert recorded["commit"] == source_commit()
    page = (tmp_path / "run" / "report.html").read_text()
    header = dict(re.findall(r"<tr><th>([^<]+)</th><td><code>([^<]*)</code></td></tr>", page))
    assert header["toolkit version"] == recorded["rfo-toolkit"]
    assert header["source commit"] == (recorded["commit"] or "unknown (not a git checkout)")
    assert header["seed"] == "7"
    command = header["command"].replace("&#x27;", "'")
    assert shlex.split(command) == ["vision-unlearn", "demo", "--out", str(tmp_path / "run"), "--fast", "--seed", "7",
                                    "--detector", "scratch"]
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "| seed | `7` |" in markdown and "| toolkit version |" in markdown
    # every figure says what it shows, in the page and in the markdown
    assert page.count("<figure>") == page.count("<figcaption>") == 3
    assert "*first plot*" in markdown and "![first plot](first/plot.png)" in markdown


def test_report_of_a_run_without_run_json_has_version_and_commit_only(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(demo_module, "STAGES", _fake_stages([]))
    run_demo(DemoConfig(out_dir=str(tmp_path)))
    (tmp_path / "run.json").unlink()
    page = build_report(tmp_path)["html"].read_text()
    header = dict(re.findall(r"<tr><th>([^<]+)</th><td><code>([^<]*)</code></td></tr>", page))
    assert set(header) == {"toolkit version", "source commit"}


@pytest.mark.parametrize("change", [{"seed": 1}, {"fast": True}, {"ct": "another_ct.nii.gz"}])
def test_a_run_is_not_resumed_with_settings_that_change_its_results(tmp_path: Path, monkeypatch,
                                                                   change: dict) -> None:
    calls: list[str] = []
    monkeypatch.setattr(demo_module, "STAGES", _fake_stages(calls, fail_on="second"))
    with pytest.raises(KeyboardInterrupt):
        run_demo(DemoConfig(out_dir=str(tmp_path)))
    monkeypatch.setattr(demo_module, "STAGES", _fake_stages(calls))
    calls.clear()
    with pytest.raises(UserInputError, match="would mix") as err:
        run_demo(DemoConfig(out_dir=str(tmp_path), **change))
    assert err.value.field == next(iter(change)) and calls == []
    run_demo(DemoConfig(out_dir=str(tmp_path), force=True, **change))  # --rerun redoes every stage with them
    assert calls == ["first", "second", "third"]
    calls.clear()
    run_demo(DemoConfig(out_dir=str(tmp_path), **change))  # and then resumes with them
    assert calls == []


def test_a_run_of_another_release_is_not_resumed(tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(demo_module, "STAGES", _fake_stages(calls, fail_on="second"))
    with pytest.raises(KeyboardInterrupt):
        run_demo(DemoConfig(out_dir=str(tmp_path)))
    run_json = tmp_path / "run.json"
    recorded = json.loads(run_json.read_text())
    recorded["environment"]["rfo-toolkit"] = "0.0.1"  # the run was started by an earlier release
    run_json.write_text(json.dumps(recorded))
    monkeypatch.setattr(demo_module, "STAGES", _fake_stages(calls))
    calls.clear()
    with pytest.raises(UserInputError, match="rfo-toolkit 0.0.1") as err:
        run_demo(DemoConfig(out_dir=str(tmp_path)))
    assert err.value.field == "environment.rfo-toolkit" and calls == []
    run_demo(DemoConfig(out_dir=str(tmp_path), force=True))  # --rerun redoes every stage with this release
    assert calls == ["first", "second", "third"]


def test_demo_command_leaves_defaults_out() -> None:
    assert demo_command({"out_dir": "runs/demo", "fast": False, "force": False, "seed": 0, "radiograph": None,
                         "ct": None}) == "vision-unlearn demo --out runs/demo"
    assert demo_command({"out_dir": "my runs/x", "force": True, "seed": 3, "ct": "ct.nii.gz"}) == (
        "vision-unlearn demo --out 'my runs/x' --rerun --seed 3 --ct ct.nii.gz")
    # a run from scratch says so (the default, auto, takes a bundled detector where one exists)
    assert demo_command({"out_dir": "runs/demo", "detector": None, "device": "cuda", "threads": 1}) == (
        "vision-unlearn demo --out runs/demo --detector scratch --device cuda --threads 1")
    assert demo_command({"out_dir": "runs/demo", "detector": "runs/shipped", "device": "cpu"}) == (
        "vision-unlearn demo --out runs/demo --detector runs/shipped")
    # the bundled detector by its name, not by where this installation keeps it
    assert demo_command({"out_dir": "runs/demo", "detector": str(bundle_location())}) == (
        "vision-unlearn demo --out runs/demo --detector shipped")


def test_unwritable_or_full_output_gives_clear_error(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserInputError, match="not writable"):
        run_demo(DemoConfig(out_dir=str(blocker / "run")))

    def full_disk(config, stage_dir, done):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(demo_module, "STAGES", [Stage("s", "s", full_disk, lambda s, d: Section("s"))])
    with pytest.raises(UserInputError, match="No space left"):
        run_demo(DemoConfig(out_dir=str(tmp_path / "run")))


def test_report_without_any_stage_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="no finished demo stage"):
        build_report(tmp_path)


def test_the_demo_command_passes_device_and_threads_to_every_stage(tmp_path: Path, monkeypatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from rfo_toolkit.cli import vision_unlearn_main

    seen: list[DemoConfig] = []
    monkeypatch.setattr(demo_module, "run_demo", lambda config: seen.append(config) or {})
    before = torch.get_num_threads()
    try:
        assert vision_unlearn_main(["demo", "--out", str(tmp_path / "d"), "--device", "cpu", "--threads", "1",
                                    "--detector", "scratch"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert seen[0].device == "cpu" and seen[0].threads == 1 and seen[0].detector is None
    if not torch.cuda.is_available():  # a GPU named where torch sees none: one line, exit 2, before any stage
        assert vision_unlearn_main(["demo", "--out", str(tmp_path / "e"), "--device", "cuda"]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1 and len(seen) == 1


def test_the_trained_detector_s_section_names_the_bundle_and_lists_the_classes_the_films_hold(tmp_path: Path) -> None:
    summary = {"detector": {"dir": str(bundle_location()), "recipe": "r", "weights_sha256": "ab" * 32,
                            "compute": {"cpu_seconds": 3600}, "unseen_classes": ["chain"]},
               "finetune": {"n_tiles": 10, "groups": ["neck", "head"], "epochs": 5, "seconds": 60.0},
               "n_test": 4, "film_px": 2048, "image_size": 320, "figures": [],
               "coco": {"AP50": 0.7}, "froc": {"score": 0.9}, "auroc": 0.95,
               "per_category": {"blade": {"AP50": 1.0, "AP": 0.8, "num_objects": 3},
                                "chain": {"AP50": None, "AP": None, "num_objects": 0},  # never seen: left out
                                "needle": {"AP50": None, "AP": None, "num_objects": 0}}}  # not in the films
    section = demo_module._section_trained_detector(summary, tmp_path)
    assert "bundled with the toolkit" in section.paragraphs[0] and str(bundle_location()) not in section.paragraphs[0]
    assert "count as false positives" in section.paragraphs[0]
    assert [row[0] for row in section.tables[1].rows] == ["blade", "chain"]
