"""The phrases the paper's findings take (vaeinf.report.claims): paired differences over seeds, the
decision rule, rankings with their margin, the cost trend; the claim variables and their check.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from vaeinf.report import claims, variables
from vaeinf.report.paper.check import ManuscriptError, check, write_check
from vaeinf.report.variables import NLL, paper_variables


def runs(nll, methods=("vae", "iwae"), ks=(1, 5), seeds=(0, 1, 2), **extra) -> pd.DataFrame:
    """A summary with test_nll.mean = nll(method, K, seed) and any other column the same way."""
    rows = []
    for m in methods:
        for k in ks:
            for s in seeds:
                row = {"dataset": "digits", "method": m, "K": k, "seed": s, NLL: nll(m, k, s)}
                rows.append(row | {c: f(m, k, s) for c, f in extra.items()})
    return pd.DataFrame(rows)


def test_paired_difference_matches_the_paired_t_test():
    noise = {0: 0.03, 1: -0.02, 2: -0.01}
    df = runs(lambda m, k, s: 30.0 - 0.5 * (k > 1) + noise[s] * (k > 1))
    est = claims.paired(df, NLL, {"method": "iwae", "K": 1}, {"method": "iwae", "K": 5})
    d = np.array([-0.5 + noise[s] for s in (0, 1, 2)])
    assert est.seeds == (0, 1, 2) and est.n == 3
    assert est.mean == pytest.approx(d.mean())
    assert est.se == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    # The rule is the two-sided paired t-test at 5 %: resolved iff its p-value is below 0.05.
    p = stats.ttest_1samp(d, 0.0).pvalue
    assert est.resolved == (p < claims.ALPHA) and est.resolved
    text = claims.change(est, "the test NLL of iwae", claims.NLL).text
    assert text == f"the test NLL of iwae improves by 0.50 ± {est.se:.2f} nats (3 seeds, paired)"


def test_a_difference_within_the_spread_is_not_given_a_direction():
    noise = {0: 0.3, 1: -0.25, 2: 0.1}
    df = runs(lambda m, k, s: 30.0 - 0.05 * (k > 1) + noise[s] * (k > 1))
    est = claims.paired(df, NLL, {"method": "vae", "K": 1}, {"method": "vae", "K": 5})
    assert stats.ttest_1samp(est.values, 0.0).pvalue > claims.ALPHA and not est.resolved
    text = claims.change(est, "the test NLL of vae", claims.NLL).text
    assert text.startswith("the test NLL of vae does not change beyond its uncertainty (")
    assert "improves" not in text and "3 seeds, paired" in text


def test_one_seed_cannot_be_told_from_noise():
    df = runs(lambda m, k, s: 30.0 - 2.0 * (k > 1), seeds=(0,))
    est = claims.paired(df, NLL, {"method": "vae", "K": 1}, {"method": "vae", "K": 5})
    assert est.n == 1 and not est.resolved
    text = claims.change(est, "the test NLL of vae", claims.NLL).text
    assert (
        text
        == "the change of the test NLL of vae (−2.00 nats) cannot be told from noise with one seed"
    )


def test_grouped_changes_name_each_method_under_its_verdict():
    noise = {0: 0.02, 1: -0.01, 2: 0.0}

    def nll(m, k, s):
        return (
            30.0
            + noise[s] * (k > 1)
            - (1.0 if m == "iwae" else 0.0) * (k > 1)
            + (0.3 * (k > 1) * (s - 1) if m == "vae" else 0.0)
        )

    df = runs(nll)
    ests = {
        m: claims.paired(df, NLL, {"method": m, "K": 1}, {"method": m, "K": 5})
        for m in ("vae", "iwae")
    }
    text = claims.grouped(ests, claims.NLL).text
    assert text.startswith("improves for iwae (by 0.997 ± 0.009 nats)")
    assert ", and does not change beyond its uncertainty for vae (" in text
    assert text.endswith("paired over 3 seeds")


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        (
            0.5,
            "has the lowest test NLL at K = 5 (29.50 nats), 0.50 ± 0.01 nats below the runner-up",
        ),
        (0.01, "has the lowest mean test NLL at K = 5 (29.99 nats), but its margin over vae"),
    ],
)
def test_ranking_names_the_best_and_whether_its_margin_is_resolved(gap, expected):
    noise = {0: 0.01, 1: -0.02, 2: 0.01}
    df = runs(
        lambda m, k, s: 30.0 - (gap if m == "iwae" else 0.0) + (noise[s] if m == "vae" else 0)
    )
    values = claims.long_values(df, NLL, "method", {"K": 5})
    text = claims.ranking(values, "test NLL at K = 5").text
    assert text.startswith("iwae " + expected)


def cost_table(times: dict) -> pd.DataFrame:
    """times: {(method, K): (step_s, q1, q3)}; 10 minibatches per epoch."""
    rows = [
        {
            "dataset": "digits",
            "method": m,
            "K": k,
            "batches_per_epoch": 10,
            "step_s": t,
            "step_s_q1": q1,
            "step_s_q3": q3,
            "epoch_s_fastest": 10 * t,
        }  # fmt: skip
        for (m, k), (t, q1, q3) in times.items()
    ]
    return pd.DataFrame(rows)


def test_cost_trend_reads_proportional_growth_from_the_data():
    # vae: t = 0.01 K (in proportion); iwae: t = 0.05 + 0.001 K (mostly fixed cost).
    times = {}
    for k in (1, 5, 50):
        times[("vae", k)] = (0.01 * k, 0.0099 * k, 0.0101 * k)
        t = 0.05 + 0.001 * k
        times[("iwae", k)] = (t, 0.99 * t, 1.01 * t)
    c = claims.cost_trend(cost_table(times), ["vae", "iwae"])
    assert "grows with K for every method" in c.text
    assert "about in proportion to K for vae" in c.text
    assert "less than in proportion to K for iwae" in c.text
    assert "vae: ×50 from K = 1 to 50" in c.basis
    # Overlapping interquartile ranges: no growth is claimed.
    flat = {("vae", k): (0.01, 0.005, 0.02) for k in (1, 5, 50)}
    c = claims.cost_trend(cost_table(flat), ["vae"])
    assert c.text.startswith("does not change from K = 1 to K = 50 beyond the interquartile range")


def summary_with_gaps(seeds=(0, 1, 2)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    noise = {s: rng.normal(0, 0.01) for s in seeds}
    return runs(
        lambda m, k, s: 30.0 - 0.4 * (k > 1) * (m == "iwae") + noise[s],
        seeds=seeds,
        bound_gap=lambda m, k, s: 1.0 / k + noise[s],
        latent=lambda m, k, s: 4,
        **{
            "active_units.count": lambda m, k, s: 3.0,
            "collapse.kl_total": lambda m, k, s: 1.0,
            "collapse.mutual_information.value": lambda m, k, s: 0.5,
            "test_nll.K": lambda m, k, s: 100,
            "ais.mean": lambda m, k, s: -29.5,
            "ais.acceptance": lambda m, k, s: 0.9,
            "ais.settings.steps": lambda m, k, s: np.int64(100),
            "ais.bdmc.gap": lambda m, k, s: 0.01 * (s + 1),
            "ais.minus_is.mean": lambda m, k, s: 0.3 - noise[s],
            "ais.minus_is.stderr": lambda m, k, s: 0.02,
            "ais.is_same_points.mean": lambda m, k, s: -29.6 + 0.1 * (m == "iwae"),
            "gaps.flagged": lambda m, k, s: False,
            "gaps.training_bound.approximation_gap.mean": lambda m, k, s: 0.2 + noise[s],
            "gaps.training_bound.amortization_gap.mean": lambda m, k, s: (
                (0.5 if m == "vae" else 0.3) + noise[s]
            ),
            "gaps.own_family.amortization_gap.mean": lambda m, k, s: (
                (0.5 if m == "vae" else 0.3 + k) + noise[s]
            ),
        },
    )


def test_variables_carry_claims_and_their_basis():
    summary = summary_with_gaps()
    cost = cost_table(
        {(m, k): (0.01 * k, 0.0099 * k, 0.0101 * k) for m in ("vae", "iwae") for k in (1, 5)}
    )
    cfg = {"datasets": ["digits"], "methods": ["vae", "iwae"], "Ks": [1, 5], "seeds": [0, 1, 2],
           "run": {}}  # fmt: skip
    v = paper_variables(summary, cfg, cost)
    yaml.safe_dump(v)  # plain Python types only
    claim, basis = v["claim"], v["basis"]
    assert claim["likelihood"]["k_effect"].startswith("improves for IWAE (by 0.40 ± ")
    # vae's runs are the same at both K here: no spread to speak of, the same value.
    assert claim["likelihood"]["k_effect"].endswith(
        ", and does not change at all (the same value in every seed) for VAE, paired over 3 seeds"
    )
    assert claim["gaps"]["amort_best_kmax"].startswith("IWAE has the lowest amortization gap (")
    assert claim["ais"]["is_vs_ais"].startswith(
        "is looser than AIS for VAE (by 0.298 ± 0.002 nats) and IWAE"
    )
    assert claim["ais"]["bdmc"].startswith("0.020 ± 0.002 nats on average over the 12 runs")
    assert claim["ais"]["agreement"].startswith("+0.298 ± 0.001 nats (mean ± s.e. over the 12 runs")
    assert "no run below −3 of its paired standard errors" in claim["ais"]["agreement"]
    assert v["result"]["time_kmin"] == "0.100" and v["result"]["time_kmax"] == "0.500"  # cost
    assert v["ais"]["ais_minus_is_min"] == v["ais"]["ais_minus_is_max"] == "0.30"
    assert v["ais"]["steps"] == 100 and v["ais"]["chains"] == "n/a"
    # IS puts iwae first on the AIS points, AIS (the same value for both) keeps the order.
    assert claim["likelihood"]["best_kmax_is"].startswith("IWAE has the highest")
    assert claim["likelihood"]["ranks"] == "order the methods alike at K = 1 and 5"
    assert claim["gaps"]["flagged"].startswith("in none of the 12 runs")
    # The rule names the family of tests that Holm's procedure holds together.
    n_tests = int(basis["rule"].split(", ")[1].split()[0])
    assert n_tests > 5 and f"the {n_tests} tests behind the sentences" in claim["rule"]
    for section in ("likelihood", "gaps", "ais", "cost", "bound", "latent"):
        assert set(claim[section]) == set(basis[section])
    assert "Holm-adjusted p" in basis["likelihood"]["k_effect"]
    assert "over seeds [0, 1, 2]" in basis["likelihood"]["best_kmax"]


def paper(root, qmd_body: str, variables: dict):
    root.mkdir(parents=True, exist_ok=True)
    (root / "_quarto.yml").write_text("project:\n  render: [index.qmd]\n")
    (root / "refs.bib").write_text("@article{a,\n  title = {A},\n  year = {2000}\n}\n")
    (root / "index.qmd").write_text(
        "---\ntitle: T\nbibliography: refs.bib\n---\n\n# Results\n\n" + qmd_body + " [@a]\n"
    )
    (root / "_variables.yml").write_text(yaml.safe_dump(variables))
    return root


def test_manuscript_check_lists_claims_and_fails_on_a_missing_one(tmp_path):
    v = {"claim": {"x": {"k": "improves by 1.00 ± 0.10 nats"}}, "basis": {"x": {"k": "d = [1]"}}}
    root = paper(tmp_path / "ok", "The NLL {{< var claim.x.k >}}. It grows, too.", v)
    write_check(root, tmp_path / "report.txt")
    report = (tmp_path / "report.txt").read_text()
    assert "- claim.x.k: improves by 1.00 ± 0.10 nats\n    basis: d = [1]" in report
    assert "- It grows, too." in report  # a direction word without a claim, for review
    root = paper(tmp_path / "missing", "The NLL {{< var claim.x.gone >}}.", v)
    with pytest.raises(ManuscriptError, match="claim 'claim.x.gone' is used by the text"):
        check(root)
    no_basis = {"claim": v["claim"], "basis": {}}
    root = paper(tmp_path / "nobasis", "The NLL {{< var claim.x.k >}}.", no_basis)
    with pytest.raises(ManuscriptError, match="has no 'basis.x.k'"):
        check(root)


def test_claims_the_text_uses_exist_when_ais_was_not_evaluated():
    summary = summary_with_gaps().drop(
        columns=[c for c in summary_with_gaps().columns if c.startswith(("ais.", "gaps."))]
    )
    cfg = {"datasets": ["digits"], "methods": ["vae", "iwae"], "Ks": [1, 5], "seeds": [0, 1, 2],
           "run": {}}  # fmt: skip
    v = paper_variables(summary, cfg, None)
    for key in ("is_vs_ais", "bdmc", "agreement"):
        assert v["claim"]["ais"][key].startswith("n/a")
    assert set(v["claim"]["gaps"]) == {
        "amort_best_kmin", "amort_best_kmax", "approx_k", "amort_k", "amort_k_elbo", "yardstick",
        "flagged",
    }  # fmt: skip
    assert v["claim"]["cost"]["trend"].startswith("n/a") and v["result"]["time_kmin"] == "n/a"


# ---------------------------------------------------------------------------------------------
# Training compute: budgets, the best cell within a budget, the K turn, the converged count


def curve_frame(cells: dict, seeds=(0, 1, 2)) -> pd.DataFrame:
    """curves.csv rows: cells maps (label, K) -> (compute per epoch, [bound after each epoch]);
    seed s adds 0.01 * s to every bound (a spread the ranking must see through)."""
    rows = []
    for (label, K), (per_epoch, bounds) in cells.items():
        for s in seeds:
            for e, b in enumerate(bounds, 1):
                rows.append({"dataset": "digits", "variant": label, "method": label,
                             "label": label, "K": K, "seed": s, "epoch": e,
                             "compute": per_epoch * e, "val_bound": b + 0.01 * s})  # fmt: skip
    return pd.DataFrame(rows)


def test_compute_budgets_and_the_best_cell_within_each():
    """A cheap cell (10 units an epoch) that rises slowly and a costly one (100 units) that
    rises fast: the costly cell is best within 100 and 200 units, the cheap one within 400.
    The budgets run from 100 (every cell has an epoch) to the median final compute (400)."""
    c = curve_frame(
        {
            ("cheap", 1): (10.0, [-30 + 0.5 * e for e in range(1, 41)]),  # -25 at 100, -10 at 400
            ("costly", 50): (100.0, [-20.0, -15.0, -12.0, -11.0]),  # -20 at 100, -11 at 400
        }
    )
    assert claims.compute_budgets(c) == [100.0, 200.0, 400.0]
    at = claims.at_budget(c, 100.0)
    best = dict(zip(zip(at["label"], at["seed"], strict=True), at["val_bound"], strict=True))
    assert best[("cheap", 0)] == pytest.approx(-25.0) and best[("costly", 0)] == -20.0
    assert claims.best_at_budget(c, 100.0, "VAE K = 1").text.startswith(
        "at 100 VAE K = 1 steps, costly at K = 50 has the highest validation bound (-19.99 nats), "
        "5.00 ± 0.00 nats above the runner-up cheap at K = 1"
    )
    assert "costly at K = 50 has" in claims.best_at_budget(c, 200.0, "u").text
    assert "cheap at K = 1 has" in claims.best_at_budget(c, 400.0, "u").text
    # Within 50 units only the cheap cell has trained an epoch.
    assert (
        "cheap at K = 1 has the only validation bound" in claims.best_at_budget(c, 50.0, "u").text
    )


def test_k_turn_places_where_more_samples_stop_paying():
    """Test NLL falls by 1 nat from K = 1 to 2 and from 2 to 5, then by 0.001 (within a seed
    spread of 0.1): the turn is K = 5."""
    spread = {0: 0.0, 1: 0.1, 2: -0.1}
    drop = {1: 0.0, 2: -1.0, 5: -2.0, 10: -2.001, 50: -2.0}
    df = runs(lambda m, k, s: 90 + drop[k] + spread[s] * (k >= 10), methods=("iwae",),
              ks=(1, 2, 5, 10, 50))  # fmt: skip
    c = claims.k_turn(df, "iwae", NLL, "IWAE")
    assert c.text.startswith("for IWAE, more samples pay up to K = 5 (K = 2 → 5: −1.00")
    assert "no larger step is a resolved gain (K = 5 → 10" in c.text
    still = runs(lambda m, k, s: 90 - math.log(k) + 0.01 * s, methods=("vae",), ks=(1, 5, 50))
    assert "still pay at the largest K (K = 5 → 50" in claims.k_turn(still, "vae", NLL, "VAE").text
    flat = runs(lambda m, k, s: 90 + 0.1 * ((s + k) % 3), methods=("vae",), ks=(1, 5, 50))
    assert "no step beyond K = 1 is a resolved gain" in claims.k_turn(flat, "vae", NLL, "VAE").text


def test_converged_count():
    s = pd.DataFrame({"training.stopped_by": ["converged", "cap", "converged", "budget"]})
    c = claims.converged(s)
    assert c.text.startswith("2 of 4 runs converged")
    assert "1 reached the epoch cap" in c.text and "1 spent the step budget" in c.text


# Are tighter bounds better? Slopes of the gradient SNR and the objectives against IWAE


def snr_summary(seeds=(0, 1, 2)) -> pd.DataFrame:
    """vae, iwae, iwae-dreg and an MIWAE variant at K = 6 (iwae and vae at 1 too), with the
    encoder's SNR slope -0.5 + seed noise for iwae, +0.2 for DReG, 0 +- noise for vae."""
    noise = {0: 0.02, 1: -0.01, 2: -0.015}
    slope = {"vae": 0.0, "iwae": -0.5, "iwae-dreg": 0.2, "miwae": -0.3}
    rows = []
    for v, method, objective, estimator, ks in [
        ("vae", "vae", "elbo", "standard", (1, 6)),
        ("iwae", "iwae", "iwae", "standard", (1, 6)),
        ("iwae-dreg", "iwae", "iwae", "dreg", (6,)),
        ("miwae", "iwae", "miwae", "standard", (6,)),
    ]:
        for k in ks:
            for s in seeds:
                spread = 3 * noise[s] if v == "vae" else noise[s]
                rows.append(
                    {
                        "dataset": "digits",
                        "variant": v,
                        "method": method,
                        "K": k,
                        "seed": s,
                        "objective": objective,
                        "estimator": estimator,
                        NLL: 30.0 - 0.2 * (v == "miwae") + noise[s],
                        "test_LK": -31.0 + noise[s],
                        "test_nll.K": 100,
                        "latent": 4,
                        "active_units.count": 3,
                        "bound_gap": 1.0,
                        "snr.slope.encoder.rms.value": slope[v] + spread,
                        "snr.slope.encoder.rms.low": slope[v] + spread - 0.1,
                        "snr.slope.encoder.rms.high": slope[v] + spread + 0.1,
                        "snr.slope.decoder.rms.value": 0.45 + noise[s],
                        "snr.training.start.encoder.rms": 1.0,
                        "snr.training.end.encoder.rms": 0.5 + (v == "miwae") * 0.3 + noise[s],
                        "snr.training.end.decoder.rms": 2.0 + noise[s],
                    }  # fmt: skip
                )
    return pd.DataFrame(rows)


