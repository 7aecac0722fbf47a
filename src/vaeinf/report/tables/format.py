"""Formatting shared by the paper's Markdown tables: mean ± s.d. over seeds, pipe tables, and
the dataset x method x K pivot most tables are.

Editing this module rebuilds every table; editing one table's module rebuilds only that one.
"""

from __future__ import annotations

import pandas as pd

from vaeinf.report.tidy import labelled


def order(df: pd.DataFrame, methods: list[str] | None) -> pd.DataFrame:
    """Rows in the order of the display names ``methods`` (a variant's row is its ``label``,
    see :func:`vaeinf.report.tidy.labelled`; a table without labels is named by its variants),
    then by K."""
    if "label" not in df:
        df = labelled(df)
    if methods:
        rank = {m: i for i, m in enumerate(methods)}

        def key(column: pd.Series) -> pd.Series:
            if column.name != "label":
                return column
            return column.map(lambda m: rank.get(m, len(rank)))

        df = df.sort_values(["dataset", "label", "K"], key=key, kind="stable")
    return df


def mean_sd(values: pd.Series, digits: int = 2) -> str:
    """``mean ± s.d.`` over seeds (``mean`` alone for one seed; an em dash when missing)."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if len(v) == 0:
        return "—"
    if len(v) == 1:
        return f"{v.iloc[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    """A pipe table (pandoc/Quarto Markdown) whose separator line gives each column as many
    dashes as its longest cell has characters: a row longer than pandoc's line width makes
    the table span the text width with columns in the proportion of their dashes, so each
    column gets the room its text needs instead of an equal share (in which names and
    ``mean ± s.d.`` cells wrap)."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    sep = [
        {"l": ":" + "-" * w, "r": "-" * w + ":", "c": ":" + "-" * w + ":"}[a]
        for a, w in zip(align, (max(3, w) for w in widths), strict=True)
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(sep) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def pivot(df: pd.DataFrame, cell, methods: list[str] | None = None) -> str:
    """Rows dataset x variant, one column per K; ``cell(rows of one K)`` gives each cell's text
    (an em dash where the K has no rows)."""
    df = order(df, methods)
    ks = sorted(df["K"].unique())
    multi = df["dataset"].nunique() > 1
    header = (["Dataset"] if multi else []) + ["Method"] + [f"K = {k}" for k in ks]
    rows = []
    for (dataset, method), g in df.groupby(["dataset", "label"], sort=False):
        cells = [cell(g[g["K"] == k]) if (g["K"] == k).any() else "—" for k in ks]
        rows.append(([dataset] if multi else []) + [method] + cells)
    align = ["l"] * (2 if multi else 1) + ["r"] * len(ks)
    return markdown_table(header, rows, align)


def pivot_table(
    summary: pd.DataFrame, column: str, digits: int = 2, methods: list[str] | None = None
) -> str:
    """Rows dataset x variant, one column per K, cells mean ± s.d. of ``column`` over seeds."""
    return pivot(summary, lambda g: mean_sd(g[column], digits), methods)


def cell_table(
    summary: pd.DataFrame,
    header: list[str],
    cells,
    methods: list[str] | None = None,
    align: list[str] | None = None,
) -> str:
    """Rows dataset x variant x K (the runs of each, over seeds), columns ``header`` after
    Method and K: ``cells(rows of one cell)`` gives the row's texts, or None to leave the cell
    out; ``align`` those columns' alignment (default: right)."""
    df = order(summary, methods)
    multi = df["dataset"].nunique() > 1
    rows = []
    for (dataset, method, K), g in df.groupby(["dataset", "label", "K"], sort=False):
        texts = cells(g)
        if texts is not None:
            rows.append(([dataset] if multi else []) + [method, str(K), *texts])
    full = (["Dataset"] if multi else []) + ["Method", "K", *header]
    align = ["l"] * (2 if multi else 1) + ["r"] + (align or ["r"] * len(header))
    return markdown_table(full, rows, align)


def long_table(
    summary: pd.DataFrame,
    columns: list[tuple[str, str, int]],
    methods: list[str] | None = None,
    sign: dict[str, float] | None = None,
) -> str:
    """Rows dataset x variant x K, one column per (header, summary column, digits), cells mean
    ± s.d. over seeds; ``sign`` flips a column (e.g. log-likelihood -> NLL); a column the
    summary lacks reads as an em dash."""
    sign = sign or {}
    return cell_table(
        summary,
        [h for h, _, _ in columns],
        lambda g: [mean_sd(sign.get(c, 1.0) * g[c], d) if c in g else "—" for _, c, d in columns],
        methods,
    )
