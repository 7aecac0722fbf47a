"""The gradient's signal-to-noise ratio against K: the encoder's (left) and the decoder's
(right), on log-log axes, for the Gaussian posterior trained on the ELBO (vae) and on L_K
(iwae) with each encoder gradient estimator (standard, STL, DReG), each at its largest training
K and measured at every K of the evaluation's grid; the slopes of Rainforth et al. (2018), K^(-1/2)
and K^(+1/2), drawn through the first point of each panel.

The summary is the root mean square over the parameters of the per-parameter SNR with the bias
of the estimate under zero SNR removed (``rms``, :mod:`vaeinf.core.snr`): Rainforth et al.'s
mean over parameters sits near sqrt(2 / (pi R)) wherever the SNR is lower than that, which
flattens a falling curve. Mean over seeds, error bars the s.d. over seeds. Drawn from
results/snr.csv."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vaeinf.report.figures import style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What the figure is drawn from (see :data:`vaeinf.report.figures.INPUTS`).
INPUT = ("snr",)

#: The summary over parameters drawn (a column of snr.csv).
SUMMARY = "rms"

#: The stage of snr.csv with the trained model's grid (:data:`vaeinf.report.tidy.TRAINED`).
TRAINED = "trained"


def shown(snr: pd.DataFrame) -> pd.DataFrame:
    """The grid rows of the runs the figure shows: method vae, and method iwae trained on L_K
    (any estimator), each variant at its largest training K."""
    d = snr[snr["stage"] == TRAINED]
    d = d[(d["method"] == "vae") | ((d["method"] == "iwae") & (d["objective"] == "iwae"))]
    largest = d.groupby("variant")["K"].transform("max")
    return d[d["K"] == largest]


def draw(snr: pd.DataFrame, methods=None, **_) -> Figure:
    plt, sns = style.lib()
    style.theme()
    d = shown(snr)
    d = d[d[SUMMARY] > 0]  # a bias-corrected SNR of 0 has no place on log axes
    datasets = style.datasets_order(snr) or ["(no data)"]
    labels = style.methods_order(d, methods) if len(d) else []
    styles = style.series_styles(d, labels) if len(d) else {}
    fig, axes = plt.subplots(
        len(datasets), 2, figsize=(7.6, 3.0 * len(datasets)), squeeze=False, sharex=True
    )
    for row, dataset in zip(axes, datasets, strict=True):
        for ax, part in zip(row, ("encoder", "decoder"), strict=True):
            p = d[(d["dataset"] == dataset) & (d["part"] == part)]
            for label in labels:
                s = p[p["label"] == label].groupby("eval_K")[SUMMARY].agg(["mean", "std"])
                if s.empty:
                    continue
                ax.errorbar(
                    s.index,
                    s["mean"],
                    yerr=s["std"].fillna(0),
                    color=styles[label]["color"],
                    marker=styles[label]["marker"],
                    ls="--" if styles[label]["dash"] else "-",
                    ms=4,
                    capsize=2,
                    label=label,
                )
            if len(p):
                _reference_slopes(ax, p)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ks = sorted(p["eval_K"].unique()) if len(p) else []
            if ks:
                style.k_axis(ax, ks)
            ax.set_title(f"{part}" if len(datasets) == 1 else f"{dataset}: {part}")
            ax.set_xlabel("K (samples of the gradient)")
            ax.set_ylabel("gradient SNR (rms over parameters)")
    handles, names = axes[0][-1].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, names, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def _reference_slopes(ax, panel: pd.DataFrame) -> None:
    """K^(-1/2) and K^(+1/2) through the geometric mean of the panel's values at its smallest
    K (dashed, grey)."""
    k0 = panel["eval_K"].min()
    at = panel[panel["eval_K"] == k0][SUMMARY]
    y0 = float(np.exp(np.log(at).mean()))
    k = np.array([k0, panel["eval_K"].max()], dtype=float)
    for power, ls, name in ((-0.5, "--", "$K^{-1/2}$"), (0.5, ":", "$K^{+1/2}$")):
        ax.plot(k, y0 * (k / k0) ** power, color="0.45", ls=ls, lw=1, label=name)
