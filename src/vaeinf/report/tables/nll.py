"""Test NLL: the importance-sampled estimate -L_K of Burda et al. (2016) with K = nll_k
samples on the test set; the AIS estimate (Neal 2001, Eq. 3; Wu et al. 2017) on a fixed subset
of it; IS − AIS, the two NLLs on the same points, which is log p_AIS − log p_IS (summary column
``gaps.ais_minus_is.mean``; positive: the IS estimate is the looser); and
the BDMC gap (Grosse et al. 2015, Sec. 3) of the AIS settings on simulated data.

Rows dataset x method x training K, mean ± s.d. over seeds."""

from __future__ import annotations

import pandas as pd

from vaeinf.report.tables.format import long_table

#: The aggregate tables it reads, in the order of make's arguments.
INPUT = ("summary",)


def make(summary: pd.DataFrame, methods: list[str] | None = None) -> str:
    nll_k = int(summary["test_nll.K"].iloc[0])
    columns = [
        (f"IS, K = {nll_k}", "test_nll.mean", 2),
        ("AIS", "ais.mean", 2),
        # log p_AIS - log p_IS = NLL_IS - NLL_AIS on the same points: how far IS lies below AIS.
        ("IS − AIS", "gaps.ais_minus_is.mean", 2),
        ("BDMC gap", "ais.bdmc.gap", 3),
    ]
    sign = {"ais.mean": -1.0}
    return long_table(summary, columns, methods, sign)
