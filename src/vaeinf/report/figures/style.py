"""What every figure shares: the plotting libraries (imported on first use), the theme, method
order and colours, the K axis, the panel layouts and the image strips, and saving as PNG + PDF.

Editing this module redraws every figure; editing one figure's module redraws only that one.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vaeinf.rundir import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def lib():
    """(pyplot, seaborn), imported on first use: the workflow reads :data:`FIGURES` when it
    starts, and should not pay for plotting libraries then."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def theme() -> None:
    # Fonts 1.2 times seaborn's "paper" sizes: every figure prints at 7 pt or more at the width
    # the paper gives it (the manuscript check measures it).
    lib()[1].set_theme(style="whitegrid", context="paper", font_scale=1.2)


def methods_order(df: pd.DataFrame, methods: list[str] | None) -> list[str]:
    """The display names (column ``label``: a variant's, see :func:`vaeinf.report.tidy.labelled`)
    of ``df`` in the order of ``methods``, then as they come."""
    present = list(dict.fromkeys(df["label"]))
    if methods:
        return [m for m in methods if m in present] + [m for m in present if m not in methods]
    return present


def datasets_order(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["dataset"]))


#: One colour and marker per base method, the same in every figure: Okabe and Ito's palette
#: for colour-blind readers, six of its hues as far apart as it allows, and a filled marker
#: each. A named variant takes its base method's colour, a marker of :data:`VARIANT_MARKERS`
#: and a dashed line, so an ablation reads as its method's sibling.
METHOD_STYLE = {
    "vae": ("#000000", "o"),
    "iwae": ("#0072B2", "s"),
    "flow": ("#009E73", "^"),
    "autoregressive": ("#CC79A7", "D"),
    "avb": ("#E69F00", "v"),
    "semi_amortized": ("#D55E00", "P"),
}
VARIANT_MARKERS = ("X", "*", "h", "<", ">", "p", "d", "8")
#: The colour of a series whose method has no entry in :data:`METHOD_STYLE`.
OTHER = ("#777777", "o")


def series_styles(df: pd.DataFrame, order: list[str]) -> dict[str, dict]:
    """Per display name (``label``) of ``df``, in ``order``: ``color``, ``marker`` and ``dash``
    (seaborn's dash spec: ``""`` solid for a method itself, dashed for a named variant), from
    its base method (column ``method``) by :data:`METHOD_STYLE`."""
    base = dict(zip(df["label"], df["method"] if "method" in df else df["label"], strict=False))
    own = dict(zip(df["label"], df["variant"] if "variant" in df else df["label"], strict=False))
    styles, seen = {}, {}
    for label in order:
        method = base.get(label, label)
        colour, marker = METHOD_STYLE.get(method, OTHER)
        dash = ""
        if own.get(label, label) != method:  # a named variant of ``method``
            i = seen[method] = seen.get(method, -1) + 1
            marker, dash = VARIANT_MARKERS[i % len(VARIANT_MARKERS)], (4, 2)
        styles[label] = {"color": colour, "marker": marker, "dash": dash}
    return styles


def base_panels(df: pd.DataFrame, order: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """For a figure with one panel per base method: the display names of the methods themselves
    (rows whose ``variant`` is their ``method``) in ``order``, and per such name the display
    names of its named variants, in ``order``, which are drawn in their base method's panel."""
    if "variant" not in df or "method" not in df:
        return order, {m: [] for m in order}
    own = df[df["variant"] == df["method"]]
    base_label = dict(zip(own["method"], own["label"], strict=False))
    of = dict(zip(df["label"], df["method"], strict=False))
    is_own = set(own["label"])
    bases = [m for m in order if m in is_own]
    extra = {m: [] for m in bases}
    for label in order:
        home = base_label.get(of.get(label))
        if label not in is_own and home in extra:
            extra[home].append(label)
    return bases, extra


def palette(df: pd.DataFrame, order: list[str]) -> dict[str, str]:
    """label -> colour (see :func:`series_styles`)."""
    return {k: v["color"] for k, v in series_styles(df, order).items()}


def k_axis(ax, ks) -> None:
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.minorticks_off()


def per_dataset_lines(
    summary: pd.DataFrame, y: str, ylabel: str, methods=None, logy: bool = False,
    focus: bool = False,
) -> Figure:  # fmt: skip
    """One panel per dataset: ``y`` against K, a line per method, error bars s.d. over seeds.
    ``focus``: the y-axis spans the methods of the grid, and a named variant whose mean falls
    outside it is written in the panel instead, so that one outlying ablation does not flatten
    every line."""
    plt, sns = lib()
    theme()
    datasets, methods = datasets_order(summary), methods_order(summary, methods)
    styles = series_styles(summary, methods)
    ks = sorted(summary["K"].unique())
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(5.4 * len(datasets) + 1.6, 2.6), squeeze=False
    )
    for ax, dataset in zip(axes[0], datasets, strict=True):
        d = summary[summary["dataset"] == dataset]
        sns.lineplot(
            data=d,
            x="K",
            y=y,
            hue="label",
            hue_order=methods,
            palette={k: v["color"] for k, v in styles.items()},
            style="label",
            style_order=methods,
            markers={k: v["marker"] for k, v in styles.items()},
            dashes={k: v["dash"] for k, v in styles.items()},
            markersize=6,
            alpha=0.9,
            errorbar="sd",
            err_style="bars",
            ax=ax,
            legend=ax is axes[0][-1],
        )
        k_axis(ax, ks)
        if logy:
            ax.set_yscale("log")
        if focus and "variant" in d and "method" in d:
            focus_axis(ax, d, y)
        ax.set_title(dataset)
        ax.set_xlabel("K (training samples)")
        ax.set_ylabel(ylabel)
    leg = axes[0][-1].get_legend()
    if leg is not None:
        # Two columns of series once there are more than a figure's height holds in one.
        n = len(leg.get_texts())
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1.02), title=None,
                        ncol=1 if n <= 7 else 2, columnspacing=0.8, handletextpad=0.4,
                        handlelength=2.2)  # fmt: skip
    fig.tight_layout()
    return fig


