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

from vaeinf.report.figures import style
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
    """The Plotly figure: a column per dataset, twin y axes, a legend group per variant."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    data = bound_and_time_data(summary, cost)
    datasets = list(dict.fromkeys(data["dataset"]))
    present = list(dict.fromkeys(data["label"]))
    order = [m for m in (methods or []) if m in present] + [
        m for m in present if m not in (methods or [])
    ]
    # The colour of each method in every figure of the paper.
    colours = style.palette(summary if "label" in summary else labelled(summary), order)
    fig = make_subplots(
        rows=1,
        cols=len(datasets),
        specs=[[{"secondary_y": True}] * len(datasets)],
        subplot_titles=datasets if len(datasets) > 1 else None,
        horizontal_spacing=0.12,
    )
    for col, dataset in enumerate(datasets, start=1):
        for method in order:
            d = data[(data["dataset"] == dataset) & (data["label"] == method)].sort_values("K")
            if d.empty:
                continue
            colour = colours[method]
            for column, secondary, dash, symbol, label, digits in (
                ("bound", False, "solid", "circle", "validation L<sub>K</sub>", 2),
                ("epoch_s", True, "dash", "square", "seconds per epoch", 3),
            ):
                mean, sd, n = d[f"{column}_mean"], d[f"{column}_sd"], d[f"{column}_n"]
                text = [
                    f"<b>{method}</b>, {dataset}, K = {k}<br>{label}: {_mean_sd(m, s, c, digits)}"
                    for k, m, s, c in zip(d["K"], mean, sd, n, strict=True)
                ]
                fig.add_trace(
                    go.Scatter(
                        x=d["K"],
                        y=mean,
                        error_y=dict(type="data", array=sd.fillna(0), visible=bool(n.max() > 1)),
                        mode="lines+markers",
                        line=dict(color=colour, dash=dash),
                        marker=dict(symbol=symbol, size=7),
                        name=method,
                        legendgroup=method,
                        showlegend=col == 1 and not secondary,
                        text=text,
                        hovertemplate="%{text}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                    secondary_y=secondary,
                )
        ks = sorted(data.loc[data["dataset"] == dataset, "K"].unique())
        fig.update_xaxes(
            title_text="K (training samples)",
            type="log",
            tickvals=ks,
            ticktext=[str(k) for k in ks],
            row=1,
            col=col,
        )
        fig.update_yaxes(
            title_text="validation L<sub>K</sub> (nats), solid" if col == 1 else None,
            secondary_y=False,
            row=1,
            col=col,
        )
        fig.update_yaxes(
            title_text="seconds per epoch, dashed" if col == len(datasets) else None,
            secondary_y=True,
            rangemode="tozero",
            showgrid=False,
            row=1,
            col=col,
        )
    fig.update_layout(
        template="plotly_white",
        legend=dict(title_text="click: show/hide", groupclick="togglegroup"),
        hovermode="closest",
        margin=dict(l=60, r=60, t=40 if len(datasets) > 1 else 20, b=50),
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
        default_height="460px",
        config={"displaylogo": False, "responsive": True},
    )
    atomic_write_text(out_html, html + "\n")
