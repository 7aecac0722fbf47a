"""q* and the approximation / amortization split (Cremer et al. 2018) on a briefly trained model."""

from __future__ import annotations

import pytest
import torch

from vaeinf.config import ConfigError, ModelConfig, RunConfig, load_config
from vaeinf.core.methods import build_model
from vaeinf.core.methods.base import GAUSSIAN, NO_FAMILY
from vaeinf.evaluation import ais, gaps
from vaeinf.evaluation.likelihood import bound_curve

from quadrature import exact_log_px_2d, make_model_2d


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
    """The split on 40 test points of an IWAE briefly trained on digits at K = 5, AIS as
    log p(x), under the ELBO and under L_5, the bound it was trained with."""
    model = _train("iwae", digits)
    x = digits.subset("test", 40)[0]
    torch.manual_seed(0)
    log_px = ais.log_likelihood(model, x)["per_point"]
    return gaps.gap_split(model, x, log_px, SETTINGS, K=5)


def test_q_star_is_no_worse_than_the_encoder(trained_split):
    pp = trained_split["per_point"]
    assert pp["own"].mean() >= pp["elbo_q_phi"].mean()
    assert pp["train_own"].mean() >= pp["train_q_phi"].mean()
    assert trained_split["own_family"]["elbo_q_star"]["steps"] <= SETTINGS.max_steps


def test_gaps_add_up_exactly(trained_split):
    for split, l_phi in (
        (trained_split["own_family"], trained_split["elbo_q_phi"]),
        (trained_split["training_bound"], trained_split["training_bound"]["q_phi"]),
    ):
        total = split["approximation_gap"]["mean"] + split["amortization_gap"]["mean"]
        expected = trained_split["log_px"]["mean"] - l_phi["mean"]
        assert abs(total - expected) < 1e-9
        assert split["inference_gap"]["mean"] == pytest.approx(expected, abs=1e-9)


def test_gaps_are_non_negative_within_monte_carlo_error(trained_split):
    for split in ("own_family", "training_bound"):
        for gap in ("approximation_gap", "amortization_gap"):
            g = trained_split[split][gap]
            assert g["mean"] > -3 * g["stderr"], (split, gap, g)
            assert g["n"] == 40
    assert trained_split["flags"] == [] and not trained_split["flagged"]


def test_training_bound_split_uses_l_k(trained_split):
    """Under L_5 the trained posterior scores higher than under the ELBO (L_1 <= L_5), so the
    inference gap is smaller; the Gaussian yardstick is signed, not a gap."""
    t = trained_split["training_bound"]
    assert t["bound"] == "L_5" and t["K"] == 5 and not t["same_as_elbo"]
    assert t["q_phi"]["mean"] > trained_split["elbo_q_phi"]["mean"]
    assert t["inference_gap"]["mean"] < trained_split["own_family"]["inference_gap"]["mean"]
    assert set(trained_split["gaussian"]) >= {"minus_q_phi", "approximation_gap", "note"}
    assert "amortization_gap" not in trained_split["gaussian"]


def test_bound_is_the_importance_weighted_bound_against_quadrature():
    """gaps.bound at K is L_K: L_1 <= L_10 <= L_100 <= log p(x) (2-D quadrature), within Monte
    Carlo error, and it agrees with the bound curve of the likelihood module (an independent
    implementation of the same estimator)."""
    model = make_model_2d()
    _, x = ais.simulate(model, 32, torch.Generator().manual_seed(3))
    exact = exact_log_px_2d(model.decoder, x).mean().item()
    torch.manual_seed(0)
    values = {K: gaps.bound(model, x, 4000, 64, K=K).mean().item() for K in (1, 10, 100)}
    assert values[1] < values[10] < values[100] < exact + 0.01, (values, exact)
    curve = bound_curve(model, x, [1, 10, 100], 64)
    for K, v in values.items():
        assert v == pytest.approx(curve[K]["mean"], abs=3 * curve[K]["stderr"] / 5 + 0.02)


