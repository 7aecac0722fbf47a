"""Decoder means p(x|z) of prior samples z ~ p(z), per method.

Drawn from the runs' samples.npz."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaeinf.report.figures import style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What the figure is drawn from (see :data:`vaeinf.report.figures.INPUTS`).
INPUT = ("samples",)


def draw(samples: dict, methods=None, n_images: int = 8, **_) -> Figure:
    """Per method: decoder means p(x|z) of z ~ p(z)."""

    def make(a):
        return style.strip(a["prior_sample"], min(n_images, len(a["prior_sample"])))

    return style.image_rows(samples, methods, n_images, make)
