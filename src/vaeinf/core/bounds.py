"""Bounds from log importance weights, and the training losses that estimate their gradients.

All functions take log-weights ``log_w`` of shape (K, B): log w_k = log p(x, z_k) - log q(z_k|x),
z_k ~ q(z|x). The sample dimension comes first. The objectives over groups of samples (MIWAE,
PIWAE) split the K rows into M consecutive groups of K / M; the samples are independent, so any
split is as good as another.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from vaeinf.core.methods.base import Method

from vaeinf.names import DREG_OBJECTIVES, GROUPED_OBJECTIVES, OBJECTIVES


@dataclass(frozen=True)
class Objective:
    """A training objective: its name (one of :data:`vaeinf.names.OBJECTIVES`), the number of
    groups M of ``miwae`` and ``piwae`` (the K samples per point form M groups of K / M), and
    the weight beta of the ELBO in ``ciwae``."""

    name: str = "iwae"
    groups: int = 1
    beta: float = 0.0

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.name!r}; allowed: {', '.join(OBJECTIVES)}")
        if self.groups < 1 or not 0 <= self.beta <= 1:
            raise ValueError(f"objective {self}: groups must be >= 1 and beta in [0, 1]")

    def check(self, K: int) -> None:
        """ValueError unless the K samples per point split into the objective's groups."""
        if self.name in GROUPED_OBJECTIVES and K % self.groups:
            raise ValueError(
                f"{self.name} with {self.groups} groups needs K divisible by {self.groups}, "
                f"got K = {K}"
            )


def as_objective(objective: str | Objective) -> Objective:
    """An :class:`Objective` from itself or from a name (with its default parameters)."""
    return objective if isinstance(objective, Objective) else Objective(objective)


def elbo(log_w: Tensor) -> Tensor:
    """K-sample average ELBO, (1/K) sum_k log w_k (Kingma & Welling 2014, Eq. 7). (K, B) -> (B,)."""
    return log_w.mean(0)


