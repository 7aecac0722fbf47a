"""The bound gap against the training K: log p^(x) (IS with K = nll_k samples) minus the bound
each run was trained on at its training K (the ELBO for vae and avb, L_K for the methods
trained on the importance-weighted bound; ``metrics.bound_gap``), on the test set. The axis
spans the methods of the grid; an ablation off it is written in the panel.

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
    nll_k = int(summary["test_nll.K"].iloc[0])
    return style.per_dataset_lines(
        summary,
        "bound_gap",
        f"$L_{{{nll_k}}}$ − training bound (nats, test)",
        methods,
        logy=False,
        focus=True,
    )
