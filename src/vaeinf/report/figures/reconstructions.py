"""Test images and the decoder means of their reconstructions, per method (the images once
when every method reconstructed the same ones).

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
    """Per method: the decoder means of the reconstructions of a dataset's first test images,
    shown once above them when every run drew the same images, else above each method's."""
    shared = {}
    for dataset in dict.fromkeys(d for d, _ in samples):
        data = [a["data"][:n_images] for (d, _), a in samples.items() if d == dataset]
        if all(x.shape == data[0].shape and np.array_equal(x, data[0]) for x in data):
            shared[dataset] = ("test images", style.strip(data[0], len(data[0])))

    def make(a):
        n = min(n_images, len(a["data"]))
        bottom = style.strip(a["reconstruction"], n)
        if str(a["dataset"]) in shared:
            return bottom
        top = style.strip(a["data"], n)
        return np.concatenate([top, np.zeros((1, top.shape[1]), np.float32), bottom], 0)

    return style.image_rows(samples, methods, n_images, make, head=shared)
