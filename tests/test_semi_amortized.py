"""SA-VAE (Kim et al. 2018): the refinement, its gradients in both training modes, evaluation."""

from __future__ import annotations

import copy

import pytest
import torch

from vaeinf.config import ConfigError, ModelConfig, RunConfig, load_config
from vaeinf.core import bounds
from vaeinf.core.methods import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def make(digits, seed=0, **options):
    torch.manual_seed(seed)
    cfg = RunConfig(
        method="semi_amortized",
        K=3,
        model=ModelConfig(hidden=[32], latent=4),
        method_options=options,
    )
    return build_model(cfg, digits.dim, digits.train_mean())


@pytest.fixture(scope="module")
def trained(digits):
    """A model trained briefly through the refinement (so the encoder is not random)."""
    m = make(digits)
    opts = m.make_optimizers(1e-2, [0.9, 0.999], 1e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        idx = torch.randint(len(digits.train), (100,), generator=gen)
        m.train_step(digits.train[idx], 3, "standard", opts)
    m.eval()
    return m


def test_refinement_raises_the_elbo(trained, digits):
    post, x = trained.posterior, digits.test
    torch.manual_seed(0)
    with torch.no_grad():
        mu0, lv0 = post.initial(x)
        mu, lv = post.refine(x)
        start = post.elbo(x, mu0, lv0, 500)  # (B,), 500-sample estimates
        end = post.elbo(x, mu, lv, 500)
    gain = end - start
    assert gain.mean() > 0.3, gain.mean()
    assert (gain > 0).float().mean() > 0.8


def test_refinement_is_batched_and_runs_under_no_grad(trained, digits):
    """Evaluation (under torch.no_grad) refines too; each point's refined posterior does not
    depend on the other points of the batch (per-point gradients and clipping, one noise draw
    shared by every point), and in eval mode the refinement's noise is fixed, so log_prob
    evaluates the density of the samples."""
    post, x = trained.posterior, digits.test[:10]
    with torch.no_grad():
        mu_a, lv_a = post.refine(x)
        mu_b, lv_b = post.refine(x)
        torch.testing.assert_close(mu_a, mu_b)
        z, log_q = post.rsample_and_log_prob(x, 5)
        torch.testing.assert_close(post.log_prob(z, x), log_q, rtol=1e-5, atol=1e-4)
        mu0, _ = post.initial(x)
        assert not torch.allclose(mu_a, mu0)
        # The same point alone, or at another place in another batch, gets exactly the same
        # refined posterior: it is a function of the point alone.
        mu_1, lv_1 = post.refine(x[3:4])
        mu_r, lv_r = post.refine(torch.cat([digits.test[50:57], x[3:4]]))
    assert not mu_a.requires_grad
    torch.testing.assert_close(mu_1, mu_a[3:4], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lv_r[-1:], lv_a[3:4], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mu_r[-1:], mu_1, rtol=1e-5, atol=1e-6)


def _grads(model, names):
    return {n: p.grad for n, p in model.named_parameters() if n.startswith(names)}


def test_gradient_reaches_the_encoder_through_the_refinement(digits):
    m = make(digits)
    x = digits.train[:20]
    loss, _ = bounds.loss(m, x, 3, m.objective, "standard")
    loss.backward()
    enc = _grads(m, "posterior.encoder")
    dec = _grads(m, "decoder")
    assert all(g is not None and g.abs().sum() > 0 for g in enc.values())
    assert all(g is not None and g.abs().sum() > 0 for g in dec.values())


def test_ablation_detaches_the_refinement(digits):
    """backprop_through_refinement: false. The refined bound reaches the decoder only; the
    encoder's own bound reaches the encoder only; and a train_step's encoder gradient is exactly
    that of the encoder's own bound (same random numbers), i.e. nothing leaks from the refined
    bound into the encoder."""
    m = make(digits, backprop_through_refinement=False)
    x = digits.train[:20]

    loss, _ = bounds.loss(m, x, 3, m.objective, "standard")
    loss.backward()
    assert all(g is None for g in _grads(m, "posterior.encoder").values())
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(m, "decoder").values())

    m.zero_grad(set_to_none=True)
    (-m.encoder_bound(x, 3).mean()).backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(m, "posterior.encoder").values())
    assert all(g is None for g in _grads(m, "decoder").values())

    # The same random numbers as a train_step: the refined loss first, then the encoder's bound.
    ref = copy.deepcopy(m)
    ref.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    bounds.loss(ref, x, 3, ref.objective, "standard")  # consumes the step's first draws
    (-ref.encoder_bound(x, 3).mean()).backward()
    expected = _grads(ref, "posterior.encoder")

    m.zero_grad(set_to_none=True)
    opts = [torch.optim.SGD(m.parameters(), lr=0.0)]
    torch.manual_seed(11)
    m.train_step(x, 3, "standard", opts)
    for n, g in _grads(m, "posterior.encoder").items():
        torch.testing.assert_close(g, expected[n], msg=n)

    # With the refinement kept in the graph, the encoder's gradient differs from that.
    on = make(digits)
    on.load_state_dict(m.state_dict())
    torch.manual_seed(11)
    on.train_step(x, 3, "standard", [torch.optim.SGD(on.parameters(), lr=0.0)])
    w = "posterior.encoder.0.weight"
    assert not torch.allclose(dict(on.named_parameters())[w].grad, expected[w])


@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_path_derivative_estimators_run(digits, estimator):
    m = make(digits)
    opts = m.make_optimizers(1e-3, [0.9, 0.999], 1e-4)
    value = m.train_step(digits.train[:20], 3, estimator, opts)
    assert torch.isfinite(value).all()
    assert all(p.grad is not None for p in m.posterior.encoder.parameters())


def test_options_are_validated():
    with pytest.raises(ConfigError, match="method_options.lr"):
        load_config(overrides={"method": "semi_amortized", "method_options": {"lr": -1}})
    with pytest.raises(ConfigError, match="method_options.momentum"):
        load_config(overrides={"method": "semi_amortized", "method_options": {"momentum": 1}})
    with pytest.raises(ConfigError, match="dreg"):
        load_config(
            overrides={
                "method": "semi_amortized",
                "estimator": "dreg",
                "method_options": {"objective": "elbo"},
            }
        )
    cfg = load_config(overrides={"method": "semi_amortized", "method_options": {"steps": 0}})
    assert cfg.method_options["steps"] == 0 and cfg.options().steps == 0


def test_extra_metrics_report_the_refinement_gain(trained, digits):
    out = trained.extra_metrics(digits.test[:50], K=3)["refinement"]
    assert out["gain"] > 0 and out["n"] == 50