def test_q_star_keeps_the_start_where_adam_does_worse(digits):
    """With a learning rate that makes Adam diverge, q* falls back to the encoder's own member
    for the points where the start scores higher: never below it beyond Monte Carlo error."""
    model = _train("iwae", digits, steps=30)
    x = digits.test[:16]
    bad = gaps.QStarSettings(max_steps=30, lr=30.0, elbo_samples=400)
    torch.manual_seed(0)
    values, info = gaps.q_star(model, x, "gaussian", bad, 64, gaps.gaussian_start(model, x))
    start = gaps.elbo(model, x, 4000, 64)
    assert info["kept_start"] >= 12
    assert (values - start).mean() > -0.05


def test_avb_gap_never_uses_the_adversary(digits):
    model = _train("avb", digits, steps=30)
    calls = []
    hook = model.posterior.adversary.register_forward_hook(lambda *a: calls.append(1))
    x = digits.test[:8]
    out = gaps.gap_split(model, x, torch.zeros(8), gaps.QStarSettings(max_steps=5, elbo_samples=20))
    hook.remove()
    assert calls == []
    assert "no density" in out["elbo_q_phi"]["kind"]
    assert out["own_family"]["stand_in"] and "stand-in" in out["own_family"]["note"]
    assert out["training_bound"]["same_as_elbo"]


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


def test_an_encoder_trained_on_the_elbo_has_one_split(digits):
    """A run whose objective is the ELBO (the VAE at any K) is split under the ELBO alone; the
    bound's name says which bound a split is under."""
    model = _train("vae", digits, steps=20)
    x = digits.test[:6]
    out = gaps.gap_split(
        model, x, torch.zeros(6), gaps.QStarSettings(max_steps=5, elbo_samples=20), 64, 5, "elbo"
    )
    assert out["training_bound"]["same_as_elbo"] and out["training_bound"]["bound"] == "ELBO"
    assert gaps.bound_name(1) == gaps.bound_name(50, "elbo") == "ELBO"
    assert gaps.bound_name(50) == "L_50"


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"objective": "miwae", "groups": 2}, "MIWAE(2, 5)"),
        ({"objective": "piwae", "groups": 2}, "MIWAE(2, 5)"),  # its encoder's bound
        ({"objective": "ciwae", "beta": 0.05}, "CIWAE(β = 0.05)"),
    ],
)
def test_rainforth_objectives_split_under_their_encoder_bound(options, name):
    """The gap split of a run trained on MIWAE, PIWAE or CIWAE at K = 10 is made under the bound
    its encoder was trained with, and that bound has the expectation it should: MIWAE(2, 5)
    that of L_5, CIWAE(beta) that of beta ELBO + (1 - beta) L_10 (2-D quadrature model)."""
    model = make_model_2d()  # its weights, under the objective's options
    cfg = RunConfig(method="iwae", K=10, model=ModelConfig(hidden=[32], latent=2),
                    method_options=options)  # fmt: skip
    torch.manual_seed(0)
    trained = build_model(cfg, 20, torch.full((20,), 0.3)).eval()
    trained.load_state_dict(model.state_dict())
    objective = gaps.encoder_objective(trained.objective_spec)
    assert gaps.bound_name(10, objective) == name
    _, x = ais.simulate(trained, 16, torch.Generator().manual_seed(3))
    torch.manual_seed(1)
    value = gaps.bound(trained, x, 4000, 64, K=10, objective=objective).mean().item()
    if options["objective"] == "ciwae":
        expected = 0.05 * gaps.elbo(trained, x, 4000, 64) + 0.95 * gaps.bound(
            trained, x, 4000, 64, K=10
        )
    else:
        expected = gaps.bound(trained, x, 4000, 64, K=5)
    assert value == pytest.approx(expected.mean().item(), abs=0.05)
    out = gaps.gap_split(
        trained, x, torch.zeros(16), gaps.QStarSettings(max_steps=5, elbo_samples=40), 64, 10,
        objective,
    )  # fmt: skip
    assert out["training_bound"]["bound"] == name and not out["training_bound"]["same_as_elbo"]
