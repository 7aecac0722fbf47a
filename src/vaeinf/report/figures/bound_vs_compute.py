"""The held-out bound against training compute: every run's validation curve, per method and K.

Drawn from results/curves.csv (:mod:`vaeinf.report.tidy`): the validation bound L_{val_k} after
each epoch against cumulative training compute, the optimizer steps in multiples of the cost
rule's reference step (VAE at the smallest K), log scale. One panel per (dataset, method), one
line per training K (mean over the seeds that trained that epoch), a cross where each seed's run
ended (at its cap, budget, or where its bound stopped improving); a named variant of the method
is a dashed line in its panel, in its K's colour, with a marker of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from vaeinf.report.figures import style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What the figure is drawn from (see :data:`vaeinf.report.figures.INPUTS`).
INPUT = ("curves",)


def draw(curves: pd.DataFrame, methods=None, **_) -> Figure:
    """Validation bound against compute, a panel per method, a line per K and per variant."""
    plt, sns = style.lib()
    style.theme()
    curves = curves.dropna(subset=["compute", "val_bound"])
    datasets, methods = style.datasets_order(curves), style.methods_order(curves, methods)
    ks = sorted(curves["K"].unique())
    colours = dict(zip(ks, sns.color_palette("viridis", len(ks)), strict=True))
    bases, variants = style.base_panels(curves, methods)
    markers = {v: style.VARIANT_MARKERS[i] for vs in variants.values() for i, v in enumerate(vs)}
    fig, panels = style.panels(datasets, bases, 2.2, 1.55, sharex=True, sharey=True)
    unit = str(curves["compute_unit"].iloc[0]) if len(curves) else "reference"
    name, _, k_ref = unit.partition(" K=")
    from vaeinf.names import LABELS

    unit = f"{LABELS.get(name, name)}, K = {k_ref}" if k_ref else unit
    # The shared y axis spans the methods' own curves (from their 2nd percentile): a variant far
    # below them (an ablation that fails) says so, with its best bound, in its legend entry
    # instead of flattening every panel.
    own = curves[curves["label"].isin(bases)]
    low, high = own["val_bound"].quantile(0.02), curves["val_bound"].max()
    low = low - 0.05 * (high - low)
    below: dict[str, list[str]] = {}
    for ax, dataset, method, _first, _last in panels:
        for label in (method, *variants[method]):
            d = curves[(curves["dataset"] == dataset) & (curves["label"] == label)]
            own = label == method
            for K, g in d.groupby("K"):
                mean = g.groupby("epoch").agg(
                    compute=("compute", "first"), bound=("val_bound", "mean")
                )
                ax.plot(mean["compute"], mean["bound"], color=colours[K], lw=1.2,
                        ls="-" if own else "--", marker=None if own else markers[label],
                        ms=4, markevery=[len(mean) - 1])  # fmt: skip
                ends = g.loc[g.groupby("seed")["epoch"].idxmax()]
                ax.plot(ends["compute"], ends["val_bound"], "x", color=colours[K], ms=4, mew=1)
                if not own and mean["bound"].max() < low:
                    best = f"{mean['bound'].max():.1f}".replace("-", "−")
                    below.setdefault(label, []).append(f"K = {K} below the axis, best {best}")
        ax.set_xscale("log")
        ax.set_title(method if len(datasets) == 1 else f"{dataset}: {method}")
        ax.set_ylim(low, high + 0.05 * (high - low))
    val_k = "" if "val_k" not in curves else f" ($L_{{{int(curves['val_k'].iloc[0])}}}$)"
    fig.supylabel(f"validation bound{val_k} (nats)")
    fig.supxlabel(f"training compute (optimizer steps of the {unit} step)")
    handles = [plt.Line2D([], [], color=colours[K], lw=1.5) for K in ks]
    names = [f"K = {K}" for K in ks]
    for label, marker in markers.items():
        handles.append(plt.Line2D([], [], color="0.3", lw=1.2, ls="--", marker=marker, ms=4))
        names.append(f"{label} ({'; '.join(below[label])})" if label in below else label)
    style.legend_below(fig, handles, names)
    fig.tight_layout()
    return fig
