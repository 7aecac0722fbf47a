"""Aggregation of a study's runs: tidy tables and the paper's variables.

Input: the ``metrics.json`` of every run (written by :mod:`vaeinf.rundir`). Output:

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
    one row per (dataset, method, K): seconds per epoch from the cost rule
    (:mod:`vaeinf.study.cost`),
    the study's cost axis (training logs keep their own epoch times as a record).

The Markdown tables (:mod:`vaeinf.report.tables`) and ``_variables.yml`` are computed from these
tables
only, so a paper can be rebuilt from the raw runs without retraining or re-evaluating.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from vaeinf.report import claims
from vaeinf.rundir import atomic_write_text

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
    in one (``cost.csv``, see :mod:`vaeinf.study.cost`)."""
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


#: Columns of summary.csv the AIS and gap-split statements read (flattened metrics.json).
AIS_LOGP = "ais.mean"
IS_MINUS_AIS = "gaps.is_minus_ais.mean"
BDMC_GAP = "ais.bdmc.gap"
APPROX_GAP = "gaps.own_family.approximation_gap.mean"
AMORT_GAP = "gaps.own_family.amortization_gap.mean"


def _first(df: pd.DataFrame, column: str):
    values = df[column].dropna().unique() if column in df else []
    if len(values) == 0:
        return "n/a"
    v = values[0].item() if isinstance(values[0], np.generic) else values[0]
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _claims(df: pd.DataFrame, cost: pd.DataFrame | None, methods: list[str], ks: list[int],
            n_seeds: int) -> tuple[dict, dict]:  # fmt: skip
    """(claim, basis): the phrases the Results and Discussion use, chosen by the runs of one
    dataset (see :mod:`vaeinf.report.claims`), and for each the numbers and rule behind it."""
    k_min, k_max = ks[0], ks[-1]
    present = [m for m in methods if (df["method"] == m).any()]
    across_k = f"from K = {k_min} to K = {k_max}"
    claim: dict = {"rule": claims.Claim(claims.rule_text(n_seeds), f"{n_seeds} seeds")}

    def k_change(column: str, words: claims.Words, what: str) -> claims.Claim:
        return claims.grouped(
            {
                m: claims.paired(
                    df,
                    column,
                    {"method": m, "K": k_min},
                    {"method": m, "K": k_max},
                    f"{what} of {m}, K = {k_max} − K = {k_min}",
                )
                for m in present
            },
            words,
        )

    def best(column: str, what: str, K: int, lower: bool = True) -> claims.Claim:
        values = claims.long_values(df, column, "method", {"K": K})
        return claims.ranking(values, what, lower_is_better=lower)

    # Likelihood: the best cell of the grid, the best method at each end of K, the effect of K.
    cells = pd.DataFrame(
        {
            "key": list(zip(df["method"], df["K"], strict=True)),
            "seed": df["seed"].to_numpy(),
            "value": df["nll"].to_numpy(),
        }
    )
    claim["likelihood"] = {
        "best": claims.ranking(
            cells,
            "test NLL of the grid",
            name=lambda c: f"{c[0]} at K = {c[1]}",
        ),
        # The text names K before these phrases.
        "best_kmin": best("nll", "test NLL", k_min),
        "best_kmax": best("nll", "test NLL", k_max),
        "k_effect": k_change("nll", claims.NLL, "test NLL"),
    }
    gain = df.pivot_table(index=["method", "seed"], columns="K", values="nll")
    if k_min in gain and k_max in gain:
        g = (gain[k_min] - gain[k_max]).rename("value").reset_index()
        claim["likelihood"]["top_gain"] = claims.ranking(
            g.rename(columns={"method": "key"}), f"gain in test NLL {across_k}", False
        )
    else:
        claim["likelihood"]["top_gain"] = claims.Claim("n/a (one K)", "one K")
    if "vae" in present:
        vs_vae = claims.Words(
            up="is higher than the VAE's",
            down="is lower than the VAE's",
            null="does not differ from the VAE's beyond seed-to-seed spread",
            same="equals the VAE's in every seed",
        )
        claim["likelihood"]["vs_vae_kmin"] = claims.grouped(
            {
                m: claims.paired(
                    df, "nll", {"method": "vae", "K": k_min}, {"method": m, "K": k_min}
                )
                for m in present
                if m != "vae"
            },
            vs_vae,
        )
    else:
        claim["likelihood"]["vs_vae_kmin"] = claims.Claim("n/a (no VAE in the study)", "no vae")
    claim["bound"] = {"k_effect": k_change("bound_gap", claims.Words(), "bound gap")}
    claim["latent"] = {
        "k_effect": k_change(
            "active_units", claims.Words("rises", "falls", unit="units", digits=1), "active units"
        )
    }
    claim["cost"] = {
        "trend": claims.cost_trend(cost, present)
        if cost is not None and len(cost)
        else claims.Claim("n/a (no cost table)", "no cost table")
    }
    # AIS against the IS estimate, BDMC, and the gap split (Cremer et al. 2018): n/a where the
    # study's evaluation left them out (eval.ais_points, bdmc_points or gap_points 0).
    na = claims.Claim("n/a (not evaluated in this study)", "no values in summary.csv")

    def has(column: str) -> bool:
        return column in df and bool(df[column].notna().any())

    claim["ais"] = {"is_vs_ais": na, "bdmc": na}
    if has(IS_MINUS_AIS):
        looser = df[["method", "K", "seed"]].assign(ais_minus_is=-df[IS_MINUS_AIS])
        claim["ais"]["is_vs_ais"] = claims.grouped(
            {
                m: claims.over_seeds(looser, "ais_minus_is", {"method": m, "K": k_max})
                for m in present
            },
            # Both are stochastic lower bounds of log p(x): the lower one is the looser.
            claims.Words(
                up="is looser than AIS",
                down="is tighter than AIS",
                null="agrees with AIS within seed-to-seed spread",
            ),
        )
    if has(BDMC_GAP):
        bdmc = df.dropna(subset=[BDMC_GAP])
        worst = bdmc.loc[bdmc[BDMC_GAP].idxmax()]
        # E[upper] >= log p(x) >= E[lower]: a negative gap is the noise of the two bounds.
        negative = int((bdmc[BDMC_GAP] < 0).sum())
        noise = (
            f"; negative in {negative} of them, which only the noise of the two stochastic "
            "bounds can cause"
            if negative
            else ""
        )
        claim["ais"]["bdmc"] = claims.Claim(
            f"at most {bdmc[BDMC_GAP].max():.3f} nats ({worst['method']} at "
            f"K = {int(worst['K'])}, seed {int(worst['seed'])}; mean over the "
            f"{len(bdmc)} runs {bdmc[BDMC_GAP].mean():.3f} nats{noise})",
            "BDMC gap per run: "
            + ", ".join(
                f"{m}/K={k}/seed={s}: {g:.4g}"
                for m, k, s, g in zip(
                    bdmc["method"], bdmc["K"], bdmc["seed"], bdmc[BDMC_GAP], strict=True
                )
            ),
        )
    claim["gaps"] = dict.fromkeys(("amort_best_kmin", "amort_best_kmax", "approx_k", "amort_k"), na)
    if has(AMORT_GAP):
        claim["gaps"] = {
            "amort_best_kmin": best(AMORT_GAP, "amortization gap", k_min),
            "amort_best_kmax": best(AMORT_GAP, "amortization gap", k_max),
            "approx_k": k_change(APPROX_GAP, claims.Words(), "approximation gap"),
            "amort_k": k_change(AMORT_GAP, claims.Words(), "amortization gap"),
        }

    def split(tree: dict) -> tuple[dict, dict]:
        text, basis = {}, {}
        for k, v in tree.items():
            if isinstance(v, dict):
                text[k], basis[k] = split(v)
            else:
                text[k], basis[k] = v.text, v.basis
        return text, basis

    return split(claim)


