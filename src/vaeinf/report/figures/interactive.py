"""The study's figure, interactive: validation L_K and seconds per epoch against K (Plotly).

The HTML paper shows this in place of the static ``bound_and_time_vs_k`` figure of
:mod:`vaeinf.report.figures` (the PDF keeps the PNG): one pair of traces per variant, the bound
L_K of Burda et al. (2016, Eq. 8) on the final validation pass (left axis, solid) and the
training time per epoch (right axis, dashed), sharing a legend entry so that a click on the
method in the legend shows or hides both. Hovering a point gives the mean ± s.d. over seeds.
The output is an HTML fragment with plotly.js inlined, so it needs nothing from the network
when viewed; ``div_id`` is fixed so the same inputs give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vaeinf.report.tidy import display_order, labelled
from vaeinf.rundir import atomic_write_text

KEYS = ["dataset", "label", "K"]

#: The plotted columns: (name in the plot's data, summary.csv column).
BOUND = ("bound", "time_per_epoch.final_val_LK")
#: Seconds per epoch: the cost rule's (cost.csv), or the training logs' median epoch
#: (summary.csv) when there is no cost table.
EPOCH_S = ("epoch_s", "epoch_s_fastest")
TRAIN_EPOCH_S = ("epoch_s", "time_per_epoch.median_s")


def _stats(df: pd.DataFrame, name: str, column: str) -> pd.DataFrame:
    """Mean, s.d. and number of seeds of ``column`` per (dataset, method, K), as ``name_*``."""
    return (
        df.groupby(KEYS)[column]
        .agg(mean="mean", sd="std", n="count")
        .reset_index()
        .rename(columns={"mean": f"{name}_mean", "sd": f"{name}_sd", "n": f"{name}_n"})
    )


def bound_and_time_data(summary: pd.DataFrame, cost: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (dataset, method, K): mean, s.d. and count over seeds of the final validation L_K
    (``bound_*``) and of the seconds per epoch (``epoch_s_*``: from ``cost`` when given, else
    the training logs' median epoch from ``summary``)."""
    # Series by display name (column ``label``); a table without one is named by its variants.
    summary = summary if "label" in summary else labelled(summary)
    if cost is not None and "label" not in cost:
        cost = labelled(cost)
    time, (name, column) = (cost, EPOCH_S) if cost is not None else (summary, TRAIN_EPOCH_S)
    missing = {BOUND[1], *KEYS} - set(summary.columns)
    missing |= {f"time:{c}" for c in {column, *KEYS} - set(time.columns)}
    if missing:
        raise ValueError(f"bound and time plot: missing columns {sorted(missing)}")
    return _stats(summary, *BOUND).merge(_stats(time, name, column), on=KEYS, how="left")


def _mean_sd(mean: float, sd: float, n: int, digits: int) -> str:
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    if n > 1 and pd.notna(sd):
        return f"{mean:.{digits}f} ± {sd:.{digits}f} (mean ± s.d. over {seeds})"
    return f"{mean:.{digits}f} ({seeds})"


