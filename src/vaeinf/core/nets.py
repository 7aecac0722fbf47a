"""MLP building blocks and the Bernoulli decoder shared by every method."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Independent, Normal

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus}


def mlp(sizes: list[int], activation: str, final_activation: bool = False) -> nn.Sequential:
    """Linear layers of widths ``sizes[0] -> ... -> sizes[-1]`` with ``activation`` between."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or final_activation:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class BernoulliDecoder(nn.Module):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(f(z)_d)), f an MLP latent -> hidden -> D.

    The output bias starts at the logit of the clipped training mean, as in Burda et al. (2015),
    so that an untrained decoder already models the marginal pixel frequencies.
    """

    def __init__(self, latent: int, hidden: list[int], dim: int, activation: str, mean: Tensor):
        super().__init__()
        self.net = mlp([latent, *hidden, dim], activation)
        p = mean.clamp(1e-3, 1 - 1e-3).float()
        with torch.no_grad():
            self.net[-1].bias.copy_(torch.log(p) - torch.log1p(-p))

    def forward(self, z: Tensor) -> Tensor:
        """Logits of shape (..., D) for z of shape (..., latent)."""
        return self.net(z)

    def log_prob(self, x: Tensor, logits: Tensor) -> Tensor:
        """log p(x|z): x (B, D) broadcast against logits (K, B, D) -> (K, B).

        See :func:`bernoulli_log_prob` for why this is not ``torch.distributions.Bernoulli``.
        """
        return bernoulli_log_prob(x, logits)


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """sum_d log Bernoulli(x_d; sigmoid(l_d)) = sum_d x_d l_d - softplus(l_d), over the last dim.

    The same value as ``Independent(Bernoulli(logits=logits), 1).log_prob(x)`` (tested to a
    relative 1e-5 in float32 and 1e-10 in float64, gradients included: ``F.softplus`` returns l
    for l > 20, off by log1p(exp(-20)) < 2.1e-9 per pixel), written out because it
    is measurably faster, the one place the library leaves torch.distributions: x (..., D) is
    broadcast, never expanded to the K copies of the logits; x . l is one batched dot product
    without a temporary; the backward is one in-place pass over a single buffer,
    d/dl = g (x - sigmoid(l)), instead of autograd's chain through argument validation and
    binary_cross_entropy_with_logits. The benchmark (``bench/``) times this term alone against
    ``Independent(Bernoulli(logits=...), 1)`` and ``F.binary_cross_entropy_with_logits`` on the
    expanded x; its report gives the figures (this one is the fastest of the three). Under
    ``torch.compile`` it is :class:`_CompiledBernoulliLogProb` instead, which Inductor fuses.
    Differentiable twice (the backward is recorded out of place under ``create_graph``).
    """
    needs_grad = torch.is_grad_enabled() and (logits.requires_grad or x.requires_grad)
    if torch.compiler.is_compiling():  # Inductor fuses this into one pass over the logits
        return _CompiledBernoulliLogProb.apply(x, logits)
    if not needs_grad:
        return _bernoulli_forward(x, logits)
    return _BernoulliLogProb.apply(x, logits)


#: Logits per product in :func:`softplus_sum`: each factor 1 + exp(-|l|) lies in (1, 2], so a
#: product of 16 lies in (1, 2**16] and cannot overflow float32 (or lose it to rounding).
SOFTPLUS_GROUP = 16


def softplus_sum(logits: Tensor) -> Tensor:
    """sum_d softplus(l_d) over the last dim, with one exp per element and one log per 16.

    softplus(l) = max(l, 0) + log(1 + e) with e = exp(-|l|) in (0, 1], and a sum of logs is the
    log of a product, so the D logs become D/16: sum_d softplus(l_d) = sum_d max(l_d, 0) +
    sum_g log prod_{d in g} (1 + e_d). The same value as ``F.softplus(l).sum(-1)`` up to float
    rounding (a relative 2e-6 of the sum in float32, tested). Used only under ``torch.compile``,
    where Inductor turns it into one vectorized pass over the logits, about twice as fast as
    log1p(exp(.)) per element there (measured in a profile of the compiled step; the benchmark
    report times the whole step). In eager mode the grouped product is a slow reduction, so
    :func:`bernoulli_log_prob` keeps ``F.softplus``.
    """
    e = torch.exp(-logits.abs())
    factors = 1 + e
    pad = (-factors.shape[-1]) % SOFTPLUS_GROUP
    if pad:  # factors of 1 change no product
        factors = F.pad(factors, (0, pad), value=1.0)
    groups = factors.unflatten(-1, (-1, SOFTPLUS_GROUP))  # (..., D / 16, 16)
    return torch.relu(logits).sum(-1) + torch.log(groups.prod(-1)).sum(-1)


def _bernoulli_forward(x: Tensor, logits: Tensor) -> Tensor:
    return torch.einsum("...d,...d->...", x, logits) - F.softplus(logits).sum(-1)


class _BernoulliLogProb(torch.autograd.Function):
    """:func:`bernoulli_log_prob` with a hand-fused backward."""

    @staticmethod
    def forward(ctx, x: Tensor, logits: Tensor) -> Tensor:
        ctx.save_for_backward(x, logits)
        return _bernoulli_forward(x, logits)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, logits = ctx.saved_tensors
        g = grad.unsqueeze(-1)  # (..., 1)
        grad_x = grad_logits = None
        if ctx.needs_input_grad[1]:
            s = torch.sigmoid(logits)
            in_place = torch.broadcast_shapes(x.shape, g.shape, logits.shape) == logits.shape
            if in_place and not torch.is_grad_enabled():  # grad enabled: create_graph
                grad_logits = s.sub_(x).mul_(-g)  # g (x - sigmoid(l)) in one buffer
            else:
                grad_logits = ((x - s) * g).sum_to_size(logits.shape)
        if ctx.needs_input_grad[0]:
            grad_x = (g * logits).sum_to_size(x.shape)
        return grad_x, grad_logits


class _CompiledBernoulliLogProb(_BernoulliLogProb):
    """:func:`bernoulli_log_prob` as traced by ``torch.compile``: the value through
    :func:`softplus_sum`, the backward :class:`_BernoulliLogProb`'s, d/dl = g (x - sigmoid(l)),
    so that autograd never differentiates the grouped product."""

    @staticmethod
    def forward(ctx, x: Tensor, logits: Tensor) -> Tensor:
        ctx.save_for_backward(x, logits)
        return (x * logits).sum(-1) - softplus_sum(logits)


def standard_normal(latent: int, device: torch.device | None = None) -> Independent:
    """The prior p(z) = N(0, I) as a distribution over vectors of size ``latent``."""
    zeros = torch.zeros(latent, device=device)
    return Independent(Normal(zeros, torch.ones_like(zeros)), 1)
