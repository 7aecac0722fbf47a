"""Evaluation of a trained model: importance-sampled log-likelihood, the L_K curve, active units,
posterior collapse, mutual information, reconstructions and prior samples.

Everything runs without gradients (value and gradient kept apart) and in bounded memory: the
data are processed in chunks of points and samples sized from a memory budget, and chunks are
merged with logsumexp in float64.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from vaeinf.config import EvalConfig, RunConfig, from_dict, merge, read_yaml, validate
from vaeinf.core.methods import Method
from vaeinf.core.methods.base import chunking
from vaeinf.core.train import load_trained
from vaeinf.errors import ConfigError, DamagedFile
from vaeinf.evaluation import ais, gaps
from vaeinf.rundir import (
    CONFIG,
    EVAL,
    GRID_KEYS,
    SAMPLES,
    TRAIN_LOG,
    atomic_write_bytes,
    check_writable_dir,
    remove_temporaries,
    write_metrics,
)


@torch.no_grad()
def log_weight_chunks(model: Method, x: Tensor, K: int, memory_mb: float, block=None):
    """Yield (slice, chunks) for consecutive chunks of points, where ``chunks`` yields that
    chunk's K log-weights as float64 tensors (b, s) of consecutive samples, drawn one sample
    chunk at a time: only one (b, s) chunk, at most the budget's rows, is held at once, so
    memory does not grow with K. Consume ``chunks`` before advancing to the next points.
    With ``block`` (K a multiple of it), every sample chunk is a whole number of blocks, for a
    ``stratified_proposal``; a block larger than the budget is drawn whole."""
    b, s = chunking(model, len(x), K, memory_mb)
    if block is not None:
        s = max(block, s // block * block)
    for start in range(0, len(x), b):
        xb = x[start : start + b]
        chunks = (
            model.eval_log_weights(xb, min(s, K - k0), block).double().T  # (b, s)
            for k0 in range(0, K, s)
        )
        yield slice(start, start + len(xb)), chunks


class LogMeanExp:
    """Streaming log((1/n) sum_k exp(a_k)) per point over chunks of a's columns: a running
    maximum m and sum_k exp(a_k - m) in float64, rescaled whenever m grows, so the result
    equals logsumexp over all n at once while holding one chunk."""

    def __init__(self, b: int, device=None):
        self.max = torch.full((b,), -math.inf, dtype=torch.float64, device=device)
        self.sum = torch.zeros(b, dtype=torch.float64, device=device)
        self.n = 0

    def add(self, a: Tensor) -> None:
        """Add the columns of a (b, s)."""
        if a.shape[1] == 0:
            return
        new_max = torch.maximum(self.max, a.max(1).values)  # (b,)
        # A point whose weights so far are all -inf (or +inf) keeps a shift of 0: no inf - inf.
        shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        self.sum = self.sum * torch.exp(self.max - shift) + torch.exp(a - shift[:, None]).sum(1)
        self.max = new_max
        self.n += a.shape[1]

    def value(self) -> Tensor:
        """(b,) log-mean-exp of every column added."""
        shift = torch.where(torch.isfinite(self.max), self.max, torch.zeros_like(self.max))
        return shift + torch.log(self.sum) - math.log(self.n)


class GroupedLogMeanExp:
    """The mean over consecutive disjoint groups of K columns of each group's log-mean-exp, fed
    chunk by chunk: full groups inside a chunk at once (b, G, K), a group split across chunks
    through a :class:`LogMeanExp`; columns beyond ``groups`` * K are ignored."""

    def __init__(self, b: int, K: int, groups: int, device=None):
        self.K, self.groups, self.b, self.device = K, groups, b, device
        self.total = torch.zeros(b, dtype=torch.float64, device=device)
        self.done = 0
        self.partial = LogMeanExp(b, device)

    def add(self, a: Tensor) -> None:
        a = a[:, : (self.groups - self.done) * self.K - self.partial.n]  # only the groups used
        if self.partial.n:  # finish the group a previous chunk began
            take = self.K - self.partial.n
            self.partial.add(a[:, :take])
            a = a[:, take:]
            if self.partial.n == self.K:
                self._finish(self.partial.value())
                self.partial = LogMeanExp(self.b, self.device)
        g = a.shape[1] // self.K
        if g:
            groups = a[:, : g * self.K].reshape(len(a), g, self.K)  # (b, g, K)
            self.total += (torch.logsumexp(groups, -1) - math.log(self.K)).sum(-1)
            self.done += g
        self.partial.add(a[:, g * self.K :])

    def _finish(self, value: Tensor) -> None:
        self.total += value
        self.done += 1

    def value(self) -> Tensor:
        """(b,) mean over the groups of their log-mean-exp."""
        return self.total / self.done


def log_likelihood(model: Method, x: Tensor, K: int = 5000, memory_mb: float = 512) -> dict:
    """Importance-sampled estimate of log p(x) (Burda et al. 2015, Sec. 5: L_K at K = 5000).

    log p^(x) = logsumexp_k log w_k - log K per point, accumulated over sample chunks
    (:class:`LogMeanExp`); returns mean, standard error of the mean over points, and the
    per-point estimates.
    """
    per_point = torch.empty(len(x), dtype=torch.float64)
    for sl, chunks in log_weight_chunks(model, x, K, memory_mb):
        acc = LogMeanExp(sl.stop - sl.start, x.device)
        for lw in chunks:
            acc.add(lw)
        per_point[sl] = acc.value()
    return _summary(per_point) | {"per_point": per_point}


def bound_curve(model: Method, x: Tensor, ks: list[int], memory_mb: float = 512) -> dict:
    """L_K for every K in ``ks`` from one draw of max(ks) samples per point.

    The K_max samples are split into floor(K_max / K) disjoint groups of K; each group gives an
    unbiased estimate of L_K and their average has lower variance than a single group, at no
    extra cost (a ``stratified_proposal`` draws floor(K_max / K) blocks of K for each K
    instead, as a group cut from a larger deterministic mixture is not one). The groups are
    accumulated as the sample chunks arrive
    (:class:`GroupedLogMeanExp`), so memory does not grow with K_max. Returns {K: summary}.
    """
    k_max = max(ks)
    if model.stratified_proposal:  # one draw per K, in blocks of K (same budget of samples)
        per_k = {}
        for K in ks:
            per_k |= _grouped_bounds(model, x, [K], k_max // K * K, memory_mb, block=K)
    else:
        per_k = _grouped_bounds(model, x, ks, k_max, memory_mb)
    return {K: _summary(per_k[K]) for K in ks}


def _grouped_bounds(model, x, ks, n, memory_mb, block=None) -> dict[int, Tensor]:
    """Per point, the mean over the floor(n / K) disjoint groups of K of one draw of n samples
    of each group's log-mean-exp, for every K in ks: {K: (N,)}."""
    per_k = {K: torch.empty(len(x), dtype=torch.float64) for K in ks}
    for sl, chunks in log_weight_chunks(model, x, n, memory_mb, block):
        b = sl.stop - sl.start
        accs = {K: GroupedLogMeanExp(b, K, n // K, x.device) for K in ks}
        for lw in chunks:
            for acc in accs.values():
                acc.add(lw)
        for K, acc in accs.items():
            per_k[K][sl] = acc.value()
    return per_k


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
    """Per-epoch times and the final validation bound from ``train_log.csv``; a missing, empty
    or damaged log is a DamagedFile (checked before any evaluation)."""
    path = run_dir / TRAIN_LOG
    todo = f"rerun `vaeinf train --out {run_dir} --config {run_dir / CONFIG}` to rewrite it"
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise DamagedFile(f"'{path}' is missing; {todo}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DamagedFile(f"'{path}' is damaged ({str(e).strip()[:120]}); {todo}") from None
    missing = [c for c in ("seconds", "val_LK") if c not in df.columns]
    if missing or df.empty or not pd.api.types.is_numeric_dtype(df["seconds"]):
        what = f"lacks column(s) {', '.join(missing)}" if missing else "holds no epochs"
        raise DamagedFile(f"'{path}' {what}; {todo}")
    return {
        "median_s": float(df["seconds"].median()),
        "mean_s": float(df["seconds"].mean()),
        "epochs": len(df),
        "final_val_LK": float(df["val_LK"].iloc[-1]),
    }


def eval_settings(run_dir: Path, base: RunConfig, settings: dict | None) -> RunConfig:
    """``base`` with the evaluation settings to use: the defaults, then those the run was
    trained with (``eval.yaml``, or an older ``config.yaml``'s), then ``settings`` (a mapping of
    ``eval`` keys); validated, one-line ConfigError naming the bad key."""
    chosen = dataclasses.asdict(base.eval)
    if (run_dir / EVAL).exists():
        saved = read_yaml(run_dir / EVAL, "the run's evaluation settings")
        if not isinstance(saved, dict):
            raise DamagedFile(f"'{run_dir / EVAL}' holds no mapping of eval keys; delete it")
        chosen = merge(chosen, saved)
    chosen = merge(chosen, settings)
    return validate(dataclasses.replace(base, eval=from_dict(EvalConfig, chosen, "eval")))


def evaluate(
    run_dir: str | Path, settings: dict | None = None, memory_mb: float | None = None
) -> dict:
    """Evaluate the trained run in ``run_dir`` with the evaluation ``settings`` (``eval`` keys
    over those of the run, see :func:`eval_settings`); write ``metrics.json`` and
    ``samples.npz``. The training identity is the run's own; it is never changed here."""
    run_dir = Path(run_dir)
    t_start = time.perf_counter()
    if memory_mb is not None and not (math.isfinite(memory_mb) and memory_mb > 0):
        raise ConfigError(f"--memory-mb {memory_mb!r}: must be a finite number > 0 (megabytes)")
    # Everything that can fail without evaluating fails first: the settings, the run, its log,
    # the directory.
    cfg, data, model = load_trained(run_dir)
    cfg = eval_settings(run_dir, cfg, settings)
    times = epoch_times(run_dir)
    check_writable_dir(run_dir, "run directory")
    remove_temporaries(run_dir)
    ev = cfg.eval
    memory_mb = memory_mb if memory_mb is not None else ev.memory_mb
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
        "time_per_epoch": times,
    }
    metrics.update(model.extra_metrics(x_test))
    t = time.perf_counter()
    metrics.update(ais_and_gaps(model, x_test, ev, memory_mb))
    wall["ais_and_gaps"] = time.perf_counter() - t
    identity = {k: np.array(getattr(cfg, k)) for k in GRID_KEYS}
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
    :meth:`vaeinf.core.data.Dataset.subset`), BDMC on ``bdmc_points`` simulated points, the gap
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
        "ais_minus_is": _summary(lp - is_est) | {"K": ev.nll_k},
        "seconds": time.perf_counter() - t,
        "points": f"the first {n_gap} of the AIS subset",
    }
    return out
