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


def base_panels(df: pd.DataFrame, methods) -> tuple[list[str], dict[str, list[str]]]:
    """The panels, one per base method (its display name), and per panel the display names of
    the named variants drawn in it (an ablation runs at a K or two: points in its base's
    panel, not a panel of its own)."""
    order = style.methods_order(df, methods)
    own = df[df["variant"] == df["method"]] if "variant" in df else df
    base_label = dict(zip(own["method"], own["label"], strict=False))
    panels = [label for label in order if label in set(own["label"])]
    extra: dict[str, list[str]] = {p: [] for p in panels}
    if "variant" in df:
        named = df[df["variant"] != df["method"]]
        for label, method in dict(zip(named["label"], named["method"], strict=False)).items():
            if base_label.get(method) in extra:
                extra[base_label[method]].append(label)
    return panels, extra


def draw(summary: pd.DataFrame, cost: pd.DataFrame, methods=None, **_) -> Figure:
    """Final validation L_K (left) and seconds per epoch (right) against K, a panel per
    method; its ablations as points of their own markers in its panel."""
    plt, sns = style.lib()
    style.theme()
    datasets = style.datasets_order(summary)
    panels_of, extra = base_panels(summary, methods)
    ks = sorted(summary["K"].unique())
    fig, panels = style.panels(datasets, panels_of, 2.3, 1.9)
    c_bound, c_time = (
        sns.color_palette("colorblind")[0],
        sns.color_palette("colorblind")[3],
    )
    # One marker per ablation across the figure, named once in a legend below the panels.
    markers = {
        label: style.VARIANT_MARKERS[i % len(style.VARIANT_MARKERS)]
        for i, label in enumerate(x for m in panels_of for x in extra[m])
    }
    handles = {}
    for ax, dataset, method, first, last in panels:
        ax2 = ax.twinx()
        for i, label in enumerate([method, *extra[method]]):
            d = summary[(summary["dataset"] == dataset) & (summary["label"] == label)]
            g = d.groupby("K").agg(lk=(BOUND, "mean"), lk_sd=(BOUND, "std"))
            c = cost[(cost["dataset"] == dataset) & (cost["label"] == label)].sort_values("K")
            own = i == 0
            marker = ("o", "s") if own else (markers[label],) * 2
            h = ax.errorbar(
                g.index, g["lk"], yerr=g["lk_sd"].fillna(0), color=c_bound, marker=marker[0],
                ms=4 if own else 6, ls="-" if own else "none",
                label=None if own else label, mfc=c_bound if own else "white",
            )  # fmt: skip
            if not own:
                handles[label] = h
            per = c["batches_per_epoch"]
            spread = [0 * per, (c["step_s_q3"] - c["step_s"]) * per]  # the fastest step up to q3
            ax2.errorbar(
                c["K"], c["epoch_s_fastest"], yerr=spread, color=c_time, marker=marker[1],
                ms=4 if own else 6, ls="--" if own else "none", mfc=c_time if own else "white",
            )  # fmt: skip
        ax.tick_params(axis="y", labelcolor=c_bound)
        style.k_axis(ax, ks)
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
    if handles:
        ncol = min(4, len(handles))
        fig.legend(
            list(handles.values()), list(handles), loc="upper center", ncol=ncol,
            bbox_to_anchor=(0.5, 0.0), frameon=False, title="ablations (open markers)",
        )  # fmt: skip
    return fig
