"""AIS and BDMC against log p(x) computed by quadrature on a 2-D latent model."""

from __future__ import annotations

import math

import pytest
import torch

from vaeinf.config import ModelConfig, RunConfig
from vaeinf.core.methods import build_model
from vaeinf.evaluation import ais


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


@pytest.fixture(scope="module")
def quad(one_thread):
    model = make_model_2d()
    _, x = ais.simulate(model, 64, torch.Generator().manual_seed(1))
    return model, x, exact_log_px_2d(model.decoder, x)


def test_quadrature_is_converged(quad):
    model, x, exact = quad
    finer = exact_log_px_2d(model.decoder, x, n_grid=401, lim=8.0)
    assert (finer - exact).abs().max() < 1e-6


def test_schedule_is_monotone_from_0_to_1():
    for T in (1, 2, 10, 1000):
        b = ais.sigmoid_schedule(T)
        assert len(b) == T + 1 and b.dtype == torch.float64
        assert b[0] == 0 and b[-1] == 1
        assert (b[1:] > b[:-1]).all()


def test_ais_default_settings_match_quadrature(quad):
    model, x, exact = quad
    torch.manual_seed(0)
    est = ais.log_likelihood(model, x)  # default settings
    diff = est["per_point"] - exact  # (N,)
    assert abs(diff.mean()) < 0.05, f"mean error {diff.mean():.4f} nats"
    # A stochastic lower bound: never above log p(x) by more than its Monte Carlo error.
    se = diff.std() / math.sqrt(len(diff))
    assert diff.mean() <= 3 * se, (diff.mean(), se)
    assert est["n"] == len(x) and 0.4 < est["acceptance"] < 0.95
    assert est["settings"]["steps"] == ais.AISSettings().steps


def test_ais_from_q_matches_quadrature(quad):
    model, x, exact = quad
    torch.manual_seed(1)
    est = ais.log_likelihood(model, x, ais.AISSettings(init="q"))
    assert abs((est["per_point"] - exact).mean()) < 0.05


def test_ais_from_q_needs_a_density():
    model = make_model_2d("avb")
    x = torch.zeros(3, model.dim)
    with pytest.raises(ValueError, match="needs log q"):
        ais.log_likelihood(model, x, ais.AISSettings(init="q", steps=2))


def test_bdmc_interval_contains_log_px(quad):
    model, _, _ = quad
    torch.manual_seed(2)
    out = ais.bdmc(model, 64, seed=5)
    _, x = ais.simulate(model, 64, torch.Generator().manual_seed(5))  # the same simulated data
    exact = exact_log_px_2d(model.decoder, x).mean().item()
    tol = 3 * out["gap_stderr"] + 1e-3
    assert out["lower"] - tol <= exact <= out["upper"] + tol, (out, exact)
    assert out["gap"] < 0.05 and out["n"] == 64


def test_chains_batched_and_chunked(quad):
    """One decoder call per leapfrog step on all (chains, points) rows of a chunk: no loop over
    chains or points; a small memory budget splits the points into chunks."""
    model, x, _ = quad
    s = ais.AISSettings(steps=5, chains=3, leapfrog=2)
    shapes = []
    hook = model.decoder.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    budget = 0.05  # MB
    b = ais.points_per_chunk(model, s.chains, budget)
    assert 1 < b < len(x)
    ais.log_likelihood(model, x, s, memory_mb=budget)
    hook.remove()
    n_chunks = math.ceil(len(x) / b)
    per_chunk = 1 + (s.steps - 1) * s.leapfrog  # initial state, then L per HMC transition
    assert len(shapes) == n_chunks * per_chunk
    assert all(sh[0] == s.chains and sh[1] <= b and sh[2] == 2 for sh in shapes)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="steps"):
        ais.AISSettings(steps=0)
    with pytest.raises(ValueError, match="init"):
        ais.AISSettings(init="posterior")