def paper_variables(summary: pd.DataFrame, config: dict, cost: pd.DataFrame | None = None) -> dict:
    """The numbers and phrases the paper's text quotes, as ``{{< var ... >}}`` keys.

    ``study.*`` describe the grid; ``result.*`` are numbers computed on the first dataset of the
    study (``study.dataset``), averaging over seeds; ``claim.*`` are the phrases that state a
    direction or a comparison, chosen by the runs (:mod:`vaeinf.report.claims`), and ``basis.*``
    (same
    keys) the numbers and rule behind each. Times come from the cost rule's table ``cost``
    (:mod:`vaeinf.study.cost`), not the training logs. Every key the text uses is always present
    (``n/a`` when a method the sentence names is not part of the study), so the text never
    breaks.
    """
    datasets, methods = list(config["datasets"]), list(config["methods"])
    ks, seeds = sorted(config["Ks"]), list(config["seeds"])
    run = config.get("run") or {}
    primary = datasets[0]
    df = summary[summary["dataset"] == primary]
    mean = df.groupby(["method", "K"])[
        ["nll", "active_units", "bound_gap", "kl_total", "mutual_information"]
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
    # Best method at the smallest K (what better inference buys without more samples).
    at_kmin = {m: at(m, k_min, "nll") for m in methods}
    best_kmin = min((m for m in at_kmin if np.isfinite(at_kmin[m])), key=at_kmin.get)
    latent = int(summary["latent"].iloc[0]) if len(summary) else None
    au = [at(m, k, "active_units") for m in methods for k in ks]
    sd = f"mean ± s.d. over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"

    # Cost: the cost rule's seconds per epoch (one timing per method and K).
    c = cost[cost["dataset"] == primary] if cost is not None else None
    sec = c.set_index(["method", "K"])["sec_per_epoch"] if c is not None else pd.Series()

    def secs(K):
        return [float(sec[(m, K)]) for m in methods if (m, K) in sec.index]

    ratios = [
        sec[(m, k_max)] / sec[(m, k_min)]
        for m in methods
        if (m, k_max) in sec.index and (m, k_min) in sec.index
    ]
    vs_vae = (
        _join(
            f"×{sec[(m, k_min)] / sec[('vae', k_min)]:.2f} for {m}"
            for m in methods
            if m != "vae" and (m, k_min) in sec.index
        )
        if ("vae", k_min) in sec.index
        else "n/a"
    )
    claim, basis = _claims(df, c, methods, ks, len(seeds))

    # AIS, BDMC and the gap split: settings and the extremes across the grid.
    has_ais = AIS_LOGP in df and df[AIS_LOGP].notna().any()
    looseness = (
        -df.groupby(["method", "K"])[IS_MINUS_AIS].mean() if IS_MINUS_AIS in df else pd.Series()
    )
    ais = {
        "steps": _first(df, "ais.settings.steps"),
        "chains": _first(df, "ais.settings.chains"),
        "leapfrog": _first(df, "ais.settings.leapfrog"),
        "transition": _first(df, "ais.settings.transition"),
        "schedule": _first(df, "ais.settings.schedule"),
        "points": _first(df, "ais.n"),
        "bdmc_points": _first(df, "ais.bdmc.n"),
        "gap_points": _first(df, "gaps.n"),
        "acceptance": _fmt(df["ais.acceptance"].mean()) if has_ais else "n/a",
        "qstar_steps": _first(df, "gaps.settings.max_steps"),
        "elbo_samples": _first(df, "gaps.settings.elbo_samples"),
        "is_minus_ais_min": _fmt(looseness.min()) if len(looseness) else "n/a",
        "is_minus_ais_max": _fmt(looseness.max()) if len(looseness) else "n/a",
    }
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
            "seeds_phrase": "one seed" if len(seeds) == 1 else f"{len(seeds)} seeds",
            "n_runs": len(datasets) * len(methods) * len(ks) * len(seeds),
            "nll_k": nll_k,
            "test_points": _first(df, "test_points"),
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
            "time_kmin": _fmt(float(np.median(secs(k_min))) if secs(k_min) else math.nan, 3),
            "time_kmax": _fmt(float(np.median(secs(k_max))) if secs(k_max) else math.nan, 3),
            "time_vs_vae_kmin": vs_vae,
            "iwae_gap_kmin": _fmt(at("iwae", k_min, "bound_gap")),
            "iwae_gap_kmax": _fmt(at("iwae", k_max, "bound_gap")),
            "vae_active_kmin": _fmt(at("vae", k_min, "active_units"), 1),
            "vae_active_kmax": _fmt(at("vae", k_max, "active_units"), 1),
            "iwae_active_kmin": _fmt(at("iwae", k_min, "active_units"), 1),
            "iwae_active_kmax": _fmt(at("iwae", k_max, "active_units"), 1),
            "active_min": _fmt(float(np.nanmin(au)) if au else math.nan, 1),
            "active_max": _fmt(float(np.nanmax(au)) if au else math.nan, 1),
        },
        "ais": ais,
        "claim": claim,
        "basis": basis,
    }


def write_variables(
    summary_csv: str | Path, config: dict, out: str | Path, cost_csv: str | Path | None = None
) -> dict:
    """Write Quarto's ``_variables.yml`` from the summary table, the cost rule's table and the
    study config."""
    cost = pd.read_csv(cost_csv) if cost_csv is not None else None
    variables = paper_variables(pd.read_csv(summary_csv), config, cost)
    header = (
        "# Generated by the workflow (rule variables, vaeinf.report.tidy.write_variables) from\n"
        "# results/summary.csv and results/cost.csv; do not edit. The paper quotes these as\n"
        "# {{< var KEY >}}; claim.* are phrases chosen by the runs, basis.* the numbers behind\n"
        "# each (vaeinf.report.claims).\n"
    )
    atomic_write_text(out, header + yaml.safe_dump(variables, sort_keys=False, allow_unicode=True))
    return variables
