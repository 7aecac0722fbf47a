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

    Why not ``Independent(Bernoulli(logits=...), 1).log_prob``: the same value (tested), but x is
    broadcast instead of expanded to the K copies of the logits and the backward is one fused
    pass, d/dl = g (x - sigmoid(l)); the benchmark report times it against the alternatives.
    Under ``torch.compile`` it is :class:`_CompiledBernoulliLogProb`. Differentiable twice.
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

    softplus(l) = max(l, 0) + log(1 + exp(-|l|)), and a sum of logs is the log of a product, so
    the D logs become D/16; the same value up to float rounding (tested). Used only under
    ``torch.compile``, where Inductor makes it one vectorized pass (faster than log1p(exp(.)) per
    element; figures in the benchmark report); eager mode keeps ``F.softplus``.
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

    # The forward takes no ctx (setup_context saves the inputs) and the batching rule is
    # generated, so that torch.func transforms (vmap over the draws of a gradient, see
    # vaeinf.core.snr) apply to it as they do to plain tensor code.
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, logits: Tensor) -> Tensor:
        return _bernoulli_forward(x, logits)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

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
    def forward(x: Tensor, logits: Tensor) -> Tensor:
        return (x * logits).sum(-1) - softplus_sum(logits)


def standard_normal(latent: int, device: torch.device | None = None) -> Independent:
    """The prior p(z) = N(0, I) as a distribution over vectors of size ``latent``."""
    zeros = torch.zeros(latent, device=device)
    return Independent(Normal(zeros, torch.ones_like(zeros)), 1)
