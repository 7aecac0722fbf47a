"""MLP building blocks and the Bernoulli decoder shared by every method."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal

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
        """log p(x|z): x (B, D) broadcast against logits (K, B, D) -> (K, B)."""
        return Independent(Bernoulli(logits=logits), 1).log_prob(x)


def standard_normal(latent: int, device: torch.device | None = None) -> Independent:
    """The prior p(z) = N(0, I) as a distribution over vectors of size ``latent``."""
    zeros = torch.zeros(latent, device=device)
    return Independent(Normal(zeros, torch.ones_like(zeros)), 1)
