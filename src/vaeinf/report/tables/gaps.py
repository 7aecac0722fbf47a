"""The inference gap split into approximation and amortization gaps (Cremer et al. 2018,
Table 1) on the test subset of the AIS estimate (see :mod:`vaeinf.evaluation.gaps`): under the
bound each encoder was trained with (L_K for a run trained on the importance-weighted bound at
K > 1, else the ELBO), the split the paper discusses; under the ELBO (Cremer et al.'s
definition), where the two differ; and the best fully factorized Gaussian against the trained
posterior under the ELBO, a signed yardstick (negative where the posterior's family beats every
Gaussian). AVB's implicit posterior has no density: its rows are those of a stand-in, the
diagonal Gaussian with the moments of its samples (marked).

Rows dataset x method x training K, nats, mean ± s.d. over seeds."""

from __future__ import annotations

import pandas as pd

from vaeinf.report.tables.format import cell_table, mean_sd

#: The aggregate tables it reads, in the order of make's arguments.
INPUT = ("summary",)

TRAIN, OWN, GAUSS = "gaps.training_bound", "gaps.own_family", "gaps.gaussian"


def _bound(g: pd.DataFrame) -> str:
    """The training bound of the rows' runs (``L_50`` as L~50~), marked for a stand-in."""
    b = str(g[f"{TRAIN}.bound"].dropna().iloc[0]) if f"{TRAIN}.bound" in g else "—"
    b = "ELBO" if b == "ELBO" else f"L~{b.removeprefix('L_')}~"
    stand_in = f"{OWN}.stand_in" in g and bool(g[f"{OWN}.stand_in"].fillna(False).any())
    return f"{b} (stand-in)" if stand_in else b


def make(summary: pd.DataFrame, methods: list[str] | None = None) -> str:
    header = [
        "Bound",
        "Inference",
        "Approx.",
        "Amort.",
        "Approx. (ELBO)",
        "Amort. (ELBO)",
        "Best Gauss. − q~φ~",
    ]
    columns = [
        f"{TRAIN}.inference_gap.mean",
        f"{TRAIN}.approximation_gap.mean",
        f"{TRAIN}.amortization_gap.mean",
        f"{OWN}.approximation_gap.mean",
        f"{OWN}.amortization_gap.mean",
        f"{GAUSS}.minus_q_phi.mean",
    ]

    def cells(g: pd.DataFrame) -> list[str] | None:
        if f"{TRAIN}.bound" not in g or g[f"{TRAIN}.bound"].isna().all():
            return None  # evaluated without the gap split
        same = f"{TRAIN}.same_as_elbo" in g and bool(g[f"{TRAIN}.same_as_elbo"].all())
        texts = [mean_sd(g[c]) if c in g else "—" for c in columns]
        if same:  # the ELBO split repeats the training bound's
            texts[3] = texts[4] = "="
        return [_bound(g), *texts]

    return cell_table(summary, header, cells, methods, align=["l"] + ["r"] * len(columns))
