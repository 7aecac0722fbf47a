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
    """Stacked bars per (method, K) that was run, methods side by side with a gap between."""
    plt, sns = style.lib()
    style.theme()
    datasets, methods = style.datasets_order(summary), style.methods_order(summary, methods)
    colours = sns.color_palette("colorblind")
    cells = summary.groupby(["label", "K"]).size().index
    n_slots = len(cells) + len(methods)  # a bar per cell and a gap after each method
    fig, axes = plt.subplots(
        1,
        len(datasets),
        figsize=((0.15 * n_slots + 1.0) * len(datasets), 3.2),
        squeeze=False,
    )
    width = 0.8
    for ax, dataset in zip(axes[0], datasets, strict=True):
        # Runs evaluated without the gap split have no such columns: empty bars.
        d = summary[summary["dataset"] == dataset].reindex(
            columns=[*summary.columns.difference([APPROX, AMORT, TOTAL]), APPROX, AMORT, TOTAL]
        )
        g = d.groupby(["label", "K"]).agg(
            approx=(APPROX, "mean"), amort=(AMORT, "mean"), total_sd=(TOTAL, "std")
        )
        # A bar far above the rest (a stand-in gap of a failed run) would flatten every other:
        # the axis ends above the others and that bar is cut, its height written on it.
        totals = (g["approx"].clip(lower=0) + g["amort"].clip(lower=0)).dropna()
        typical = totals[totals <= 5 * totals.median()] if len(totals) else totals
        top_y = 1.2 * float(typical.max()) if len(typical) else None
        x, labels, pos = [], [], 0
        for method in methods:
            ks = sorted(k for m, k in g.index if m == method)
            if not ks:
                continue
            start = pos
            for K in ks:
                row = g.loc[(method, K)]
                ax.bar(pos, row["approx"], width, color=colours[0])
                ax.bar(pos, row["amort"], width, bottom=row["approx"], color=colours[1])
                top = row["approx"] + row["amort"]
                if np.isfinite(row["total_sd"]):
                    ax.errorbar(pos, top, yerr=row["total_sd"], color="0.2", capsize=1.5, lw=0.8)
                if top_y is not None and top > top_y:
                    ax.annotate(
                        f"{top:.1f}", (pos, top_y), ha="center", va="top", rotation=90,
                        fontsize=8.5, color="white", xytext=(0, -2), textcoords="offset points",
                    )  # fmt: skip
                x.append(pos)
                labels.append(str(K))
                pos += 1
            ax.annotate(
                method,
                ((start + pos - 1) / 2, 0),
                xycoords=("data", "axes fraction"),
                xytext=(0, -24),
                textcoords="offset points",
                ha="right",
                va="top",
                rotation=35,
                rotation_mode="anchor",
            )
            pos += 1  # the gap between methods
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=8.5, rotation=90)
        if top_y is not None:
            ax.set_ylim(top=top_y)
        ax.set_xlim(-0.8, pos - 0.2)
        ax.axhline(0, color="0.3", lw=0.8)
        if len(datasets) > 1:
            ax.set_title(dataset)
        ax.set_ylabel("gap under the training bound (nats)")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colours[0]),
        plt.Rectangle((0, 0), 1, 1, color=colours[1]),
    ]
    axes[0][0].legend(
        handles, ["approximation gap", "amortization gap"], loc="lower left",
        bbox_to_anchor=(0, 1.01), ncol=2, frameon=False,
    )  # fmt: skip
    fig.tight_layout()
    return fig