def iwae(log_w: Tensor) -> Tensor:
    """Importance-weighted bound L_K = log (1/K) sum_k w_k (Burda et al. 2015, Eq. 8).

    (K, B) -> (B,), computed with logsumexp for stability.
    """
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def miwae(log_w: Tensor, groups: int) -> Tensor:
    """MIWAE(M, K'): the mean over M = ``groups`` groups of K' = K / M samples of each group's
    L_K' (Rainforth et al. 2018, Sec. 4, Eq. 7). (K, B) -> (B,). MIWAE(1, K) is L_K and
    MIWAE(K, 1) the K-sample ELBO."""
    K, B = log_w.shape
    grouped = log_w.reshape(groups, K // groups, B)  # (M, K', B)
    return (torch.logsumexp(grouped, 1) - math.log(K // groups)).mean(0)


def ciwae(log_w: Tensor, beta: float) -> Tensor:
    """CIWAE(beta) = beta ELBO + (1 - beta) L_K on the same K samples (Rainforth et al. 2018,
    Sec. 4, Eq. 8). (K, B) -> (B,). CIWAE(1) is the ELBO, CIWAE(0) is L_K."""
    return beta * elbo(log_w) + (1 - beta) * iwae(log_w)


def bound(log_w: Tensor, objective: str | Objective) -> Tensor:
    """The bound named by ``objective`` (a name of :data:`vaeinf.names.OBJECTIVES` or an
    :class:`Objective`), (K, B) -> (B,). PIWAE trains two bounds; its value is the decoder's,
    L_K (its encoder's is :func:`miwae`)."""
    obj = as_objective(objective)
    if obj.name == "elbo":
        return elbo(log_w)
    if obj.name in ("iwae", "piwae"):
        return iwae(log_w)
    if obj.name == "miwae":
        return miwae(log_w, obj.groups)
    return ciwae(log_w, obj.beta)


def _group_weights(log_w: Tensor, groups: int) -> Tensor:
    """The normalized importance weights within each of the groups, (K, B), detached."""
    K, B = log_w.shape
    grouped = log_w.detach().reshape(groups, K // groups, B)  # (M, K', B)
    return torch.softmax(grouped, 1).reshape(K, B)


def _dreg(log_w: Tensor, z: Tensor, weights: Tensor, groups: int) -> Tensor:
    """The DReG surrogate (B,) of the mean over ``groups`` groups of L_K' (Tucker et al. 2018,
    Eq. 5, in each group): its gradient w.r.t. the decoder is that of the bound, (1/M)
    sum_k w~_k d log w_k; the gradient flowing into z_k is rescaled by w~_k, so the encoder gets
    (1/M) sum_k w~_k^2 d log w_k / dz_k dz_k/dphi (``weights``: the w~ of each group, (K, B))."""
    if z.requires_grad:
        z.register_hook(lambda g: g * weights.unsqueeze(-1))
    return (weights * log_w).sum(0) / groups


#: Whether :func:`loss` runs without tensor hooks (see :func:`hook_free`).
_HOOK_FREE = [False]


@contextlib.contextmanager
def hook_free():
    """Within it, :func:`loss` computes DReG's gradient without a hook on z: by the two paths
    of PIWAE (the decoder evaluated a second time with its parameters constant, whose
    log-weights carry the encoder's gradient, weighted by w~^2). The same gradient at the cost
    of a decoder pass; for ``torch.func.vmap`` over draws with the gradient taken outside it
    (:mod:`vaeinf.core.snr`), where a hook on a batched tensor does not see its own weights."""
    before = _HOOK_FREE[0]
    _HOOK_FREE[0] = True
    try:
        yield
    finally:
        _HOOK_FREE[0] = before


def loss(
    model: Method, x: Tensor, K: int, objective: str | Objective, estimator: str
) -> tuple[Tensor, Tensor]:
    """Surrogate loss whose gradient estimates -grad of the objective, and the bound (B,).

    The decoder receives the gradient of its bound (:func:`bound`). The encoder's gradient
    depends on ``estimator``:

    - ``standard``: the reparameterization gradient of the bound (Burda et al. 2015, Eq. 14).
    - ``stl``: "sticking the landing" (Roeder et al. 2017, Eq. 8): log q is evaluated with the
      variational parameters detached, which drops the score-function term whose expectation is
      zero, leaving the path derivative.
    - ``dreg``: doubly reparameterized IWAE gradient (Tucker et al. 2018, Eq. 5): the encoder
      gradient is sum_k w~_k^2 d log w_k / dz_k dz_k/dphi with w~ the normalized weights, computed
      in the same backward pass as the decoder's by scaling the gradient flowing into z_k by w~_k
      (the decoder's loss already weights d log w_k by w~_k). For MIWAE and PIWAE's encoder it
      applies within each group (the mean of L_K' over groups), with each group's weights.

    PIWAE (Rainforth et al. 2018, Sec. 4) trains the decoder on L_K and the encoder on
    MIWAE(M, K / M), two gradients from one set of samples: the decoder is evaluated twice on
    the same z, once with z constant (the decoder's path, weights of L_K) and once with its
    parameters constant (the encoder's path, weights of each group), so that one backward pass
    gives each its own gradient. DReG under :func:`hook_free` takes the same two paths.
    """
    obj = as_objective(objective)
    obj.check(K)
    if estimator == "dreg" and obj.name not in DREG_OBJECTIVES:
        raise ValueError(
            f"DReG is defined for the importance-weighted bounds ({', '.join(DREG_OBJECTIVES)}), "
            f"not {obj.name}"
        )
    if obj.name == "piwae" or (estimator == "dreg" and _HOOK_FREE[0]):
        return _two_paths(model, x, K, obj, estimator)
    stop = estimator in ("stl", "dreg")
    log_w, z = model.log_weights(x, K, stop_param_grad=stop)  # (K, B), (K, B, D)
    value = bound(log_w, obj)  # (B,)
    if estimator != "dreg":
        return -value.mean(), value
    groups = obj.groups if obj.name == "miwae" else 1
    return -_dreg(log_w, z, _group_weights(log_w, groups), groups).mean(), value


def _two_paths(model: Method, x: Tensor, K: int, obj: Objective, estimator: str):
    """The surrogate of :func:`loss` from two paths through the decoder on the same samples:
    the decoder's (its parameters' gradient, z constant) and the encoder's (z's gradient, the
    decoder's parameters constant), each weighted by its own objective: PIWAE's L_K and
    MIWAE(M, K / M), or for DReG under :func:`hook_free` the objective's weights w~ and w~^2.
    Their values are the same log-weights."""
    stop = estimator in ("stl", "dreg")
    # The encoder's path: the decoder's parameters constant.
    log_w, z = model.log_weights(x, K, stop_param_grad=stop, decoder_grad=False)  # (K, B)
    # The decoder's path: the same z, constant; the value of log_w, the decoder's gradient.
    log_px = model.log_px(x, z.detach())  # (K, B)
    log_w_dec = log_w.detach() + (log_px - log_px.detach())
    piwae = obj.name == "piwae"
    enc_groups = obj.groups if obj.name in ("miwae", "piwae") else 1
    dec_groups = 1 if piwae else enc_groups
    value = bound(log_w_dec, "iwae" if piwae else obj)  # (B,) the decoder's bound
    if estimator != "dreg":  # PIWAE
        return -(value + miwae(log_w, enc_groups)).mean(), value
    decoder = (_group_weights(log_w, dec_groups) * log_w_dec).sum(0) / dec_groups
    w = _group_weights(log_w, enc_groups)
    if _HOOK_FREE[0]:
        encoder = (w * w * log_w).sum(0) / enc_groups
    else:
        encoder = _dreg(log_w, z, w, enc_groups)
    return -(decoder + encoder).mean(), value


_compiled_loss = None

#: Inductor options of the compiled loss. ``cpp.use_decompose_tanh`` (an Inductor setting for
#: the CPU) computes tanh as 2 / (1 + exp(-2a)) - 1, one exp instead of the vectorized library
#: tanh (faster on the CPU; the benchmark report has the figures), with an absolute error below
#: 2e-7 where float32's own tanh has 6e-8, immaterial for an activation. GPUs ignore it.
COMPILE_OPTIONS = {"cpp.use_decompose_tanh": True}


def compiled_loss():
    """:func:`loss` under ``torch.compile`` (config key ``train.compile``), built on first use.

    Forward and backward (the surrogate, the bound and the log-weights of the method, decoder
    included) become one fused graph; the value is that of :func:`loss` up to float rounding.
    The first call for a new (K, estimator, shapes) compiles, which takes seconds to a minute
    on a CPU (the benchmark report gives it); later calls reuse the compiled code.
    """
    global _compiled_loss
    if _compiled_loss is None:
        _compiled_loss = torch.compile(loss, options=COMPILE_OPTIONS)
    return _compiled_loss
