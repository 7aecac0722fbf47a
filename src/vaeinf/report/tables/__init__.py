"""The paper's Markdown tables, one module per table, each with a ``make(summary, methods)``
returning the table's Markdown: a row per variant (its display name, column ``label``, see
:func:`vaeinf.report.tidy.labelled`), in the order of the display names ``methods``. The
workflow's table rule depends on the table's own module (and
:mod:`vaeinf.report.tables.format`), so editing one table rebuilds only that one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html import escape
from pathlib import Path

import pandas as pd

from vaeinf.report.tables import ablations, collapse, gaps, nll, snr, time
from vaeinf.report.tidy import display_order, labelled
from vaeinf.rundir import atomic_write_text

_MODULES = (nll, gaps, collapse, time, ablations, snr)

#: table name -> function of (the tables it reads..., method order) returning Markdown
TABLES: dict[str, Callable[..., str]] = {m.__name__.rsplit(".", 1)[-1]: m.make for m in _MODULES}

#: table name -> the aggregate tables it reads ("summary", "cost"), in the order of its arguments
INPUTS: dict[str, tuple[str, ...]] = {m.__name__.rsplit(".", 1)[-1]: m.INPUT for m in _MODULES}


def _inline(text: str) -> str:
    """One cell's Markdown as HTML: escaped, with pandoc's ~sub~ and ^super^ scripts."""
    text = escape(text.strip(), quote=False)
    text = re.sub(r"~([^~\s]+)~", r"<sub>\1</sub>", text)
    return re.sub(r"\^([^^\s]+)\^", r"<sup>\1</sup>", text)


def html_table(markdown: str) -> str:
    """A pipe table (:func:`vaeinf.report.tables.format.markdown_table`) as a standalone HTML
    page, for viewers that do not render Markdown (Snakemake's report)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    rows = [[_inline(c) for c in line.strip().strip("|").split("|")] for line in lines]
    seps = [c.strip() for c in lines[1].strip().strip("|").split("|")] if len(lines) > 1 else []
    align = [
        "right"
        if c.endswith(":") and not c.startswith(":")
        else "center"
        if c.startswith(":") and c.endswith(":")
        else "left"
        for c in seps
    ]

    def cells(tag: str, row: list[str]) -> str:
        return "".join(
            f'<{tag} style="text-align:{a}">{c}</{tag}>'
            for c, a in zip(row, align or ["left"] * len(row), strict=False)
        )

    body = "".join(f"<tr>{cells('td', r)}</tr>\n" for r in rows[2:])
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><style>'
        "table{border-collapse:collapse;font-family:sans-serif;font-size:14px}"
        "th,td{padding:4px 10px;border-bottom:1px solid #ccc}"
        "</style></head><body>\n<table>\n"
        f"<thead><tr>{cells('th', rows[0]) if rows else ''}</tr></thead>\n"
        f"<tbody>\n{body}</tbody>\n</table>\n</body></html>\n"
    )


def write_table(
    name: str,
    inputs: dict,
    out: str | Path,
    variants=None,
    labels=None,
    html: str | Path | None = None,
) -> None:
    """Write table ``name`` from ``inputs`` ({"summary"|"cost": csv}) to ``out`` (Markdown):
    rows in the order of ``variants``, named by ``labels`` (variant -> display name); given
    ``html``, the same table as an HTML page there (:func:`html_table`)."""
    frames = [labelled(pd.read_csv(inputs[k]), labels) for k in INPUTS[name]]
    text = TABLES[name](*frames, display_order(variants, labels))
    atomic_write_text(out, text)
    if html is not None:
        atomic_write_text(html, html_table(text))
