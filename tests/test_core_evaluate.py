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

from vaeinf.core.methods.base import Posterior
from vaeinf.evaluation.latent import active_units, mutual_information

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


def test_active_units_counts_variance_above_threshold():
    g = torch.Generator().manual_seed(0)
    means = torch.cat(
        [torch.randn(1000, 3, generator=g), 0.05 * torch.randn(1000, 2, generator=g)], 1
    )
    au = active_units(means, 0.01)
    assert au["count"] == 3 and len(au["variance"]) == 5


def test_gaussian_dim_kl_closed_form_matches_moment_matched_default():
    model = make_model("vae", dim=12, seed=0)
    x = torch.bernoulli(torch.full((64, 12), 0.3))
    torch.manual_seed(0)
    closed = model.posterior.dim_kl(x)
    generic = Posterior.dim_kl(model.posterior, x, n=20000)  # the base class's Monte Carlo
    torch.testing.assert_close(generic, closed, atol=0.02, rtol=0.05)


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
    assert {(b["split"], b["K"]) for b in m["bounds"]} == {
        (s, k) for s in ("valid", "test") for k in (1, 10, 100)
    } | {("test", 500)}
    test_bounds = {b["K"]: b["mean"] for b in m["bounds"] if b["split"] == "test"}
    assert test_bounds[500] == pytest.approx(-m["test_nll"]["mean"])
    assert test_bounds[1] < test_bounds[10] < test_bounds[100] < test_bounds[500] + 0.05
    assert 0 <= m["active_units"]["count"] <= 8
    c = m["collapse"]
    assert len(c["kl_per_dim"]) == 8 and c["kl_total"] == pytest.approx(sum(c["kl_per_dim"]))
    assert 0 <= c["mutual_information"]["value"] <= c["mutual_information"]["bound"]
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
