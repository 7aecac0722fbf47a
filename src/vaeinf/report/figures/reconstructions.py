"""Test images and the decoder means of their reconstructions, per method.

Drawn from the runs' samples.npz."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vaeinf.report.figures import style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What the figure is drawn from (see :data:`vaeinf.report.figures.INPUTS`).
INPUT = ("samples",)


def draw(samples: dict, methods=None, n_images: int = 8, **_) -> Figure:
    """Per method: test images (top strip) and the decoder means of their reconstructions."""

    def make(a):
        n = min(n_images, len(a["data"]))
        top, bottom = style.strip(a["data"], n), style.strip(a["reconstruction"], n)
        return np.concatenate([top, np.zeros((1, top.shape[1]), np.float32), bottom], 0)

    return style.image_rows(samples, methods, n_images, make)
