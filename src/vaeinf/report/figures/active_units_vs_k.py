"""Active units (Burda et al. 2015, Sec. 5.2) against the training K.

Drawn from results/summary.csv."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from vaeinf.report.figures import style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What the figure is drawn from (see :data:`vaeinf.report.figures.INPUTS`).
INPUT = ("summary",)


def draw(summary: pd.DataFrame, methods=None, **_) -> Figure:
    fig = style.per_dataset_lines(summary, "active_units.count", "active units", methods)
    latent = int(summary["latent"].max())
    for ax in fig.axes:
        ax.set_ylim(-0.3, latent + 0.3)
    return fig
