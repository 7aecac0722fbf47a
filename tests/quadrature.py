"""Models whose log p(x) is known exactly: a Bernoulli decoder with a 1-D or a 2-D latent.

log p(x) = log integral p(x|z) N(z; 0, I) dz is computed by the trapezoid rule in log space on a
fine grid (1-D: over z in [-10, 10], whose tails carry less than 1e-22 of the prior mass; 2-D:
see :func:`exact_log_px_2d`); the integrand is smooth, so the quadrature error is far below the
tolerances the tests use.
"""

from __future__ import annotations

import math

import torch

from vaeinf.config import ModelConfig, RunConfig
from vaeinf.core.methods import build_model


def make_model(method: str = "iwae", dim: int = 12, hidden: int = 16, seed: int = 0, **kw):
    """A small method instance with latent size 1 and data dimension ``dim``."""
    torch.manual_seed(seed)
    cfg = RunConfig(method=method, model=ModelConfig(hidden=[hidden], latent=1), **kw)
    return build_model(cfg, dim, torch.full((dim,), 0.3))


def sample_data(model, n: int, seed: int = 1) -> torch.Tensor:
    """x ~ p(x) from the model itself, (n, D)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(n, model.latent, generator=g)
        return torch.bernoulli(torch.sigmoid(model.decoder(z)), generator=g)


@torch.no_grad()
def exact_log_px(decoder, x: torch.Tensor, n_grid: int = 20001) -> torch.Tensor:
    """log p(x) for each row of x (B, D) under p(z) = N(0, 1) and the Bernoulli ``decoder``."""
    z = torch.linspace(-10.0, 10.0, n_grid, dtype=torch.float64)
    logits = decoder(z.float().unsqueeze(-1)).double()  # (G, D)
    x = x.double()
    log_lik = (x.unsqueeze(1) * logits - torch.nn.functional.softplus(logits)).sum(-1)  # (B, G)
    log_prior = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    w = torch.full((n_grid,), (z[1] - z[0]).item(), dtype=torch.float64)
    w[0] = w[-1] = w[0] / 2  # trapezoid weights
    return torch.logsumexp(log_lik + log_prior + torch.log(w), dim=1)


def make_model_2d(method: str = "iwae", dim: int = 20, hidden: int = 32, scale: float = 2.0):
    """A model with a 2-D latent whose decoder weights are scaled up by ``scale`` so that the
    posterior is far narrower than the prior (AIS then has work to do)."""
    torch.manual_seed(0)
    cfg = RunConfig(method=method, model=ModelConfig(hidden=[hidden], latent=2))
    model = build_model(cfg, dim, torch.full((dim,), 0.3))
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(scale)
    return model.eval()


@torch.no_grad()
def exact_log_px_2d(decoder, x: torch.Tensor, n_grid: int = 201, lim: float = 7.0):
    """log p(x) per row of x (B, D) under p(z) = N(0, I_2): the 2-D trapezoid rule on a grid
    over [-lim, lim]^2 (the prior mass outside is below 1e-11; the integrand is smooth, so the
    rule converges fast: see test_quadrature_is_converged)."""
    g = torch.linspace(-lim, lim, n_grid, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # (G^2, 2)
    logits = decoder(z.float()).double()  # (G^2, D)
    log_lik = x.double() @ logits.T - torch.nn.functional.softplus(logits).sum(-1)  # (B, G^2)
    log_prior = -0.5 * (z * z).sum(-1) - math.log(2 * math.pi)
    w = torch.full((n_grid,), (g[1] - g[0]).item(), dtype=torch.float64)
    w[0] = w[-1] = w[0] / 2
    log_w = (torch.log(w)[:, None] + torch.log(w)[None, :]).reshape(-1)
    return torch.logsumexp(log_lik + log_prior + log_w, 1)
