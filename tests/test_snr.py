"""The gradient signal-to-noise estimator (vaeinf.core.snr, vaeinf.evaluation.snr) against known
answers: the per-parameter SNR and its summaries on draws of known moments (the bias-corrected
root mean square is 0 where the SNR is, the mean sits at sqrt(2 / (pi R))); batched draws that
are independent, and exact where the loss draws nothing; the slopes of Rainforth et al. (2018)'s
Gaussian model (-1/2 encoder, +1/2 decoder, DReG's encoder not falling); and the training's
record, which leaves the trained model unchanged and is written with it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from vaeinf.config import load_config
from vaeinf.core import bounds
from vaeinf.core.snr import (
    fixed_minibatch,
    gradient_draws,
    measure,
    null_level,
    per_parameter,
    summarize,
)
from vaeinf.core.train import snr_epochs, train
from vaeinf.evaluation.snr import curve, slope

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# The estimator on draws of known moments


def test_summaries_of_known_snr():
    """Coordinates with SNR |mu| / sigma = 0.5 in every draw: each summary near 0.5; pure
    noise: the mean near sqrt(2 / (pi R)), the bias-corrected root mean square near 0."""
    g = torch.Generator().manual_seed(0)
    R, P = 64, 20000
    sigma = torch.rand(P, generator=g) + 0.5
    known = 0.5 * sigma + sigma * torch.randn(R, P, generator=g)
    s = summarize(known, g)
    assert s.summary("rms") == pytest.approx(0.5, abs=0.02)
    assert s.summary("median") == pytest.approx(0.5, abs=0.05)
    assert s.summary("mean") == pytest.approx(0.5, abs=0.05)
    noise = summarize(sigma * torch.randn(R, P, generator=g), g)
    assert noise.summary("mean") == pytest.approx(null_level(R), rel=0.05)
    assert noise.summary("rms") < 0.03
    rec = s.record()
    for name in ("mean", "median", "rms"):
        assert rec[f"{name}_low"] < rec[name] < rec[f"{name}_high"]
    assert rec["n_params"] == P and rec["null_level"] == pytest.approx(null_level(R))
    # a coordinate that never moves has no SNR and is left out
    frozen = known.clone()
    frozen[:, 0] = 1.0
    assert math.isnan(per_parameter(frozen)[0]) and summarize(frozen, g).n_params == P - 1


def test_draws_are_batched_independent_and_exact_without_randomness():
    """gradient_draws: a loss without random numbers gives autograd's gradient in every draw
    (either way of batching, in chunks or not); a loss with them gives draws whose spread is
    the known one."""
    w = torch.tensor([1.0, -2.0, 0.5])
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])

    def fixed(p):
        return ((x @ p["w"]) ** 2).sum()

    leaf = w.clone().requires_grad_()
    (expected,) = torch.autograd.grad(fixed({"w": leaf}), leaf)
    for mode, chunk in (("batched", None), ("batched", 3), ("nested", None), ("loop", None)):
        g = gradient_draws(fixed, {"w": w}, 7, chunk=chunk, mode=mode)["w"]
        assert g.shape == (7, 3) and torch.equal(g, expected.expand(7, 3))

    # d/dw of w . eps with eps ~ N(0, I): each draw is eps itself
    torch.manual_seed(0)
    g = gradient_draws(lambda p: (p["w"] * torch.randn(3)).sum(), {"w": w}, 4000)["w"]
    assert g.std(0) == pytest.approx(torch.ones(3), abs=0.05)
    assert abs(torch.corrcoef(g.T)[0, 1]) < 0.06  # coordinates independent
    assert len(set(g[:, 0].tolist())) == 4000  # every draw its own numbers


@pytest.mark.parametrize(
    ("method", "estimator", "options"),
    [
        ("iwae", "standard", {}),
        ("iwae", "dreg", {}),
        ("iwae", "dreg", {"objective": "miwae", "groups": 3}),
        ("iwae", "stl", {"objective": "piwae", "groups": 2}),
        ("flow", "standard", {}),
    ],
)
def test_batched_draws_are_each_draws_own_gradient(digits, method, estimator, options):
    """Every draw's gradient from one vmap with the gradient taken outside it (DReG without its
    hook) equals, bit for bit up to float rounding, torch.func.grad of the training loss
    (hooks and all) mapped over the same draws: the same random numbers, the same gradient."""
    from torch.func import functional_call, grad, vmap

    from vaeinf.config import ModelConfig, RunConfig
    from vaeinf.core.methods import build_model
    from vaeinf.core.snr import _TrainingLoss

    cfg = RunConfig(method=method, K=6, model=ModelConfig(hidden=[16], latent=3))
    cfg.method_options = options
    torch.manual_seed(0)
    model = build_model(cfg, digits.dim, digits.train_mean())
    x = fixed_minibatch(digits, 5)
    wrapper = _TrainingLoss(model)
    params = {f"model.{n}": p.detach() for n, p in model.named_parameters()}

    def loss_fn(p):
        return functional_call(wrapper, p, (x, 6, estimator))

    torch.manual_seed(1)
    ours = gradient_draws(loss_fn, params, 8)
    torch.manual_seed(1)
    copies = {k: v.expand(8, *v.shape).clone() for k, v in params.items()}
    reference = vmap(grad(lambda p, _: loss_fn(p)), in_dims=(0, 0), randomness="different")(
        copies, torch.zeros(8)
    )
    torch.manual_seed(1)
    nested = gradient_draws(loss_fn, params, 8, mode="nested")
    for name in params:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(nested[name], reference[name], rtol=1e-4, atol=1e-6)


def test_a_loss_that_takes_gradients_is_measured_its_own_way(digits):
    """SA-VAE's refinement differentiates inside the loss: its draws are torch.func.grad mapped
    over them, which nests, or with the refinement detached (which sets requires_grad) a
    loop."""
    from vaeinf.config import ModelConfig, RunConfig
    from vaeinf.core.methods import build_model

    for through, mode in ((True, "nested"), (False, "loop")):
        cfg = RunConfig(method="semi_amortized", K=3, model=ModelConfig(hidden=[16], latent=3))
        cfg.method_options = {"steps": 2, "backprop_through_refinement": through}
        model = build_model(cfg, digits.dim, digits.train_mean())
        assert model.gradient_draws == mode
        parts = measure(model, fixed_minibatch(digits, 4), 3, "dreg", draws=6, seed=0)
        assert set(parts) == {"encoder", "decoder"}
        assert parts["encoder"].n_params > 0 and parts["decoder"].summary("mean") > 0


# ---------------------------------------------------------------------------------------------
# Rainforth et al. (2018)'s Gaussian model: z ~ N(theta, I), x|z ~ N(z, I), q(z|x) = N(Ax + b,
# 2/3 I). L_K's encoder gradient has mean O(1/K) and s.d. O(1/sqrt(K)), so its SNR falls as
# K^(-1/2); the decoder's mean tends to grad log p(x), so its SNR rises as K^(1/2); DReG's
# encoder SNR does not fall (Tucker et al. 2019).

D = 20
VAR_Q = 2 / 3


class ToyEncoder(nn.Module):
    def __init__(self, A, b):
        super().__init__()
        self.A, self.b = nn.Parameter(A), nn.Parameter(b)

    def rsample_and_log_prob(self, x, K, stop_param_grad=False):
        mean = x @ self.A.T + self.b  # (B, D)
        z = mean + math.sqrt(VAR_Q) * torch.randn((K, *mean.shape))  # (K, B, D)
        m = mean.detach() if stop_param_grad else mean
        return z, -0.5 * ((z - m) ** 2).sum(-1) / VAR_Q  # log q up to a constant


class ToyDecoder(nn.Module):
    def __init__(self, theta):
        super().__init__()
        self.theta = nn.Parameter(theta)


class Toy(nn.Module):
    """The Gaussian model with the interface the SNR estimator and the losses use."""

    def __init__(self, theta, A, b):
        super().__init__()
        self.posterior, self.decoder = ToyEncoder(A, b), ToyDecoder(theta)

    def log_px(self, x, z, decoder_grad=True):
        """Every term with the decoder's parameter theta: log p(z) + log p(x|z), up to a
        constant (the constants cancel in every gradient)."""
        theta = self.decoder.theta if decoder_grad else self.decoder.theta.detach()
        return -0.5 * (((z - theta) ** 2).sum(-1) + ((x - z) ** 2).sum(-1))

    def log_weights(self, x, K, stop_param_grad=False, decoder_grad=True):
        z, log_q = self.posterior.rsample_and_log_prob(x, K, stop_param_grad)
        return self.log_px(x, z, decoder_grad) - log_q, z

    def training_loss(self, x, K, estimator):
        return bounds.loss(self, x, K, "iwae", estimator)

    def gradient_groups(self):
        return {"encoder": ["posterior.A", "posterior.b"], "decoder": ["decoder.theta"]}


@pytest.fixture(scope="module")
def toy():
    """N = 1024 points of the model with theta* ~ N(0, I); the decoder at theta = theta* + N(0,
    I) (so grad log p(x) is far from 0), the encoder near its optimum for that theta (A = I / 2,
    b = theta / 2, each perturbed by N(0, 0.01^2))."""
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(D, generator=g)
    x = truth + math.sqrt(2) * torch.randn(1024, D, generator=g)
    theta = truth + torch.randn(D, generator=g)
    A = torch.eye(D) / 2 + 0.01 * torch.randn(D, D, generator=g)
    b = theta / 2 + 0.01 * torch.randn(D, generator=g)
    return Toy(theta, A, b), x


KS = [3, 10, 30]


def slopes(toy, estimator: str) -> dict:
    model, x = toy
    chunk = max(1, 2_000_000 // (max(KS) * len(x) * D))
    per_k = {K: measure(model, x, K, estimator, 32, seed=K, chunk=chunk) for K in KS}
    return {
        part: slope(KS, [per_k[K][part].summary("rms") for K in KS])
        for part in ("encoder", "decoder")
    }


def test_toy_slopes_of_the_standard_estimator(toy):
    s = slopes(toy, "standard")
    print(f"standard: {s}")
    assert s["encoder"] == pytest.approx(-0.5, abs=0.1)
    assert s["decoder"] == pytest.approx(0.5, abs=0.1)


def test_toy_dreg_encoder_does_not_fall(toy):
    s = slopes(toy, "dreg")
    print(f"dreg: {s}")
    assert s["encoder"] >= 0
    assert s["decoder"] == pytest.approx(0.5, abs=0.1)  # the decoder's gradient is L_K's


# ---------------------------------------------------------------------------------------------
# In a run


def test_slope_fit():
    assert slope([1, 10, 100], [1.0, 10**-0.5, 0.1]) == pytest.approx(-0.5)
    assert math.isnan(slope([1, 10], [1.0, 0.0]))  # a zero cannot be fitted on log axes


def test_curve_on_a_model(digits):
    """The grid and its slopes for every part and summary; MIWAE's K only where its groups
    divide them."""
    from vaeinf.config import ModelConfig, RunConfig
    from vaeinf.core.methods import build_model

    cfg = RunConfig(method="iwae", K=6, model=ModelConfig(hidden=[16], latent=3))
    cfg.method_options = {"objective": "miwae", "groups": 3}
    model = build_model(cfg, digits.dim, digits.train_mean())
    x = fixed_minibatch(digits, 5)
    out = curve(model, x, [1, 3, 6, 12], "standard", 8, seed=0)
    assert [r["K"] for r in out["grid"]] == [3, 6, 12]
    for part in ("encoder", "decoder"):
        for summary in ("mean", "median", "rms"):
            s = out["slope"][part][summary]
            assert s["low"] <= s["value"] <= s["high"]


def test_training_records_snr_and_trains_the_same_model(tmp_path):
    """train_snr.json holds the start, middle and end; the measurement has its own random
    numbers, so the model trained with it is the one trained without it, bit for bit."""
    over = {"model": {"hidden": [16], "latent": 3}, "K": 5,
            "train": {"epochs": 3, "device": "cpu", "snr_draws": 8, "snr_points": 4}}  # fmt: skip
    train(load_config(None, over), tmp_path / "on", progress=False)
    off = json.loads(json.dumps(over))
    off["train"]["snr_draws"] = 0
    train(load_config(None, off), tmp_path / "off", progress=False)
    a, b = (torch.load(tmp_path / r / "model.pt") for r in ("on", "off"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    stages = json.loads((tmp_path / "on" / "train_snr.json").read_text())["stages"]
    assert list(stages) == ["start", "middle", "end"] == list(snr_epochs(3))
    assert [stages[s]["epoch"] for s in stages] == [0, 1, 3]
    for record in stages.values():
        assert record["K"] == 5 and record["draws"] == 8 and record["points"] == 4
        assert record["encoder"]["mean"] > 0 and record["decoder"]["rms"] >= 0
    assert json.loads((tmp_path / "off" / "train_snr.json").read_text()) == {"stages": {}}
    assert snr_epochs(1) == {"start": 0, "end": 1}
