"""Test NLL: the importance-sampled estimate -L_K of Burda et al. (2016) with K = nll_k
samples on every test point; IS and AIS (Neal 2001, Eq. 3; Wu et al. 2017) on the same fixed
subset of the test points, and IS − AIS, their paired difference there, log p_AIS − log p_IS
(summary column ``ais.minus_is.mean``; positive: the IS estimate is the looser); and the BDMC
gap (Grosse et al. 2015, Sec. 3) of the AIS settings on simulated data.

Rows dataset x method x training K, mean ± s.d. over seeds."""

from __future__ import annotations

import pandas as pd

from vaeinf.report.tables.format import long_table

#: The aggregate tables it reads, in the order of make's arguments.
INPUT = ("summary",)


def make(summary: pd.DataFrame, methods: list[str] | None = None) -> str:
    nll_k = int(summary["test_nll.K"].iloc[0])
    n_all = int(summary["test_nll.n"].iloc[0])
    n_ais = summary["ais.n"].dropna() if "ais.n" in summary else pd.Series(dtype=float)
    on = f"{int(n_ais.iloc[0])} points" if len(n_ais) else "AIS points"
    columns = [
        (f"IS, K = {nll_k}, all {n_all} points", "test_nll.mean", 2),
        (f"IS, {on}", "ais.is_same_points.mean", 2),
        (f"AIS, {on}", "ais.mean", 2),
        # log p_AIS - log p_IS = NLL_IS - NLL_AIS on the same points: how far IS lies below AIS.
        ("IS − AIS", "ais.minus_is.mean", 3),
        ("BDMC gap", "ais.bdmc.gap", 3),
    ]
    sign = {"ais.mean": -1.0, "ais.is_same_points.mean": -1.0}
    return long_table(summary, columns, methods, sign)