def test_slope_intervals_over_seeds_and_for_one_seed():
    df = snr_summary()
    s = claims.slope(df, "snr.slope.encoder.rms.value", {"variant": "iwae", "K": 6})
    values = np.array([-0.5 + d for d in (0.02, -0.01, -0.015)])
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
    assert s.n == 3 and s.value == pytest.approx(values.mean())
    assert (s.low, s.high) == pytest.approx((values.mean() - half, values.mean() + half))
    assert s.resolved and s.text().startswith("−0.50, 95 % interval −0.")
    column = "snr.slope.encoder.rms.value"
    one = claims.slope(snr_summary((0,)), column, {"variant": "iwae", "K": 6})
    assert one.n == 1 and (one.low, one.high) == pytest.approx((-0.58, -0.38))  # the run's own
    assert claims.slope(df, "snr.slope.encoder.rms.value", {"variant": "nope"}) is None


def test_the_section_on_tighter_bounds_reads_the_runs():
    cfg = {"datasets": ["digits"], "methods": ["vae", "iwae"], "Ks": [1, 6], "seeds": [0, 1, 2],
           "run": {}, "variants": {"iwae-dreg": {"method": "iwae", "Ks": [6], "estimator": "dreg"},
                                   "miwae": {"method": "iwae", "Ks": [6], "label": "MIWAE(2, 3)",
                                             "method_options": {"objective": "miwae",
                                                                "groups": 2}}}}  # fmt: skip
    v = paper_variables(snr_summary(), cfg)
    t = v["claim"]["tighter"]
    # the figure's variants at their largest K: iwae falls, DReG rises, vae is flat
    assert t["encoder_slope"].startswith("falls with K for IWAE (−0.50, 95 % interval")
    assert "rises with K for iwae-dreg (+0.20" in t["encoder_slope"]
    assert "has no slope resolved from zero for VAE" in t["encoder_slope"]
    assert t["encoder_slope"].endswith("(over 3 seeds)") and "miwae" not in t["encoder_slope"]
    assert "rises with K for VAE" in t["decoder_slope"]
    assert t["training"].startswith("falls for VAE (K = 6) (by 0.")
    # MIWAE against IWAE at the same K and estimator: NLL improves by 0.2 in every seed
    assert t["objectives"]["nll"].startswith(
        "improves for MIWAE(2, 3) (against IWAE at K = 6) (by 0.20 ± 0.00 nats)"
    )
    assert "is higher for MIWAE(2, 3)" in t["objectives"]["encoder_snr"]
    assert "is the same in every seed for MIWAE(2, 3)" in t["objectives"]["decoder_snr"]
    assert v["study"]["objectives"] == "MIWAE(2, 3)" and v["study"]["n_objectives"] == 1
    assert "over seeds [0, 1, 2]" in v["basis"]["tighter"]["objectives"]["nll"]
    # without an objective, or without SNR, every key is still there
    plain = snr_summary()[lambda d: d["variant"] != "miwae"]
    t = paper_variables(plain.drop(columns=[c for c in plain if c.startswith("snr.")]), cfg)
    t = t["claim"]["tighter"]
    assert t["encoder_slope"].startswith("n/a") and t["objectives"]["nll"].startswith("n/a")


