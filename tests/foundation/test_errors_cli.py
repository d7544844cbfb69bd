"""The shared user-error type and the CLI convention (one line, exit code 2, --verbose traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toolkit_core.cli_support import add_command, make_parser, run_cli
from toolkit_core.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]


def test_error_message_names_file_field_and_value() -> None:
    err = UserInputError("expected a positive number", file="data/a.csv", field="row 3: width", value=-2)
    assert str(err) == "data/a.csv: row 3: width: expected a positive number (got -2)"
    assert str(UserInputError("plain")) == "plain"
    assert "\n" not in str(UserInputError("two\nlines", value="x\ny"))


def _failing_parser():
    parser, sub = make_parser("tool", "test tool")

    def handler(_args):
        raise UserInputError("bad value", file="in.json", field="images")

    add_command(sub, "go", handler, "fail on purpose")
    return parser


def test_run_cli_maps_user_error_to_exit_2_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(_failing_parser(), ["go"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "tool: error: in.json: images: bad value"
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["--verbose", "go"], ["go", "--verbose"]])
def test_verbose_shows_traceback_before_or_after_command(argv, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(_failing_parser(), argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().endswith("tool: error: in.json: images: bad value")


@pytest.mark.parametrize("script", ["vision-unlearn", "rfo-bench", "rfo-synth"])
def test_console_scripts_help_exit_zero(script: str) -> None:
    exe = Path(sys.executable).parent / script
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert "COMMAND" in result.stdout


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", b"this is not an image at all\n"],
    ids=["truncated-png", "text-file"],
)
def test_demo_with_bad_radiograph_prints_one_line_and_exits_2(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    exe = Path(sys.executable).parent / "vision-unlearn"
    result = subprocess.run(
        [str(exe), "demo", "--radiograph", str(bad), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and str(bad) in error_lines[0]
    assert "Traceback" not in result.stderr


def test_a_missing_optional_dependency_is_one_line_with_the_install_hint(capsys: pytest.CaptureFixture[str]) -> None:
    parser, sub = make_parser("tool", "test tool")

    def handler(_args):
        raise ModuleNotFoundError("No module named 'ultralytics'", name="ultralytics")

    add_command(sub, "go", handler, "needs an extra")
    assert run_cli(parser, ["go"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("tool: error: `tool go` needs the optional dependency ultralytics") and "[yolo]" in err


def test_a_missing_module_that_is_no_extra_keeps_its_traceback() -> None:
    parser, sub = make_parser("tool", "test tool")

    def handler(_args):
        raise ModuleNotFoundError("No module named 'ultralytics.foo'", name="ultralytics.foo")

    add_command(sub, "go", handler, "a broken installation")
    with pytest.raises(ModuleNotFoundError):
        run_cli(parser, ["go"])
