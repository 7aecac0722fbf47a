"""Evaluation diagnostics against known answers, and the metrics.json written by one function."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from vaeinf.config import ConfigError, ModelConfig, RunConfig, load_config
from vaeinf.core.methods import build_model
from vaeinf.core.methods.base import Posterior
from vaeinf.evaluation.latent import (
    PosteriorStatistics,
    active_units,
    collapse,
    gaussian_dim_kl,
    mutual_information,
    posterior_statistics,
)

from quadrature import make_model


class FixedGaussian(Posterior):
    """q(z|x) = N(x[:, :D], s^2 I): the data point *is* the posterior mean (for known answers)."""

    def __init__(self, s: float):
        super().__init__()
        self.s = s

    def dist(self, x):
        return torch.distributions.Independent(torch.distributions.Normal(x, self.s), 1)

    def rsample_and_log_prob(self, x, K, stop_param_grad=False):
        q = self.dist(x)
        z = q.rsample((K,))
        return z, q.log_prob(z)

    def log_prob(self, z, x):
        return self.dist(x).log_prob(z)


class Holder(nn.Module):
    def __init__(self, posterior, latent):
        super().__init__()
        self.posterior, self.latent = posterior, latent


def test_mutual_information_limits():
    """Well-separated posteriors: I = log N (each z identifies its x); identical posteriors:
    I = 0 (z says nothing about x)."""
    torch.manual_seed(0)
    n = 200
    separated = torch.arange(n, dtype=torch.float32).unsqueeze(1) * 10.0  # (N, 1)
    mi = mutual_information(Holder(FixedGaussian(0.5), 1), separated)
    assert mi["value"] == pytest.approx(math.log(n), abs=1e-3)
    same = torch.zeros(n, 1)
    assert abs(mutual_information(Holder(FixedGaussian(0.5), 1), same)["value"]) < 1e-5


def test_mutual_information_gaussian_channel():
    """x ~ N(0, 1) in 1-D, q(z|x) = N(x, s^2): I(x; z) = 0.5 log(1 + 1/s^2) (Cover & Thomas
    Eq. 9.16), up to the O(1/N) bias of the aggregate-posterior estimate."""
    torch.manual_seed(1)
    s, n = 0.5, 2000
    x = torch.randn(n, 1)
    mi = mutual_information(Holder(FixedGaussian(s), 1), x, memory_mb=8)["value"]
    assert mi == pytest.approx(0.5 * math.log(1 + 1 / s**2), abs=0.05)


def exact_stats(means: torch.Tensor) -> PosteriorStatistics:
    var = torch.ones_like(means)
    kl_dim = gaussian_dim_kl(means, var)
    return PosteriorStatistics(means, var, kl_dim, kl_dim.sum(-1), torch.zeros(len(means)), 0)


def test_active_units_counts_variance_above_threshold():
    g = torch.Generator().manual_seed(0)
    means = torch.cat(
        [torch.randn(1000, 3, generator=g), 0.05 * torch.randn(1000, 2, generator=g)], 1
    ).double()
    au = active_units(exact_stats(means), 0.01)
    assert au["count"] == 3 and len(au["variance"]) == 5 and au["noise_floor"] == 0
    assert au["bootstrap_sd"] < 0.5


def test_active_units_from_samples_have_no_noise_floor():
    """Sample means of n draws of a posterior of unit variance whose true mean never varies:
    their variance over x is about 1/n, above the threshold for n = 50, but the subtracted
    noise floor leaves an estimate near 0 (the unit is inactive); a unit whose mean does vary
    stays active."""
    torch.manual_seed(1)
    n_pts, n = 400, 50
    true_mean = torch.stack([torch.zeros(n_pts), 0.5 * torch.randn(n_pts)], 1)  # (N, 2)
    z = true_mean + torch.randn(n, n_pts, 2)  # (n, N, 2) draws of N(mean, 1)
    mean, var = z.mean(0).double(), z.var(0).double()
    stats = PosteriorStatistics(mean, var, gaussian_dim_kl(mean, var), None, None, n)
    assert mean.var(0, correction=0)[0] > 0.01  # the floor, 1/n = 0.02, exceeds the threshold
    au = active_units(stats, 0.01)
    assert au["count"] == 1 and abs(au["variance"][0]) < 0.005
    assert au["noise_floor"] == pytest.approx(1 / n, rel=0.15)


def test_no_unit_is_both_active_and_collapsed():
    """With the collapse threshold at half the activity threshold, a unit whose mean varies
    just above the activity threshold has a KL above the collapse threshold; a config that
    allows both is refused."""
    g = torch.Generator().manual_seed(2)
    scale = torch.tensor([0.0, 0.05, 0.1, 0.101, 0.2, 1.0], dtype=torch.float64)
    means = torch.randn(2000, 6, generator=g).double() * scale
    stats = exact_stats(means)
    au = active_units(stats, 0.01)
    c = collapse(stats, 0.005, au)
    assert c["active_and_collapsed"] == 0
    active = torch.tensor(au["variance"]) > 0.01
    collapsed = torch.tensor(c["kl_per_dim"]) < 0.005
    assert active.any() and collapsed.any() and not (active & collapsed).any()
    with pytest.raises(ConfigError, match="eval.collapse_threshold"):
        load_config(overrides={"eval": {"active_threshold": 0.01, "collapse_threshold": 0.01}})


def iaf_made_constant(latent: int = 3):
    """An IAF posterior whose MADEs output constants (their last layers zeroed but for the
    bias): each step is the affine map z -> sigma z + (1 - sigma) m, so q(z|x) is the diagonal
    Gaussian N(a mu + c, a^2 sigma_0^2), a and c read off the composed map, whose KL is
    closed form."""
    torch.manual_seed(3)
    cfg = RunConfig(method="autoregressive", model=ModelConfig(hidden=[16], latent=latent))
    model = build_model(cfg, 12, torch.full((12,), 0.3)).double()
    with torch.no_grad():
        for step in model.posterior.steps:
            last = [m for m in step.hyper.modules() if isinstance(m, nn.Linear)][-1]
            last.weight.zero_()
            last.bias.normal_()
    return model.eval()


def test_monte_carlo_kl_of_a_flow_matches_its_closed_form():
    """KL(q(z|x) || p(z)) of the IAF with constant MADE outputs (a diagonal Gaussian in
    disguise), by Monte Carlo with the flow's own log-densities, equals the closed form within
    4 of its reported Monte Carlo standard errors, per point and on average."""
    model = iaf_made_constant()
    post = model.posterior
    x = torch.bernoulli(torch.full((30, 12), 0.4, dtype=torch.float64))
    with torch.no_grad():
        mu, log_sigma, h = post.encode(x)
        z = torch.stack([torch.zeros_like(mu), torch.ones_like(mu)])  # (2, B, D)
        for step in post.steps:
            z = step(h)(z)
        c, a = z[0], z[1] - z[0]  # the composed map z0 -> a z0 + c, elementwise
    mean, var = a * mu + c, (a * log_sigma.exp()) ** 2
    exact = gaussian_dim_kl(mean, var).sum(-1)  # (B,)
    torch.manual_seed(4)
    stats = posterior_statistics(model, x, 4000, 64)
    assert ((stats.kl - exact).abs() < 4 * stats.kl_mc_var.sqrt() + 1e-9).all()
    c = collapse(stats, 0.005, active_units(stats, 0.01))
    assert c["kl_total"] == pytest.approx(exact.mean().item(), abs=4 * c["kl_total_mc_stderr"])
    assert "Monte Carlo" in c["kl_total_kind"]
    # Per dimension the marginals are Gaussian here, so the moment-matched KL is the exact one.
    torch.testing.assert_close(
        stats.kl_dim.mean(0), gaussian_dim_kl(mean, var).mean(0), atol=0.02, rtol=0.02
    )


def test_gaussian_statistics_are_closed_form_and_match_monte_carlo():
    """The diagonal Gaussian's moments and KL are closed form; the Monte Carlo path on the same
    posterior (its family hidden) agrees."""
    model = make_model("vae", dim=12, seed=0)
    x = torch.bernoulli(torch.full((64, 12), 0.3))
    exact = posterior_statistics(model, x, 10, 64)
    assert exact.exact and exact.samples == 0
    torch.testing.assert_close(exact.kl, exact.kl_dim.sum(-1))
    post = model.posterior
    post.family = "hidden"  # an instance attribute: the generic Monte Carlo path
    try:
        torch.manual_seed(0)
        mc = posterior_statistics(model, x, 20000, 64)
    finally:
        del post.family
    assert not mc.exact
    torch.testing.assert_close(mc.mean, exact.mean, atol=0.03, rtol=0.0)
    torch.testing.assert_close(mc.kl_dim, exact.kl_dim, atol=0.02, rtol=0.05)
    assert ((mc.kl - exact.kl).abs() < 4 * mc.kl_mc_var.sqrt() + 1e-6).all()


def test_mutual_information_is_below_the_kl_by_the_aggregate_kl():
    """x ~ N(0, 1), q(z|x) = N(x, s^2): E_x KL(q(z|x) || p(z)) = (s^2 - log s^2) / 2,
    I(x; z) = log(1 + 1/s^2) / 2 and KL(q(z) || p(z)) = (s^2 - log(1 + s^2)) / 2 for
    q(z) = N(0, 1 + s^2), their difference (Hoffman & Johnson 2016, Eq. 4): the estimate of
    the latter from the same draws is reported, and the MI is below the KL."""
    torch.manual_seed(5)
    s, n = 0.5, 2000
    x = torch.randn(n, 1)
    kl = 0.5 * (s**2 + x[:, 0] ** 2 - 1 - math.log(s**2))
    mi = mutual_information(Holder(FixedGaussian(s), 1), x, memory_mb=8, samples=2, kl=kl)
    expected = 0.5 * (s**2 - math.log(1 + s**2))
    assert mi["kl_minus_mi"]["mean"] == pytest.approx(expected, abs=0.03)
    assert mi["below_kl"] and mi["value"] < mi["kl_same_points"]
    assert mi["samples"] == 2


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    run = tmp_path_factory.mktemp("ev") / "run"
    cmd = [sys.executable, "-m", "vaeinf.cli"]
    small = ["--set", "train.epochs=3", "--set", "eval.ks=[1,10,100]", "--set", "eval.nll_k=500"]
    subprocess.run([*cmd, "train", "--out", str(run), *small], check=True, capture_output=True)
    r = subprocess.run(
        [*cmd, "evaluate", "--run", str(run)], check=True, capture_output=True, text=True
    )
    return run, r.stdout


def test_metrics_json_has_every_metric_and_provenance(evaluated):
    run, stdout = evaluated
    assert "test NLL" in stdout
    doc = json.loads((run / "metrics.json").read_text())
    m = doc["metrics"]
    assert m["test_nll"]["K"] == 500 and m["test_nll"]["mean"] > 0
    # Test: every K and the training K (5); validation: the bounds up to the training K.
    assert {(b["split"], b["K"]) for b in m["bounds"]} == {
        ("test", k) for k in (1, 5, 10, 100, 500)
    } | {("valid", 1), ("valid", 5)}
    test_bounds = {b["K"]: b["mean"] for b in m["bounds"] if b["split"] == "test"}
    assert test_bounds[500] == pytest.approx(-m["test_nll"]["mean"])
    assert test_bounds[1] < test_bounds[10] < test_bounds[100] < test_bounds[500] + 0.05
    assert 0 <= m["active_units"]["count"] <= 8 and m["active_units"]["noise_floor"] == 0
    c = m["collapse"]
    assert len(c["kl_per_dim"]) == 8 and c["kl_total"] == pytest.approx(sum(c["kl_per_dim"]))
    assert c["active_and_collapsed"] == 0 and c["kl_total_kind"] == "closed form"
    mi = c["mutual_information"]
    assert 0 <= mi["value"] <= mi["bound"] and mi["below_kl"] and mi["value"] <= c["kl_total"]
    # The training bound of an IWAE at K = 5 is the test L_5; the bound gap is log p^ minus it.
    tb, gap = m["training_bound"], m["bound_gap"]
    assert tb["objective"] == "iwae" and tb["K"] == 5 and tb["bound"] == "L_5"
    assert tb["mean"] == pytest.approx(test_bounds[5])
    assert gap["mean"] == pytest.approx(test_bounds[500] - test_bounds[5])
    # IS and AIS on the same points, paired; the gap split under the ELBO and under L_5.
    a = m["ais"]
    assert a["n"] == a["is_same_points"]["n"] == a["minus_is"]["n"] == 50
    assert a["minus_is"]["mean"] == pytest.approx(a["mean"] - a["is_same_points"]["mean"])
    assert m["gaps"]["training_bound"]["bound"] == "L_5" and "flagged" in m["gaps"]
    pp = m["per_point"]
    assert len(pp["log_px_is"]) == len(pp["training_bound"]) == m["test_nll"]["n"]
    assert len(pp["log_px_ais"]) == 50 and len(pp["gap_train_q_star"]) == 50
    assert np.mean(pp["log_px_ais"]) == pytest.approx(a["mean"], abs=1e-5)
    assert m["reconstruction"]["bce"]["mean"] > 0
    assert m["time_per_epoch"]["epochs"] == 3 and m["time_per_epoch"]["median_s"] > 0
    prov = doc["provenance"]
    assert prov["packages"]["torch"] and prov["device"] == "cpu"
    assert set(prov["wall_seconds"]) >= {"test_bounds", "valid_bounds", "total"}
    assert "git_commit" in prov
    assert doc["config"]["method"] == "iwae" and doc["config"]["eval"]["nll_k"] == 500
    arrays = np.load(run / "samples.npz")
    assert arrays["reconstruction"].shape == (16, 64)
    assert arrays["prior_sample"].shape == (64, 64)


def test_evaluate_without_training_is_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "vaeinf.cli", "evaluate", "--run", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "train it first" in r.stderr
