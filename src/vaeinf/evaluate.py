"""Evaluation of a trained model: importance-sampled log-likelihood, the L_K curve, active units,
posterior collapse, mutual information, reconstructions and prior samples.

Everything runs without gradients (value and gradient kept apart) and in bounded memory: the
data are processed in chunks of points and samples sized from a memory budget, and chunks are
merged with logsumexp in float64.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from vaeinf import ais, gaps
from vaeinf.methods import Method
from vaeinf.methods.base import chunking
from vaeinf.results import atomic_write_bytes, write_metrics
from vaeinf.train import TRAIN_LOG, load_trained

SAMPLES = "samples.npz"


@torch.no_grad()
def log_weight_chunks(model: Method, x: Tensor, K: int, memory_mb: float):
    """Yield (slice, log_w) with log_w of shape (b, K) in float64 for consecutive point chunks.

    The K samples of a chunk of points are drawn in sample chunks and concatenated; only one
    chunk of points' weights (b * K doubles, at most the budget's rows) is held at a time.
    """
    b, s = chunking(model, len(x), K, memory_mb)
    for start in range(0, len(x), b):
        xb = x[start : start + b]
        parts = [
            model.eval_log_weights(xb, min(s, K - k0)).double().T  # (b, s)
            for k0 in range(0, K, s)
        ]
        yield slice(start, start + len(xb)), torch.cat(parts, 1)


def log_likelihood(model: Method, x: Tensor, K: int = 5000, memory_mb: float = 512) -> dict:
    """Importance-sampled estimate of log p(x) (Burda et al. 2015, Sec. 5: L_K at K = 5000).

    log p^(x) = logsumexp_k log w_k - log K per point; returns mean, standard error of the mean
    over points, and the per-point estimates.
    """
    per_point = torch.empty(len(x), dtype=torch.float64)
    for sl, lw in log_weight_chunks(model, x, K, memory_mb):
        per_point[sl] = torch.logsumexp(lw, 1) - math.log(K)
    return _summary(per_point) | {"per_point": per_point}


def bound_curve(model: Method, x: Tensor, ks: list[int], memory_mb: float = 512) -> dict:
    """L_K for every K in ``ks`` from one draw of max(ks) samples per point.

    The K_max samples are split into floor(K_max / K) disjoint groups of K; each group gives an
    unbiased estimate of L_K and their average has lower variance than a single group, at no
    extra cost. Returns {K: summary dict}.
    """
    k_max = max(ks)
    per_k = {K: torch.empty(len(x), dtype=torch.float64) for K in ks}
    for sl, lw in log_weight_chunks(model, x, k_max, memory_mb):
        for K in ks:
            g = k_max // K
            groups = lw[:, : g * K].reshape(len(lw), g, K)  # (b, G, K)
            per_k[K][sl] = (torch.logsumexp(groups, -1) - math.log(K)).mean(-1)
    return {K: _summary(v) for K, v in per_k.items()}


def _summary(v: Tensor) -> dict:
    v = v.double()
    return {"mean": v.mean().item(), "stderr": (v.std() / math.sqrt(len(v))).item(), "n": len(v)}


@torch.no_grad()
def posterior_means(model: Method, x: Tensor, n: int) -> Tensor:
    """E_q[z|x] for every point, (N, D); closed form where the posterior has one."""
    return torch.cat([model.posterior.mean(xb, n) for xb in x.split(500)])


def active_units(means: Tensor, threshold: float = 0.01) -> dict:
    """Burda et al. (2015) Sec. 5.2: unit i is active when Cov_x(E_q[z_i|x]) > threshold."""
    var = means.double().var(0, correction=0)  # (D,)
    return {
        "count": int((var > threshold).sum()),
        "threshold": threshold,
        "variance": var.tolist(),
    }


@torch.no_grad()
def collapse(model: Method, x: Tensor, n: int, threshold: float = 0.01) -> dict:
    """Per-dimension KL(q(z_i|x) || p(z_i)) averaged over x, and the collapsed units (KL below
    ``threshold`` nats), following Lucas et al. (2019)'s definition of posterior collapse."""
    kl = torch.cat([model.posterior.dim_kl(xb, n) for xb in x.split(500)]).double().mean(0)
    return {
        "kl_per_dim": kl.tolist(),
        "kl_total": kl.sum().item(),
        "collapsed_units": int((kl < threshold).sum()),
        "threshold": threshold,
        "kl_kind": model.posterior.dim_kl_kind,
    }


