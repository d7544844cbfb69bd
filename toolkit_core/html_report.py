"""Self-contained HTML (and Markdown) reports: every image is embedded, nothing is fetched.

A report is a list of sections; each section holds paragraphs, tables and figures. Tables are
built from the same dictionaries that are saved as JSON, so the numbers a reader sees are the
numbers in the run's files. Used by ``rfo-bench report`` and ``vision-unlearn report``.
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

Cell = str | int | float | None


@dataclass
class Table:
    """A table: header plus rows of cells (numbers are formatted with ``digits`` decimals)."""

    header: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    caption: str = ""
    digits: int = 3


@dataclass
class Figure:
    """A PNG image file embedded into the page."""

    path: Path
    caption: str = ""


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
"""


def render_html(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    """Render a complete, self-contained HTML page (inline CSS, images as data URIs)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="note">{html.escape(subtitle)}</p>')
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
            alt = html.escape(figure.caption or Path(figure.path).stem)
            parts.append(f'<figure><img src="{uri}" alt="{alt}">')
            if figure.caption:
                parts.append(f"<figcaption>{html.escape(figure.caption)}</figcaption>")
            parts.append("</figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(title: str, sections: Sequence[Section], base_dir: Path | None = None) -> str:
    """The same report as Markdown; figures are linked relative to ``base_dir``."""
    lines = [f"# {title}", ""]
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
                lines.append("| " + " | ".join(format_cell(c, table.digits) for c in row) + " |")
            lines.append("")
        for figure in section.figures:
            target = Path(figure.path)
            if base_dir is not None:
                target = Path(os.path.relpath(target, base_dir))
            lines += [f"![{figure.caption or target.stem}]({target.as_posix()})", ""]
    return "\n".join(lines)
