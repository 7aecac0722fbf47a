"""The inference gap log p(x) - L[q_phi] split into approximation and amortization gaps
(Cremer et al. 2018, Table 1) on the test subset of the AIS estimate, with q* searched in the
posterior's own per-point family and in the fully factorized Gaussian (see
:mod:`vaeinf.evaluation.gaps`).

Rows dataset x method x training K, nats, mean ± s.d. over seeds."""

from __future__ import annotations

import pandas as pd

from vaeinf.report.tables.format import long_table

#: The aggregate tables it reads, in the order of make's arguments.
INPUT = ("summary",)

OWN, GAUSS = "gaps.own_family", "gaps.gaussian"


def make(summary: pd.DataFrame, methods: list[str] | None = None) -> str:
    columns = [
        ("Inference", f"{OWN}.inference_gap.mean", 2),
        ("Approx. (own)", f"{OWN}.approximation_gap.mean", 2),
        ("Amort. (own)", f"{OWN}.amortization_gap.mean", 2),
        ("Approx. (Gauss.)", f"{GAUSS}.approximation_gap.mean", 2),
        ("Amort. (Gauss.)", f"{GAUSS}.amortization_gap.mean", 2),
    ]
    return long_table(summary, columns, methods)