@torch.no_grad()
def mutual_information(model: Method, x: Tensor, memory_mb: float = 512) -> dict:
    """I_q(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)], q(z) = (1/N) sum_n q(z|x_n) the aggregate
    posterior (Hoffman & Johnson 2016, "ELBO surgery", Eq. 3), one z per point, q(z) by the
    sum over all N points. The estimate is at most log N. Needs log q(z|x) at arbitrary z."""
    post = model.posterior
    z, log_q = post.rsample_and_log_prob(x, 1)  # (1, N, D), (1, N)
    z, log_q = z[0], log_q[0]
    n = len(x)
    rows = max(1, int(memory_mb * 2**20 / (4 * (3 * model.latent + 2) * n)))
    try:
        log_agg = torch.cat(
            [
                torch.logsumexp(post.log_prob(zc.unsqueeze(1).expand(-1, n, -1), x), 1)
                for zc in z.split(rows)
            ]
        ) - math.log(n)  # (N,)
    except NotImplementedError as e:
        return {"value": None, "reason": str(e)}
    return {"value": (log_q - log_agg).double().mean().item(), "n_points": n, "bound": math.log(n)}


@torch.no_grad()
def reconstructions(model: Method, x: Tensor, n_images: int, n_prior: int) -> tuple[dict, dict]:
    """Reconstruction error (-log p(x|z), z ~ q(z|x), per image, in nats; and mean absolute
    pixel error of the Bernoulli means), plus arrays for figures."""
    bce, pix = [], []
    for xb in x.split(500):
        z, _ = model.posterior.rsample_and_log_prob(xb, 1)
        logits = model.decoder(z[0])  # (B, D)
        bce.append(-model.decoder.log_prob(xb, logits))
        pix.append((torch.sigmoid(logits) - xb).abs().mean(-1))
    bce, pix = torch.cat(bce), torch.cat(pix)
    z, _ = model.posterior.rsample_and_log_prob(x[:n_images], 1)
    recon = torch.sigmoid(model.decoder(z[0]))
    prior = torch.sigmoid(model.decoder(model.prior().sample((n_prior,))))
    arrays = {
        "data": x[:n_images].cpu().numpy().astype(np.float32),
        "reconstruction": recon.cpu().numpy().astype(np.float32),
        "prior_sample": prior.cpu().numpy().astype(np.float32),
    }
    return {"bce": _summary(bce), "pixel_error": _summary(pix)}, arrays


def epoch_times(run_dir: Path) -> dict:
    df = pd.read_csv(run_dir / TRAIN_LOG)
    return {
        "median_s": float(df["seconds"].median()),
        "mean_s": float(df["seconds"].mean()),
        "epochs": len(df),
        "final_val_LK": float(df["val_LK"].iloc[-1]),
    }


