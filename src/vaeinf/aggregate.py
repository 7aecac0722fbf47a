"""Aggregation of a study's runs: tidy tables and the paper's variables.

Input: the ``metrics.json`` of every run (written by :mod:`vaeinf.results`). Output:

``summary.csv``
    one row per run: a plain flattening of its metrics.json -- every scalar of ``metrics``
    under its dotted path (``test_nll.mean``, ``collapse.mutual_information.value``, ...), the
    resolved config under ``config.`` and the provenance under ``provenance.`` -- plus a few
    derived columns with short names (:data:`ALIASES`, ``test_LK``, ``bound_gap``, ``latent``).
    A scalar the evaluator adds appears as a column with no change here.
``bounds.csv``
    one row per (run, split, evaluation K): the L_K curve.
``per_dim.csv``
    one row per (run, latent dimension): KL(q(z_i|x) || p(z_i)) and Cov_x(E_q[z_i|x]).
``cost.csv``
    one row per (dataset, method, K): seconds per epoch from the cost rule (:mod:`vaeinf.cost`),
    the study's cost axis (training logs keep their own epoch times as a record).

The Markdown tables (:mod:`vaeinf.tables`) and ``_variables.yml`` are computed from these tables
only, so a paper can be rebuilt from the raw runs without retraining or re-evaluating.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from vaeinf.results import atomic_write_text

GRID = ["dataset", "method", "K", "seed"]

#: Short names of the summary columns the tables, figures and paper read: alias -> column of
#: the flattened metrics.json.
ALIASES = {
    "nll": "test_nll.mean",
    "nll_stderr": "test_nll.stderr",
    "nll_k": "test_nll.K",
    "test_points": "test_nll.n",
    "valid_LK_final": "time_per_epoch.final_val_LK",
    "epochs": "time_per_epoch.epochs",
    "sec_per_epoch": "time_per_epoch.median_s",
    "active_units": "active_units.count",
    "kl_total": "collapse.kl_total",
    "collapsed_units": "collapse.collapsed_units",
    "mutual_information": "collapse.mutual_information.value",
    "recon_bce": "reconstruction.bce.mean",
    "eval_seconds": "provenance.wall_seconds.total",
    "git_commit": "provenance.git_commit",
    "lr": "config.train.lr",
}


# ---------------------------------------------------------------------------------------------
# Tidy tables


def _bound(bounds: list[dict], split: str, K: int) -> float:
    for b in bounds:
        if b["split"] == split and b["K"] == K:
            return b["mean"]
    return math.nan


def flatten(doc: dict) -> dict:
    """Every scalar of a metrics.json document under its dotted path; lists are left to the
    long tables (bounds.csv, per_dim.csv)."""
    sections = {k: doc.get(k, {}) for k in ("metrics", "config", "provenance")}
    flat = pd.json_normalize(sections).iloc[0]
    row = {}
    for key, value in flat.items():
        if not isinstance(value, list | dict):
            row[key.removeprefix("metrics.")] = value
    return row


def run_rows(doc: dict, path: str = "") -> tuple[dict, list[dict], list[dict]]:
    """(summary row, bound rows, per-dimension rows) of one run's metrics.json document."""
    m = doc["metrics"]
    key = {k: m[k] for k in GRID}
    flat = flatten(doc)
    coll, au = m.get("collapse", {}), m.get("active_units", {})
    kl = coll.get("kl_per_dim") or []
    nll_k = m["test_nll"]["K"]
    l_k, l_top = _bound(m["bounds"], "test", m["K"]), _bound(m["bounds"], "test", nll_k)
    prov = doc.get("provenance", {})
    row = {
        **key,
        **{alias: flat.get(column, math.nan) for alias, column in ALIASES.items()},
        "latent": len(kl) or len(au.get("variance", [])),
        "test_LK": l_k,
        "test_Lnll": l_top,
        "bound_gap": l_top - l_k,
        "device": prov.get("gpu") or prov.get("device"),
        "path": path,
        **{k: v for k, v in flat.items() if k not in key},
    }
    bounds = [
        {**key, "split": b["split"], "eval_K": b["K"], "mean": b["mean"], "stderr": b["stderr"]}
        for b in m["bounds"]
    ]
    var = au.get("variance") or [math.nan] * len(kl)
    per_dim = [
        {**key, "dim": i, "kl": _num(k), "active_variance": _num(v)}
        for i, (k, v) in enumerate(zip(kl, var, strict=False))
    ]
    return row, bounds, per_dim


def _num(v) -> float:
    return math.nan if v is None else float(v)