def focus_axis(ax, d: pd.DataFrame, y: str) -> None:
    """Limit the y-axis of ``ax`` to the runs in ``d`` (mean ± s.d. over seeds) but for the
    named variants whose mean lies further than the grid's own range beyond it, which a note
    under the axis lists."""
    stats = d.groupby(["label", "K"])[y].agg(["mean", "std"]).fillna(0.0)
    labels = stats.index.get_level_values("label")
    own = labels.isin(set(d.loc[d["variant"] == d["method"], "label"]))
    grid = stats[own]
    if grid.empty:
        return
    lo, hi = (grid["mean"] - grid["std"]).min(), (grid["mean"] + grid["std"]).max()
    span = hi - lo if hi > lo else 1.0
    far = ~own & ((stats["mean"] < lo - span) | (stats["mean"] > hi + span))
    if not far.any():
        return
    kept = stats[~far]
    lo, hi = (kept["mean"] - kept["std"]).min(), (kept["mean"] + kept["std"]).max()
    ax.set_ylim(lo - 0.06 * (hi - lo), hi + 0.06 * (hi - lo))
    out = "; ".join(f"{lab}, K = {K}: {m:.2f}" for (lab, K), m in stats[far]["mean"].items())
    ticks = ax.yaxis.get_ticklabels()
    size = ticks[0].get_fontsize() if ticks else 8.0  # the note reads at the ticks' size
    ax.annotate("off the axis: " + out.replace("-", "−"), xy=(0, 0), xycoords="axes fraction",
                xytext=(0, -3.4 * size), textcoords="offset points", va="top",
                fontsize=size)  # fmt: skip


def panels(datasets, methods, width: float, height: float, ncol: int = 3, **kw):
    """One panel per (dataset, method), methods wrapped into rows of ``ncol``; unused panels
    hidden. Returns (figure, [(axis, dataset, method, is_first_column, is_last_column)])."""
    plt, _ = lib()
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


def legend_below(fig: Figure, handles, names, max_ncol: int = 6) -> None:
    """A legend under the panels in as many columns (at most ``max_ncol``) as fit the
    figure's width, so that a long list of variants wraps into rows instead of widening the
    saved figure (which would shrink its text on the page)."""
    fig.canvas.draw()
    width = fig.get_window_extent().width
    for ncol in range(min(max_ncol, len(names)), 0, -1):
        leg = fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                         ncol=ncol, frameon=False, columnspacing=1.0, handlelength=2.4)  # fmt: skip
        if ncol == 1 or leg.get_window_extent().width <= width:
            return
        leg.remove()


def image_side(dim: int) -> int:
    side = int(round(math.sqrt(dim)))
    if side * side != dim:
        raise ValueError(f"cannot show images of {dim} pixels as squares")
    return side


def strip(images: np.ndarray, n: int) -> np.ndarray:
    """(N, D) flattened square images -> one (side, n*(side+1)) strip with 1-pixel gaps."""
    side = image_side(images.shape[1])
    out = np.zeros((side, n * (side + 1) - 1), dtype=np.float32)  # white gaps
    for i, img in enumerate(images[:n]):
        out[:, i * (side + 1) : i * (side + 1) + side] = img.reshape(side, side)
    return out