def evaluate(run_dir: str | Path, memory_mb: float | None = None) -> dict:
    """Evaluate the trained run in ``run_dir``; write ``metrics.json`` and ``samples.npz``."""
    run_dir = Path(run_dir)
    t_start = time.perf_counter()
    cfg, data, model = load_trained(run_dir)
    ev = cfg.eval
    memory_mb = memory_mb or ev.memory_mb
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed + 1_000_000)
    # Fixed random subsets (the same for every run of the dataset), never the first N rows.
    x_test, test_idx = data.subset("test", ev.max_points)
    x_valid, _ = data.subset("valid", ev.max_points)
    x_test, x_valid = x_test.to(device), x_valid.to(device)
    wall = {}

    t = time.perf_counter()
    test_curve = bound_curve(model, x_test, sorted(set(ev.ks) | {ev.nll_k}), memory_mb)
    wall["test_bounds"] = time.perf_counter() - t
    t = time.perf_counter()
    valid_curve = bound_curve(model, x_valid, sorted(set(ev.ks)), memory_mb)
    wall["valid_bounds"] = time.perf_counter() - t

    t = time.perf_counter()
    means = posterior_means(model, x_test, ev.moment_samples)
    recon, arrays = reconstructions(model, x_test, ev.n_images, ev.n_prior_samples)
    coll = collapse(model, x_test, ev.moment_samples, ev.collapse_threshold)
    coll["mutual_information"] = mutual_information(model, x_test[: ev.mi_points], memory_mb)
    wall["diagnostics"] = time.perf_counter() - t

    nll = test_curve[ev.nll_k]
    metrics = {
        "dataset": cfg.dataset,
        "method": cfg.method,
        "K": cfg.K,
        "seed": cfg.seed,
        "estimator": cfg.estimator,
        "test_nll": {"K": ev.nll_k, "mean": -nll["mean"], "stderr": nll["stderr"], "n": nll["n"]},
        "proposal": model.proposal,
        "test_set": {"n": len(x_test), "sha256": data.fingerprint(x_test, test_idx)},
        "bounds": [
            {"split": split, "K": K, **s}
            for split, curve in (("valid", valid_curve), ("test", test_curve))
            for K, s in curve.items()
        ],
        "active_units": active_units(means, ev.active_threshold),
        "collapse": coll,
        "reconstruction": recon,
        "time_per_epoch": epoch_times(run_dir),
    }
    metrics.update(model.extra_metrics(x_test))
    t = time.perf_counter()
    metrics.update(ais_and_gaps(model, x_test, ev, memory_mb))
    wall["ais_and_gaps"] = time.perf_counter() - t
    identity = {k: np.array(getattr(cfg, k)) for k in ("dataset", "method", "K", "seed")}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, **identity)  # the run is named inside its own file
    atomic_write_bytes(run_dir / SAMPLES, buf.getvalue())
    wall["total"] = time.perf_counter() - t_start
    write_metrics(run_dir, metrics, cfg.to_dict(), device, wall)
    return metrics


def ais_and_gaps(model: Method, x: Tensor, ev, memory_mb: float) -> dict:
    """The AIS / BDMC / gap-split block of metrics.json for the test points x, with the
    ``eval`` settings ``ev`` (see :class:`vaeinf.config.EvalConfig`): AIS on the first
    ``ais_points`` of x (a fixed random sample of the test set, see
    :meth:`vaeinf.data.Dataset.subset`), BDMC on ``bdmc_points`` simulated points, the gap
    split and the IS - AIS difference (IS at ``nll_k`` samples) on the first ``gap_points``.
    Returns {} when ``ais_points`` is 0."""
    if ev.ais_points == 0:
        return {}
    settings = ais.AISSettings(steps=ev.ais_steps, chains=ev.ais_chains, leapfrog=ev.ais_leapfrog)
    idx = torch.arange(min(ev.ais_points, len(x)))
    est = ais.log_likelihood(model, x[idx], settings, memory_mb)
    out = {
        "ais": {k: v for k, v in est.items() if k != "per_point"}
        | {"points": f"a fixed random sample of {len(idx)} test points"}
    }
    if ev.bdmc_points > 0:
        out["ais"]["bdmc"] = ais.bdmc(model, ev.bdmc_points, settings, memory_mb)
    n_gap = min(ev.gap_points, len(idx))
    if n_gap == 0:
        return out
    xg, lp = x[idx[:n_gap]], est["per_point"][:n_gap]
    is_est = log_likelihood(model, xg, ev.nll_k, memory_mb)["per_point"]
    q = gaps.QStarSettings(
        max_steps=ev.qstar_steps, lr=ev.qstar_lr, tol=ev.qstar_tol, elbo_samples=ev.elbo_samples
    )
    t = time.perf_counter()
    split = gaps.gap_split(model, xg, lp, q, memory_mb)
    split.pop("per_point")
    out["gaps"] = split | {
        "is_minus_ais": _summary(is_est - lp) | {"K": ev.nll_k},
        "seconds": time.perf_counter() - t,
        "points": f"the first {n_gap} of the AIS subset",
    }
    return out
