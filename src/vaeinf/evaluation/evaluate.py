"""Evaluation of a trained run: the orchestration that writes ``metrics.json`` and
``samples.npz`` from the likelihood estimates (:mod:`vaeinf.evaluation.likelihood`), the bound
the run was trained on and the bound gap, the latent diagnostics
(:mod:`vaeinf.evaluation.latent`), reconstructions, prior samples, AIS beside IS on the same
points, BDMC and the gap split; and, under ``per_point``, the per-point values behind the means
(for comparisons paired per test point)."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from vaeinf.config import EvalConfig, RunConfig, from_dict, merge, read_yaml, validate
from vaeinf.core import bounds
from vaeinf.core.methods import Method
from vaeinf.core.methods.base import bytes_per_row
from vaeinf.core.snr import fixed_minibatch
from vaeinf.core.train import load_trained
from vaeinf.errors import ConfigError, DamagedFile
from vaeinf.evaluation import ais, gaps, snr
from vaeinf.evaluation.latent import (
    active_units,
    collapse,
    mutual_information,
    posterior_statistics,
)
from vaeinf.evaluation.likelihood import bound_curve, summary
from vaeinf.rundir import (
    CONFIG,
    EVAL,
    GRID_KEYS,
    SAMPLES,
    TRAIN_LOG,
    TRAIN_SNR,
    atomic_write_bytes,
    check_writable_dir,
    remove_temporaries,
    write_metrics,
)


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
    return {"bce": summary(bce), "pixel_error": summary(pix)}, arrays


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
    best = int(df["val_bound"].idxmax()) if "val_bound" in df else len(df) - 1
    return {
        "median_s": float(df["seconds"].median()),
        "mean_s": float(df["seconds"].mean()),
        "epochs": len(df),
        # The bound of the state evaluated: the best epoch's (vaeinf.core.train.best_epoch).
        "final_val_LK": float(df["val_LK"].iloc[best]),
    }


def training_record(run_dir: Path, cfg: RunConfig) -> dict:
    """How the training ended and its validation curve, from ``train_log.csv`` (read by
    :func:`epoch_times` first): ``stopped_by`` (converged, budget or cap; see
    :func:`vaeinf.core.train.stop_reason`), the epochs and optimizer steps trained, the best
    epoch (the state evaluated) and ``curve``, the validation bound L_{val_k} after every epoch
    against the cumulative steps (the compute axis joins them with the cost rule's step time)."""
    df = pd.read_csv(run_dir / TRAIN_LOG, keep_default_na=False)
    if "steps" not in df or "val_bound" not in df:  # a log of an older vaeinf
        return {}
    best = int(df["val_bound"].idxmax())
    return {
        "stopped_by": str(df["stop"].iloc[-1]) or "unfinished",
        "epochs": len(df),
        "steps": int(df["steps"].iloc[-1]),
        "best_epoch": int(df["epoch"].iloc[best]),
        "best_steps": int(df["steps"].iloc[best]),
        "best_val_bound": float(df["val_bound"].iloc[best]),
        "val_k": cfg.train.val_k or cfg.K,
        "curve": [
            {"epoch": int(e), "steps": int(n), "val_bound": float(v)}
            for e, n, v in zip(df["epoch"], df["steps"], df["val_bound"], strict=True)
        ],
    }


def training_snr(run_dir: Path) -> dict | None:
    """The training's record of the gradient's SNR (``train_snr.json``: stage -> record), or
    None for a run trained without one; a damaged file is a DamagedFile (checked before any
    evaluation)."""
    path = run_dir / TRAIN_SNR
    if not path.exists():
        return None
    todo = f"rerun `vaeinf train --out {run_dir} --config {run_dir / CONFIG}` to rewrite it"
    try:
        stages = json.loads(path.read_text())["stages"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise DamagedFile(f"'{path}' is damaged ({str(e).strip()[:120]}); {todo}") from None
    if not isinstance(stages, dict):
        raise DamagedFile(f"'{path}' holds no stages; {todo}")
    return stages


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
    trained_snr = training_snr(run_dir)
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
    # L_1 and the training K always: the bound each run is trained on (see training_bound).
    test_ks = sorted(set(ev.ks) | {ev.nll_k, 1, cfg.K})
    test_curve, test_pp = bound_curve(model, x_test, test_ks, memory_mb, per_point=True)
    wall["test_bounds"] = time.perf_counter() - t
    t = time.perf_counter()
    # Validation: the bounds up to the training K (the objective and those below it); the
    # larger K of the likelihood curve are the test set's (a third of the evaluation's
    # decoder passes saved, and no table or figure reads them on validation).
    valid_ks = sorted({k for k in ev.ks if k <= cfg.K} | {1, cfg.K})
    valid_curve = bound_curve(model, x_valid, valid_ks, memory_mb)
    wall["valid_bounds"] = time.perf_counter() - t

    t = time.perf_counter()
    stats = posterior_statistics(model, x_test, ev.moment_samples, memory_mb)
    recon, arrays = reconstructions(model, x_test, ev.n_images, ev.n_prior_samples)
    active = active_units(stats, ev.active_threshold)
    coll = collapse(stats, ev.collapse_threshold, active)
    n_mi = min(ev.mi_points, len(x_test))
    coll["mutual_information"] = mutual_information(
        model,
        x_test[:n_mi],
        memory_mb,
        ev.mi_samples,
        None if stats.kl is None else stats.kl[:n_mi],
    )
    wall["diagnostics"] = time.perf_counter() - t

    nll = test_curve[ev.nll_k]
    log_px = test_pp[ev.nll_k]  # (N,) the IS estimate of every test point
    t = time.perf_counter()
    train_bound = training_bound(model, x_test, cfg.K, test_pp, memory_mb)
    wall["training_bound"] = time.perf_counter() - t
    metrics = {
        "dataset": cfg.dataset,
        "variant": cfg.variant or cfg.method,
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
        "active_units": active,
        "collapse": coll,
        "reconstruction": recon,
        "time_per_epoch": times,
        "training": training_record(run_dir, cfg),
    }
    per_point = {"log_px_is": log_px, "test_LK": test_pp[cfg.K]}
    if train_bound is not None:
        values = train_bound.pop("per_point")
        per_point["training_bound"] = values
        metrics["training_bound"] = train_bound
        metrics["bound_gap"] = summary(log_px - values) | {
            "log_px": f"IS with K = {ev.nll_k}, every test point",
            "bound": train_bound["bound"],
        }
    metrics.update(model.extra_metrics(x_test, cfg.K))
    t = time.perf_counter()
    if ev.snr_draws or trained_snr:
        x_snr = fixed_minibatch(data, ev.snr_points).to(device)
        metrics["snr"] = snr.metrics(
            model, x_snr, ev.snr_ks if ev.snr_draws else [], cfg.estimator, ev.snr_draws,
            cfg.seed + 2_000_000, memory_mb, trained_snr,
        )  # fmt: skip
    wall["snr"] = time.perf_counter() - t
    t = time.perf_counter()
    block, pp = ais_and_gaps(model, x_test, log_px, ev, memory_mb, cfg.K)
    metrics.update(block)
    per_point |= pp
    wall["ais_and_gaps"] = time.perf_counter() - t
    metrics["per_point"] = {k: [round(float(v), 6) for v in vs] for k, vs in per_point.items()}
    # The run is named inside its own file: the grid keys and the base method.
    identity = {k: np.array(metrics[k]) for k in (*GRID_KEYS, "method")}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, **identity)  # the run is named inside its own file
    atomic_write_bytes(run_dir / SAMPLES, buf.getvalue())
    wall["total"] = time.perf_counter() - t_start
    write_metrics(run_dir, metrics, cfg.to_dict(), device, wall)
    return metrics


#: The objectives whose training bound is read off the test L_K curve: "elbo" trains on the
#: K-sample average of log w, whose expectation is L_1; "iwae" on L_K, and "piwae" its decoder
#: on L_K (Rainforth et al. 2018, Sec. 4; its encoder on MIWAE).
CURVE_BOUNDS = {"elbo": lambda K: 1, "iwae": lambda K: K, "piwae": lambda K: K}


def objective_of(model: Method):
    """The run's training objective: its full specification where the method declares one
    (``objective_spec``: the name and its parameters), else its name."""
    return getattr(model, "objective_spec", model.objective)


#: Samples per point (in draws of K) of a training objective estimated directly.
DIRECT_SAMPLES = 20


@torch.no_grad()
def training_bound(model: Method, x: Tensor, K: int, curve: dict, memory_mb: float) -> dict | None:
    """The bound the run was trained on, at its training K, per test point: the expectation of
    its objective's K-sample estimate. For a posterior with a density and the objectives of
    :data:`CURVE_BOUNDS`, L_1 or L_K from the test curve (``curve``: {K: per-point values});
    otherwise the objective itself (:func:`vaeinf.core.bounds.bound` on
    :meth:`Method.log_weights`, which for AVB puts the adversary in place of log q - log p: an
    estimate of its ELBO, not a bound), averaged over max(1, :data:`DIRECT_SAMPLES` // K)
    independent draws of K samples. None for an objective :func:`vaeinf.core.bounds.bound` does
    not know. Returns the summary, the objective, K, what the bound is and ``per_point``
    (N,)."""
    objective = objective_of(model)
    name = gaps.objective_name(objective)
    out = {"objective": name, "K": K}
    if model.posterior.has_density and name in CURVE_BOUNDS:
        k = CURVE_BOUNDS[name](K)
        values = curve[k]
        what = "ELBO (L_1)" if k == 1 else f"L_{k}"
        return out | summary(values) | {"bound": what, "source": "the test bound curve",
                                         "per_point": values}  # fmt: skip
    draws = max(1, DIRECT_SAMPLES // K)
    rows = max(1, int(memory_mb * 2**20 / bytes_per_row(model)))
    b = max(1, rows // (draws * K))
    values = torch.empty(len(x), dtype=torch.float64)
    try:
        for start in range(0, len(x), b):
            xb = x[start : start + b]
            log_w = model.log_weights(xb.repeat(draws, 1), K)[0]  # (K, draws * b)
            values[start : start + len(xb)] = (
                bounds.bound(log_w, model.objective_spec)
                .double()
                .view(draws, len(xb))
                .mean(0)
                .cpu()
            )
    except ValueError:
        return None
    what = gaps.bound_name(K, objective)
    if not model.posterior.has_density:
        what += " with the adversary in place of log q - log p (an estimate, not a bound)"
    return out | summary(values) | {"bound": what, "source": f"{draws} draws of K samples",
                                     "per_point": values}  # fmt: skip


def ais_and_gaps(
    model: Method, x: Tensor, log_px_is: Tensor, ev, memory_mb: float, K: int = 1
) -> tuple[dict, dict]:
    """The AIS / BDMC / gap-split block of metrics.json for the test points x, with the
    ``eval`` settings ``ev`` (see :class:`vaeinf.config.EvalConfig`), and its per-point values:
    AIS on the first ``ais_points`` of x (a fixed random sample of the test set, see
    :meth:`vaeinf.core.data.Dataset.subset`) beside the IS estimate on the same points
    (``log_px_is``, the IS estimate of every point of x), BDMC on ``bdmc_points`` simulated
    points in the same batches, and the gap split on the first ``gap_points`` under the ELBO
    and under the training bound (L_K for a run trained on it at K > 1). Returns ({}, {}) when
    ``ais_points`` is 0."""
    if ev.ais_points == 0:
        return {}, {}
    settings = ais.AISSettings(steps=ev.ais_steps, chains=ev.ais_chains, leapfrog=ev.ais_leapfrog)
    idx = torch.arange(min(ev.ais_points, len(x)))
    est, check = ais.log_likelihood_and_bdmc(model, x[idx], ev.bdmc_points, settings, memory_mb)
    lp, is_here = est.pop("per_point"), log_px_is[idx].double().cpu()
    out = {
        "ais": est
        | {
            "points": f"a fixed random sample of {len(idx)} test points",
            "is_same_points": summary(is_here) | {"K": ev.nll_k},
            # log p_AIS - log p_IS per point: both are stochastic lower bounds, so a positive
            # mean says AIS is the tighter.
            "minus_is": summary(lp - is_here) | {"K": ev.nll_k},
        }
    }
    if check is not None:
        out["ais"]["bdmc"] = check
    per_point = {"log_px_ais": lp}
    n_gap = min(ev.gap_points, len(idx))
    if n_gap == 0:
        return out, per_point
    xg = x[idx[:n_gap]]
    q = gaps.QStarSettings(
        max_steps=ev.qstar_steps, lr=ev.qstar_lr, tol=ev.qstar_tol, elbo_samples=ev.elbo_samples
    )
    t = time.perf_counter()
    # The bound the encoder was trained with; without a density (AVB) only its stand-in's ELBO.
    trained_k = K if model.posterior.has_density else 1
    objective = gaps.encoder_objective(objective_of(model))
    split = gaps.gap_split(model, xg, lp[:n_gap], q, memory_mb, trained_k, objective)
    pp = split.pop("per_point")
    out["gaps"] = split | {
        "seconds": time.perf_counter() - t,
        "points": f"the first {n_gap} of the AIS subset",
    }
    per_point |= {
        "gap_elbo_q_phi": pp["elbo_q_phi"],
        "gap_elbo_q_star": pp["own"],
        "gap_train_q_phi": pp.get("train_q_phi", pp["elbo_q_phi"]),
        "gap_train_q_star": pp.get("train_own", pp["own"]),
        "gap_gauss_q_star": pp["gaussian"],
    }
    return out, per_point
