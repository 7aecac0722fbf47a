"""The inference gap split (Cremer et al. 2018, Table 1): approximation gap log p(x) - L[q*]
and amortization gap L[q*] - L[q_phi], q* in the posterior's own per-point family, L the bound
each encoder was trained with (L_K for the importance-weighted runs at K > 1, else the ELBO),
stacked per method and training K; one panel per dataset.

Drawn from results/summary.csv: bar heights are means over seeds, the error bar the s.d. over
seeds of their sum, the inference gap log p(x) - L[q_phi]."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vaeinf.report.figures import style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What the figure is drawn from (see :data:`vaeinf.report.figures.INPUTS`).
INPUT = ("summary",)

APPROX = "gaps.training_bound.approximation_gap.mean"
AMORT = "gaps.training_bound.amortization_gap.mean"
TOTAL = "gaps.training_bound.inference_gap.mean"


def draw(summary: pd.DataFrame, methods=None, **_) -> Figure:
    plt, sns = style.lib()
    style.theme()
    datasets, methods = style.datasets_order(summary), style.methods_order(summary, methods)
    ks = sorted(summary["K"].unique())
    colours = sns.color_palette("colorblind")
    fig, axes = plt.subplots(
        1,
        len(datasets),
        figsize=(max(4.5, 0.42 * len(methods) * len(ks) + 1.5) * len(datasets), 3.4),
        squeeze=False,
    )
    width, step = 0.8, len(ks) + 1  # bars of one method side by side, a gap between methods
    for ax, dataset in zip(axes[0], datasets, strict=True):
        # Runs evaluated without the gap split have no such columns: empty bars.
        d = summary[summary["dataset"] == dataset].reindex(
            columns=[*summary.columns.difference([APPROX, AMORT, TOTAL]), APPROX, AMORT, TOTAL]
        )
        g = d.groupby(["label", "K"]).agg(
            approx=(APPROX, "mean"), amort=(AMORT, "mean"), total_sd=(TOTAL, "std")
        )
        x, labels = [], []
        for i, method in enumerate(methods):
            for j, K in enumerate(ks):
                if (method, K) not in g.index:
                    continue
                row = g.loc[(method, K)]
                pos = i * step + j
                ax.bar(pos, row["approx"], width, color=colours[0])
                ax.bar(pos, row["amort"], width, bottom=row["approx"], color=colours[1])
                if np.isfinite(row["total_sd"]):
                    top = row["approx"] + row["amort"]
                    ax.errorbar(pos, top, yerr=row["total_sd"], color="0.2", capsize=2, lw=1)
                x.append(pos)
                labels.append(str(K))
            centre = i * step + (len(ks) - 1) / 2
            ax.annotate(
                method,
                (centre, 0),
                xycoords=("data", "axes fraction"),
                xytext=(0, -22),
                textcoords="offset points",
                ha="center",
                va="top",
            )
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=8)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_title(dataset)
        ax.set_xlabel("training K, per method", labelpad=18)
        ax.set_ylabel("gap under the training bound (nats)")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colours[0]),
        plt.Rectangle((0, 0), 1, 1, color=colours[1]),
    ]
    axes[0][-1].legend(
        handles,
        ["approximation gap", "amortization gap"],
        loc="upper left",
        bbox_to_anchor=(1.02, 1),
    )
    fig.tight_layout()
    return fig
