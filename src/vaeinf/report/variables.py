"""The paper's variables: the numbers and phrases its text quotes, as ``_variables.yml``.

Computed from the tidy tables only (``summary.csv`` and ``cost.csv`` of
:mod:`vaeinf.report.tidy`), so rewording a claim here or in :mod:`vaeinf.report.claims` rebuilds
the variables and the paper, never the tables or figures. The paper quotes each as
``{{< var KEY >}}`` (Quarto's variables; checked by :mod:`vaeinf.report.paper.check`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from vaeinf.report import claims
from vaeinf.report.text import join
from vaeinf.rundir import atomic_write_text

#: Columns of summary.csv (flattened metrics.json) and cost.csv the variables read.
NLL = "test_nll.mean"
NLL_K = "test_nll.K"
TEST_POINTS = "test_nll.n"
ACTIVE = "active_units.count"
BOUND_GAP = "bound_gap"
AIS_LOGP = "ais.mean"
AIS_MINUS_IS = "gaps.ais_minus_is.mean"
BDMC_GAP = "ais.bdmc.gap"
APPROX_GAP = "gaps.own_family.approximation_gap.mean"
AMORT_GAP = "gaps.own_family.amortization_gap.mean"
EPOCH_S = "epoch_s_fastest"
TEST_LK = "test_LK"
#: The gradient's SNR (vaeinf.evaluation.snr): the fitted slope of log SNR against log K of the
#: trained model, and the SNR at the training K at the start and the end of training; each the
#: bias-corrected root mean square over the part's parameters (see vaeinf.core.snr).
SNR_SLOPE = "snr.slope.{part}.rms.value"
SNR_AT = "snr.training.{stage}.{part}.rms"
#: Objectives compared with IWAE at the same samples (vaeinf.names.OBJECTIVES).
OTHER_OBJECTIVES = ("miwae", "ciwae", "piwae")


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


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
            "value": df[NLL].to_numpy(),
        }
    )
    claim["likelihood"] = {
        "best": claims.ranking(
            cells,
            "test NLL of the grid",
            name=lambda c: f"{c[0]} at K = {c[1]}",
        ),
        # The text names K before these phrases.
        "best_kmin": best(NLL, "test NLL", k_min),
        "best_kmax": best(NLL, "test NLL", k_max),
        "k_effect": k_change(NLL, claims.NLL, "test NLL"),
    }
    gain = df.pivot_table(index=["method", "seed"], columns="K", values=NLL)
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
                m: claims.paired(df, NLL, {"method": "vae", "K": k_min}, {"method": m, "K": k_min})
                for m in present
                if m != "vae"
            },
            vs_vae,
        )
    else:
        claim["likelihood"]["vs_vae_kmin"] = claims.Claim("n/a (no VAE in the study)", "no vae")
    claim["bound"] = {"k_effect": k_change(BOUND_GAP, claims.Words(), "bound gap")}
    claim["latent"] = {
        "k_effect": k_change(
            ACTIVE, claims.Words("rises", "falls", unit="units", digits=1), "active units"
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
    if has(AIS_MINUS_IS):
        claim["ais"]["is_vs_ais"] = claims.grouped(
            {m: claims.over_seeds(df, AIS_MINUS_IS, {"method": m, "K": k_max}) for m in present},
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


def _ablation_claims(
    df: pd.DataFrame, cost: pd.DataFrame | None, labels: dict
) -> tuple[dict, dict]:
    """(claim, basis) of the Ablations section: each named variant against its base method at
    the same K, paired over seeds (test NLL, training bound, active units), and its time per
    epoch against its base's (the cost rule's table)."""
    named = df[df["variant"] != df["method"]][["variant", "method", "K"]].drop_duplicates()
    pairs = {
        (labels.get(v, v), int(K)): (m, v, int(K)) for v, m, K in named.itertuples(index=False)
    }
    many_k = named.groupby("variant")["K"].nunique().gt(1).any()

    def name(key) -> str:
        return f"{key[0]} at K = {key[1]}" if many_k else key[0]

    def versus(column: str, what: str) -> dict:
        return {
            name(key): claims.paired(
                df,
                column,
                {"variant": m, "K": K},
                {"variant": v, "K": K},
                f"{what} of {v} − {m}, K = {K}",
            )
            for key, (m, v, K) in pairs.items()
        }

    na = claims.Claim("n/a (no ablations in this study)", "no variants")
    if not pairs:
        claim = dict.fromkeys(("nll", "bound", "active", "cost"), na)
    else:
        claim = {
            "nll": claims.grouped(versus(NLL, "test NLL"), claims.NLL),
            "bound": claims.grouped(versus(TEST_LK, "test L_K"), claims.Words("rises", "falls")),
            "active": claims.grouped(
                versus(ACTIVE, "active units"),
                claims.Words("rise", "fall", unit="units", digits=1),
            ),
            "cost": claims.cost_versus(
                cost,
                {name(k): (df["dataset"].iloc[0], m, v, K) for k, (m, v, K) in pairs.items()},
            )
            if cost is not None and "variant" in cost
            else claims.Claim("n/a (no cost table)", "no cost table"),
        }
    return {k: c.text for k, c in claim.items()}, {k: c.basis for k, c in claim.items()}


def _compute_claims(
    df: pd.DataFrame, curves: pd.DataFrame | None, methods: list[str], labels: dict
) -> tuple[dict, dict]:
    """(claim, basis) of training compute: the best method and K at three budgets of compute
    (:func:`claims.compute_budgets`), each method's turn in K (the test NLL, paired over
    seeds) and how many runs converged."""
    present = [m for m in methods if (df["method"] == m).any()]
    claim: dict = {
        "turn": {m: claims.k_turn(df, m, NLL, labels.get(m, m)) for m in present},
        "converged": claims.converged(df),
    }
    for i in range(3):
        claim[f"budget_{i + 1}"] = claims.Claim("n/a (no curves)", "no curves.csv")
    if curves is not None and len(curves):
        from vaeinf.report.tidy import labelled

        c = labelled(curves[curves["variant"] == curves["method"]], labels)
        unit = str(c["compute_unit"].iloc[0]).replace(" K=", " K = ")
        for i, b in enumerate(claims.compute_budgets(c)):
            claim[f"budget_{i + 1}"] = claims.best_at_budget(c, b, unit)
    claim["turns"] = claims.Claim(
        "; ".join(t.text for t in claim["turn"].values()) or "n/a",
        " | ".join(t.basis for t in claim["turn"].values()),
    )
    basis = {k: v.basis for k, v in claim.items() if isinstance(v, claims.Claim)}
    basis["turn"] = {k: v.basis for k, v in claim["turn"].items()}
    text = {k: v.text for k, v in claim.items() if isinstance(v, claims.Claim)}
    text["turn"] = {k: v.text for k, v in claim["turn"].items()}
    return text, basis


def _objective(df: pd.DataFrame) -> pd.Series:
    """Each run's objective: the summary's ``objective`` column, else its method's default."""
    from vaeinf.names import DEFAULT_OBJECTIVES

    default = df["method"].map(lambda m: DEFAULT_OBJECTIVES.get(m, ""))
    return df["objective"].fillna(default) if "objective" in df else default


