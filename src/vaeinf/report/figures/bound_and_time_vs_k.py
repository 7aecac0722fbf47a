"""The bound and the time against K: final validation L_K and seconds per epoch, per variant.

Drawn from results/summary.csv (the bound, mean ± s.d. over seeds) and results/cost.csv (the
cost rule's seconds per epoch from the fastest step, ``epoch_s_fastest``, with an error bar up
to the third quartile of the step times: the spread the machine's load added)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from vaeinf.report.figures import style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What the figure is drawn from (see :data:`vaeinf.report.figures.INPUTS`).
INPUT = ("summary", "cost")

#: The bound: L_K on the validation set after the last epoch (the training log's last row).
BOUND = "time_per_epoch.final_val_LK"


def draw(summary: pd.DataFrame, cost: pd.DataFrame, methods=None, **_) -> Figure:
    """Final validation L_K (left) and seconds per epoch (right) against K."""
    plt, sns = style.lib()
    style.theme()
    datasets, methods = style.datasets_order(summary), style.methods_order(summary, methods)
    ks = sorted(summary["K"].unique())
    fig, panels = style.panels(datasets, methods, 3.0, 2.6)
    c_bound, c_time = (
        sns.color_palette("colorblind")[0],
        sns.color_palette("colorblind")[3],
    )
    for ax, dataset, method, first, last in panels:
        d = summary[(summary["dataset"] == dataset) & (summary["label"] == method)]
        g = d.groupby("K").agg(lk=(BOUND, "mean"), lk_sd=(BOUND, "std"))
        c = cost[(cost["dataset"] == dataset) & (cost["label"] == method)].sort_values("K")
        ax.errorbar(g.index, g["lk"], yerr=g["lk_sd"].fillna(0), color=c_bound, marker="o", ms=4)
        ax.tick_params(axis="y", labelcolor=c_bound)
        style.k_axis(ax, ks)
        ax2 = ax.twinx()
        per = c["batches_per_epoch"]
        spread = [0 * per, (c["step_s_q3"] - c["step_s"]) * per]  # the fastest step up to q3
        ax2.errorbar(
            c["K"], c["epoch_s_fastest"], yerr=spread, color=c_time, marker="s", ms=4, ls="--"
        )
        ax2.tick_params(axis="y", labelcolor=c_time)
        ax2.grid(False)
        ax2.set_ylim(bottom=0)
        ax.set_title(method if len(datasets) == 1 else f"{dataset}: {method}")
        ax.set_xlabel("K")
        if first:
            ax.set_ylabel("validation $L_K$ (nats)", color=c_bound)
        if last:
            ax2.set_ylabel("seconds per epoch", color=c_time)
    fig.tight_layout()
    return fig
