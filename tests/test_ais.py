"""AIS and BDMC against log p(x) computed by quadrature on a 2-D latent model."""

from __future__ import annotations

import math

import pytest
import torch

from vaeinf.config import ModelConfig, RunConfig
from vaeinf.core.methods import build_model
from vaeinf.evaluation import ais

from quadrature import exact_log_px_2d, make_model_2d


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
    # The AIS and BDMC of one batch are those of the separate calls (the same estimators).
    torch.manual_seed(0)
    both, check = ais.log_likelihood_and_bdmc(model, x, 16)
    assert abs((both["per_point"] - exact).mean()) < 0.05 and check["n"] == 16


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
    """One decoder pass per leapfrog step on all (chains, points) rows of a chunk: no loop over
    chains or points; a small memory budget splits the points into chunks; each chunk runs its
    pilot (one chain per point, a quarter of the steps) and then the reported run."""
    model, x, _ = quad
    s = ais.AISSettings(steps=8, chains=3, leapfrog=2)
    shapes = []
    first = model.decoder.net[0]
    hook = first.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    budget = 0.05  # MB
    b = ais.points_per_chunk(model, s.chains, budget)
    assert 1 < b < len(x)
    ais.log_likelihood(model, x, s, memory_mb=budget)
    hook.remove()
    n_chunks = math.ceil(len(x) / b)
    pilot_steps = max(2, round(s.pilot_fraction * s.steps))
    per_run = [1 + (T - 1) * s.leapfrog for T in (pilot_steps, s.steps)]  # start, then L each
    assert len(shapes) == n_chunks * sum(per_run)
    assert {sh[0] for sh in shapes} == {s.pilot_chains, s.chains}
    assert all(sh[1] <= b and sh[2] == 2 for sh in shapes)


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "softplus"])
def test_log_lik_gradient_matches_autograd(activation):
    """The written-out backward of the decoder's log-likelihood equals autograd's."""
    torch.manual_seed(3)
    cfg = RunConfig(model=ModelConfig(hidden=[16, 8], latent=3, activation=activation))
    model = build_model(cfg, 10, torch.full((10,), 0.3)).double()
    x = torch.bernoulli(torch.full((5, 10), 0.4, dtype=torch.float64))
    z = torch.randn(4, 5, 3, dtype=torch.float64)
    value, grad = ais.log_lik_and_grad(model.decoder, x, z)
    zg = z.clone().requires_grad_()
    expected = model.decoder.log_prob(x, model.decoder(zg))
    (expected_grad,) = torch.autograd.grad(expected.sum(), zg)
    torch.testing.assert_close(value, expected.detach())
    torch.testing.assert_close(grad, expected_grad)


def test_reported_run_uses_fixed_step_sizes(quad):
    """The reported run's step sizes are those the pilot fixed before it: they do not react to
    the run's own acceptance (a step size that did would make the weights those of another
    algorithm than AIS)."""
    model, x, _ = quad
    s = ais.AISSettings(steps=40, chains=2, leapfrog=2)
    path = ais._Path(model, x[:6], "prior")
    torch.manual_seed(0)
    eps = ais.step_sizes(path, torch.randn(1, 6, 2), s)
    assert eps.shape == (39, 1, 6, 1) and (eps > 0).all()
    _, _, used = ais.anneal(path, torch.randn(2, 6, 2), ais.sigmoid_schedule(40), s, eps)
    torch.testing.assert_close(used, eps.expand(39, 2, 6, 1))
    # The pilot's step sizes do adapt along the path.
    assert (eps.amax(0) > 1.5 * eps.amin(0)).all()


def test_ais_is_unbiased_to_a_hundredth_of_a_nat(quad):
    """On 64 points simulated from the 2-D model, the mean of log p_AIS - log p(x) (quadrature)
    over several independent runs lies within 0.01 nats of 0 (minus the log-mean-exp's own
    small downward bias, which the chain spread estimates), and the delta-method estimate of
    that bias is below 0.01 nats."""
    model, x, exact = quad
    torch.manual_seed(4)
    est = [ais.log_likelihood(model, x) for _ in range(4)]
    diff = torch.stack([e["per_point"] for e in est]) - exact  # (runs, N)
    mean, se = diff.mean().item(), (diff.mean(0).std() / math.sqrt(diff.shape[1])).item()
    assert abs(mean) < 0.01 + 3 * se, (mean, se)
    assert all(0 <= e["bias_estimate"] < 0.01 for e in est)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="steps"):
        ais.AISSettings(steps=0)
    with pytest.raises(ValueError, match="pilot_fraction"):
        ais.AISSettings(pilot_fraction=0.0)
    with pytest.raises(ValueError, match="init"):
        ais.AISSettings(init="posterior")
