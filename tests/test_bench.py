"""The benchmark script runs end to end, and the fused Bernoulli log-likelihood it justifies has
the value and gradient of torch.distributions'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributions import Bernoulli, Independent

from vaeinf.config import load_config
from vaeinf.core.methods import build_model
from vaeinf.core.nets import _CompiledBernoulliLogProb, bernoulli_log_prob, softplus_sum

SRC = Path(__file__).resolve().parents[1] / "src"
BENCH = Path(__file__).resolve().parents[1] / "bench"


def reference(x, logits):
    return Independent(Bernoulli(logits=logits), 1).log_prob(x)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_fused_bernoulli_matches_torch_distributions(dtype, rtol):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(7, 30, generator=g) < 0.3).to(dtype)  # (B, D), broadcast over K
    logits = (torch.randn(4, 7, 30, generator=g, dtype=dtype) * 8).requires_grad_()
    logits.data[0, 0, :3] = torch.tensor([40.0, -40.0, 0.0])  # softplus's threshold and beyond
    grad = torch.randn(4, 7, generator=g, dtype=dtype)
    ours, ref = bernoulli_log_prob(x, logits), reference(x, logits)
    assert ours.shape == ref.shape == (4, 7)
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=0)
    (g_ours,) = torch.autograd.grad(ours, logits, grad)
    (g_ref,) = torch.autograd.grad(ref, logits, grad)
    torch.testing.assert_close(g_ours, g_ref, rtol=rtol, atol=rtol)
    with torch.no_grad():  # the evaluation path
        torch.testing.assert_close(bernoulli_log_prob(x, logits), ref.detach(), rtol=rtol, atol=0)


def test_fused_bernoulli_gradient_in_x_and_reverse_broadcast():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    plain = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)
    grad = torch.randn(3, 5, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad(bernoulli_log_prob(x, logits), [x, logits], grad)
    ref = torch.autograd.grad(plain, [x, logits], grad)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_log_weights_match_the_torch_distributions_decoder(monkeypatch):
    cfg = load_config(overrides={"model": {"preset": "burda1"}})
    torch.manual_seed(0)
    model = build_model(cfg, 784, torch.full((784,), 0.13))
    x = (torch.rand(10, 784) < 0.13).float()
    torch.manual_seed(3)
    fused, _ = model.log_weights(x, 6)
    monkeypatch.setattr(model.decoder, "log_prob", reference)
    torch.manual_seed(3)
    dist, _ = model.log_weights(x, 6)
    torch.testing.assert_close(fused, dist, rtol=1e-5, atol=0)


def test_bench_quick_smoke(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(BENCH / "step.py"), "--quick", "--dataset", "digits"]
        + ["--no-compile", "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| K | vaeinf eager (ms) |" in proc.stdout
    res = json.loads(out.read_text())
    assert res["env"]["threads"] == 1
    for K in ("1", "5"):
        r = res["steps"]["per_K"][K]["ms"]
        assert r["vaeinf"] > 0 and r["plain"] > 0 and r["flop_bound"] > 0
        # Same weights, same random numbers: vaeinf's loss is the plain recipe's.
        assert res["steps"]["checks"][K]["abs_diff_loss_vaeinf_vs_plain"] < 1e-3
    assert [n["K"] for n in res["nll"]] == [50, 200]
    assert all(0 < n["peak_rss_gib"] < 2 for n in res["nll"])
    assert res["markdown"].startswith("Command:")


def test_fused_bernoulli_is_differentiable_twice():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(5, 6, generator=g) < 0.5).double()
    logits = torch.randn(3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 5, 6, generator=g, dtype=torch.float64)
    hvp = []
    for f in (bernoulli_log_prob, reference):
        (grad,) = torch.autograd.grad(f(x, logits).sum(), logits, create_graph=True)
        hvp.append(torch.autograd.grad((grad * v).sum(), logits)[0])
    torch.testing.assert_close(hvp[0], hvp[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("D", [784, 30])  # a multiple of the group size, and one padded
def test_grouped_softplus_sum_matches_float64(D):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 9, D, generator=g) * 10
    logits[0, 0, :6] = torch.tensor([0.0, 1e-8, -1e-8, 90.0, -90.0, 20.0])
    ref = torch.nn.functional.softplus(logits.double()).sum(-1)
    torch.testing.assert_close(softplus_sum(logits).double(), ref, rtol=2e-6, atol=1e-5)


def test_compiled_bernoulli_function_matches_the_exact_formula():
    """The autograd.Function that torch.compile traces, run eagerly: the value against
    x l - softplus(l) with softplus written exactly (F.softplus returns l above 20), the
    gradients against their closed forms."""
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(7, 40, generator=g) < 0.3).double().requires_grad_()
    logits = (torch.randn(4, 7, 40, generator=g, dtype=torch.float64) * 8).requires_grad_()
    logits.data[0, 0, :3] = torch.tensor([40.0, -40.0, 0.0])  # sigmoid(0) = 1/2 exactly
    grad = torch.randn(4, 7, generator=g, dtype=torch.float64)
    ours = _CompiledBernoulliLogProb.apply(x, logits)
    with torch.no_grad():
        exact_softplus = torch.relu(logits) + torch.log1p(torch.exp(-logits.abs()))
        torch.testing.assert_close(ours, (x * logits - exact_softplus).sum(-1), rtol=1e-12, atol=0)
    # The gradients are known: d/dl = g (x - sigmoid(l)), d/dx = g l.
    g_x, g_l = torch.autograd.grad(ours, [x, logits], grad)
    g = grad.unsqueeze(-1)
    torch.testing.assert_close(g_l, g * (x - torch.sigmoid(logits)), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(g_x, (g * logits).sum(0), rtol=1e-12, atol=1e-12)


def test_compiled_loss_matches_eager(one_thread):
    """``train.compile: true`` (grouped softplus, Inductor's decomposed tanh) gives the eager
    loss and gradients up to float32 rounding."""
    from vaeinf.core import bounds

    cfg = load_config(overrides={"model": {"hidden": [32, 32], "latent": 4}})
    torch.manual_seed(0)
    model = build_model(cfg, 64, torch.full((64,), 0.3))
    x = (torch.rand(8, 64) < 0.3).float()
    out = {}
    for name, fn in (("eager", bounds.loss), ("compiled", bounds.compiled_loss())):
        torch.manual_seed(1)
        loss, value = fn(model, x, 5, "iwae", "dreg")
        grads = torch.autograd.grad(loss, list(model.parameters()))
        out[name] = (loss.detach(), value.detach(), grads)
    (le, ve, ge), (lc, vc, gc) = out["eager"], out["compiled"]
    torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(vc, ve, rtol=1e-5, atol=1e-4)
    for a, b in zip(gc, ge, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
