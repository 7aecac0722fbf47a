"""The study's figures (seaborn/matplotlib), each saved as PNG (for the paper) and PDF.

Every figure is drawn from the aggregated tables (``summary.csv``, ``bounds.csv``,
``per_dim.csv``; see :mod:`vaeinf.aggregate`) or, for the image grids, from the runs'
``samples.npz``; none of them touches a model, so a change to a figure never retrains or
re-evaluates. Datasets are rows (or panels) of one figure, so the paper's labels do not depend
on the study's grid.

Figures (:data:`FIGURES`):

``seed_plot``         validation L_K and training time per epoch against K, twin axes, per method
``nll_vs_k``          test NLL (importance-sampled, K = nll_k) against the training K
``active_units_vs_k`` active units (Burda et al. 2015, Sec. 5.2) against K
``kl_per_dim``        per-dimension KL(q(z_i|x) || p(z_i)), dimensions sorted, per method and K
``bound_gap``         L_{nll_k} - L_K on the test set against the training K
``reconstructions``   test images and their reconstructions, per method
``prior_samples``     decoder means of prior samples, per method
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vaeinf.results import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# (dataset, method, K, seed) of a run directory results/{dataset}/{method}/k{K}/seed{seed}/...
_RUN_RE = re.compile(r"(?P<dataset>[^/]+)/(?P<method>[^/]+)/k(?P<K>\d+)/seed(?P<seed>\d+)/[^/]+$")


def _lib():
    """(pyplot, seaborn), imported on first use: the workflow reads :data:`FIGURES` when it
    starts, and should not pay for plotting libraries then."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def _theme() -> None:
    _lib()[1].set_theme(style="whitegrid", context="paper", font_scale=1.0)


def _methods(df: pd.DataFrame, methods: list[str] | None) -> list[str]:
    present = list(dict.fromkeys(df["method"]))
    if methods:
        return [m for m in methods if m in present] + [m for m in present if m not in methods]
    return present


def _datasets(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["dataset"]))


def _palette(methods: list[str]) -> dict[str, tuple]:
    plt, sns = _lib()
    return dict(zip(methods, sns.color_palette("colorblind", len(methods)), strict=False))


def _k_axis(ax, ks) -> None:
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.minorticks_off()


def _per_dataset_lines(
    summary: pd.DataFrame, y: str, ylabel: str, methods=None, logy: bool = False
) -> Figure:
    """One panel per dataset: ``y`` against K, a line per method, error bars s.d. over seeds."""
    plt, sns = _lib()
    _theme()
    datasets, methods = _datasets(summary), _methods(summary, methods)
    ks = sorted(summary["K"].unique())
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(4.2 * len(datasets) + 1.6, 3.2), squeeze=False
    )
    for ax, dataset in zip(axes[0], datasets, strict=True):
        d = summary[summary["dataset"] == dataset]
        sns.lineplot(
            data=d,
            x="K",
            y=y,
            hue="method",
            hue_order=methods,
            palette=_palette(methods),
            style="method",
            style_order=methods,
            markers=True,
            dashes=False,
            errorbar="sd",
            err_style="bars",
            ax=ax,
            legend=ax is axes[0][-1],
        )
        _k_axis(ax, ks)
        if logy:
            ax.set_yscale("log")
        ax.set_title(dataset)
        ax.set_xlabel("K (training samples)")
        ax.set_ylabel(ylabel)
    leg = axes[0][-1].get_legend()
    if leg is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title="method")
    fig.tight_layout()
    return fig


