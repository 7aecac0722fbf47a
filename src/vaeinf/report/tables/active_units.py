"""Active units (Burda et al. 2015, Sec. 5.2).

Rows dataset x method, one column per training K, mean ± s.d. over seeds."""

from __future__ import annotations

import pandas as pd

from vaeinf.report.tables.format import pivot_table

#: The aggregate tables it reads, in the order of make's arguments.
INPUT = ("summary",)


def make(summary: pd.DataFrame, methods: list[str] | None = None) -> str:
    return pivot_table(summary, "active_units.count", 1, methods)
