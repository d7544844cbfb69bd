"""The demo report opens in a real headless Chromium without console errors (skipped without one)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.io.images import write_png8
from toolkit_core.html_report import Figure, Section, Table, render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this machine")
def test_report_renders_in_chromium_without_console_errors(tmp_path: Path) -> None:
    write_png8(tmp_path / "plot.png", np.linspace(0, 1, 170 * 110).reshape(170, 110))
    page = render_html("Report", [Section("Results", paragraphs=["text"], tables=[Table(["a", "b"], [["x", 0.5]])],
                                          figures=[Figure(tmp_path / "plot.png", "a plot")])])
    (tmp_path / "plot.png").unlink()  # the page must not depend on files next to it
    report = tmp_path / "report.html"
    report.write_text(page)
    shot = tmp_path / "shot.png"
    result = _chromium(["--window-size=900,700", f"--screenshot={shot}", report.as_uri()], tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 5000
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this machine")
def test_console_errors_are_detected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><script>console.error("broken page")</script></body></html>')
    result = _chromium(["--dump-dom", bad.as_uri()], tmp_path / "profile")
    assert any(":CONSOLE" in line and "broken page" in line for line in result.stderr.splitlines())
