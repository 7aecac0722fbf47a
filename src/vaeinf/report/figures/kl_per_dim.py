"""Per-dimension KL(q(z_i|x) || p(z_i)) of the marginal of each latent dimension, averaged over
the test points, dimensions sorted, per method and K: closed form for the diagonal Gaussians;
for the flows, IAF and AVB that of the Gaussian with the marginal's mean and variance, a lower
bound (see :mod:`vaeinf.evaluation.latent`). The dotted line is the collapse threshold; a named
variant of a method is a dashed line in its method's panel, in its K's colour, with a marker of
its own.

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
    """Per-dimension KL, dimensions sorted by KL per run, mean over seeds; a panel per method,
    a line per K and per variant."""
    plt, sns = style.lib()
    style.theme()
    d = per_dim.copy()
    d["rank"] = d.groupby(["dataset", "label", "K", "seed"])["kl"].rank(
        ascending=False, method="first"
    )
    datasets, methods = style.datasets_order(d), style.methods_order(d, methods)
    ks = sorted(d["K"].unique())
    pal = dict(zip(ks, sns.color_palette("viridis", len(ks)), strict=True))
    bases, variants = style.base_panels(d, methods)
    markers = {v: style.VARIANT_MARKERS[i] for vs in variants.values() for i, v in enumerate(vs)}
    fig, panels = style.panels(datasets, bases, 2.2, 1.55, sharey=True)
    floor = 1e-4
    threshold = float(summary["collapse.threshold"].dropna().iloc[0])
    for ax, dataset, method, _first, _last in panels:
        for label in (method, *variants[method]):
            g = d[(d["dataset"] == dataset) & (d["label"] == label)]
            own = label == method
            for K in sorted(g["K"].unique()):
                gk = g[g["K"] == K].groupby("rank")["kl"].mean()
                ax.plot(gk.index, gk.clip(lower=floor), color=pal[K], lw=1.0,
                        marker="." if own else markers[label], ms=3,
                        markevery=1 if own else 3, ls="-" if own else "--")  # fmt: skip
        ax.set_yscale("log")
        ax.axhline(threshold, color="0.5", lw=0.8, ls=":")
        ax.set_title(method if len(datasets) == 1 else f"{dataset}: {method}")
        ax.set_xlabel("")
        ax.set_ylabel("")
    handles = [plt.Line2D([], [], color=pal[K], lw=1.2, marker=".") for K in ks]
    names = [f"K = {K}" for K in ks]
    for label, marker in markers.items():
        handles.append(plt.Line2D([], [], color="0.3", lw=1.0, ls="--", marker=marker, ms=4))
        names.append(label)
    style.legend_below(fig, handles, names)
    fig.supxlabel("latent dimension (sorted by its KL)")
    fig.supylabel("KL per dimension (nats)")
    fig.tight_layout()
    return fig
