"""Rainforth et al. (2018)'s objectives against known answers: MIWAE(1, K) = L_K and MIWAE(K, 1)
= ELBO exactly, CIWAE(1) = ELBO and CIWAE(0) = L_K, the ordering ELBO <= MIWAE, CIWAE <= L_K
on any log-weights, CIWAE's gradient the mix of its two parts', PIWAE's two gradients equal
those of L_K (decoder) and MIWAE (encoder) computed separately (autograd, every estimator),
DReG unbiased for MIWAE; and the declaration: one-line errors for every bad combination."""

from __future__ import annotations

import re

import pytest
import torch

from vaeinf.config import ConfigError, ModelConfig, RunConfig, load_config
from vaeinf.core import bounds
from vaeinf.core.bounds import Objective
from vaeinf.core.methods import build_model
from vaeinf.core.snr import gradient_draws

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def log_w():
    """Log-weights of spread typical of a VAE (K = 12, B = 9)."""
    g = torch.Generator().manual_seed(0)
    return 3.0 * torch.randn(12, 9, generator=g, dtype=torch.float64) - 80.0


def test_miwae_and_ciwae_limits_are_exact(log_w):
    K = log_w.shape[0]
    assert torch.equal(bounds.miwae(log_w, 1), bounds.iwae(log_w))
    assert torch.equal(bounds.miwae(log_w, K), bounds.elbo(log_w))
    assert torch.equal(bounds.ciwae(log_w, 1.0), bounds.elbo(log_w))
    assert torch.equal(bounds.ciwae(log_w, 0.0), bounds.iwae(log_w))
    # bound() dispatches on the objective and its parameters
    assert torch.equal(bounds.bound(log_w, Objective("miwae", groups=3)), bounds.miwae(log_w, 3))
    assert torch.equal(bounds.bound(log_w, Objective("ciwae", beta=0.3)), bounds.ciwae(log_w, 0.3))
    assert torch.equal(bounds.bound(log_w, "piwae"), bounds.iwae(log_w))


def test_miwae_is_the_mean_of_its_groups_bounds(log_w):
    """MIWAE(M, K') by its definition, group by group, against the batched form."""
    M, Kp = 4, 3
    groups = [bounds.iwae(log_w[m * Kp : (m + 1) * Kp]) for m in range(M)]
    torch.testing.assert_close(bounds.miwae(log_w, M), torch.stack(groups).mean(0))


def test_ordering_on_any_log_weights(log_w):
    """ELBO <= MIWAE(M, K / M) <= L_K (Jensen, within and across groups), and CIWAE between
    ELBO and L_K, for every point, for every split."""
    e, l_k = bounds.elbo(log_w), bounds.iwae(log_w)
    for M in (2, 3, 4, 6):
        m = bounds.miwae(log_w, M)
        assert (e <= m + 1e-12).all() and (m <= l_k + 1e-12).all()
    for beta in (0.05, 0.5, 0.9):
        c = bounds.ciwae(log_w, beta)
        assert (e <= c + 1e-12).all() and (c <= l_k + 1e-12).all()


def make(objective: str = "iwae", groups=None, beta=None, seed: int = 0):
    torch.manual_seed(seed)
    options = {"objective": objective, "groups": groups, "beta": beta}
    cfg = RunConfig(method="iwae", K=12, model=ModelConfig(hidden=[16], latent=3))
    cfg.method_options = {k: v for k, v in options.items() if v is not None}
    return build_model(cfg, 64, torch.full((64,), 0.3))


@pytest.fixture(scope="module")
def x(digits):
    return digits.train[:6]


def grads(model, x, objective, estimator, seed, params):
    """The gradient of bounds.loss w.r.t. ``params`` with the samples of ``seed``."""
    torch.manual_seed(seed)
    loss, _ = bounds.loss(model, x, 12, objective, estimator)
    return torch.autograd.grad(loss, params)


def same(a, b, **tol):
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, **tol)


