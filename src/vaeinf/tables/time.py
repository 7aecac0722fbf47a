"""Seconds per training epoch from the cost rule (:mod:`vaeinf.cost`): rows dataset x method,
one column per training K, and the ratio to the reference contender (``vae`` at the smallest K).
"""

from __future__ import annotations

import pandas as pd

from vaeinf.tables.format import markdown_table, order

#: The aggregate tables it reads, in the order of make's arguments.
INPUT = ("cost",)


def make(cost: pd.DataFrame, methods: list[str] | None = None) -> str:
    df = order(cost, methods)
    ks = sorted(df["K"].unique())
    multi = df["dataset"].nunique() > 1
    header = (["Dataset"] if multi else []) + ["Method"] + [f"K = {k}" for k in ks]
    rows = []
    for (dataset, method), g in df.groupby(["dataset", "method"], sort=False):
        by_k = g.set_index("K")
        cells = [
            f"{by_k.loc[k, 'sec_per_epoch']:.3f} (×{by_k.loc[k, 'ratio']:.1f})"
            if k in by_k.index
            else "—"
            for k in ks
        ]
        rows.append(([dataset] if multi else []) + [method] + cells)
    return markdown_table(header, rows, ["l"] * (2 if multi else 1) + ["r"] * len(ks))
