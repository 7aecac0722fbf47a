"""The paper's variables: the numbers and phrases its text quotes, as ``_variables.yml``.

Computed from the tidy tables only (``summary.csv`` and ``cost.csv`` of
:mod:`vaeinf.report.tidy`), so rewording a claim here or in :mod:`vaeinf.report.claims` rebuilds
the variables and the paper, never the tables or figures. The paper quotes each as
``{{< var KEY >}}`` (Quarto's variables; checked by :mod:`vaeinf.report.paper.check`).
"""

from __future__ import annotations

import json
import math
import re
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
IS_SAME = "ais.is_same_points.mean"
AIS_MINUS_IS = "ais.minus_is.mean"
AIS_MINUS_IS_SE = "ais.minus_is.stderr"
BDMC_GAP = "ais.bdmc.gap"
#: The gap split the paper discusses: under the bound each encoder was trained with.
APPROX_GAP = "gaps.training_bound.approximation_gap.mean"
AMORT_GAP = "gaps.training_bound.amortization_gap.mean"
#: The same under the ELBO (Cremer et al. 2018's definition).
APPROX_GAP_ELBO = "gaps.own_family.approximation_gap.mean"
AMORT_GAP_ELBO = "gaps.own_family.amortization_gap.mean"
GAUSS_MINUS_Q = "gaps.gaussian.minus_q_phi.mean"
MI = "collapse.mutual_information.value"
KL_TOTAL = "collapse.kl_total"
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
            n_seeds: int, labels: dict | None = None) -> dict:  # fmt: skip
    """The phrases the Results and Discussion use, chosen by the runs of one dataset (see
    :mod:`vaeinf.report.claims`): a tree of :class:`vaeinf.report.claims.Claim`, each method
    named by its display label (``labels``: method -> label; the name itself where absent)."""
    labels = labels or {}

    def lab(m: str) -> str:
        return labels.get(m, m)

    k_min, k_max = ks[0], ks[-1]
    present = [m for m in methods if (df["method"] == m).any()]
    across_k = f"from K = {k_min} to K = {k_max}"
    claim: dict = {}

    def k_change(column: str, words: claims.Words, what: str) -> claims.Claim:
        return claims.grouped(
            {
                lab(m): claims.paired(
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
        return claims.ranking(
            values, what, lower_is_better=lower, name=lab,
            test_set=(df, column, lambda m: {"method": m, "K": K}),
        )  # fmt: skip

    def has(column: str) -> bool:
        return column in df and bool(df[column].notna().any())

    na = claims.Claim("n/a (not evaluated in this study)", "no values in summary.csv")

    # Likelihood: the best cell of the grid, the best method at each end of K, the effect of K
    # (IS on every test point).
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
            name=lambda c: f"{lab(c[0])} at K = {c[1]}",
            test_set=(df, NLL, lambda c: {"method": c[0], "K": c[1]}),
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
            g.rename(columns={"method": "key"}), f"gain in test NLL {across_k}", False, name=lab
        )
    else:
        claim["likelihood"]["top_gain"] = claims.Claim("n/a (one K)", "one K")
    if "vae" in present:
        vs_vae = claims.Words(
            up="is higher than the VAE's",
            down="is lower than the VAE's",
            null="does not differ from the VAE's beyond its uncertainty",
            same="equals the VAE's in every seed",
        )
        claim["likelihood"]["vs_vae_kmin"] = claims.grouped(
            {
                lab(m): claims.paired(
                    df, NLL, {"method": "vae", "K": k_min}, {"method": m, "K": k_min}
                )
                for m in present
                if m != "vae"
            },
            vs_vae,
        )
    else:
        claim["likelihood"]["vs_vae_kmin"] = claims.Claim("n/a (no VAE in the study)", "no vae")

    # The same rankings under IS and AIS on the AIS subset (the same points), and where they
    # disagree.
    for key in ("best_kmin_is", "best_kmax_is", "best_kmin_ais", "best_kmax_ais", "ranks"):
        claim["likelihood"][key] = na
    if has(AIS_LOGP) and has(IS_SAME):
        for K, end in ((k_min, "kmin"), (k_max, "kmax")):
            claim["likelihood"][f"best_{end}_is"] = best(IS_SAME, "IS estimate", K, lower=False)
            claim["likelihood"][f"best_{end}_ais"] = best(AIS_LOGP, "AIS estimate", K, lower=False)
        claim["likelihood"]["ranks"] = rank_agreement(df, present, ks, lab)

    claim["bound"] = {"k_effect": k_change(BOUND_GAP, claims.Words(), "bound gap")}
    claim["latent"] = {
        "k_effect": k_change(
            ACTIVE, claims.Words("rises", "falls", unit="units", digits=1), "active units"
        ),
        "mi_vs_kl": mi_versus_kl(df, lab),
        "active_collapsed": active_and_collapsed(df),
    }
    claim["cost"] = {
        "trend": claims.cost_trend(cost, present, lab)
        if cost is not None and len(cost)
        else claims.Claim("n/a (no cost table)", "no cost table")
    }
    # AIS against the IS estimate on the same points, BDMC, and the gap split (Cremer et al.
    # 2018): n/a where the study's evaluation left them out (eval.ais_points, bdmc_points or
    # gap_points 0).
    claim["ais"] = {"is_vs_ais": na, "agreement": na, "bdmc": na}
    if has(AIS_MINUS_IS):
        claim["ais"]["is_vs_ais"] = claims.grouped(
            {
                lab(m): claims.over_seeds(df, AIS_MINUS_IS, {"method": m, "K": k_max})
                for m in present
            },
            # Both are stochastic lower bounds of log p(x): the lower one is the looser.
            claims.Words(
                up="is looser than AIS",
                down="is tighter than AIS",
                null="agrees with AIS within its uncertainty",
            ),
        )
        claim["ais"]["agreement"] = ais_agreement(df, lab)
    if has(BDMC_GAP):
        claim["ais"]["bdmc"] = bdmc_claim(df, lab)
    gap_keys = ("amort_best_kmin", "amort_best_kmax", "approx_k", "amort_k", "amort_k_elbo",
                "yardstick", "flagged")  # fmt: skip
    claim["gaps"] = dict.fromkeys(gap_keys, na)
    if has(AMORT_GAP):
        claim["gaps"] = {
            "amort_best_kmin": best(AMORT_GAP, "amortization gap", k_min),
            "amort_best_kmax": best(AMORT_GAP, "amortization gap", k_max),
            "approx_k": k_change(APPROX_GAP, claims.Words(), "approximation gap"),
            "amort_k": k_change(AMORT_GAP, claims.Words(), "amortization gap"),
            "amort_k_elbo": k_change(AMORT_GAP_ELBO, claims.Words(), "ELBO amortization gap"),
            "yardstick": yardstick(df, present, k_max, lab),
            "flagged": flagged_gaps(df, lab),
        }
    return claim


def rank_agreement(df: pd.DataFrame, methods: list[str], ks: list[int], name=str) -> claims.Claim:
    """Where IS and AIS on the same points order the methods differently: per K, the pairs of
    methods whose order by the mean over seeds differs, with the paired difference under each;
    ``"order the methods alike at K = 1 and 5; at K = 50 swap IWAE and SA-VAE (IS puts ...)"``
    (``name``: method -> words). The caller puts the subject ("IS and AIS on the same points")
    in front."""
    same, swapped, basis = [], [], []
    for K in ks:
        d = df[df["K"] == K]
        m_is = d.groupby("method")[IS_SAME].mean().reindex(methods).dropna()
        m_ais = d.groupby("method")[AIS_LOGP].mean().reindex(methods).dropna()
        common = [m for m in methods if m in m_is.index and m in m_ais.index]
        order_is = sorted(common, key=lambda m: -m_is[m])
        order_ais = sorted(common, key=lambda m: -m_ais[m])
        basis.append(f"K = {K}: IS order {', '.join(order_is)}; AIS order {', '.join(order_ais)}")
        # A pair disagrees when the two estimates put it in strictly opposite orders.
        pairs = [
            (a, b)
            for i, a in enumerate(order_is)
            for b in order_is[i + 1 :]
            if (m_is[a] - m_is[b]) * (m_ais[a] - m_ais[b]) < 0
        ]
        if not pairs:
            same.append(K)
            continue
        words = []
        for a, b in pairs:
            e_is = claims.paired(df, IS_SAME, {"method": b, "K": K}, {"method": a, "K": K},
                                 f"IS {a} − {b}, K = {K}")  # fmt: skip
            e_ais = claims.paired(df, AIS_LOGP, {"method": b, "K": K}, {"method": a, "K": K},
                                  f"AIS {a} − {b}, K = {K}")  # fmt: skip
            words.append(
                f"{name(a)} and {name(b)} (IS puts {name(a)} higher by "
                f"{e_is.pm('nats', signed=True)}, "
                f"{'resolved' if e_is.resolved else 'within its uncertainty'}; AIS by "
                f"{e_ais.pm('nats', signed=True)}, "
                f"{'resolved' if e_ais.resolved else 'within its uncertainty'})"
            )
            basis += [e_is.basis(), e_ais.basis()]
        swapped.append(f"at K = {K} swap {join(words)}")
    parts = []
    if same:
        parts.append(f"order the methods alike at K = {join(same)}")
    parts += swapped
    text = "; ".join(parts) if parts else "cannot be compared: no K has both estimates"
    return claims.Claim(text, "; ".join(basis))


def ais_agreement(df: pd.DataFrame, name=str) -> claims.Claim:
    """How well IS and AIS on the same points agree over the runs: the mean over runs of
    log p_AIS - log p_IS with its standard error over runs, its range, and the runs below -3 of
    their own paired standard errors (``"+0.004 ± 0.003 nats (mean over the 54 runs; from
    −0.05 to +0.06), no run below −3 standard errors"``)."""
    d = df.dropna(subset=[AIS_MINUS_IS])
    v = d[AIS_MINUS_IS].to_numpy(float)
    z = v / d[AIS_MINUS_IS_SE].to_numpy(float)
    below = d[z < -3]
    se = float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    worst = ", ".join(
        f"{name(r.method)} at K = {int(r.K)}, seed {int(r.seed)}" for r in below.itertuples()
    )
    tail = (
        "no run below −3 of its paired standard errors"
        if below.empty
        else f"{len(below)} run{'s' if len(below) > 1 else ''} below −3 of its paired "
        f"standard errors ({worst})"
    )
    text = (
        f"{np.mean(v):+.3f} ± {se:.3f} nats (mean ± s.e. over the {len(v)} runs; per run from "
        f"{v.min():+.3f} to {v.max():+.3f}), {tail}"
    ).replace("-", "−")
    basis = "log p_AIS − log p_IS per run (z = mean / paired s.e.): " + ", ".join(
        f"{r.method}/K={int(r.K)}/seed={int(r.seed)}: {a:+.4g} (z {b:+.2f})"
        for r, a, b in zip(d.itertuples(), v, z, strict=True)
    )
    return claims.Claim(text, basis)


def bdmc_claim(df: pd.DataFrame, name=str) -> claims.Claim:
    """The BDMC gap over the runs: mean ± s.e. over runs and the largest."""
    bdmc = df.dropna(subset=[BDMC_GAP])
    g = bdmc[BDMC_GAP].to_numpy(float)
    worst = bdmc.loc[bdmc[BDMC_GAP].idxmax()]
    se = float(np.std(g, ddof=1) / math.sqrt(len(g))) if len(g) > 1 else math.nan
    # E[upper] >= log p(x) >= E[lower]: a negative gap is the noise of the two bounds.
    negative = int((g < 0).sum())
    noise = (
        f"; negative in {negative} runs, which only the noise of the two stochastic bounds "
        "can cause"
        if negative
        else ""
    )
    text = (
        f"{g.mean():.3f} ± {se:.3f} nats on average over the {len(g)} runs, at most "
        f"{g.max():.3f} nats ({name(worst['method'])} at K = {int(worst['K'])}, seed "
        f"{int(worst['seed'])}){noise}"
    )
    basis = "BDMC gap per run: " + ", ".join(
        f"{m}/K={k}/seed={s}: {v:.4g}"
        for m, k, s, v in zip(bdmc["method"], bdmc["K"], bdmc["seed"], g, strict=True)
    )
    return claims.Claim(text, basis)


def flagged_gaps(df: pd.DataFrame, name=str) -> claims.Claim:
    """The runs whose approximation or amortization gap (either bound) is below -3 standard
    errors (``gaps.flags``), or that none is."""
    col = "gaps.flagged"
    if col not in df:
        return claims.Claim("n/a (not evaluated)", "no gaps.flagged column")
    d = df.dropna(subset=[col])
    bad = d[d[col].astype(bool)]
    if bad.empty:
        return claims.Claim(
            f"in none of the {len(d)} runs is an approximation or amortization gap below −3 "
            "standard errors",
            f"gaps.flagged false in all {len(d)} runs",
        )
    who = join(f"{name(r.method)} at K = {int(r.K)}, seed {int(r.seed)}" for r in bad.itertuples())
    return claims.Claim(
        f"in {len(bad)} of the {len(d)} runs a gap lies below −3 standard errors, and those "
        f"runs are flagged ({who})",
        f"gaps.flagged true for {who}",
    )


def yardstick(df: pd.DataFrame, methods: list[str], K: int, name=str) -> claims.Claim:
    """The best diagonal Gaussian against each trained posterior under the ELBO, signed, at K
    (``gaps.gaussian.minus_q_phi``): negative where the posterior's family beats every
    Gaussian."""
    if not (GAUSS_MINUS_Q in df and df[GAUSS_MINUS_Q].notna().any()):
        return claims.Claim("n/a (not evaluated)", "no values")
    return claims.grouped(
        {name(m): claims.over_seeds(df, GAUSS_MINUS_Q, {"method": m, "K": K}) for m in methods},
        claims.Words(
            up="is above the trained posterior's",
            down="is below the trained posterior's",
            null="does not differ from the trained posterior's beyond its uncertainty",
        ),
    )


def mi_versus_kl(df: pd.DataFrame, name=str) -> claims.Claim:
    """Whether the mutual information is at most the KL in every run where both exist (the
    identity E_x KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z)))."""
    col = "collapse.mutual_information.below_kl"
    d = df.dropna(subset=[c for c in (MI, KL_TOTAL) if c in df])
    if col not in d or d.empty:
        return claims.Claim("n/a (no run has both)", "no values")
    d = d.dropna(subset=[col])
    bad = d[~d[col].astype(bool)]
    margin = (d[KL_TOTAL] - d[MI]).to_numpy(float)
    basis = "KL − MI per run: " + ", ".join(
        f"{r.method}/K={int(r.K)}/seed={int(r.seed)}: {v:+.4g}"
        for r, v in zip(d.itertuples(), margin, strict=True)
    )
    if bad.empty:
        return claims.Claim(
            f"is below the KL in every one of the {len(d)} runs where both are defined "
            f"(KL − MI from {margin.min():.2f} to {margin.max():.2f} nats)",
            basis,
        )
    who = join(f"{name(r.method)} at K = {int(r.K)}, seed {int(r.seed)}" for r in bad.itertuples())
    return claims.Claim(f"exceeds the KL in {len(bad)} of {len(d)} runs ({who})", basis)


def active_and_collapsed(df: pd.DataFrame) -> claims.Claim:
    """The units counted both active and collapsed over the runs (none by construction, see
    :mod:`vaeinf.evaluation.latent`)."""
    col = "collapse.active_and_collapsed"
    if col not in df:
        return claims.Claim("n/a", "no values")
    total = int(pd.to_numeric(df[col], errors="coerce").fillna(0).sum())
    text = (
        "no unit of any run is both active and collapsed"
        if total == 0
        else f"{total} units are counted both active and collapsed"
    )
    return claims.Claim(text, f"sum of {col} over {len(df)} runs: {total}")


def _as_tree(text: dict, basis: dict) -> dict:
    """The tree of :class:`claims.Claim` of a (text, basis) pair of trees (see :func:`_split`)."""
    return {
        k: _as_tree(v, basis[k]) if isinstance(v, dict) else claims.Claim(v, basis[k])
        for k, v in text.items()
    }


def _split(tree: dict) -> tuple[dict, dict]:
    """(text, basis) trees of a tree of claims."""
    text, basis = {}, {}
    for k, v in tree.items():
        if isinstance(v, dict):
            text[k], basis[k] = _split(v)
        else:
            text[k], basis[k] = v.text, v.basis
    return text, basis


def _ablation_claims(df: pd.DataFrame, cost: pd.DataFrame | None, labels: dict) -> dict:
    """The claims of the Ablations section: each named variant against its base method at the
    same K, paired over seeds (test NLL, training bound, active units), and its time per epoch
    against its base's (the cost rule's table)."""
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
    return claim


def compute_unit(curves: pd.DataFrame, labels: dict) -> str:
    """The unit of compute in words: ``"vae K=1"`` -> ``"VAE K = 1"`` (display names)."""
    method, _, k = str(curves["compute_unit"].iloc[0]).partition(" K=")
    from vaeinf.names import LABELS

    name = labels.get(method) or LABELS.get(method, method)
    return f"{name} K = {k}" if k else name


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
        unit = compute_unit(c, labels)
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


def _levers(df: pd.DataFrame, every: pd.DataFrame, cost: pd.DataFrame | None,
            ks: list[int], labels: dict) -> list[tuple[str, claims.Estimate, float]]:  # fmt: skip
    """Every change the study tests against its baseline, as (words, the paired change of the
    test NLL, the ratio of the times per epoch): more samples (K = min to max) for each method,
    each richer posterior instead of the VAE at the smallest K, each ablation instead of its
    base and each of Rainforth et al.'s objectives instead of IWAE at the same samples. The
    estimates are those of the Results' claims (same labels, hence the same tests of the
    family)."""
    k_min, k_max = ks[0], ks[-1]
    present = [m for m in labels if (df["method"] == m).any() and (df["variant"] == m).any()]
    name = lambda v: labels.get(v, v)  # noqa: E731
    sec = {}
    if cost is not None and "variant" in cost:
        sec = {
            (v, int(K)): float(t)
            for v, K, t in cost[["variant", "K", EPOCH_S]].itertuples(index=False)
        }

    def ratio(a: tuple, b: tuple) -> float:
        return sec[b] / sec[a] if a in sec and b in sec else math.nan

    out = []
    for m in present:
        est = claims.paired(
            df, NLL, {"method": m, "K": k_min}, {"method": m, "K": k_max},
            f"test NLL of {m}, K = {k_max} − K = {k_min}",
        )  # fmt: skip
        out.append(
            (f"K = {k_max} rather than {k_min} for {name(m)}", est, ratio((m, k_min), (m, k_max)))
        )
    for m in present:
        if m != "vae" and "vae" in present:
            est = claims.paired(df, NLL, {"method": "vae", "K": k_min}, {"method": m, "K": k_min})
            out.append(
                (
                    f"{name(m)} rather than the VAE at K = {k_min}",
                    est,
                    ratio(("vae", k_min), (m, k_min)),
                )
            )
    named = every[every["variant"] != every["method"]]
    obj = _objective(every)
    for v, m, K in named[["variant", "method", "K"]].drop_duplicates().itertuples(index=False):
        K = int(K)
        if obj[every["variant"] == v].isin(OTHER_OBJECTIVES).any():
            est_v = (
                every.loc[every["variant"] == v, "estimator"].iloc[0]
                if "estimator" in every
                else "standard"
            )
            ref = iwae_reference(every, every["dataset"].iloc[0], K, est_v)
            if ref is None:
                continue
            d = every["dataset"].iloc[0]
            est = claims.paired(
                every, NLL, {"dataset": d, "variant": ref, "K": K},
                {"dataset": d, "variant": v, "K": K}, f"test NLL of {v} − {ref}, K = {K}",
            )  # fmt: skip
            out.append(
                (f"{name(v)} rather than {name(ref)} at K = {K}", est, ratio((ref, K), (v, K)))
            )
        else:
            est = claims.paired(
                every, NLL, {"variant": m, "K": K}, {"variant": v, "K": K},
                f"test NLL of {v} − {m}, K = {K}",
            )  # fmt: skip
            out.append((f"{name(v)} rather than {name(m)} at K = {K}", est, ratio((m, K), (v, K))))
    return [x for x in out if x[1].n > 0]


def grouped(words: list[str]) -> str:
    """Lever phrases (:func:`_levers`) that share their baseline in one phrase each: "K = 50
    rather than 1 for VAE and IWAE", "IWAE and Flow rather than the VAE at K = 1"; groups
    apart by semicolons when any holds a list."""
    groups: dict[tuple[str, str], list[str]] = {}
    for w in words:
        if m := re.fullmatch(r"(K = \S+ rather than \S+ for )(.+)", w):
            groups.setdefault(("for", m[1]), []).append(m[2])
        elif m := re.fullmatch(r"(.+?)( rather than .+ at K = \S+)", w):
            groups.setdefault(("at", m[2]), []).append(m[1])
        else:
            groups.setdefault(("", w), [])
    phrases = [
        common + join(subjects) if kind == "for" else join(subjects) + common if kind else common
        for (kind, common), subjects in groups.items()
    ]
    several = any(len(subjects) > 1 for subjects in groups.values())
    return "; ".join(phrases) if several and len(phrases) > 1 else join(phrases)


def conclusion_levers(
    levers: list[tuple[str, claims.Estimate, float]], top: int = 3
) -> claims.Claim:
    """What paid and what did not, over every lever (:func:`_levers`): how many lowered the
    test NLL beyond its uncertainty, the ``top`` largest gains with their cost, and the rest."""
    if not levers:
        return claims.Claim("n/a (no paired comparisons)", "no levers")

    def times(r: float) -> str:
        return f", at ×{r:.2g} the time per epoch" if math.isfinite(r) else ""

    paid = sorted((x for x in levers if x[1].resolved and x[1].mean < 0), key=lambda x: x[1].mean)
    worse = [x for x in levers if x[1].resolved and x[1].mean > 0]
    null = [x for x in levers if not x[1].resolved]
    parts = [
        f"{len(paid)} of the {len(levers)} changes the study tests lowered the test NLL "
        "beyond its uncertainty"
    ]
    if paid:
        best = join(f"{w} (by {e.pm('nats', absolute=True)}{times(r)})" for w, e, r in paid[:top])
        parts[0] += f"; the largest gains came from {best}" if len(paid) > 1 else f": {best}"
    if worse:
        parts.append("it rose for " + join(f"{w} ({e.pm('nats')})" for w, e, _ in worse))
    if null:
        parts.append(
            "it did not change beyond its uncertainty for " + grouped([w for w, _, _ in null])
        )
    basis = " | ".join(f"{w}: {e.basis()}; time ratio {r:.3g}" for w, e, r in levers)
    return claims.Claim("; ".join(parts), basis)


def conclusion_budget(curves: pd.DataFrame | None, labels: dict) -> claims.Claim:
    """Which (method, K) has the highest mean validation bound at the smallest and at the
    largest budget of :func:`claims.compute_budgets` (the Results state the margins)."""
    if curves is None or curves.empty:
        return claims.Claim("n/a (no curves)", "no curves.csv")
    from vaeinf.report.tidy import labelled

    c = labelled(curves[curves["variant"] == curves["method"]], labels)
    budgets = claims.compute_budgets(c)
    if not budgets:
        return claims.Claim("n/a (no budgets)", "no budgets")
    unit = compute_unit(c, labels)
    winners = []
    for b in (budgets[0], budgets[-1]):
        v = claims.at_budget(c, b).groupby(["label", "K"])["val_bound"].mean()
        label, K = v.idxmax()
        winners.append((b, f"{label} at K = {K}", float(v.max())))
    (b0, w0, v0), (b1, w1, v1) = winners
    if w0 == w1:
        text = (
            f"{w0} leads from the smallest budget ({b0:,.0f} {unit} steps) to the largest "
            f"({b1:,.0f})"
        )
    else:
        text = (
            f"with little compute ({b0:,.0f} {unit} steps) {w0} leads, and with the most "
            f"({b1:,.0f}) {w1}"
        )
    return claims.Claim(
        text, f"highest mean validation bound: {w0} {v0:.4g} at {b0:g}; {w1} {v1:.4g} at {b1:g}"
    )


def abstract_claim(
    df: pd.DataFrame, levers: list, n_runs: int, agree: float, labels: dict
) -> claims.Claim:
    """The abstract's result: the lowest test NLL of the grid, the change that lowered it most,
    and how closely IS and AIS agree."""
    mean = df.groupby(["method", "K"])[NLL].mean()
    if mean.empty:
        return claims.Claim("n/a (no runs)", "no runs")
    (m, K), value = mean.idxmin(), float(mean.min())
    text = (
        f"Over {n_runs} runs, {labels.get(m, m)} at K = {K} reaches the lowest test NLL, "
        f"{value:.2f} nats"
    )
    paid = sorted((x for x in levers if x[1].resolved and x[1].mean < 0), key=lambda x: x[1].mean)
    if paid:
        w, e, r = paid[0]
        text += f"; the largest gain, {e.pm('nats', absolute=True)}, comes from {w}"
        if math.isfinite(r):
            text += f" at ×{r:.2g} the time per epoch"
    if math.isfinite(agree):
        text += f"; importance sampling and AIS agree within {agree:.2f} nats on the same points"
    basis = f"mean test NLL by method and K: {mean.round(3).to_dict()}; " + (
        f"largest resolved gain: {paid[0][1].basis()}" if paid else "no resolved gain"
    )
    return claims.Claim(text, basis)


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


def _tighter_bounds_claims(df: pd.DataFrame, labels: dict) -> dict:
    """The tree of claims of the section "Are tighter bounds better?": the fitted slopes of the
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
    return claim


def _value_text(values: pd.Series) -> str:
    """The setting the runs used, as text: ``true``/``false`` for flags, the values joined with
    "or" where runs differ, ``n/a`` where none recorded it."""
    out = []
    for v in values.dropna().unique():
        if isinstance(v, (bool, np.bool_)):
            v = "true" if v else "false"
        elif isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(str(v))
    return join(sorted(out), "or") if out else "n/a"


def run_settings(every: pd.DataFrame) -> dict:
    """What the runs ran with, from their resolved configs (the Methods quote these, so that
    they describe the runs, and the manuscript check compares its words with them): the
    estimators and objectives of all runs, and per base method the ``method_options`` of its
    own runs (not its ablations')."""
    prefix = "config.method_options."
    out: dict = {
        "estimators": _value_text(every["estimator"]) if "estimator" in every else "n/a",
        "objectives": _value_text(_objective(every)) if len(every) else "n/a",
    }
    for method, g in every[every["variant"] == every["method"]].groupby("method", sort=False):
        out[method] = {
            c[len(prefix) :]: _value_text(g[c])
            for c in g.columns
            if c.startswith(prefix) and g[c].notna().any()
        }
    # A method the study did not run: its defaults, so that the text's keys always exist.
    import dataclasses

    from vaeinf.config import METHOD_OPTIONS

    for method, options in METHOD_OPTIONS.items():
        if method not in out:
            defaults = dataclasses.asdict(options())
            out[method] = {
                k: "n/a"
                if v is None
                else _value_text(pd.Series([json.dumps(v) if isinstance(v, list) else v]))
                for k, v in defaults.items()
            }
    return out


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
    per_point: pd.DataFrame | None = None,
) -> dict:
    """The numbers and phrases the paper's text quotes, as ``{{< var ... >}}`` keys.

    ``study.*`` describe the grid; ``result.*`` are numbers computed on the first dataset of the
    study (``study.dataset``), averaging over seeds; ``ais.*`` the AIS and gap-split settings and
    extremes; ``claim.*`` are the phrases that state a direction or a comparison, chosen by the
    runs (:mod:`vaeinf.report.claims`), and ``basis.*`` (same keys) the numbers and rule behind
    each. Times come from the cost rule's table ``cost`` (:mod:`vaeinf.study.cost`), not the
    training logs. Every key the text uses is always present (``n/a`` when a method the sentence
    names is not part of the study), so the text never breaks.

    ``per_point`` (the runs' per-point values, ``per_point.csv``) adds the test set's part to
    every uncertainty, and every test behind a claim is one of a family held at a familywise
    error rate by Holm's procedure (:mod:`vaeinf.report.claims`): the claims are computed
    twice, first to collect the tests, then to word them by their Holm decisions.
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
            f"×{sec[(m, k_min)] / sec[('vae', k_min)]:.2f} for {labels.get(m, m)}"
            for m in methods
            if m != "vae" and (m, k_min) in sec.index
        )
        if ("vae", k_min) in sec.index
        else "n/a"
    )
    c_curves = curves[curves["dataset"] == primary] if curves is not None else None

    same_points = (
        df.groupby(["method", "K"])[AIS_MINUS_IS].mean() if AIS_MINUS_IS in df else pd.Series()
    )
    agree = float(same_points.abs().max()) if len(same_points) else math.nan

    def all_claims() -> dict:
        tree = _claims(df, c, methods, ks, len(seeds), labels)
        tree["ablations"] = _ablation_claims(every, c_every, labels)
        tree["compute"] = _as_tree(*_compute_claims(df, c_curves, methods, labels))
        tree["tighter"] = _tighter_bounds_claims(every, labels)
        levers = _levers(df, every, c_every, ks, labels)
        tree["conclusion"] = {
            "levers": conclusion_levers(levers),
            "budget": conclusion_budget(c_curves, labels),
        }
        tree["abstract"] = {"result": abstract_claim(df, levers, len(runs(config)), agree, labels)}
        return tree

    with claims.points(per_point):
        with claims.family() as fam:
            all_claims()
        fam.decisions = fam.holm()
        with claims.family(fam):
            tree = all_claims()
    tree["rule"] = claims.Claim(
        claims.rule_text(len(seeds), fam.size), f"{len(seeds)} seeds, {fam.size} tests"
    )
    claim, basis = _split(tree)
    named = list(config.get("variants") or {})
    trained = dict(zip(every["variant"], _objective(every), strict=True))
    objectives = [v for v in named if trained.get(v) in OTHER_OBJECTIVES]

    # AIS, BDMC and the gap split: settings and the extremes across the grid.
    has_ais = AIS_LOGP in df and df[AIS_LOGP].notna().any()
    looseness = (
        df.groupby(["method", "K"])[AIS_MINUS_IS].mean() if AIS_MINUS_IS in df else pd.Series()
    )
    bdmc = df[BDMC_GAP].dropna() if BDMC_GAP in df else pd.Series(dtype=float)
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
        "pilot_fraction": _first(df, "ais.settings.pilot_fraction"),
        "pilot_chains": _first(df, "ais.settings.pilot_chains"),
        "ais_minus_is_min": _fmt(looseness.min()) if len(looseness) else "n/a",
        "ais_minus_is_max": _fmt(looseness.max()) if len(looseness) else "n/a",
        # Over the runs: how far apart IS and AIS are on the same points, and the BDMC gap.
        "agree_within": _fmt(looseness.abs().max()) if len(looseness) else "n/a",
        "bdmc_mean": _fmt(bdmc.mean(), 3) if len(bdmc) else "n/a",
        "bdmc_max": _fmt(bdmc.max(), 3) if len(bdmc) else "n/a",
        "moment_samples": _first(df, "config.eval.moment_samples"),
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
            # The runs of the image figures (the workflow's get_sample_runs).
            "sample_K": int((config.get("paper") or {}).get("sample_K") or k_max),
            "sample_seed": seeds[0],
        },
        "result": {
            "worst_method": labels.get(worst_method, worst_method),
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
        "settings": run_settings(every),
        "claim": claim,
        "basis": basis,
    }


def write_variables(
    summary_csv: str | Path,
    config: dict,
    out: str | Path,
    cost_csv: str | Path | None = None,
    curves_csv: str | Path | None = None,
    per_point_csv: str | Path | None = None,
) -> dict:
    """Write Quarto's ``_variables.yml`` from the summary table, the cost rule's table, the
    validation curves against compute, the runs' per-point values and the study config."""
    cost = pd.read_csv(cost_csv) if cost_csv is not None else None
    curves = pd.read_csv(curves_csv) if curves_csv is not None else None
    per_point = pd.read_csv(per_point_csv) if per_point_csv is not None else None
    variables = paper_variables(pd.read_csv(summary_csv), config, cost, curves, per_point)
    header = (
        "# Generated by the workflow (rule variables, vaeinf.report.variables.write_variables)\n"
        "# from results/summary.csv, per_point.csv and cost.csv; do not edit. The paper quotes\n"
        "# these as {{< var KEY >}}; claim.* are phrases chosen by the runs, basis.* the numbers\n"
        "# behind each (vaeinf.report.claims).\n"
    )
    atomic_write_text(out, header + yaml.safe_dump(variables, sort_keys=False, allow_unicode=True))
    return variables
