"""Seconds per training epoch.

Rows dataset x method, one column per training K, mean ± s.d. over seeds."""

from __future__ import annotations

import pandas as pd

from vaeinf.tables.format import pivot_table


def make(summary: pd.DataFrame, methods: list[str] | None = None) -> str:
    return pivot_table(summary, "sec_per_epoch", 3, methods)