def test_holm_matches_the_step_down_procedure():
    """Holm (1979): sort the p-values; reject the i-th smallest while p_(i) <= alpha / (m - i + 1)
    (i from 1); the adjusted p-values are the running maxima of (m - i + 1) p_(i), capped at 1."""
    fam = claims.Family({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": 0.5})
    out = fam.holm()
    # Sorted: d 0.005 (x5 = 0.025), a 0.01 (x4 = 0.04), c 0.03 (x3 = 0.09), b 0.04, e 0.5.
    assert out["d"] == (True, pytest.approx(0.025)) and out["a"] == (True, pytest.approx(0.04))
    assert out["c"] == (False, pytest.approx(0.09))
    assert out["b"] == (False, pytest.approx(0.09))  # max(0.09, 2 x 0.04): monotone
    assert out["e"] == (False, pytest.approx(0.5))


def test_a_family_of_tests_is_held_together():
    """A difference resolved on its own is not resolved once it is one of many tests whose
    p-values are larger (Holm), and the phrases follow the family's decisions."""
    noise = {0: 0.02, 1: -0.01, 2: -0.005}
    df = runs(lambda m, k, s: 30.0 - 0.05 * (k > 1) * (m == "iwae") + noise[s] * (k > 1))
    est = claims.paired(df, NLL, {"method": "iwae", "K": 1}, {"method": "iwae", "K": 5})
    alone = est.p_value
    assert est.resolved and alone < claims.ALPHA
    # Nineteen more tests with p = 0.5: Holm multiplies the smallest p by 20.
    with claims.family() as fam:
        assert est.resolved  # first pass: records
        for i in range(19):
            fam.p_values[("other", i)] = 0.5
    fam.decisions = fam.holm()
    with claims.family(fam):
        resolved, p_adj, m = est.adjusted
        text = claims.change(est, "the test NLL", claims.NLL).text
    assert m == 20 and p_adj == pytest.approx(min(1.0, 20 * alone))
    assert resolved == (20 * alone <= claims.ALPHA)
    assert ("improves" in text) == resolved


def test_test_set_variance_enters_the_standard_error():
    """Per-point values that vary from point to point but equally in every seed: the seed-to-
    seed variance of the paired differences is zero, so the standard error is the test set's
    alone, s_points / sqrt(N) of the per-point differences (here known), and the degrees of
    freedom are N - 1."""
    rng = np.random.default_rng(0)
    n_pts, seeds = 40, (0, 1, 2)
    diff = rng.normal(0.3, 1.0, n_pts)  # per-point difference b - a, the same in every seed
    base = rng.normal(-30.0, 2.0, n_pts)
    rows, long = [], []
    for m, shift in (("vae", 0.0), ("iwae", 1.0)):
        values = base + shift * diff
        for s in seeds:
            rows.append({"dataset": "digits", "variant": m, "method": m, "K": 1, "seed": s,
                         NLL: float(-values.mean())})  # fmt: skip
            long += [
                {
                    "dataset": "digits",
                    "variant": m,
                    "method": m,
                    "K": 1,
                    "seed": s,
                    "quantity": "log_px_is",
                    "point": i,
                    "value": float(v),
                }  # fmt: skip
                for i, v in enumerate(values)
            ]
    df, per_point = pd.DataFrame(rows), pd.DataFrame(long)
    with claims.points(per_point):
        est = claims.paired(df, NLL, {"method": "vae", "K": 1}, {"method": "iwae", "K": 1})
    assert est.seed_var == pytest.approx(0.0, abs=1e-20)
    assert est.n_points == n_pts
    assert est.se == pytest.approx(np.std(diff, ddof=1) / math.sqrt(n_pts))
    assert est.dof == pytest.approx(n_pts - 1)
    assert est.mean == pytest.approx(-diff.mean())
    # Without the per-point values, no test-set part: a zero standard error.
    bare = claims.paired(df, NLL, {"method": "vae", "K": 1}, {"method": "iwae", "K": 1})
    assert bare.point_var == 0 and bare.se == pytest.approx(0.0, abs=1e-12)


def test_a_claim_says_where_is_and_ais_rank_the_methods_differently():
    """At K = 5, IS on the AIS points puts iwae above vae and AIS puts vae above iwae: the claim
    names the swap with the paired difference under each; at K = 1 they agree."""
    from vaeinf.report.variables import AIS_LOGP, IS_SAME, rank_agreement

    noise = {0: 0.01, 1: -0.02, 2: 0.015}
    df = runs(
        lambda m, k, s: 30.0,
        **{
            IS_SAME: lambda m, k, s: -29.0 + (0.2 if m == "iwae" else 0.0) + noise[s],
            AIS_LOGP: lambda m, k, s: (
                -29.0
                + (0.2 if m == "iwae" else 0.0) * (k == 1)
                + (0.1 if m == "vae" and k == 5 else 0.0)
                + noise[s] * (m == "vae")
            ),
        },
    )
    text = rank_agreement(df, ["vae", "iwae"], [1, 5]).text
    assert text.startswith("order the methods alike at K = 1; at K = 5 swap iwae and vae (")
    assert "IS puts iwae higher by +0.20" in text and "AIS by −0.1" in text


def test_the_conclusions_sort_the_levers_and_read_the_budgets():
    """Discussion and abstract: which changes lowered the NLL (largest first, with their time
    ratio), which did not; which cell leads at the smallest and at the largest budget."""
    from vaeinf.report.variables import abstract_claim, conclusion_budget, conclusion_levers

    rng = np.random.default_rng(1)
    noise = {
        (m, k, s): rng.normal(0, 0.01) for m in ("vae", "iwae") for k in (1, 5) for s in range(3)
    }
    df = runs(lambda m, k, s: 30.0 - 0.4 * (k > 1) * (m == "iwae") + noise[(m, k, s)])
    df["variant"] = df["method"]
    cost = cost_table(
        {(m, k): (0.01 * k, 0.0099 * k, 0.0101 * k) for m in ("vae", "iwae") for k in (1, 5)}
    )
    cost["variant"] = cost["method"]
    labels = {"vae": "VAE", "iwae": "IWAE"}
    levers = variables._levers(df, df, cost, [1, 5], labels)
    words = [w for w, _, _ in levers]
    assert words == ["K = 5 rather than 1 for VAE", "K = 5 rather than 1 for IWAE",
                     "IWAE rather than the VAE at K = 1"]  # fmt: skip
    text = conclusion_levers(levers).text
    assert text.startswith("1 of the 3 changes the study tests lowered the test NLL beyond its")
    assert "uncertainty: K = 5 rather than 1 for IWAE (by 0.398 ± 0.00" in text
    assert "at ×5 the time per epoch" in text
    assert text.endswith(
        "did not change beyond its uncertainty for K = 5 rather than 1 for VAE and IWAE rather "
        "than the VAE at K = 1"
    )
    # Levers that share their baseline read as one phrase.
    assert variables.grouped(
        ["K = 50 rather than 1 for VAE", "K = 50 rather than 1 for Flow",
         "IWAE rather than the VAE at K = 1", "IAF rather than the VAE at K = 1",
         "IWAE (DReG) rather than IWAE at K = 50"]
    ) == (
        "K = 50 rather than 1 for VAE and Flow; IWAE and IAF rather than the VAE at K = 1; "
        "IWAE (DReG) rather than IWAE at K = 50"
    )  # fmt: skip
    result = abstract_claim(df, levers, 12, 0.031, labels).text
    assert result.startswith("Over 12 runs, IWAE at K = 5 reaches the lowest test NLL, 29.6")
    assert "the largest gain, 0.398 ± 0.00" in result and result.endswith(
        "agree within 0.03 nats on the same points"
    )
    c = curve_frame(
        {
            ("cheap", 1): (10.0, [-30 + 0.5 * e for e in range(1, 41)]),
            ("costly", 50): (100.0, [-20.0, -15.0, -12.0, -11.0]),
        }
    )
    c["compute_unit"] = "VAE K=1"
    assert conclusion_budget(c, {}).text == (
        "with little compute (100 VAE K = 1 steps) costly at K = 50 leads, and with the most "
        "(400) cheap at K = 1"
    )


def test_the_stated_seed_only_thresholds_are_those_holm_applies():
    # Three seeds (2 d.o.f.), a family of 117: the Methods sentence names the |t| a seed-only
    # difference needs at Holm's first and last step; Holm's decisions flip exactly there.
    text = claims.rule_text(3, 117)
    first = float(text.split("only beyond ")[1].split(" standard errors")[0])
    last = float(text.split("first step and ")[1].split(" at its last")[0])
    p = lambda t: 2 * stats.t.sf(t, 2)  # noqa: E731
    fam = claims.Family({i: 0.9 for i in range(116)})
    fam.p_values["x"] = p(first * 1.02)
    assert fam.holm()["x"][0]
    fam.p_values["x"] = p(first * 0.98)
    assert not fam.holm()["x"][0]
    assert math.isclose(last, claims.t_quantile(3), abs_tol=0.05)
    assert not claims.Family({"x": p(last * 0.98)}).holm()["x"][0]
    assert claims.Family({"x": p(last * 1.02)}).holm()["x"][0]