@pytest.mark.parametrize("estimator", ["standard", "stl", "dreg"])
def test_piwae_gradients_are_those_of_its_two_objectives(x, estimator):
    """PIWAE(M, K'): on the same samples, the decoder's gradient is L_{MK'}'s and the encoder's
    MIWAE(M, K')'s, each computed separately (Rainforth et al. 2018, Sec. 4)."""
    model = make()
    dec, enc = list(model.decoder.parameters()), list(model.posterior.parameters())
    piwae = grads(model, x, Objective("piwae", groups=4), estimator, 1, dec + enc)
    iwae = grads(model, x, Objective("iwae"), estimator, 1, dec)
    miwae = grads(model, x, Objective("miwae", groups=4), estimator, 1, enc)
    same(piwae[: len(dec)], iwae, rtol=1e-4, atol=1e-6)
    same(piwae[len(dec) :], miwae, rtol=1e-4, atol=1e-6)
    # and not those of a single objective: the two parts differ
    miwae_dec = grads(model, x, Objective("miwae", groups=4), estimator, 1, dec)
    assert max((a - b).abs().max() for a, b in zip(piwae, miwae_dec, strict=False)) > 1e-4


@pytest.mark.parametrize(
    "objective", [Objective("iwae"), Objective("miwae", groups=3), Objective("piwae", groups=2)]
)
def test_dreg_without_its_hook_is_the_same_gradient(x, objective):
    """DReG's encoder weights w~^2 through a hook on z, or (bounds.hook_free) through a second
    decoder pass with the decoder's parameters constant: the same gradient on the same
    samples, and the same bound."""
    model = make()
    params = list(model.parameters())
    hooked = grads(model, x, objective, "dreg", 4, params)
    with bounds.hook_free():
        free = grads(model, x, objective, "dreg", 4, params)
    same(free, hooked, rtol=1e-4, atol=1e-6)
    torch.manual_seed(5)
    value = bounds.loss(model, x, 12, objective, "dreg")[1]
    torch.manual_seed(5)
    with bounds.hook_free():
        torch.testing.assert_close(bounds.loss(model, x, 12, objective, "dreg")[1], value)


def test_limits_hold_for_the_gradients(x):
    """MIWAE(1, K), CIWAE(0) and PIWAE(1, K) train as L_K; MIWAE(K, 1) and CIWAE(1) as the
    ELBO; CIWAE(beta) is beta ELBO's gradient + (1 - beta) L_K's, on the same samples."""
    model = make()
    params = list(model.parameters())
    iwae, elbo = (grads(model, x, o, "standard", 2, params) for o in ("iwae", "elbo"))
    for objective, expected in [
        (Objective("miwae", groups=1), iwae),
        (Objective("ciwae", beta=0.0), iwae),
        (Objective("piwae", groups=1), iwae),
        (Objective("miwae", groups=12), elbo),
        (Objective("ciwae", beta=1.0), elbo),
    ]:
        same(grads(model, x, objective, "standard", 2, params), expected, rtol=1e-4, atol=1e-6)
    mix = grads(model, x, Objective("ciwae", beta=0.3), "standard", 2, params)
    same(mix, [0.3 * e + 0.7 * i for e, i in zip(elbo, iwae, strict=True)], rtol=1e-4, atol=1e-6)


def test_dreg_is_unbiased_for_miwae(x):
    """E[DReG] = E[standard] for MIWAE(3, 4) (Tucker et al. 2018 within each group): the mean
    gradients of 1500 batched draws agree within their standard errors."""
    model = make()
    params = {n: p.detach() for n, p in model.named_parameters() if n.startswith("posterior.")}
    others = {n: p.detach() for n, p in model.named_parameters() if n not in params}
    objective = Objective("miwae", groups=3)

    def loss_fn(estimator):
        def f(p):
            full = {**p, **others}
            return torch.func.functional_call(
                _Loss(model, objective, estimator), {f"m.{k}": v for k, v in full.items()}, (x,)
            )

        return f

    torch.manual_seed(3)
    n = 1500
    draws = {
        e: torch.cat([g.reshape(n, -1) for g in gradient_draws(loss_fn(e), params, n).values()], 1)
        for e in ("standard", "dreg")
    }
    se = (draws["standard"].var(0) / n + draws["dreg"].var(0) / n).sqrt() + 1e-12
    z = (draws["standard"].mean(0) - draws["dreg"].mean(0)) / se
    assert (z**2).mean() < 1.5, (z**2).mean()
    assert (z.abs() > 4).float().mean() < 0.01
    # DReG's draws are less spread than the standard estimator's
    assert draws["dreg"].var(0).sum() < draws["standard"].var(0).sum()


