"""Latent usage and posterior collapse: active units (Burda et al. 2016, Sec. 5.2),
KL(q(z|x) || p(z)) (closed form for the Gaussians, Monte Carlo for the flows and IAF, none for
AVB's implicit posterior), collapsed units, the mutual information (which the KL bounds) and the
reconstruction error, per dataset x method x K (mean ± s.d. over seeds)."""

from __future__ import annotations

import pandas as pd

from vaeinf.report.tables.format import cell_table, mean_sd

#: The aggregate tables it reads, in the order of make's arguments.
INPUT = ("summary",)


def make(summary: pd.DataFrame, methods: list[str] | None = None) -> str:
    """Rows dataset x variant x K: active units, total KL, collapsed units, mutual information,
    reconstruction."""
    header = ["Active units", "KL (nats)", "Collapsed units", "MI (nats)", "−log p(x\\|z) (nats)"]

    def cells(g: pd.DataFrame) -> list[str]:
        return [
            mean_sd(g["active_units.count"], 1),
            mean_sd(g["collapse.kl_total"]),
            f"{g['collapse.collapsed_units'].mean():.1f} / {int(g['latent'].iloc[0])}",
            mean_sd(g["collapse.mutual_information.value"]),
            mean_sd(g["reconstruction.bce.mean"]),
        ]

    return cell_table(summary, header, cells, methods)