def bound_and_time_figure(summary: pd.DataFrame, cost: pd.DataFrame | None = None, methods=None):
    """The Plotly figure of the PDF's: a panel per (dataset, base method), three to a row, with
    twin y axes (bound solid on the left, seconds per epoch dashed on the right) and the base's
    ablations as points of their own markers in its panel; a legend entry per variant."""
    import math

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from vaeinf.report.figures.bound_and_time_vs_k import base_panels

    summary = summary if "label" in summary else labelled(summary)
    data = bound_and_time_data(summary, cost)
    datasets = list(dict.fromkeys(data["dataset"]))
    panels, extra = base_panels(summary, methods)
    ncol = min(3, len(panels))
    rows_per = math.ceil(len(panels) / ncol)
    titles = [
        (m if len(datasets) == 1 else f"{d}: {m}") if i < len(panels) else ""
        for d in datasets
        for i, m in enumerate(panels + [""] * (rows_per * ncol - len(panels)))
    ]
    fig = make_subplots(
        rows=rows_per * len(datasets),
        cols=ncol,
        specs=[[{"secondary_y": True}] * ncol] * (rows_per * len(datasets)),
        subplot_titles=titles,
        horizontal_spacing=0.11,
        vertical_spacing=0.16 / max(1, rows_per * len(datasets) - 1) + 0.08,
    )
    bound_colour, time_colour = "#0072B2", "#D55E00"  # the PDF figure's (colorblind 0 and 3)
    variant_symbols = ["x", "star", "hexagon", "triangle-left", "triangle-right", "pentagon"]
    ks = sorted(data["K"].unique())
    for r, dataset in enumerate(datasets):
        for i, method in enumerate(panels):
            row, col = r * rows_per + i // ncol + 1, i % ncol + 1
            for j, label in enumerate([method, *extra[method]]):
                d = data[(data["dataset"] == dataset) & (data["label"] == label)].sort_values("K")
                own = j == 0
                for column, secondary, colour, what, digits in (
                    ("bound", False, bound_colour, "validation L<sub>K</sub>", 2),
                    ("epoch_s", True, time_colour, "seconds per epoch", 3),
                ):
                    mean, sd, n = d[f"{column}_mean"], d[f"{column}_sd"], d[f"{column}_n"]
                    text = [
                        f"<b>{label}</b>, {dataset}, K = {k}<br>{what}: {_mean_sd(m, s, c, digits)}"
                        for k, m, s, c in zip(d["K"], mean, sd, n, strict=True)
                    ]
                    symbol = ("circle" if not secondary else "square") if own else (
                        variant_symbols[(j - 1) % len(variant_symbols)] + "-open"
                    )  # fmt: skip
                    fig.add_trace(
                        go.Scatter(
                            x=d["K"],
                            y=mean,
                            error_y=dict(
                                type="data", array=sd.fillna(0), visible=bool(n.max() > 1)
                            ),
                            mode="lines+markers" if own else "markers",
                            line=dict(color=colour, dash="dash" if secondary else "solid"),
                            marker=dict(symbol=symbol, size=7 if own else 9, color=colour),
                            name=label,
                            legendgroup=label,
                            showlegend=not own and not secondary,
                            text=text,
                            hovertemplate="%{text}<extra></extra>",
                        ),
                        row=row,
                        col=col,
                        secondary_y=secondary,
                    )
            fig.update_xaxes(
                title_text="K", type="log", tickvals=ks, ticktext=[str(k) for k in ks],
                row=row, col=col,
            )  # fmt: skip
            fig.update_yaxes(
                title_text="validation L<sub>K</sub> (nats)" if col == 1 else None,
                color=bound_colour, secondary_y=False, row=row, col=col,
            )  # fmt: skip
            fig.update_yaxes(
                title_text="seconds per epoch" if col == ncol else None, color=time_colour,
                rangemode="tozero", showgrid=False, secondary_y=True, row=row, col=col,
            )  # fmt: skip
    fig.update_layout(
        template="plotly_white",
        # The ablations' markers, named below the panels (a panel's title names its method).
        legend=dict(orientation="h", yanchor="top", y=-0.1, xanchor="center", x=0.5),
        hovermode="closest",
        margin=dict(l=70, r=70, t=40, b=70),
        height=260 * rows_per * len(datasets),
    )
    return fig


def bound_and_time_html(
    summary_df: pd.DataFrame,
    cost_df_or_None: pd.DataFrame | None,
    out_html: str | Path,
    variants=None,
    labels=None,
) -> None:
    """Write the interactive figure as a self-contained HTML fragment (plotly.js inlined): a
    legend group per variant in the order of ``variants``, named by ``labels``."""
    cost = None if cost_df_or_None is None else labelled(cost_df_or_None, labels)
    fig = bound_and_time_figure(labelled(summary_df, labels), cost, display_order(variants, labels))
    html = fig.to_html(
        full_html=False,
        include_plotlyjs=True,
        div_id="bound-and-time",
        default_width="100%",
        default_height=f"{fig.layout.height}px",
        config={"displaylogo": False, "responsive": True},
    )
    atomic_write_text(out_html, html + "\n")
