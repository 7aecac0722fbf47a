"""The study's figures (seaborn/matplotlib), each saved as PNG (for the paper) and PDF.

One module per figure, each with a ``draw`` function and the ``INPUT`` it is drawn from; the
workflow's figure rule depends on the figure's own module (and
:mod:`vaeinf.report.figures.style`), so a cosmetic edit redraws only that figure. Every figure
is drawn from the aggregated tables (``summary.csv``, ``per_dim.csv``, ``curves.csv``; see
:mod:`vaeinf.report.tidy`) or, for the image grids, from the runs' ``samples.npz``; none of them
touches a model. Datasets are rows (or panels) of one figure, so the paper's labels do not
depend on the study's grid.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from vaeinf.report.figures import (
    active_units_vs_k,
    bound_and_time_vs_k,
    bound_gap,
    bound_vs_compute,
    gaps,
    kl_per_dim,
    nll_vs_k,
    prior_samples,
    reconstructions,
    snr_vs_k,
    style,
)
from vaeinf.report.tidy import display_order, labelled

_MODULES = (
    bound_and_time_vs_k,
    bound_vs_compute,
    nll_vs_k,
    active_units_vs_k,
    kl_per_dim,
    bound_gap,
    gaps,
    snr_vs_k,
    reconstructions,
    prior_samples,
)

#: figure name -> its drawing function
FIGURES: dict[str, Callable] = {m.__name__.rsplit(".", 1)[-1]: m.draw for m in _MODULES}

#: figure name -> what it is drawn from, in the order of its arguments: tables of the
#: aggregate rule ("summary", "per_dim", "cost", "curves", "snr") or the runs' image arrays
#: ("samples")
INPUTS: dict[str, tuple[str, ...]] = {m.__name__.rsplit(".", 1)[-1]: m.INPUT for m in _MODULES}


def draw(name: str, inputs: dict, variants=None, labels=None, n_images: int = 8):
    """Draw figure ``name`` from ``inputs`` ({"summary"|"per_dim"|"cost"|"snr": csv, "samples":
    [npz]}): a series (or panel, or strip) per variant in the order of ``variants``, named by
    ``labels`` (variant -> display name; see :func:`vaeinf.report.tidy.labelled`)."""
    order = display_order(variants, labels)
    if INPUTS[name] == ("samples",):
        data = {
            (dataset, (labels or {}).get(v, v)): arrays
            for (dataset, v), arrays in style.read_samples(inputs["samples"]).items()
        }
        return FIGURES[name](data, methods=order, n_images=n_images)
    frames = (labelled(pd.read_csv(inputs[k]), labels) for k in INPUTS[name])
    return FIGURES[name](*frames, methods=order)


def make_figure(
    name: str,
    inputs: dict,
    png: str | Path,
    pdf: str | Path,
    variants=None,
    labels=None,
    n_images=8,
) -> None:
    style.save(draw(name, inputs, variants, labels, n_images=n_images), png, pdf)