def read_samples(paths: list[str | Path]) -> dict[tuple[str, str], dict]:
    """{(dataset, variant): arrays} of the runs' samples.npz; each file names its own run."""
    out = {}
    for p in paths:
        with np.load(p) as z:
            arrays = {k: z[k] for k in z.files}
        variant = arrays["variant"] if "variant" in arrays else arrays["method"]
        out[(str(arrays["dataset"]), str(variant))] = arrays
    return out


def image_rows(samples, methods, n_images, make, head=None) -> Figure:
    """One strip of images (``make(arrays)``) per (dataset, variant) of ``samples``, in the
    order of ``methods`` (None: as they come); a run at another K than most of them (an
    ablation restricted to its own K) says its K. ``head``: {dataset: (label, strip)}, a strip
    shown above the dataset's rows."""
    plt, sns = lib()
    theme()
    methods = methods or list(dict.fromkeys(m for _, m in samples))
    datasets = list(dict.fromkeys(d for d, _ in samples))
    keys = sorted(
        (k for k in samples if k[1] in methods),
        key=lambda k: (datasets.index(k[0]), methods.index(k[1])),
    )
    ks = [int(samples[k]["K"]) for k in keys if "K" in samples[k]]
    usual = max(set(ks), key=ks.count) if ks else None

    def label(k) -> str:
        name = k[1]
        if "K" in samples[k] and int(samples[k]["K"]) != usual:
            name = f"{name}, K = {int(samples[k]['K'])}"
        return name if len(datasets) == 1 else f"{k[0]}\n{name}"

    strips = [make(samples[k]) for k in keys]
    labels = [label(k) for k in keys]
    for dataset, (head_label, strip) in (head or {}).items():
        i = next((i for i, k in enumerate(keys) if k[0] == dataset), None)
        if i is None:
            continue
        keys.insert(i, (dataset, head_label))
        strips.insert(i, strip)
        labels.insert(i, head_label if len(datasets) == 1 else f"{dataset}\n{head_label}")
    # One image of the strips stacked with white gaps, labelled by y ticks: the figure is as
    # tall as the images need at the width the labels leave, with no empty rows between them.
    width = max(s.shape[1] for s in strips)
    gap = max(3, max(s.shape[0] for s in strips) // 3)
    rows, centres, y = [], [], 0
    for s in strips:
        rows += [np.pad(s, ((0, 0), (0, width - s.shape[1]))), np.zeros((gap, width), s.dtype)]
        centres.append(y + (s.shape[0] - 1) / 2)
        y += s.shape[0] + gap
    image = np.concatenate(rows[:-1], 0)
    fig_w = 4.2
    fig = plt.figure(figsize=(fig_w, fig_w))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks(centres, labels, fontsize=9)
    ax.tick_params(axis="y", length=0, pad=4)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    label_w = max(t.get_window_extent(renderer).width for t in ax.get_yticklabels()) / fig.dpi
    left = label_w + 0.1  # inches: the labels and their pad
    img_w = fig_w - left
    img_h = img_w * image.shape[0] / image.shape[1]
    fig.set_size_inches(fig_w, img_h)
    ax.set_position((left / fig_w, 0, img_w / fig_w, 1))
    return fig


#: PNG text key of the smallest font size (pt) in a figure, at the figure's own size: the
#: manuscript check scales it to the printed width (vaeinf.report.paper.check).
MIN_FONT_KEY = "vaeinf:min-font-pt"


def min_font_pt(fig: Figure) -> float:
    """The smallest font size (pt) of the visible, non-empty text of ``fig``."""
    from matplotlib.text import Text

    sizes = [
        t.get_fontsize()
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and t.figure is not None
    ]
    return float(min(sizes)) if sizes else math.nan


def save(fig: Figure, png: str | Path, pdf: str | Path, dpi: int = 200) -> None:
    """Save atomically as PNG and PDF (PDF metadata without a date, so reruns are stable); the
    PNG records the smallest font size (:data:`MIN_FONT_KEY`)."""
    plt, _ = lib()
    fig.canvas.draw()  # tick labels exist once drawn
    meta = {"Software": None, MIN_FONT_KEY: f"{min_font_pt(fig):.2f}"}
    for path, fmt, extra in (
        (png, "png", {"dpi": dpi, "metadata": meta}),
        (pdf, "pdf", {"metadata": {"CreationDate": None, "Creator": None, "Producer": None}}),
    ):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, bbox_inches="tight", **extra)
        atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
