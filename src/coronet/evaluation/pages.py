"""One renderer for every report page: a :class:`Page` of sections and blocks, as Markdown and as HTML.

A writer (the run report, the shortcut audit, the reproduction's overview, the backbone comparison)
turns its typed results (:mod:`coronet.evaluation.results`) into a :class:`Page` and calls
:func:`write_page`; the two templates in ``templates/`` render the same page twice, so the Markdown and
the HTML always say the same. The HTML is one self-contained file: figures are embedded as data URIs,
the Markdown links to them beside it.

Tables are shown as a reader should see them (:func:`display_table`): the paper's value and our
difference in the same cell as ours, counts as integers, two decimals; the CSV files keep the raw
columns.
"""

from __future__ import annotations

import base64
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

DISCLAIMER = "Research software, not a medical device."

#: Columns that hold counts: shown as integers.
COUNT_COLUMNS = {"images", "patients", "n_patients", "n_bootstrap", "films", "count"}


@dataclass(frozen=True)
class Text:
    """A paragraph; ``lead``: the page's opening figures, set larger."""

    text: str
    lead: bool = False
    kind: str = field(default="text", init=False)


@dataclass(frozen=True)
class Link:
    """A link, as a paragraph of its own or as a list item."""

    text: str
    href: str
    kind: str = field(default="link", init=False)


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    kind: str = field(default="table", init=False)


@dataclass(frozen=True)
class Bullets:
    items: tuple[str | Link, ...]
    kind: str = field(default="bullets", init=False)


@dataclass(frozen=True)
class Figure:
    """A PNG beside the page; ``wide``: the page's main figure, full width (else a thumbnail in a row)."""

    path: Path
    caption: str
    wide: bool = False
    kind: str = field(default="figure", init=False)


Block = Text | Link | Table | Bullets | Figure


@dataclass
class Section:
    title: str
    blocks: list[Block]


@dataclass
class Page:
    title: str
    sections: list[Section]


def write_page(page: Page, markdown: Path, html: Path) -> None:
    """Render ``page`` to ``markdown`` (figures linked relative to it) and to ``html`` (self-contained)."""
    markdown.write_text(render_markdown(page, markdown.parent))
    html.write_text(render_html(page), encoding="utf-8")


def render_markdown(page: Page, base: Path) -> str:
    """The page as Markdown; figure links are relative to ``base``, the folder the file is written to."""
    text = _template("page.md.j2").render(page=page, disclaimer=DISCLAIMER, base=base)
    return text.rstrip("\n") + "\n"


def render_html(page: Page) -> str:
    return _template("page.html.j2").render(page=page, disclaimer=DISCLAIMER)


def _fmt(v) -> str:
    if isinstance(v, float | np.floating):
        return "" if np.isnan(v) else f"{v:.2f}"
    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """A table as a reader should see it: ``m``, ``m_paper`` and ``m_diff`` in one cell, "ours / paper / +diff";
    counts as integers; other numbers with two decimals. (The CSV files keep the separate columns.)"""
    out = {}
    for column in df.columns:
        if str(column).endswith(("_paper", "_diff")) and str(column).rsplit("_", 1)[0] in df.columns:
            continue
        values = df[column]
        if f"{column}_paper" in df.columns:
            paper, diff = df[f"{column}_paper"], df.get(f"{column}_diff", values - df[f"{column}_paper"])
            out[f"{column} (ours / paper / diff)"] = [
                _fmt(v) if pd.isna(p) else f"{_fmt(v)} / {p:.2f} / {d:+.2f}" for v, p, d in zip(values, paper, diff)
            ]
        elif column in COUNT_COLUMNS:
            out[column] = [
                str(int(v)) if isinstance(v, int | float | np.number) and not pd.isna(v) else _fmt(v) for v in values
            ]
        else:
            out[column] = [_fmt(v) for v in values]
    table = pd.DataFrame(out, index=df.index)
    table.index.name = df.index.name
    return table


def markdown_table(df: pd.DataFrame) -> str:
    df = display_table(df)
    head = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [_fmt(v) for v in row]) + " |")
    return "\n".join(lines)


def html_table(df: pd.DataFrame) -> str:
    return display_table(df).to_html(na_rep="", border=0, classes="t")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _template(name: str) -> jinja2.Template:
    return _environment().get_template(name)  # the environment caches the compiled template


@functools.cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("coronet.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"]),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters.update(
        markdown_table=markdown_table, html_table=html_table, data_uri=data_uri, relative=_relative
    )
    return environment


__all__ = [
    "Bullets",
    "DISCLAIMER",
    "Figure",
    "Link",
    "Page",
    "Section",
    "Table",
    "Text",
    "data_uri",
    "display_table",
    "html_table",
    "markdown_table",
    "render_html",
    "render_markdown",
    "write_page",
]
