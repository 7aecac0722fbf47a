"""Estimators against known answers: exact log p(x), bound ordering, DReG unbiasedness,
variance of STL/DReG, chunked evaluation in bounded memory."""

from __future__ import annotations

import math

import pytest
import torch

from vaeinf.config import RunConfig
from vaeinf.core import bounds
from vaeinf.core.data import load_dataset
from vaeinf.core.methods import build_model
from vaeinf.core.methods.base import chunking
from vaeinf.evaluation.likelihood import bound_curve, log_likelihood

from quadrature import exact_log_px, make_model, sample_data


@pytest.fixture(scope="module")
def quad():
    model = make_model("iwae", dim=12, hidden=16, seed=3)
    # A slightly informative but imperfect encoder: shrink its output towards the prior.
    x = sample_data(model, 64, seed=4)
    return model, x, exact_log_px(model.decoder, x)


def test_log_weights_shapes_and_single_decoder_call(quad):
    model, x, _ = quad
    calls = []
    hook = model.decoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    log_w, z = model.log_weights(x, 7)
    hook.remove()
    assert log_w.shape == (7, len(x)) and z.shape == (7, len(x), 1)
    assert calls == [torch.Size([7, len(x), 1])]  # one batched call on all K*B samples


def test_nll_at_5000_samples_matches_quadrature(quad):
    model, x, exact = quad
    torch.manual_seed(0)
    est = log_likelihood(model, x, K=5000, memory_mb=4)  # tiny budget: many chunks
    err = (est["per_point"] - exact).abs()
    assert err.mean() < 0.05, f"mean |error| {err.mean():.4f} nats"
    assert abs(est["mean"] - exact.mean().item()) < 0.05
    # The estimate is a stochastic lower bound: on average not above log p(x).
    assert est["mean"] <= exact.mean().item() + 0.01


def test_bounds_rise_towards_log_px(quad):
    model, x, exact = quad
    torch.manual_seed(1)
    curve = bound_curve(model, x, [1, 10, 100, 1000], memory_mb=64)
    means = [curve[k]["mean"] for k in (1, 10, 100, 1000)]
    assert means == sorted(means), means
    assert means[-1] <= exact.mean().item() + 0.01
    assert exact.mean().item() - means[-1] < exact.mean().item() - means[0]


def test_elbo_below_iwae_bounds(quad):
    model, x, _ = quad
    torch.manual_seed(2)
    with torch.no_grad():
        lw = torch.cat([model.log_weights(x, 50)[0] for _ in range(40)], 1)  # (50, 40 B)
    e, l5, l50 = bounds.elbo(lw).mean(), bounds.iwae(lw[:5]).mean(), bounds.iwae(lw).mean()
    assert e <= l5 <= l50


def test_chunking_respects_budget():
    model = make_model(dim=784, hidden=200)
    from vaeinf.core.methods.base import bytes_per_row

    for K in (1, 5000, 10**6):
        b, s = chunking(model, 10000, K, memory_mb=64)
        assert b * s * bytes_per_row(model) <= 64 * 2**20
        assert s <= K and b >= 1


@pytest.fixture(scope="module")
def trained():
    """An IWAE briefly trained on digits (bound ordering and estimator variance need a model
    whose posterior is not the prior)."""
    from vaeinf.core.train import prepare

    cfg = RunConfig(method="iwae", K=5)
    data, model, _ = prepare(cfg)
    opt = model.make_optimizers(3e-3, [0.9, 0.999], 1e-4)
    torch.manual_seed(0)
    for _ in range(150):
        idx = torch.randint(len(data.train), (100,))
        model.train_step(data.train[idx], 5, "standard", opt)
    return model, data.valid[:100]


def test_bound_ordering_on_trained_model(trained):
    model, x = trained
    torch.manual_seed(3)
    with torch.no_grad():
        lw = torch.stack([model.log_weights(x, 50)[0] for _ in range(20)])  # (R, 50, B)
    elbo = bounds.elbo(lw.flatten(0, 1)).mean()
    l5 = bounds.iwae(lw.reshape(20 * 10, 5, -1).transpose(0, 1).flatten(1)).mean()
    l50 = torch.stack([bounds.iwae(r) for r in lw]).mean()
    assert elbo < l5 < l50, (elbo, l5, l50)


def _encoder_grads(model, x, K, estimator, n):
    """n independent draws of the flattened encoder gradient, (n, P)."""
    params = list(model.posterior.parameters())
    out = []
    for _ in range(n):
        loss, _ = bounds.loss(model, x, K, "iwae", estimator)
        g = torch.autograd.grad(loss, params)
        out.append(torch.cat([t.flatten() for t in g]))
    return torch.stack(out)


def test_dreg_is_unbiased(trained):
    model, x = trained
    x = x[:8]
    torch.manual_seed(4)
    n = 600
    std = _encoder_grads(model, x, 10, "standard", n)
    dreg = _encoder_grads(model, x, 10, "dreg", n)
    se = (std.var(0) / n + dreg.var(0) / n).sqrt() + 1e-12
    z = (std.mean(0) - dreg.mean(0)) / se  # (P,) standardized differences
    # Under unbiasedness z ~ N(0, 1) per coordinate: mean square near 1, few beyond 4.
    assert (z**2).mean() < 1.5, (z**2).mean()
    assert (z.abs() > 4).float().mean() < 0.01


def test_decoder_gradient_is_the_bound_gradient_for_every_estimator(trained):
    model, x = trained
    params = list(model.decoder.parameters())
    grads = {}
    for est in ("standard", "stl", "dreg"):
        torch.manual_seed(5)  # same z for all three
        loss, _ = bounds.loss(model, x, 10, "iwae", est)
        grads[est] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
    torch.testing.assert_close(grads["stl"], grads["standard"])
    torch.testing.assert_close(grads["dreg"], grads["standard"], rtol=1e-4, atol=1e-6)


def test_stl_and_dreg_lower_variance_at_k50(trained):
    model, x = trained
    x = x[:8]
    torch.manual_seed(6)
    var = {
        e: _encoder_grads(model, x, 50, e, 150).var(0).sum() for e in ("standard", "stl", "dreg")
    }
    assert var["stl"] < var["standard"], var
    assert var["dreg"] < var["standard"], var


def test_real_mnist_burda_net_trains(mnist_npz):
    """Burda's net on real binarized MNIST: a few hundred steps raise the validation bound."""
    cfg = RunConfig(dataset="binarized_mnist", data_dir=str(mnist_npz.parent), method="iwae", K=5)
    cfg.model.preset = "burda1"
    data = load_dataset("binarized_mnist", data_dir=cfg.data_dir)
    torch.manual_seed(0)
    model = build_model(cfg, data.dim, data.train_mean())
    assert data.dim == 784 and model.latent == 50
    opt = model.make_optimizers(1e-3, [0.9, 0.999], 1e-4)
    xv = data.valid[:500]
    with torch.no_grad():
        before = bounds.iwae(model.log_weights(xv, 5)[0]).mean().item()
    for step in range(200):
        model.train_step(data.train[step * 100 : (step + 1) * 100], 5, "standard", opt)
    with torch.no_grad():
        after = bounds.iwae(model.log_weights(xv, 5)[0]).mean().item()
    # The decoder bias starts at the pixel marginals (about -206 nats); 200 steps learn more.
    assert after > before + 20, (before, after)
    assert math.isfinite(after) and after < 0