class _Loss(torch.nn.Module):
    def __init__(self, model, objective, estimator):
        super().__init__()
        self.m, self.objective, self.estimator = model, objective, estimator

    def forward(self, x):
        return bounds.loss(self.m, x, 12, self.objective, self.estimator)[0]


def test_a_method_trains_its_declared_objective(x):
    """method_options reach the loss: the model's objective and its parameters."""
    model = make("miwae", groups=4)
    assert model.objective_spec == Objective("miwae", groups=4)
    assert make("ciwae", beta=0.05).objective_spec == Objective("ciwae", beta=0.05)
    assert make().objective_spec == Objective("iwae")
    opt = model.make_optimizers(1e-3, [0.9, 0.999], 1e-4)
    before = [p.detach().clone() for p in model.parameters()]
    model.train_step(x, 12, "dreg", opt)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


BAD = [
    ({"method_options": {"objective": "miwae"}}, "'method_options.groups': objective 'miwae'"),
    (
        {"method_options": {"objective": "piwae", "groups": 7}},
        "'method_options.groups': 7 does not divide K = 12",
    ),
    (
        {"method_options": {"objective": "iwae", "groups": 2}},
        "'method_options.groups': 2 is used by objectives miwae, piwae only",
    ),
    ({"method_options": {"objective": "ciwae"}}, "'method_options.beta': objective 'ciwae'"),
    (
        {"method_options": {"objective": "miwae", "groups": 2, "beta": 0.5}},
        "'method_options.beta': 0.5 is used by objective 'ciwae' only",
    ),
    (
        {"method_options": {"objective": "ciwae", "beta": 1.5}},
        "'method_options.beta': 1.5 is out of range; must be >= 0 and <= 1",
    ),
    (
        {"method_options": {"objective": "miwae", "groups": 0}},
        "'method_options.groups': 0 is out of range",
    ),
    ({"method_options": {"objective": "tiwae"}}, "'method_options.objective': expected one of"),
    (
        {"method_options": {"objective": "ciwae", "beta": 0.5}, "estimator": "dreg"},
        "'estimator': 'dreg' needs an importance-weighted objective",
    ),
    ({"train": {"snr_draws": 1}}, "'train.snr_draws': 1 is out of range; must be 0"),
    ({"eval": {"snr_draws": -2}}, "'eval.snr_draws': -2 is out of range"),
    ({"eval": {"snr_ks": [0, 5]}}, "'eval.snr_ks[0]': 0 is out of range"),
]


@pytest.mark.parametrize(("over", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_objective_settings_are_one_line_errors(over, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, {"method": "iwae", "K": 12, **over})
    assert "\n" not in str(e.value)
    assert message in str(e.value), str(e.value)


def test_good_objective_settings_pass():
    for options, estimator in [
        ({"objective": "miwae", "groups": 4}, "dreg"),
        ({"objective": "piwae", "groups": 3}, "dreg"),
        ({"objective": "ciwae", "beta": 0.05}, "stl"),
        ({}, "dreg"),
    ]:
        cfg = load_config(None, {"method": "iwae", "K": 12, "method_options": options,
                                 "estimator": estimator})  # fmt: skip
        assert cfg.method_options["objective"] == options.get("objective", "iwae")
    # other methods keep their own objectives
    with pytest.raises(ConfigError, match=re.escape("'method_options.objective'")):
        load_config(None, {"method": "flow", "method_options": {"objective": "miwae"}})
