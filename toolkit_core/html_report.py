"""Self-contained HTML (and Markdown) reports: every image is embedded, nothing is fetched.

The one templating path of the toolkit's reports (``rfo-bench report``, ``vision-unlearn demo`` /
``vision-unlearn report``). A report is a title, a header saying what made it (:func:`run_header`:
toolkit version, source commit, command, seed) and a list of sections; each section holds
paragraphs, tables and figures, and every figure has a caption saying what it shows. Tables are
built from the same dictionaries that are saved as JSON, so the numbers a reader sees are the
numbers in the run's files. :func:`write_report` writes the HTML page and its Markdown twin.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolkit_core.errors import UserInputError
from toolkit_core.table_cells import escape_markdown_cell

Cell = str | int | float | None
HeaderRows = Sequence[tuple[str, str]]


@dataclass
class Table:
    """A table: header plus rows of cells (numbers are formatted with ``digits`` decimals)."""

    header: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    caption: str = ""
    digits: int = 3


@dataclass
class Figure:
    """A PNG image file embedded into the page, with a caption saying what it shows (required)."""

    path: Path
    caption: str

    def __post_init__(self) -> None:
        if not self.caption or not self.caption.strip():
            raise ValueError(f"figure {self.path}: a report figure needs a caption saying what it shows")


@dataclass
class Section:
    """One titled part of a report."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def format_cell(value: Cell, digits: int = 3) -> str:
    """Format one cell: floats with ``digits`` decimals, NaN/None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def run_header(*, command: str | None = None, seed: int | None = None, toolkit_version: str | None = None,
               commit: str | None = None, extra: HeaderRows = ()) -> list[tuple[str, str]]:
    """The header rows of a report: toolkit version, source commit, command and seed.

    Args:
        command: the command that made the results (left out when ``None``).
        seed: the seed the results derive from (left out when ``None``).
        toolkit_version: the version recorded with the results; default the installed one
            (:func:`toolkit_core.records.package_versions`).
        commit: the source commit recorded with the results; default this checkout's
            (:func:`toolkit_core.records.source_commit`).
        extra: further ``(label, value)`` rows, appended.
    """
    from toolkit_core.records import package_versions, source_commit

    if toolkit_version in (None, "", "not installed"):
        toolkit_version = package_versions(("rfo-toolkit",))["rfo-toolkit"]
        if toolkit_version == "not installed":  # running from a source tree that was never installed
            from toolkit_core import __version__ as toolkit_version
    commit = commit or source_commit() or "unknown (not a git checkout)"
    rows = [("toolkit version", str(toolkit_version)), ("source commit", commit)]
    if command:
        rows.append(("command", command))
    if seed is not None:
        rows.append(("seed", str(seed)))
    return rows + [(str(k), str(v)) for k, v in extra]


def _png_data_uri(path: Path) -> str:
    if not path.is_file():
        raise UserInputError("figure file referenced by the report is missing", file=path)
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise UserInputError("figure is not a PNG file", file=path)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1b1f23;line-height:1.45}
h1{border-bottom:2px solid #2b6cb0;padding-bottom:.3em}h2{margin-top:1.8em;color:#2b6cb0}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #cbd5e0;padding:.3em .6em;text-align:right}
th{background:#edf2f7}td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e2e8f0}
figcaption{font-size:.9em;color:#4a5568}.note{color:#4a5568;font-size:.92em}
table.run{font-size:.85em;color:#4a5568}table.run td,table.run th{text-align:left;border-color:#e2e8f0}
table.run code{word-break:break-all}
"""


def render_html(title: str, sections: Sequence[Section], subtitle: str = "", header: HeaderRows = ()) -> str:
    """Render a complete, self-contained HTML page (inline CSS, images as data URIs).

    Args:
        title: the page's title and first heading.
        sections: the report's body.
        subtitle: one line under the title.
        header: ``(label, value)`` rows under the title saying what made the report (:func:`run_header`).
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="note">{html.escape(subtitle)}</p>')
    if header:
        parts.append('<table class="run">')
        parts.extend(f"<tr><th>{html.escape(label)}</th><td><code>{html.escape(value)}</code></td></tr>"
                     for label, value in header)
        parts.append("</table>")
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>")
        parts.extend(f"<p>{html.escape(text)}</p>" for text in section.paragraphs)
        for table in section.tables:
            parts.append("<table>")
            if table.caption:
                parts.append(f"<caption>{html.escape(table.caption)}</caption>")
            parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.header) + "</tr>")
            for row in table.rows:
                cells = "".join(f"<td>{html.escape(format_cell(c, table.digits))}</td>" for c in row)
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</table>")
        for figure in section.figures:
            uri = _png_data_uri(Path(figure.path))
            caption = html.escape(figure.caption)
            parts.append(f'<figure><img src="{uri}" alt="{caption}">')
            parts.append(f"<figcaption>{caption}</figcaption>")
            parts.append("</figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(title: str, sections: Sequence[Section], base_dir: Path | None = None, subtitle: str = "",
                    header: HeaderRows = ()) -> str:
    """The same report as Markdown; figures are linked relative to ``base_dir``."""
    lines = [f"# {title}", ""]
    if subtitle:
        lines += [subtitle, ""]
    if header:
        lines += ["| run | |", "|---|---|"]
        lines += [f"| {escape_markdown_cell(label)} | `{escape_markdown_cell(value)}` |" for label, value in header]
        lines.append("")
    for section in sections:
        lines += [f"## {section.title}", ""]
        for text in section.paragraphs:
            lines += [text, ""]
        for table in section.tables:
            if table.caption:
                lines += [f"**{table.caption}**", ""]
            lines.append("| " + " | ".join(table.header) + " |")
            lines.append("|" + "---|" * len(table.header))
            for row in table.rows:
                lines.append("| " + " | ".join(escape_markdown_cell(format_cell(c, table.digits)) for c in row) + " |")
            lines.append("")
        for figure in section.figures:
            target = Path(figure.path)
            if base_dir is not None:
                target = Path(os.path.relpath(target, base_dir))
            lines += [f"![{escape_markdown_cell(figure.caption)}]({target.as_posix()})", "", f"*{figure.caption}*", ""]
    return "\n".join(lines)


def write_report(html_path: str | os.PathLike[str], title: str, sections: Sequence[Section], *,
                 subtitle: str = "", header: HeaderRows = (),
                 markdown_path: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Write the HTML page (and, with ``markdown_path``, its Markdown twin) atomically.

    Returns:
        ``{"html": path}`` plus ``"markdown"`` when written.
    """
    from toolkit_core.utils import atomic_write_bytes

    written = {"html": Path(html_path)}
    page = render_html(title, sections, subtitle, header)  # renders (and checks every figure) before writing
    if markdown_path is not None:
        written["markdown"] = Path(markdown_path)
        text = render_markdown(title, sections, base_dir=written["markdown"].parent, subtitle=subtitle, header=header)
        atomic_write_bytes(written["markdown"], text.encode("utf-8"))
    atomic_write_bytes(written["html"], page.encode("utf-8"))
    return written
