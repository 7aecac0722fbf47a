"""q* and the approximation / amortization split (Cremer et al. 2018) on a briefly trained model."""

from __future__ import annotations

import pytest
import torch

from vaeinf.config import ConfigError, ModelConfig, RunConfig, load_config
from vaeinf.core.methods import build_model
from vaeinf.core.methods.base import GAUSSIAN, NO_FAMILY
from vaeinf.evaluation import ais, gaps


@pytest.mark.parametrize("method", ["vae", "iwae", "flow", "autoregressive", "semi_amortized"])
def test_local_family_reproduces_the_posterior(method):
    """Sampling the family member at the encoder's own parameters is the posterior q_phi: the
    same z and log q from the same random numbers."""
    cfg = RunConfig(method=method, model=ModelConfig(hidden=[16], latent=3))
    torch.manual_seed(0)
    model = build_model(cfg, 10, torch.full((10,), 0.3)).eval()
    x = torch.bernoulli(torch.full((4, 10), 0.4))
    with torch.no_grad():
        params = model.posterior.local_params(x)
        assert all(v.shape[0] == 4 for v in params.values())
        torch.manual_seed(1)
        z, log_q = model.posterior.rsample_and_log_prob(x, 5)
        torch.manual_seed(1)
        z2, log_q2 = model.posterior.rsample_and_log_prob_local(params, 5)
    torch.testing.assert_close(z2, z)
    torch.testing.assert_close(log_q2, log_q)


def test_avb_has_no_local_family():
    model = build_model(RunConfig(method="avb"), 10, torch.full((10,), 0.3))
    assert model.posterior.family == NO_FAMILY
    with pytest.raises(NotImplementedError):
        model.posterior.local_params(torch.zeros(2, 10))


@pytest.mark.parametrize("method", ["vae", "iwae", "flow", "autoregressive", "semi_amortized"])
def test_declared_family_matches_the_local_parameters(method):
    """A posterior declared a diagonal Gaussian has exactly the parameters mu, log_var."""
    cfg = RunConfig(method=method, model=ModelConfig(hidden=[16], latent=3))
    model = build_model(cfg, 10, torch.full((10,), 0.3)).eval()
    with torch.no_grad():
        keys = set(model.posterior.local_params(torch.zeros(2, 10)))
    assert model.posterior.family != NO_FAMILY
    assert (model.posterior.family == GAUSSIAN) == (keys == {"mu", "log_var"})


def _train(method: str, data, steps: int = 150):
    from vaeinf.core.train import prepare

    cfg = RunConfig(method=method, K=5)
    data, model, _ = prepare(cfg, data)
    opt = model.make_optimizers(3e-3, [0.9, 0.999], 1e-4)
    torch.manual_seed(0)
    for _ in range(steps):
        model.train_step(data.train[torch.randint(len(data.train), (100,))], 5, "standard", opt)
    return model.eval()


SETTINGS = gaps.QStarSettings(max_steps=200, elbo_samples=300)


@pytest.fixture(scope="module")
def trained_split(one_thread, digits):
    """The split on 40 test points of an IWAE briefly trained on digits, AIS as log p(x)."""
    model = _train("iwae", digits)
    x = digits.subset("test", 40)[0]
    torch.manual_seed(0)
    log_px = ais.log_likelihood(model, x)["per_point"]
    return gaps.gap_split(model, x, log_px, SETTINGS)


def test_q_star_is_no_worse_than_the_encoder(trained_split):
    pp = trained_split["per_point"]
    assert pp["own"].mean() >= pp["elbo_q_phi"].mean()
    assert trained_split["own_family"]["elbo_q_star"]["steps"] <= SETTINGS.max_steps


def test_gaps_add_up_exactly(trained_split):
    for fam in ("own_family", "gaussian"):
        s = trained_split[fam]
        total = s["approximation_gap"]["mean"] + s["amortization_gap"]["mean"]
        expected = trained_split["log_px"]["mean"] - trained_split["elbo_q_phi"]["mean"]
        assert abs(total - expected) < 1e-9
        assert s["inference_gap"]["mean"] == pytest.approx(expected, abs=1e-9)


def test_gaps_are_non_negative_within_monte_carlo_error(trained_split):
    for fam in ("own_family", "gaussian"):
        for gap in ("approximation_gap", "amortization_gap"):
            g = trained_split[fam][gap]
            assert g["mean"] > -3 * g["stderr"], (fam, gap, g)
            assert g["n"] == 40


def test_avb_gap_never_uses_the_adversary(digits):
    model = _train("avb", digits, steps=30)
    calls = []
    hook = model.posterior.adversary.register_forward_hook(lambda *a: calls.append(1))
    x = digits.test[:8]
    out = gaps.gap_split(model, x, torch.zeros(8), gaps.QStarSettings(max_steps=5, elbo_samples=20))
    hook.remove()
    assert calls == []
    assert "no density" in out["elbo_q_phi"]["kind"]
    assert "stands in" in out["own_family"]["note"]


def test_flow_q_star_optimizes_its_own_family(digits):
    model = _train("flow", digits, steps=30)
    x = digits.test[:8]
    out = gaps.gap_split(
        model, x, torch.zeros(8), gaps.QStarSettings(max_steps=20, elbo_samples=50)
    )
    own = out["own_family"]["elbo_q_star"]
    assert "FlowPosterior" in own["family"] and "flow" in own["family"]
    assert own["steps"] == 20


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("gap_points", 500, "eval.gap_points"),
        ("qstar_tol", 0.0, "eval.qstar_tol"),
        ("ais_steps", 0, "eval.ais_steps"),
        ("ais_points", -1, "eval.ais_points"),
    ],
)
def test_config_keys_are_range_checked(key, value, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides={"eval": {key: value}})
