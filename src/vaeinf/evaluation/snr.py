"""The gradient's signal-to-noise ratio in ``metrics.json``: the trained model's over a grid of
K with the fitted slope of log SNR against log K, and the training's record (start, middle,
end; :mod:`vaeinf.core.train`). The estimator is :mod:`vaeinf.core.snr`.

Rainforth et al. (2018, "Tighter Variational Bounds are Not Necessarily Better", Sec. 3 and
Fig. 1) show that for L_K the encoder's SNR falls as O(1/sqrt(K)) and the decoder's rises as
O(sqrt(K)), slopes -1/2 and +1/2 on log-log axes; Tucker et al. (2019, Sec. 4) that DReG's
encoder SNR does not fall. The slope here is fitted over the grid's K, which need not be in
the asymptotic regime of those rates.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from torch import Tensor

from vaeinf.core.methods import Method
from vaeinf.core.snr import LEVEL, SUMMARIES, draws_per_chunk, measure

#: What the records mean, written with them.
DEFINITION = (
    "per parameter |mean| / s.d. of the training loss's gradient over draws of the samples on "
    "a fixed minibatch of training points; mean, median and bias-corrected root mean square "
    "over the encoder's and the decoder's parameters, each with an interval of ± 1.96 "
    "bootstrap standard deviations (draws resampled)"
)


def slope(ks: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(K) over the finite, positive values
    (NaN with fewer than two)."""
    k, v = np.asarray(ks, float), np.asarray(values, float)
    ok = np.isfinite(v) & (v > 0)
    if ok.sum() < 2 or len(set(k[ok])) < 2:
        return math.nan
    return float(np.polyfit(np.log(k[ok]), np.log(v[ok]), 1)[0])


def grid_ks(model: Method, ks: list[int]) -> list[int]:
    """The K of ``ks`` the model's objective is defined at: all of them, or for MIWAE and
    PIWAE those its groups divide."""
    spec = model.objective_spec
    groups = spec.groups if spec.name in ("miwae", "piwae") else 1
    return [K for K in sorted(set(ks)) if K % groups == 0]


def curve(
    model: Method,
    x: Tensor,
    ks: list[int],
    estimator: str,
    draws: int,
    seed: int,
    memory_mb: float = 256,
) -> dict:
    """The SNR of the trained model at every K of ``ks`` the objective is defined at
    (:func:`grid_ks`; each K its own random stream) on the minibatch x, and the slope of log
    SNR against log K for each part and summary, with an interval of ± z bootstrap s.d. (each
    resample resamples the draws at every K; :data:`vaeinf.core.snr.LEVEL`). Returns
    ``{"grid": [{K, part: record}], "slope": {part: {summary: {value, low, high}}}}``."""
    ks = grid_ks(model, ks)
    per_k = {
        K: measure(
            model, x, K, estimator, draws, seed + K, draws_per_chunk(model, K, len(x), memory_mb)
        )
        for K in ks
    }
    grid = [{"K": K} | {part: s.record() for part, s in per_k[K].items()} for K in ks]
    z = NormalDist().inv_cdf((1 + LEVEL) / 2)
    slopes: dict = {}
    for part in per_k[ks[0]] if ks else []:
        slopes[part] = {}
        for summary in SUMMARIES:
            value = slope(ks, [per_k[K][part].summary(summary) for K in ks])
            boot = np.stack([per_k[K][part].resamples(summary) for K in ks])  # (n_K, BOOTSTRAP)
            fits = np.array([slope(ks, list(column)) for column in boot.T])
            fits = fits[np.isfinite(fits)]
            sd = float(np.std(fits, ddof=1)) if len(fits) > 1 else math.nan
            slopes[part][summary] = {"value": value, "low": value - z * sd, "high": value + z * sd}
    return {"grid": grid, "slope": slopes}


def metrics(
    model: Method,
    x: Tensor,
    ks: list[int],
    estimator: str,
    draws: int,
    seed: int,
    memory_mb: float,
    training: dict | None,
) -> dict:
    """The ``snr`` block of metrics.json: the definition, the training's record (``training``:
    stage -> record, from the run's ``train_snr.json``; omitted when the run has none) and the
    trained model's :func:`curve` over ``ks`` with its settings (omitted when ``ks`` is empty
    or ``draws`` 0)."""
    out: dict = {"definition": DEFINITION}
    if training:
        out["training"] = training
    if ks and draws:
        out["settings"] = {"draws": draws, "points": len(x), "level": LEVEL}
        out |= curve(model, x, ks, estimator, draws, seed, memory_mb)
    return out
