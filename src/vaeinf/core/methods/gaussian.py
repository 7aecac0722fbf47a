"""Diagonal Gaussian posterior: the `vae` (K-sample ELBO) and `iwae` (L_K) methods.

Both share q(z|x) = N(mu(x), diag sigma(x)^2) (Kingma & Welling 2014, Sec. 2.4); they differ only
in the objective (Burda et al. 2015, Eq. 8 for the importance-weighted bound).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from vaeinf.core.methods.base import GAUSSIAN, Method, Posterior
from vaeinf.core.nets import mlp


class GaussianEncoder(nn.Module):
    """x (B, D_x) -> (mu, sigma), each (B, D): an MLP with a linear head of size 2D."""

    def __init__(self, dim: int, latent: int, hidden: list[int], activation: str):
        super().__init__()
        self.net = mlp([dim, *hidden, 2 * latent], activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_var = self.net(x).chunk(2, dim=-1)
        return mu, torch.exp(0.5 * log_var)


class GaussianPosterior(Posterior):
    """q(z|x) = N(mu(x), diag sigma(x)^2), sampled as z = mu + sigma * eps, eps ~ N(0, I)."""

    family = GAUSSIAN

    def __init__(self, dim: int, latent: int, hidden: list[int], activation: str):
        super().__init__()
        self.encoder = GaussianEncoder(dim, latent, hidden, activation)

    def dist(self, x: Tensor) -> Normal:
        """The per-dimension Normal of q(z|x), batch shape (B, D)."""
        mu, sigma = self.encoder(x)
        return Normal(mu, sigma)

    def rsample_and_log_prob(self, x, K, stop_param_grad=False):
        q = self.dist(x)
        # Normal.rsample's numbers (and torch.compile's), drawn into a tensor shaped like the
        # parameters, so that under vmap over draws of a gradient, where the parameters carry
        # the draws' dimension, every draw gets its own (vaeinf.core.snr).
        eps = torch.empty_like(q.loc.expand(K, *q.loc.shape)).normal_()  # (K, B, D)
        z = q.loc + eps * q.scale
        if stop_param_grad:
            q = Normal(q.loc.detach(), q.scale.detach())
        return z, Independent(q, 1).log_prob(z)  # (K, B)

    def log_prob(self, z: Tensor, x: Tensor) -> Tensor:
        return Independent(self.dist(x), 1).log_prob(z)

    def local_params(self, x: Tensor) -> dict[str, Tensor]:
        """(mu, log sigma^2), each (B, D): the diagonal Gaussian family."""
        mu, log_var = self.encoder.net(x).chunk(2, dim=-1)
        return {"mu": mu, "log_var": log_var}


class GaussianMethod(Method):
    def build_posterior(self, dim, latent, hidden, activation):
        return GaussianPosterior(dim, latent, hidden, activation)


class VAE(GaussianMethod):
    """Variational autoencoder trained on the K-sample average ELBO."""

    name = "vae"
    default_objective = "elbo"


class IWAE(GaussianMethod):
    """Importance-weighted autoencoder trained on L_K (Burda et al. 2015)."""

    name = "iwae"
    default_objective = "iwae"
