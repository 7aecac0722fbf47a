"""Seconds per training epoch from the cost rule (:mod:`vaeinf.study.cost`): rows dataset x method,
one column per training K, and the ratio to the reference contender (``vae`` at the smallest K).
"""

from __future__ import annotations

import pandas as pd

from vaeinf.report.tables.format import pivot

#: The aggregate tables it reads, in the order of make's arguments.
INPUT = ("cost",)


def make(cost: pd.DataFrame, methods: list[str] | None = None) -> str:
    def cell(g: pd.DataFrame) -> str:
        r = g.iloc[0]  # one row per (dataset, method, K)
        return f"{r['epoch_s_fastest']:.3f} (×{r['ratio']:.1f})"

    return pivot(cost, cell, methods)