def snr_variants(df: pd.DataFrame) -> dict[str, int]:
    """The variants of the SNR-vs-K figure and its claims, each at its largest training K:
    method vae, and method iwae trained on L_K (every estimator). variant -> K."""
    obj = _objective(df)
    d = df[(df["method"] == "vae") | ((df["method"] == "iwae") & (obj == "iwae"))]
    return {v: int(k) for v, k in d.groupby("variant", sort=False)["K"].max().items()}


def iwae_reference(df: pd.DataFrame, dataset: str, K: int, estimator: str) -> str | None:
    """The variant that trains IWAE on L_K with ``estimator`` at K (the method itself when it
    does), the reference of an objective at the same samples; None when the study has none."""
    obj = _objective(df)
    est = df["estimator"] if "estimator" in df else pd.Series("standard", index=df.index)
    d = df[
        (df["dataset"] == dataset)
        & (df["K"] == K)
        & (df["method"] == "iwae")
        & (obj == "iwae")
        & (est == estimator)
    ]
    names = list(dict.fromkeys(d["variant"]))
    return "iwae" if "iwae" in names else (names[0] if names else None)


def _tighter_bounds_claims(df: pd.DataFrame, labels: dict) -> tuple[dict, dict]:
    """(claim, basis) of the section "Are tighter bounds better?": the fitted slopes of the
    encoder's and the decoder's gradient SNR against K (each variant of :func:`snr_variants`,
    over seeds), the change of the encoder's SNR from the start to the end of training, and
    each objective of :data:`OTHER_OBJECTIVES` against IWAE at the same samples (test NLL,
    the bound, the encoder's and the decoder's SNR at the end of training; paired over seeds)."""
    na = claims.Claim("n/a (not measured in this study)", "no values in summary.csv")
    shown = snr_variants(df)

    def name(v: str) -> str:
        return labels.get(v, v)

    claim: dict = {}
    for part in ("encoder", "decoder"):
        column = SNR_SLOPE.format(part=part)
        if column not in df or df[column].notna().sum() == 0:
            claim[f"{part}_slope"] = na
            continue
        claim[f"{part}_slope"] = claims.trend(
            {
                name(v): claims.slope(
                    df, column, {"variant": v, "K": K}, f"{part} SNR slope of {v}, K = {K}"
                )
                for v, K in shown.items()
            },
            claims.SNR_SLOPE,
        )
    start, end = (SNR_AT.format(stage=s, part="encoder") for s in ("start", "end"))
    if start in df and end in df and df[end].notna().any():
        d = df.assign(snr_change=df[end] - df[start])
        claim["training"] = claims.grouped(
            {
                f"{name(v)} (K = {K})": claims.over_seeds(
                    d, "snr_change", {"variant": v, "K": K}, f"encoder SNR end − start, {v}"
                )
                for v, K in shown.items()
            },
            claims.Words("rises", "falls", unit="", digits=2),
        )
    else:
        claim["training"] = na

    obj = _objective(df)
    est = df["estimator"] if "estimator" in df else pd.Series("standard", index=df.index)
    others = df.assign(estimator=est)[obj.isin(OTHER_OBJECTIVES)]
    others = others[["dataset", "variant", "K", "estimator"]]
    pairs = {}
    for dataset, v, K, est in others.drop_duplicates().itertuples(index=False):
        ref = iwae_reference(df, dataset, int(K), est)
        if ref is not None:
            pairs[f"{name(v)} (against {name(ref)} at K = {int(K)})"] = (dataset, v, ref, int(K))

    def versus(column: str, what: str) -> dict:
        return {
            key: claims.paired(
                df,
                column,
                {"dataset": d, "variant": ref, "K": K},
                {"dataset": d, "variant": v, "K": K},
                f"{what} of {v} − {ref}, K = {K}",
            )
            for key, (d, v, ref, K) in pairs.items()
        }

    no_pair = claims.Claim(
        "n/a (no objective of Rainforth et al. beside IWAE at the same samples)", "no pairs"
    )
    snr_words = claims.Words(
        up="is higher",
        down="is lower",
        null="does not differ beyond seed-to-seed spread",
        same="is the same in every seed",
        unit="",
    )
    claim["objectives"] = {
        "nll": claims.grouped(versus(NLL, "test NLL"), claims.NLL) if pairs else no_pair,
        "bound": claims.grouped(versus(TEST_LK, "test L_K"), claims.Words("rises", "falls"))
        if pairs
        else no_pair,
    }
    for part in ("encoder", "decoder"):
        column = SNR_AT.format(stage="end", part=part)
        has = pairs and column in df and df[column].notna().any()
        claim["objectives"][f"{part}_snr"] = (
            claims.grouped(versus(column, f"{part} SNR at the end of training"), snr_words)
            if has
            else no_pair
        )

    def split(tree: dict) -> tuple[dict, dict]:
        text, basis = {}, {}
        for k, v in tree.items():
            if isinstance(v, dict):
                text[k], basis[k] = split(v)
            else:
                text[k], basis[k] = v.text, v.basis
        return text, basis

    return split(claim)


