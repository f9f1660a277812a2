"""HTML building blocks for the report: every piece of text goes through `html.escape`.

The page is one self-contained file: inline CSS, figures as base64 PNG (with links to the SVG
and PNG files written beside it), no scripts and nothing fetched from elsewhere.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trusttrace.report.figures import SavedFigure

CSS = """
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; font-size: 15px; line-height: 1.45;
       color: #1a1a1a; max-width: 1100px; margin: 2em auto; padding: 0 1.5em; background: #fff; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.35em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.1em; margin-top: 1.6em; }
nav ol { columns: 2; font-size: 0.95em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid #eee; }
figcaption { font-size: 0.88em; color: #333; margin-top: 0.4em; }
figcaption a { color: #0a5c99; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.92em; }
.missing { color: #6b6b6b; font-style: italic; }
.caveat { background: #fff8e6; border-left: 4px solid #E69F00; padding: 0.6em 0.9em; }
.flag { color: #a33b00; font-weight: bold; }
.error { color: #a30000; font-family: "DejaVu Sans Mono", monospace; font-size: 0.9em; white-space: pre-wrap; }
dl.card { display: grid; grid-template-columns: 9em 1fr; gap: 0.25em 1em; }
dl.card dt { font-weight: bold; }
dl.card dd { margin: 0; }
"""


@dataclass
class Section:
    """One section of the report: an anchor, a heading and its HTML body parts."""

    anchor: str
    title: str
    parts: list[str] = field(default_factory=list)

    def add(self, *parts: str) -> None:
        self.parts.extend(parts)

    def render(self) -> str:
        return f'<section id="{esc(self.anchor)}">\n<h2>{esc(self.title)}</h2>\n' + "\n".join(self.parts) + "\n</section>"


def esc(value: Any) -> str:
    """`value` as escaped HTML text (quotes included)."""
    return html.escape(str(value), quote=True)


def paragraph(text: str, css: str | None = None) -> str:
    return f'<p class="{css}">{esc(text)}</p>' if css else f"<p>{esc(text)}</p>"


def missing(what: str, remedy: str) -> str:
    """The one line a section shows when its data is absent: what is missing and what makes it."""
    return f'<p class="missing">{esc(what)} — {esc(remedy)}</p>'


def heading(text: str, level: int = 3) -> str:
    return f"<h{level}>{esc(text)}</h{level}>"


def figure(saved: SavedFigure, caption: str, alt: str) -> str:
    """An embedded PNG with its caption and links to the PNG and SVG files beside the page."""
    links = f'<a href="{esc(saved.png.name)}">PNG</a> · <a href="{esc(saved.svg.name)}">SVG</a>'
    return (
        f'<figure>\n<img src="data:image/png;base64,{saved.png_base64}" alt="{esc(alt)}">\n'
        f"<figcaption>{esc(caption)} [{links}]</figcaption>\n</figure>"
    )


def table(frame: pd.DataFrame, *, numeric_digits: int = 3, raw_columns: Iterable[str] = ()) -> str:
    """A frame as an HTML table; `raw_columns` hold HTML made by this module (already escaped)."""
    raw = set(raw_columns)
    head = "".join(f"<th>{esc(column)}</th>" for column in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, values):
            if column in raw:
                cells.append(f"<td>{value}</td>")
            elif isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
                cells.append(f'<td class="num">{esc(number_text(value, numeric_digits))}</td>')
            else:
                cells.append(f"<td>{esc(cell_text(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def number_text(value: float, digits: int) -> str:
    """A number for a table: '' when missing, integers as integers, others to `digits` significant digits."""
    if math.isnan(value):
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.{digits}g}"


def cell_text(value: Any) -> str:
    """A table cell's text: '' for missing values (None, NA, NaT)."""
    return "" if value is None or value is pd.NA or value is pd.NaT else str(value)


def span(text: str, css: str) -> str:
    return f'<span class="{esc(css)}">{esc(text)}</span>'


def definition_list(items: Iterable[tuple[str, str]], css: str = "card") -> str:
    """Label/value pairs; values are plain text unless they were made by this module's helpers."""
    body = "\n".join(f"<dt>{esc(label)}</dt><dd>{value}</dd>" for label, value in items)
    return f'<dl class="{esc(css)}">\n{body}\n</dl>'


def bullet_list(items: Iterable[str]) -> str:
    return "<ul>\n" + "\n".join(f"<li>{esc(item)}</li>" for item in items) + "\n</ul>"


def link(url: str) -> str:
    """A link for http(s) URLs; any other scheme (javascript:, data:...) stays plain text."""
    if url.startswith(("http://", "https://")):
        return f'<a href="{esc(url)}">{esc(url)}</a>'
    return esc(url)


def page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole HTML document: title, table of contents and sections."""
    toc = "\n".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a></li>' for s in sections)
    body = "\n\n".join(section.render() for section in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header>\n<h1>{esc(title)}</h1>\n<p>{esc(subtitle)}</p>\n</header>\n"
        f"<nav>\n<ol>\n{toc}\n</ol>\n</nav>\n\n{body}\n</body>\n</html>\n"
    )
