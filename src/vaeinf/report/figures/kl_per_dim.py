"""Per-dimension KL(q(z_i|x) || p(z_i)) of the marginal of each latent dimension, averaged over
the test points, dimensions sorted, per method and K: closed form for the diagonal Gaussians;
for the flows, IAF and AVB that of the Gaussian with the marginal's mean and variance, a lower
bound (see :mod:`vaeinf.evaluation.latent`). The dotted line is the collapse threshold.

Drawn from results/per_dim.csv and the threshold from results/summary.csv."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from vaeinf.report.figures import style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What the figure is drawn from (see :data:`vaeinf.report.figures.INPUTS`).
INPUT = ("per_dim", "summary")


def draw(per_dim: pd.DataFrame, summary: pd.DataFrame, methods=None, **_) -> Figure:
    """Per-dimension KL, dimensions sorted by KL per run, mean over seeds; a line per K."""
    plt, sns = style.lib()
    style.theme()
    d = per_dim.copy()
    d["rank"] = d.groupby(["dataset", "label", "K", "seed"])["kl"].rank(
        ascending=False, method="first"
    )
    datasets, methods = style.datasets_order(d), style.methods_order(d, methods)
    ks = sorted(d["K"].unique())
    pal = dict(zip(ks, sns.color_palette("viridis", len(ks)), strict=True))
    fig, panels = style.panels(datasets, methods, 2.2, 1.9, sharey=True)
    floor = 1e-4
    threshold = float(summary["collapse.threshold"].dropna().iloc[0])
    for ax, dataset, method, _first, _last in panels:
        g = d[(d["dataset"] == dataset) & (d["label"] == method)]
        for K in ks:
            gk = g[g["K"] == K].groupby("rank")["kl"].mean()
            ax.plot(gk.index, gk.clip(lower=floor), marker=".", color=pal[K], label=f"K={K}")
        ax.set_yscale("log")
        ax.axhline(threshold, color="0.5", lw=0.8, ls=":")
        ax.set_title(method if len(datasets) == 1 else f"{dataset}: {method}")
        ax.set_xlabel("")
        ax.set_ylabel("")
    handles, labels = panels[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), title="training K")
    fig.supxlabel("latent dimension (sorted by its KL)")
    fig.supylabel("KL per dimension (nats)")
    fig.tight_layout()
    return fig
