"""Bounds from log importance weights, and the training losses that estimate their gradients.

All functions take log-weights ``log_w`` of shape (K, B): log w_k = log p(x, z_k) - log q(z_k|x),
z_k ~ q(z|x). The sample dimension comes first.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from vaeinf.core.methods.base import Method

from vaeinf.names import OBJECTIVES


def elbo(log_w: Tensor) -> Tensor:
    """K-sample average ELBO, (1/K) sum_k log w_k (Kingma & Welling 2014, Eq. 7). (K, B) -> (B,)."""
    return log_w.mean(0)


def iwae(log_w: Tensor) -> Tensor:
    """Importance-weighted bound L_K = log (1/K) sum_k w_k (Burda et al. 2015, Eq. 8).

    (K, B) -> (B,), computed with logsumexp for stability.
    """
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def bound(log_w: Tensor, objective: str) -> Tensor:
    """The bound named by ``objective`` (one of :data:`vaeinf.names.OBJECTIVES`), (K, B) -> (B,)."""
    if objective == "elbo":
        return elbo(log_w)
    if objective == "iwae":
        return iwae(log_w)
    raise ValueError(f"unknown objective {objective!r}; allowed: {', '.join(OBJECTIVES)}")


def loss(model: Method, x: Tensor, K: int, objective: str, estimator: str) -> tuple[Tensor, Tensor]:
    """Surrogate loss whose gradient estimates -grad of the bound, and the bound itself (B,).

    The decoder always receives the gradient of the bound. The encoder's gradient depends on
    ``estimator``:

    - ``standard``: the reparameterization gradient of the bound (Burda et al. 2015, Eq. 14).
    - ``stl``: "sticking the landing" (Roeder et al. 2017, Eq. 8): log q is evaluated with the
      variational parameters detached, which drops the score-function term whose expectation is
      zero, leaving the path derivative.
    - ``dreg``: doubly reparameterized IWAE gradient (Tucker et al. 2018, Eq. 5): the encoder
      gradient is sum_k w~_k^2 d log w_k / dz_k dz_k/dphi with w~ the normalized weights, computed
      in the same backward pass as the decoder's by scaling the gradient flowing into z_k by w~_k
      (the decoder's loss already weights d log w_k by w~_k).
    """
    stop = estimator in ("stl", "dreg")
    log_w, z = model.log_weights(x, K, stop_param_grad=stop)  # (K, B), (K, B, D)
    value = bound(log_w, objective)  # (B,)
    if estimator != "dreg":
        return -value.mean(), value
    if objective != "iwae":
        raise ValueError("DReG is defined for the importance-weighted bound only")
    w_tilde = torch.softmax(log_w.detach(), 0)  # (K, B), normalized importance weights
    if z.requires_grad:
        z.register_hook(lambda g: g * w_tilde.unsqueeze(-1))
    # Gradient of this surrogate w.r.t. decoder parameters = gradient of L_K.
    surrogate = (w_tilde * log_w).sum(0)  # (B,)
    return -surrogate.mean(), value


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