def _snr_settings(df: pd.DataFrame) -> dict:
    """The SNR measurement's settings as the paper states them ("n/a" where not measured)."""
    import json

    ks = _first(df, "config.eval.snr_ks")
    try:
        ks = join(json.loads(ks)) if isinstance(ks, str) else "n/a"
    except ValueError:
        ks = "n/a"
    draws = _first(df, "snr.settings.draws")
    return {
        "draws": draws,
        "points": _first(df, "snr.settings.points"),
        "ks": ks,
        "train_draws": _first(df, "snr.training.end.draws"),
        "train_points": _first(df, "snr.training.end.points"),
        "null_level": _fmt(math.sqrt(2 / (math.pi * draws))) if isinstance(draws, int) else "n/a",
    }


def paper_variables(
    summary: pd.DataFrame,
    config: dict,
    cost: pd.DataFrame | None = None,
    curves: pd.DataFrame | None = None,
) -> dict:
    """The numbers and phrases the paper's text quotes, as ``{{< var ... >}}`` keys.

    ``study.*`` describe the grid; ``result.*`` are numbers computed on the first dataset of the
    study (``study.dataset``), averaging over seeds; ``ais.*`` the AIS and gap-split settings and
    extremes; ``claim.*`` are the phrases that state a direction or a comparison, chosen by the
    runs (:mod:`vaeinf.report.claims`), and ``basis.*`` (same keys) the numbers and rule behind
    each. Times come from the cost rule's table ``cost`` (:mod:`vaeinf.study.cost`), not the
    training logs. Every key the text uses is always present (``n/a`` when a method the sentence
    names is not part of the study), so the text never breaks.
    """
    from vaeinf.study.grid import labels as study_labels
    from vaeinf.study.grid import runs

    datasets, methods = list(config["datasets"]), list(config["methods"])
    ks, seeds = sorted(config["Ks"]), list(config["seeds"])
    run = config.get("run") or {}
    primary = datasets[0]
    labels = study_labels(config)
    if "variant" not in summary:  # a study without variants
        summary = summary.assign(variant=summary["method"])
    every = summary[summary["dataset"] == primary]
    # The grid of methods: every variant's runs but the ablations' (see _ablation_claims).
    df = every[every["variant"] == every["method"]]
    mean = df.groupby(["method", "K"])[[NLL, ACTIVE]].mean()
    nll_k = int(summary[NLL_K].iloc[0]) if len(summary) else run.get("eval", {}).get("nll_k")
    k_min, k_max = ks[0], ks[-1]

    def at(method, K, col):
        try:
            return float(mean.loc[(method, K), col])
        except KeyError:
            return math.nan

    worst_method, worst_K = mean[NLL].idxmax()
    latent = int(summary["latent"].iloc[0]) if len(summary) else None
    au = [at(m, k, ACTIVE) for m in methods for k in ks]
    sd = f"mean ± s.d. over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"

    # Cost: the cost rule's seconds per epoch (one timing per method and K).
    c_every = cost[cost["dataset"] == primary] if cost is not None else None
    if c_every is not None and "variant" in c_every:
        c = c_every[c_every["variant"] == c_every["method"]]
    else:
        c = c_every
    sec = c.set_index(["method", "K"])[EPOCH_S] if c is not None else pd.Series()

    def secs(K):
        return [float(sec[(m, K)]) for m in methods if (m, K) in sec.index]

    vs_vae = (
        join(
            f"×{sec[(m, k_min)] / sec[('vae', k_min)]:.2f} for {m}"
            for m in methods
            if m != "vae" and (m, k_min) in sec.index
        )
        if ("vae", k_min) in sec.index
        else "n/a"
    )
    claim, basis = _claims(df, c, methods, ks, len(seeds))
    claim["ablations"], basis["ablations"] = _ablation_claims(every, c_every, labels)
    c_curves = curves[curves["dataset"] == primary] if curves is not None else None
    claim["compute"], basis["compute"] = _compute_claims(df, c_curves, methods, labels)
    claim["tighter"], basis["tighter"] = _tighter_bounds_claims(every, labels)
    named = list(config.get("variants") or {})
    trained = dict(zip(every["variant"], _objective(every), strict=True))
    objectives = [v for v in named if trained.get(v) in OTHER_OBJECTIVES]

    # AIS, BDMC and the gap split: settings and the extremes across the grid.
    has_ais = AIS_LOGP in df and df[AIS_LOGP].notna().any()
    looseness = (
        df.groupby(["method", "K"])[AIS_MINUS_IS].mean() if AIS_MINUS_IS in df else pd.Series()
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
        "ais_minus_is_min": _fmt(looseness.min()) if len(looseness) else "n/a",
        "ais_minus_is_max": _fmt(looseness.max()) if len(looseness) else "n/a",
    }
    return {
        "study": {
            "dataset": primary,
            "datasets": join(datasets),
            "n_datasets": len(datasets),
            "methods": join(methods),
            "n_methods": len(methods),
            "Ks": join(ks),
            "K_min": k_min,
            "K_max": k_max,
            "n_seeds": len(seeds),
            "seeds_phrase": "one seed" if len(seeds) == 1 else f"{len(seeds)} seeds",
            "n_runs": len(runs(config)),
            "n_grid_runs": sum(r.variant == r.method for r in runs(config)),
            "n_ablations": len(named),
            "ablations": join(labels[v] for v in named) if named else "none",
            "objectives": join(labels[v] for v in objectives) if objectives else "none",
            "n_objectives": len(objectives),
            "nll_k": nll_k,
            "test_points": _first(df, TEST_POINTS),
            "spread": sd,
            "latent": latent,
        },
        "result": {
            "worst_method": worst_method,
            "worst_K": int(worst_K),
            "worst_nll": _fmt(at(worst_method, worst_K, NLL)),
            "time_kmin": _fmt(float(np.median(secs(k_min))) if secs(k_min) else math.nan, 3),
            "time_kmax": _fmt(float(np.median(secs(k_max))) if secs(k_max) else math.nan, 3),
            "time_vs_vae_kmin": vs_vae,
            "active_min": _fmt(float(np.nanmin(au)) if au else math.nan, 1),
            "active_max": _fmt(float(np.nanmax(au)) if au else math.nan, 1),
        },
        "ais": ais,
        "snr": _snr_settings(every),
        "claim": claim,
        "basis": basis,
    }


def write_variables(
    summary_csv: str | Path,
    config: dict,
    out: str | Path,
    cost_csv: str | Path | None = None,
    curves_csv: str | Path | None = None,
) -> dict:
    """Write Quarto's ``_variables.yml`` from the summary table, the cost rule's table, the
    validation curves against compute and the study config."""
    cost = pd.read_csv(cost_csv) if cost_csv is not None else None
    curves = pd.read_csv(curves_csv) if curves_csv is not None else None
    variables = paper_variables(pd.read_csv(summary_csv), config, cost, curves)
    header = (
        "# Generated by the workflow (rule variables, vaeinf.report.variables.write_variables)\n"
        "# from results/summary.csv and results/cost.csv; do not edit. The paper quotes these as\n"
        "# {{< var KEY >}}; claim.* are phrases chosen by the runs, basis.* the numbers behind\n"
        "# each (vaeinf.report.claims).\n"
    )
    atomic_write_text(out, header + yaml.safe_dump(variables, sort_keys=False, allow_unicode=True))
    return variables