def _panels(datasets, methods, width: float, height: float, ncol: int = 3, **kw):
    """One panel per (dataset, method), methods wrapped into rows of ``ncol``; unused panels
    hidden. Returns (figure, [(axis, dataset, method, is_first_column, is_last_column)])."""
    plt, _ = _lib()
    ncol = min(ncol, len(methods))
    rows_per = math.ceil(len(methods) / ncol)
    fig, axes = plt.subplots(
        rows_per * len(datasets),
        ncol,
        figsize=(width * ncol + 1.2, height * rows_per * len(datasets) + 0.4),
        squeeze=False,
        **kw,
    )
    panels = []
    for r, dataset in enumerate(datasets):
        for i, method in enumerate(methods):
            row, col = r * rows_per + i // ncol, i % ncol
            last = col == ncol - 1 or i == len(methods) - 1
            panels.append((axes[row][col], dataset, method, col == 0, last))
        for i in range(len(methods), rows_per * ncol):
            axes[r * rows_per + i // ncol][i % ncol].set_visible(False)
    return fig, panels


def seed_plot(summary: pd.DataFrame, methods=None, **_) -> Figure:
    """The question's plot: final validation L_K (left) and seconds per epoch (right) vs K."""
    plt, sns = _lib()
    _theme()
    datasets, methods = _datasets(summary), _methods(summary, methods)
    ks = sorted(summary["K"].unique())
    fig, panels = _panels(datasets, methods, 3.0, 2.6)
    c_bound, c_time = sns.color_palette("colorblind")[0], sns.color_palette("colorblind")[3]
    for ax, dataset, method, first, last in panels:
        d = summary[(summary["dataset"] == dataset) & (summary["method"] == method)]
        g = d.groupby("K").agg(
            lk=("valid_LK_final", "mean"),
            lk_sd=("valid_LK_final", "std"),
            t=("sec_per_epoch", "mean"),
            t_sd=("sec_per_epoch", "std"),
        )
        ax.errorbar(g.index, g["lk"], yerr=g["lk_sd"].fillna(0), color=c_bound, marker="o", ms=4)
        ax.tick_params(axis="y", labelcolor=c_bound)
        _k_axis(ax, ks)
        ax2 = ax.twinx()
        ax2.errorbar(
            g.index, g["t"], yerr=g["t_sd"].fillna(0), color=c_time, marker="s", ms=4, ls="--"
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


def nll_vs_k(summary: pd.DataFrame, methods=None, **_) -> Figure:
    nll_k = int(summary["nll_k"].iloc[0])
    return _per_dataset_lines(summary, "nll", f"test NLL (nats, $L_{{{nll_k}}}$)", methods)


def active_units_vs_k(summary: pd.DataFrame, methods=None, **_) -> Figure:
    fig = _per_dataset_lines(summary, "active_units", "active units", methods)
    latent = int(summary["latent"].max())
    for ax in fig.axes:
        ax.set_ylim(-0.3, latent + 0.3)
    return fig


def bound_gap(summary: pd.DataFrame, methods=None, **_) -> Figure:
    nll_k = int(summary["nll_k"].iloc[0])
    return _per_dataset_lines(
        summary, "bound_gap", f"$L_{{{nll_k}}} - L_K$ (nats, test)", methods, logy=False
    )


def kl_per_dim(per_dim: pd.DataFrame, methods=None, **_) -> Figure:
    """Per-dimension KL, dimensions sorted by KL per run, mean over seeds; a line per K."""
    plt, sns = _lib()
    _theme()
    d = per_dim.copy()
    d["rank"] = d.groupby(["dataset", "method", "K", "seed"])["kl"].rank(
        ascending=False, method="first"
    )
    datasets, methods = _datasets(d), _methods(d, methods)
    ks = sorted(d["K"].unique())
    pal = dict(zip(ks, sns.color_palette("viridis", len(ks)), strict=True))
    fig, panels = _panels(datasets, methods, 2.6, 2.4, sharey=True)
    floor = 1e-4
    for ax, dataset, method, first, _last in panels:
        g = d[(d["dataset"] == dataset) & (d["method"] == method)]
        for K in ks:
            gk = g[g["K"] == K].groupby("rank")["kl"].mean()
            ax.plot(gk.index, gk.clip(lower=floor), marker=".", color=pal[K], label=f"K={K}")
        ax.set_yscale("log")
        ax.axhline(0.01, color="0.5", lw=0.8, ls=":")
        ax.set_title(method if len(datasets) == 1 else f"{dataset}: {method}")
        ax.set_xlabel("latent dimension (sorted)")
        if first:
            ax.set_ylabel("KL per dimension (nats)")
    handles, labels = panels[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), title="training K")
    fig.tight_layout()
    return fig


def _image_side(dim: int) -> int:
    side = int(round(math.sqrt(dim)))
    if side * side != dim:
        raise ValueError(f"cannot show images of {dim} pixels as squares")
    return side


def _strip(images: np.ndarray, n: int) -> np.ndarray:
    """(N, D) flattened square images -> one (side, n*(side+1)) strip with 1-pixel gaps."""
    side = _image_side(images.shape[1])
    out = np.zeros((side, n * (side + 1) - 1), dtype=np.float32)  # white gaps
    for i, img in enumerate(images[:n]):
        out[:, i * (side + 1) : i * (side + 1) + side] = img.reshape(side, side)
    return out


def read_samples(paths: list[str | Path]) -> dict[tuple[str, str], dict]:
    """{(dataset, method): arrays of samples.npz} from paths following the run layout."""
    out = {}
    for p in paths:
        m = _RUN_RE.search(Path(p).as_posix())
        if m is None:
            raise ValueError(f"{p}: not in results/DATASET/METHOD/kK/seedS/")
        with np.load(p) as z:
            out[(m["dataset"], m["method"])] = {k: z[k] for k in z.files}
    return out


def _image_rows(samples, methods, n_images, make) -> Figure:
    plt, sns = _lib()
    _theme()
    datasets = list(dict.fromkeys(d for d, _ in samples))
    keys = sorted(
        (k for k in samples if k[1] in methods),
        key=lambda k: (datasets.index(k[0]), methods.index(k[1])),
    )
    strips = [make(samples[k]) for k in keys]
    width = max(s.shape[1] for s in strips)
    height = sum(s.shape[0] for s in strips)
    fig_w = 7.0
    fig_h = max(1.5, fig_w * height / width * 1.15 + 0.3)
    fig, axes = plt.subplots(
        len(keys),
        1,
        figsize=(fig_w, fig_h),
        squeeze=False,
        gridspec_kw={"height_ratios": [s.shape[0] for s in strips]},
    )
    for ax, key, strip in zip(axes[:, 0], keys, strips, strict=True):
        ax.imshow(strip, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
        label = key[1] if len(datasets) == 1 else f"{key[0]}\n{key[1]}"
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout(h_pad=0.3)
    return fig


def reconstructions(samples: dict, methods=None, n_images: int = 8, **_) -> Figure:
    """Per method: test images (top strip) and the decoder means of their reconstructions."""
    methods = methods or list(dict.fromkeys(m for _, m in samples))

    def make(a):
        n = min(n_images, len(a["data"]))
        top, bottom = _strip(a["data"], n), _strip(a["reconstruction"], n)
        return np.concatenate([top, np.zeros((1, top.shape[1]), np.float32), bottom], 0)

    return _image_rows(samples, methods, n_images, make)


def prior_samples(samples: dict, methods=None, n_images: int = 8, **_) -> Figure:
    """Per method: decoder means p(x|z) of z ~ p(z)."""
    methods = methods or list(dict.fromkeys(m for _, m in samples))

    def make(a):
        return _strip(a["prior_sample"], min(n_images, len(a["prior_sample"])))

    return _image_rows(samples, methods, n_images, make)


#: name -> the input the figure is drawn from: "summary", "per_dim" (the aggregate's tables) or
#: "samples" (the runs' samples.npz); the drawing function has the figure's name.
FIGURES: dict[str, str] = {
    "seed_plot": "summary",
    "nll_vs_k": "summary",
    "active_units_vs_k": "summary",
    "kl_per_dim": "per_dim",
    "bound_gap": "summary",
    "reconstructions": "samples",
    "prior_samples": "samples",
}


def draw(name: str, inputs: dict, methods=None, n_images: int = 8) -> Figure:
    """Draw figure ``name`` from ``inputs`` ({"summary"|"per_dim": csv, "samples": [npz]})."""
    fn, kind = globals()[name], FIGURES[name]
    if kind == "samples":
        data = read_samples(inputs["samples"])
        return fn(data, methods=methods, n_images=n_images)
    return fn(pd.read_csv(inputs[kind]), methods=methods)


def save(fig: Figure, png: str | Path, pdf: str | Path, dpi: int = 200) -> None:
    """Save atomically as PNG and PDF (PDF metadata without a date, so reruns are stable)."""
    plt, sns = _lib()
    import io

    for path, fmt, extra in (
        (png, "png", {"dpi": dpi, "metadata": {"Software": None}}),
        (pdf, "pdf", {"metadata": {"CreationDate": None, "Creator": None, "Producer": None}}),
    ):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, bbox_inches="tight", **extra)
        atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)


def make_figure(name: str, inputs: dict, png: str, pdf: str, methods=None, n_images=8) -> None:
    save(draw(name, inputs, methods=methods, n_images=n_images), png, pdf)