def collect(paths: list[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read every metrics.json: (summary, bounds, per_dim) data frames sorted by the grid."""
    rows, bounds, dims = [], [], []
    for p in paths:
        r, b, d = run_rows(json.loads(Path(p).read_text()), str(p))
        rows.append(r)
        bounds += b
        dims += d
    summary = pd.DataFrame(rows)
    if len(summary):
        summary = summary.sort_values(GRID, kind="stable").reset_index(drop=True)
    return summary, pd.DataFrame(bounds), pd.DataFrame(dims)


def _write_csv(df: pd.DataFrame, path: str | Path) -> None:
    atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))


def write_aggregate(
    paths, cost_paths, summary: str, bounds: str, per_dim: str, cost: str
) -> pd.DataFrame:
    """The tidy tables of the runs' metrics.json, and the cost rule's tables of every dataset
    in one (``cost.csv``, see :mod:`vaeinf.cost`)."""
    s, b, d = collect(paths)
    _write_csv(s, summary)
    _write_csv(b, bounds)
    _write_csv(d, per_dim)
    _write_csv(pd.concat([pd.read_csv(p) for p in cost_paths], ignore_index=True), cost)
    return s


# ---------------------------------------------------------------------------------------------
# Paper variables


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _join(items) -> str:
    items = [str(i) for i in items]
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def paper_variables(summary: pd.DataFrame, config: dict) -> dict:
    """The numbers the paper's text quotes, as ``{{< var ... >}}`` keys.

    ``study.*`` describe the grid; ``result.*`` are computed on the first dataset of the study
    (``study.dataset``), averaging over seeds. Every key is always present (``n/a`` when a
    method the sentence names is not part of the study), so the text never breaks.
    """
    datasets, methods = list(config["datasets"]), list(config["methods"])
    ks, seeds = sorted(config["Ks"]), list(config["seeds"])
    run = config.get("run") or {}
    primary = datasets[0]
    df = summary[summary["dataset"] == primary]
    mean = df.groupby(["method", "K"])[
        ["nll", "active_units", "sec_per_epoch", "bound_gap", "kl_total", "mutual_information"]
    ].mean()
    nll_k = int(summary["nll_k"].iloc[0]) if len(summary) else run.get("eval", {}).get("nll_k")
    k_min, k_max = ks[0], ks[-1]

    def at(method, K, col):
        try:
            return float(mean.loc[(method, K), col])
        except KeyError:
            return math.nan

    best_method, best_K = mean["nll"].idxmin()
    worst_method, worst_K = mean["nll"].idxmax()
    # The gain of K for each method: NLL at the smallest K minus NLL at the largest.
    gains = {m: at(m, k_min, "nll") - at(m, k_max, "nll") for m in methods}
    gains = {m: g for m, g in gains.items() if np.isfinite(g)}
    top_gain = max(gains, key=gains.get) if gains else None
    # Cost of K: time per epoch at the largest over the smallest K, median over methods.
    ratios = [at(m, k_max, "sec_per_epoch") / at(m, k_min, "sec_per_epoch") for m in methods]
    ratios = [r for r in ratios if np.isfinite(r)]
    # Best method at the smallest K (what better inference buys without more samples).
    at_kmin = {m: at(m, k_min, "nll") for m in methods}
    best_kmin = min((m for m in at_kmin if np.isfinite(at_kmin[m])), key=at_kmin.get)
    latent = int(summary["latent"].iloc[0]) if len(summary) else None
    au = [at(m, k, "active_units") for m in methods for k in ks]
    sd = f"mean ± s.d. over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    return {
        "study": {
            "dataset": primary,
            "datasets": _join(datasets),
            "n_datasets": len(datasets),
            "methods": _join(methods),
            "n_methods": len(methods),
            "Ks": _join(ks),
            "K_min": k_min,
            "K_max": k_max,
            "n_seeds": len(seeds),
            "n_runs": len(datasets) * len(methods) * len(ks) * len(seeds),
            "nll_k": nll_k,
            "spread": sd,
            "latent": latent,
        },
        "result": {
            "best_method": best_method,
            "best_K": int(best_K),
            "best_nll": _fmt(at(best_method, best_K, "nll")),
            "worst_method": worst_method,
            "worst_K": int(worst_K),
            "worst_nll": _fmt(at(worst_method, worst_K, "nll")),
            "spread_nll": _fmt(at(worst_method, worst_K, "nll") - at(best_method, best_K, "nll")),
            "vae_nll_kmin": _fmt(at("vae", k_min, "nll")),
            "vae_nll_kmax": _fmt(at("vae", k_max, "nll")),
            "iwae_nll_kmin": _fmt(at("iwae", k_min, "nll")),
            "iwae_nll_kmax": _fmt(at("iwae", k_max, "nll")),
            "iwae_gain": _fmt(gains.get("iwae", math.nan)),
            "vae_gain": _fmt(gains.get("vae", math.nan)),
            "top_gain_method": top_gain or "n/a",
            "top_gain": _fmt(gains.get(top_gain, math.nan) if top_gain else math.nan),
            "best_method_kmin": best_kmin,
            "best_nll_kmin": _fmt(at_kmin[best_kmin]),
            "time_ratio": _fmt(float(np.median(ratios)) if ratios else math.nan, 1),
            "time_kmin": _fmt(
                float(np.nanmedian([at(m, k_min, "sec_per_epoch") for m in methods])), 3
            ),
            "time_kmax": _fmt(
                float(np.nanmedian([at(m, k_max, "sec_per_epoch") for m in methods])), 3
            ),
            "iwae_gap_kmin": _fmt(at("iwae", k_min, "bound_gap")),
            "iwae_gap_kmax": _fmt(at("iwae", k_max, "bound_gap")),
            "vae_active_kmin": _fmt(at("vae", k_min, "active_units"), 1),
            "vae_active_kmax": _fmt(at("vae", k_max, "active_units"), 1),
            "iwae_active_kmin": _fmt(at("iwae", k_min, "active_units"), 1),
            "iwae_active_kmax": _fmt(at("iwae", k_max, "active_units"), 1),
            "active_min": _fmt(float(np.nanmin(au)) if au else math.nan, 1),
            "active_max": _fmt(float(np.nanmax(au)) if au else math.nan, 1),
        },
    }


def write_variables(summary_csv: str | Path, config: dict, out: str | Path) -> dict:
    """Write Quarto's ``_variables.yml`` from the summary table and the study config."""
    variables = paper_variables(pd.read_csv(summary_csv), config)
    header = (
        "# Generated by the workflow (rule variables, vaeinf.aggregate.write_variables) from\n"
        "# results/summary.csv; do not edit. The paper quotes these as {{< var KEY >}}.\n"
    )
    atomic_write_text(out, header + yaml.safe_dump(variables, sort_keys=False, allow_unicode=True))
    return variables
