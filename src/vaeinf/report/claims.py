"""The paper's findings as phrases chosen by the runs, each with the numbers behind it.

Every sentence of the paper that states a direction or a comparison takes its wording from here,
so the text says what the runs say, with its uncertainty:

- a *change* between two conditions of the same runs (two values of K, two methods) is paired
  over seeds: for every seed s run under both, d_s = x_b(s) - x_a(s); it is reported as the mean
  of the d_s ± their standard error (s.d. / sqrt(n)) with the number n of seeds;
- it is *resolved* when the two-sided paired t-test at level :data:`ALPHA` rejects a zero mean,
  |mean| > t_{1 - ALPHA/2, n-1} · s.e. (Student 1908); then the phrase names its direction
  ("improves by 0.51 ± 0.05 nats (3 seeds, paired)"), otherwise it says the difference does not
  exceed the seed-to-seed spread, and with one seed that it cannot be told from noise;
- a *comparison* names the best condition and its paired margin to the runner-up, resolved or
  not by the same rule;
- the *cost* trend reads the cost rule's table (:mod:`vaeinf.study.cost`): a growth from the
  smallest to the largest K is resolved when the interquartile ranges of the step times at the
  two ends do not overlap, and its shape (in proportion to K or less) is the elasticity
  log(time ratio) / log(K ratio).

Each function returns a :class:`Claim`: the phrase, and ``basis``, one line with the numbers
and the rule that chose the words (listed by the manuscript check).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vaeinf.report.text import join

#: Level of the paired t-test that decides whether a difference is resolved.
ALPHA = 0.05


@dataclass(frozen=True)
class Claim:
    text: str
    basis: str


def t_quantile(n: int) -> float:
    """t_{1 - ALPHA/2, n-1}, the multiple of the standard error a mean over n seeds must exceed
    (scipy comes with scikit-learn, a dependency of vaeinf)."""
    from scipy import stats

    return float(stats.t.ppf(1 - ALPHA / 2, n - 1)) if n > 1 else math.inf


@dataclass(frozen=True)
class Estimate:
    """Per-seed values (paired differences, or one quantity per seed) and their mean ± s.e."""

    values: tuple[float, ...]
    seeds: tuple
    label: str
    paired: bool = True

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def se(self) -> float:
        return float(np.std(self.values, ddof=1) / math.sqrt(self.n)) if self.n > 1 else math.nan

    @property
    def identical(self) -> bool:
        """Every paired difference is exactly zero (e.g. two objectives that coincide)."""
        return self.n > 0 and all(v == 0 for v in self.values)

    @property
    def resolved(self) -> bool:
        return self.n > 1 and abs(self.mean) > t_quantile(self.n) * self.se

    def decimals(self, digits: int = 2) -> int:
        """``digits``, or up to 4 when the standard error is below 10^-digits (so a small s.e.
        keeps a nonzero digit)."""
        # One seed: no s.e., so the size of the value itself sets the digits.
        scale = self.se if self.n > 1 else abs(self.mean)
        if not np.isfinite(scale) or scale <= 0:
            return digits
        return int(min(4, max(digits, -math.floor(math.log10(scale)))))

    def pm(self, unit: str, digits: int = 2, signed: bool = True, absolute: bool = False) -> str:
        """``+0.51 ± 0.05 nats`` (one seed: ``+0.51 nats``)."""
        d = self.decimals(digits)
        m = abs(self.mean) if absolute else self.mean
        value = f"{m:+.{d}f}" if signed and not absolute else f"{m:.{d}f}"
        value = value.replace("-", "−")
        spread = f" ± {self.se:.{d}f}" if self.n > 1 else ""
        return f"{value}{spread}{' ' + unit if unit else ''}"

    def note(self) -> str:
        seeds = f"{self.n} seed{'s' if self.n != 1 else ''}"
        return f"{seeds}, paired" if self.paired else seeds

    def basis(self) -> str:
        values = ", ".join(f"{v:+.4g}" for v in self.values)
        seeds = ", ".join(str(s) for s in self.seeds)
        head = f"{self.label} over seeds [{seeds}]: [{values}]"
        if self.n == 0:
            return f"{self.label}: no seed has both conditions"
        if self.n == 1:
            return f"{head}; one seed: no test"
        t = t_quantile(self.n)
        verdict = "resolved" if self.resolved else "not resolved"
        return (
            f"{head}; mean {self.mean:+.4g}, s.e. {self.se:.3g} ({self.note()}); "
            f"|mean| {'>' if self.resolved else '<='} t({1 - ALPHA / 2:g}, {self.n - 1}) · s.e. "
            f"= {t * self.se:.3g}: {verdict}"
        )


# ---------------------------------------------------------------------------------------------
# Per-seed values


def _select(df: pd.DataFrame, where: dict) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for k, v in where.items():
        mask &= (df[k] == v).to_numpy()
    return df[mask]


def _describe(where: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in where.items())


def by_seed(df: pd.DataFrame, column: str, where: dict) -> pd.Series:
    """``column`` of the runs matching ``where``, indexed by seed (missing values dropped)."""
    d = _select(df, where)
    s = pd.to_numeric(d[column], errors="coerce") if column in d else pd.Series(dtype=float)
    return pd.Series(s.to_numpy(), index=d["seed"].to_numpy()).dropna()


def paired(df: pd.DataFrame, column: str, a: dict, b: dict, label: str | None = None) -> Estimate:
    """x_b(s) - x_a(s) of ``column`` for every seed run under both conditions ``a`` and ``b``
    (dicts of column -> value, e.g. {"method": "iwae", "K": 1})."""
    xa, xb = by_seed(df, column, a), by_seed(df, column, b)
    seeds = sorted(set(xa.index) & set(xb.index))
    diffs = tuple(float(xb[s] - xa[s]) for s in seeds)
    label = label or f"{column}({_describe(b)}) − {column}({_describe(a)})"
    return Estimate(diffs, tuple(seeds), label)


def over_seeds(df: pd.DataFrame, column: str, where: dict, label: str | None = None) -> Estimate:
    """One value of ``column`` per seed (already a difference within each run)."""
    x = by_seed(df, column, where).sort_index()
    label = label or f"{column}({_describe(where)})"
    return Estimate(tuple(float(v) for v in x), tuple(x.index), label, paired=False)


# ---------------------------------------------------------------------------------------------
# Phrases


@dataclass(frozen=True)
class Words:
    """How a change of a quantity reads: verbs for an increase and a decrease, the phrase for
    a difference within the seed-to-seed spread, and the unit."""

    up: str = "grows"
    down: str = "shrinks"
    null: str = "does not change beyond seed-to-seed spread"
    same: str = "does not change at all (the same value in every seed)"
    unit: str = "nats"
    digits: int = 2


NLL = Words(up="worsens", down="improves")


def change(est: Estimate, subject: str, words: Words = Words()) -> Claim:
    """One quantity's change: ``"<subject> improves by 0.51 ± 0.05 nats (3 seeds, paired)"``."""
    w = words
    if est.n == 0:
        text = f"{subject} cannot be compared: no seed was run under both conditions"
    elif est.n == 1:
        text = (
            f"the change of {subject} ({est.pm(w.unit, w.digits)}) cannot be told from noise "
            "with one seed"
        )
    elif est.identical:
        text = f"{subject} {w.same}"
    elif est.resolved:
        verb = w.up if est.mean > 0 else w.down
        text = f"{subject} {verb} by {est.pm(w.unit, w.digits, absolute=True)} ({est.note()})"
    else:
        text = f"{subject} {w.null} ({est.pm(w.unit, w.digits)}, {est.note()})"
    return Claim(text, est.basis())


def grouped(ests: dict[str, Estimate], words: Words = Words()) -> Claim:
    """The same change for several members (methods), grouped by its decision:
    ``"improves for iwae (by 0.51 ± 0.05 nats) and flow (by ...), and does not change beyond
    seed-to-seed spread for vae (+0.02 ± 0.03 nats), paired over 3 seeds"``. The caller puts
    the subject in front."""
    w = words
    ests = {k: e for k, e in ests.items() if e.n > 0}
    basis = "; ".join(f"{k}: {e.basis()}" for k, e in ests.items())
    if not ests:
        return Claim("cannot be compared: no seed was run under both conditions", basis)
    n = min(e.n for e in ests.values())
    if max(e.n for e in ests.values()) == 1:
        moved = {k: e for k, e in ests.items() if not e.identical}
        parts = []
        if moved:
            values = join(f"{k} {e.pm(w.unit, w.digits)}" for k, e in moved.items())
            verb = "changes" if all(e.paired for e in moved.values()) else "differs"
            parts.append(f"{verb} by {values}, which cannot be told from noise with one seed")
        same = [k for k, e in ests.items() if e.identical]
        if same:
            parts.append(f"{w.same} for {join(same)}")
        return Claim(", and ".join(parts), basis)
    up = {k: e for k, e in ests.items() if e.resolved and e.mean > 0}
    down = {k: e for k, e in ests.items() if e.resolved and e.mean < 0}
    same = {k: e for k, e in ests.items() if e.identical}
    null = {k: e for k, e in ests.items() if not e.resolved and not e.identical}
    parts = []
    for verb, group in ((w.down, down), (w.up, up)):
        if group:
            members = join(
                f"{k} (by {e.pm(w.unit, w.digits, absolute=True)})" for k, e in group.items()
            )
            parts.append(f"{verb} for {members}")
    if null:
        members = join(f"{k} ({e.pm(w.unit, w.digits)})" for k, e in null.items())
        parts.append(f"{w.null} for {members}")
    if same:
        parts.append(f"{w.same} for {join(same)}")
    kind = "paired over" if all(e.paired for e in ests.values()) else "mean ± s.e. over"
    text = ", and ".join(parts) if len(parts) < 3 else "; ".join(parts[:-1]) + "; and " + parts[-1]
    return Claim(f"{text}, {kind} {n} seed{'s' if n != 1 else ''}", basis)


def ranking(
    values: pd.DataFrame,
    what: str,
    lower_is_better: bool = True,
    unit: str = "nats",
    digits: int = 2,
    name=str,
) -> Claim:
    """The best key of ``values`` (columns key, seed, value) by its mean over seeds, and its
    margin to the runner-up, paired over seeds: ``"flow has the lowest test NLL (30.12 nats),
    0.31 ± 0.05 nats below the runner-up iwae (3 seeds, paired)"``. ``name`` turns a key into
    words."""
    values = values.dropna(subset=["value"])
    means = values.groupby("key", sort=False)["value"].mean()
    if means.empty:
        return Claim(f"no run has a {what}", "no values")
    order = means.sort_values(ascending=lower_is_better, kind="stable").index
    best = order[0]
    sup = "lowest" if lower_is_better else "highest"
    value = f"{means[best]:.{digits}f}{' ' + unit if unit else ''}"
    if len(order) == 1:
        return Claim(f"{name(best)} has the only {what} ({value})", f"one key: {best}")
    runner = order[1]
    wide = values.pivot_table(index="seed", columns="key", values="value")
    both = wide[[best, runner]].dropna()
    sign = 1 if lower_is_better else -1
    est = Estimate(
        tuple(float(v) for v in sign * (both[runner] - both[best])),
        tuple(both.index),
        f"margin of {name(best)} over {name(runner)} in {what}",
    )
    side = "below" if lower_is_better else "above"
    if est.identical:
        text = (
            f"{name(best)} and {name(runner)} share the {sup} {what} ({value}; identical in "
            f"{'the one seed' if est.n == 1 else f'each of the {est.n} seeds'})"
        )
    elif est.n <= 1:
        margin = f"{abs(means[runner] - means[best]):.{digits}f}"
        text = (
            f"{name(best)} has the {sup} {what} ({value}), {margin} {unit} {side} "
            f"{name(runner)}, a margin that cannot be told from noise with one seed"
        )
    elif est.resolved and est.mean > 0:
        text = (
            f"{name(best)} has the {sup} {what} ({value}), "
            f"{est.pm(unit, digits, signed=False)} {side} the runner-up {name(runner)} "
            f"({est.note()})"
        )
    else:
        text = (
            f"{name(best)} has the {sup} mean {what} ({value}), but its margin over "
            f"{name(runner)}, {est.pm(unit, digits)} ({est.note()}), is within seed-to-seed "
            "spread"
        )
    ranks = ", ".join(f"{name(k)} {means[k]:.4g}" for k in order)
    return Claim(text, f"means over seeds: {ranks}; {est.basis()}")


def long_values(df: pd.DataFrame, column: str, key: str, where: dict) -> pd.DataFrame:
    """(key, seed, value) rows of ``column`` for the runs matching ``where``, for
    :func:`ranking`."""
    d = _select(df, where)
    return pd.DataFrame(
        {
            "key": d[key].to_numpy(),
            "seed": d["seed"].to_numpy(),
            "value": pd.to_numeric(d[column], errors="coerce").to_numpy(),
        }
    )


# ---------------------------------------------------------------------------------------------
# Cost (the cost rule's table: one timing per (method, K), step-time quartiles, no seeds)


def cost_growth(cost: pd.DataFrame, method: str) -> dict:
    """How one method's seconds per epoch grow with K: the factor from the smallest to the
    largest K and its interquartile bounds; whether the growth is resolved (the interquartile
    ranges of the step times at the two ends do not overlap), and at each step between
    consecutive K; and the elasticity log(factor) / log(K ratio), 1 when the time is in
    proportion to K."""
    c = cost[cost["method"] == method].sort_values("K")
    ks, t = c["K"].to_numpy(float), c["epoch_s_fastest"].to_numpy(float)
    per = c["batches_per_epoch"].to_numpy(float)
    q1, q3 = c["step_s_q1"].to_numpy(float) * per, c["step_s_q3"].to_numpy(float) * per
    if len(ks) < 2:
        return {"n_K": len(ks)}
    return {
        "n_K": len(ks),
        "K_min": int(ks[0]),
        "K_max": int(ks[-1]),
        "factor": t[-1] / t[0],
        "factor_low": q1[-1] / q3[0],
        "factor_high": q3[-1] / q1[0],
        "grows": bool(q1[-1] > q3[0]),
        "steps": [bool(q1[i + 1] > q3[i]) for i in range(len(ks) - 1)],
        "slope": float(np.log(t[-1] / t[0]) / np.log(ks[-1] / ks[0])),
    }


#: Elasticities of the time per epoch in K read as "about in proportion to K".
PROPORTIONAL = (0.85, 1.15)


def shape(slope: float) -> str:
    if slope < PROPORTIONAL[0]:
        return "less than in proportion to K"
    if slope > PROPORTIONAL[1]:
        return "faster than in proportion to K"
    return "about in proportion to K"


def cost_trend(cost: pd.DataFrame, methods: list[str]) -> Claim:
    """``"grows with K for every method, ×9.9 (median; ×9.1–×10.2) from K = 1 to
    K = 50 (50 times the samples): less than in proportion to K (elasticity 0.52–0.61)"``;
    methods whose growth is not resolved are named apart. The caller puts the subject ("the
    time per epoch") in front."""
    g = {m: cost_growth(cost, m) for m in methods if (cost["method"] == m).any()}
    g = {m: v for m, v in g.items() if v["n_K"] >= 2}
    if not g:
        return Claim("cannot be compared across K: the study has one value of K", "one K")
    basis = "; ".join(
        f"{m}: ×{v['factor']:.3g} from K = {v['K_min']} to {v['K_max']} (interquartile "
        f"×{v['factor_low']:.3g}–×{v['factor_high']:.3g}), resolved: {v['grows']}, "
        f"steps between consecutive K resolved: {v['steps']}, elasticity {v['slope']:.3f}"
        for m, v in g.items()
    )
    k0, k1 = next(iter(g.values()))["K_min"], next(iter(g.values()))["K_max"]
    growing = {m: v for m, v in g.items() if v["grows"]}
    other = {m: v for m, v in g.items() if not v["grows"]}
    parts = []
    if growing:
        factors = [v["factor"] for v in growing.values()]
        slopes = [v["slope"] for v in growing.values()]
        shapes = {m: shape(v["slope"]) for m, v in growing.items()}
        who = "every method" if not other else join(growing)
        lo, hi = f"×{min(factors):.1f}", f"×{max(factors):.1f}"
        spread = lo if lo == hi else f"×{np.median(factors):.1f} (median; {lo}–{hi})"
        if len(set(shapes.values())) == 1:
            form = next(iter(shapes.values()))
            lo, hi = f"{min(slopes):.2f}", f"{max(slopes):.2f}"
            form = f"{form} (elasticity {lo if lo == hi else lo + '–' + hi})"
        else:
            form = "; ".join(
                f"{s} for {join(m for m in shapes if shapes[m] == s)}"
                for s in dict.fromkeys(shapes.values())
            )
        parts.append(
            f"grows with K for {who}, {spread} from K = {k0} to K = {k1} "
            f"({k1 / k0:g} times the samples): {form}"
        )
    if other:
        members = join(f"{m} (×{v['factor']:.2f})" for m, v in other.items())
        parts.append(
            f"for {members} the change from K = {k0} to K = {k1} does not exceed the "
            "interquartile range of the step times"
        )
    if not growing:
        members = join(f"{m} ×{v['factor']:.2f}" for m, v in other.items())
        text = (
            f"does not change from K = {k0} to K = {k1} beyond the interquartile range of the "
            f"step times ({members})"
        )
        return Claim(text, basis)
    return Claim("; ".join(parts), basis)


def cost_difference(cost: pd.DataFrame, dataset: str, a: str, b: str, K: int) -> dict | None:
    """Seconds per epoch of variant ``b`` minus those of variant ``a`` at K (the cost rule's
    table: one timing each, no seeds), with the range that the step-time quartiles allow
    (q1_b − q3_a to q3_b − q1_a); resolved when that range excludes zero, the rule of
    :func:`cost_growth` (interquartile ranges that do not overlap). None when either is
    missing."""
    rows = {}
    for v in (a, b):
        c = cost[(cost["dataset"] == dataset) & (cost["variant"] == v) & (cost["K"] == K)]
        if c.empty:
            return None
        rows[v] = c.iloc[0]

    def at(v, column):
        return float(rows[v][column]) * float(rows[v]["batches_per_epoch"])

    diff = float(rows[b]["epoch_s_fastest"]) - float(rows[a]["epoch_s_fastest"])
    low, high = at(b, "step_s_q1") - at(a, "step_s_q3"), at(b, "step_s_q3") - at(a, "step_s_q1")
    d = 3 if max(abs(low), abs(high), abs(diff)) < 10 else 1

    def sign(x: float) -> str:
        return f"{x:+.{d}f}".replace("-", "−")

    return {
        "diff": diff,
        "low": low,
        "high": high,
        "resolved": low > 0 or high < 0,
        "ratio": float(rows[b]["epoch_s_fastest"]) / float(rows[a]["epoch_s_fastest"]),
        "text": f"{sign(diff)} ({sign(low)} to {sign(high)})",
    }


def cost_versus(cost: pd.DataFrame, pairs: dict[str, tuple[str, str, str, int]]) -> Claim:
    """Seconds per epoch of each ablation against its base (name -> (dataset, base, variant,
    K)), grouped by the decision of :func:`cost_difference`: ``"is longer for IWAE (DReG)
    (×1.31, +0.012 s), and within the interquartile range of the step times for ..."``. The
    caller puts the subject ("the time per epoch") in front."""
    got = {n: cost_difference(cost, *p) for n, p in pairs.items()}
    got = {n: g for n, g in got.items() if g is not None}
    if not got:
        return Claim("cannot be compared: no ablation was timed beside its base", "no timings")
    basis = "; ".join(
        f"{n}: {g['diff']:+.4g} s/epoch (×{g['ratio']:.3g}), quartile range "
        f"[{g['low']:+.4g}, {g['high']:+.4g}], resolved: {g['resolved']}"
        for n, g in got.items()
    )
    parts = []
    same = "does not differ beyond the interquartile range of the step times"
    for verb, keep in (
        ("is longer", lambda g: g["resolved"] and g["diff"] > 0),
        ("is shorter", lambda g: g["resolved"] and g["diff"] < 0),
        (same, lambda g: not g["resolved"]),
    ):
        group = {n: g for n, g in got.items() if keep(g)}
        if group:
            who = join(
                f"{n} (×{g['ratio']:.2f}, {g['text'].split(' (')[0]} s)" for n, g in group.items()
            )
            parts.append(f"{verb} for {who}")
    return Claim(", and ".join(parts) + ", each against its base at the same K", basis)


# ---------------------------------------------------------------------------------------------
# Slopes (one fitted value per run: the gradient SNR's log-log slope against K)


@dataclass(frozen=True)
class Slope:
    """A fitted slope over seeds: the mean of the runs' slopes and its (1 - ALPHA) interval, the
    t-interval over seeds (n > 1) or, for one seed, the run's own interval (bootstrap over the
    gradient's draws, :mod:`vaeinf.evaluation.snr`)."""

    value: float
    low: float
    high: float
    n: int
    basis: str

    @property
    def resolved(self) -> bool:
        """The interval excludes 0."""
        return bool(self.low > 0 or self.high < 0)

    def text(self, digits: int = 2) -> str:
        def num(x: float) -> str:
            return f"{x:+.{digits}f}".replace("-", "−")

        level = f"{100 * (1 - ALPHA):g} %"
        return f"{num(self.value)}, {level} interval {num(self.low)} to {num(self.high)}"


def slope(df: pd.DataFrame, column: str, where: dict, label: str | None = None) -> Slope | None:
    """The :class:`Slope` of ``column`` (per-run slopes; ``column`` with ``.value`` replaced by
    ``.low`` and ``.high`` holds a run's own interval) over the seeds of the runs matching
    ``where``; None when no run has one."""
    est = over_seeds(df, column, where, label)
    if est.n == 0:
        return None
    if est.n > 1:
        half = t_quantile(est.n) * est.se
        low, high = est.mean - half, est.mean + half
        rule = f"mean ± t({1 - ALPHA / 2:g}, {est.n - 1}) · s.e. over seeds"
    else:
        d = _select(df, where)
        low = float(pd.to_numeric(d[column.replace(".value", ".low")]).iloc[0])
        high = float(pd.to_numeric(d[column.replace(".value", ".high")]).iloc[0])
        rule = "one seed: the run's bootstrap interval over the gradient's draws"
    basis = f"{est.basis()}; interval [{low:+.4g}, {high:+.4g}] ({rule})"
    return Slope(est.mean, low, high, est.n, basis)


def trend(slopes: dict[str, Slope], words: Words) -> Claim:
    """Slopes of several members grouped by their decision (the interval above 0, below 0, or
    around it): ``"falls with K for IWAE (−0.42, 95 % interval −0.55 to −0.29); rises with K
    for IWAE (DReG) (+0.20, ...), over 3 seeds"``. The caller puts the subject in front."""
    slopes = {k: s for k, s in slopes.items() if s is not None}
    if not slopes:
        return Claim("cannot be fitted: no run measured it at two or more K", "no slopes")
    basis = "; ".join(f"{k}: {s.basis}" for k, s in slopes.items())
    groups = [
        (words.down, {k: s for k, s in slopes.items() if s.resolved and s.value < 0}),
        (words.up, {k: s for k, s in slopes.items() if s.resolved and s.value > 0}),
        (words.null, {k: s for k, s in slopes.items() if not s.resolved}),
    ]
    parts = [
        f"{verb} for {join(f'{k} ({s.text(words.digits)})' for k, s in group.items())}"
        for verb, group in groups
        if group
    ]
    text = ", and ".join(parts) if len(parts) < 3 else "; ".join(parts[:-1]) + "; and " + parts[-1]
    n = min(s.n for s in slopes.values())
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    return Claim(f"{text} ({'over ' + seeds if n > 1 else seeds})", basis)


#: How a slope of the gradient's SNR against K reads.
SNR_SLOPE = Words(
    up="rises with K",
    down="falls with K",
    null="has no slope resolved from zero",
    unit="",
)


def rule_text(n_seeds: int) -> str:
    """The decision rule in words, for the paper."""
    if n_seeds < 2:
        return (
            "With one seed per configuration no difference can be told from seed-to-seed noise; "
            "differences are reported as measured, without a test"
        )
    return (
        "Differences between two conditions are paired over seeds (the same seed under both) "
        "and reported as the mean ± standard error of the paired differences; a difference is "
        f"called resolved when a two-sided paired t-test rejects no difference at the "
        f"{100 * ALPHA:g} % level, i.e. when |mean| exceeds {t_quantile(n_seeds):.2f} standard "
        f"errors with {n_seeds} seeds, and is otherwise said to be within seed-to-seed spread"
    )


# ---------------------------------------------------------------------------------------------
# Training compute (results/curves.csv: every run's validation curve against compute)


def _sig(x: float, digits: int = 2) -> float:
    """x rounded to ``digits`` significant digits."""
    return float(f"{x:.{digits}g}") if x > 0 and math.isfinite(x) else x


def compute_budgets(curves: pd.DataFrame, n: int = 3) -> list[float]:
    """``n`` budgets of training compute, log-spaced (two significant digits) from the smallest
    at which every (variant, K) has trained an epoch (the largest first-epoch compute) to the
    compute that half of the (variant, K) reached (the median of their final compute)."""
    if curves.empty:
        return []
    cells = curves.groupby(["variant", "K"])["compute"]
    lo, hi = float(cells.min().max()), float(cells.max().median())
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [_sig(lo)] if math.isfinite(lo) else []
    return [_sig(float(b)) for b in np.geomspace(lo, hi, n)]


def at_budget(curves: pd.DataFrame, budget: float) -> pd.DataFrame:
    """(label, K, seed, value) of every run that trained an epoch within ``budget``: the best
    validation bound among its epochs within it (the state early stopping keeps)."""
    d = curves[curves["compute"] <= budget]
    return d.groupby(["label", "K", "seed"], as_index=False, sort=False)["val_bound"].max()


def best_at_budget(curves: pd.DataFrame, budget: float, unit: str) -> Claim:
    """``"at 2,000 VAE K=1 steps, IWAE at K = 5 has the highest validation bound (−23.4 nats),
    0.2 ± 0.1 nats above the runner-up ..."``: the (method, K) whose runs reach the highest
    validation bound within the budget (:func:`at_budget`), by :func:`ranking`."""
    v = at_budget(curves, budget)
    values = pd.DataFrame(
        {
            "key": list(zip(v["label"], v["K"], strict=True)),
            "seed": v["seed"].to_numpy(),
            "value": v["val_bound"].to_numpy(),
        }
    )
    c = ranking(
        values, "validation bound", lower_is_better=False, name=lambda k: f"{k[0]} at K = {k[1]}"
    )
    head = f"at {budget:,.0f} {unit} steps"
    cells = values["key"].nunique()
    return Claim(
        f"{head}, {c.text}", f"{head} ({cells} method-K cells trained within it): {c.basis}"
    )


def k_turn(df: pd.DataFrame, method: str, column: str, name: str) -> Claim:
    """Where more samples stop paying for ``method``: each step to the next larger K of the
    study is a paired change of ``column`` (lower is better, e.g. the test NLL) over seeds;
    the turn is the smallest K beyond which no step is a resolved improvement (the rule of
    :class:`Estimate`)."""
    ks = sorted(int(k) for k in df.loc[df["method"] == method, "K"].unique())
    if len(ks) < 2:
        return Claim(f"for {name}, one K only", "one K")
    steps = [
        paired(df, column, {"method": method, "K": a}, {"method": method, "K": b},
               f"{column} of {method}, K = {b} − K = {a}")
        for a, b in itertools.pairwise(ks)
    ]  # fmt: skip
    pays = [e.resolved and e.mean < 0 for e in steps]
    basis = "; ".join(e.basis() for e in steps)
    last = max((i for i, p in enumerate(pays) if p), default=None)
    if last is None:
        e = steps[0]
        text = (
            f"for {name}, more samples do not pay beyond K = {ks[0]} (K = {ks[0]} → {ks[1]}: "
            f"{e.pm('nats')}, {e.note()})"
        )
    elif last == len(steps) - 1:
        e = steps[-1]
        text = (
            f"for {name}, more samples still pay at the largest K (K = {ks[-2]} → {ks[-1]}: "
            f"{e.pm('nats')}, {e.note()})"
        )
    else:
        paid, after = steps[last], steps[last + 1]
        text = (
            f"for {name}, more samples pay up to K = {ks[last + 1]} (K = {ks[last]} → "
            f"{ks[last + 1]}: {paid.pm('nats')}) and no further (K = {ks[last + 1]} → "
            f"{ks[last + 2]}: {after.pm('nats')}, {after.note()})"
        )
    return Claim(text, basis)


def converged(summary: pd.DataFrame, column: str = "training.stopped_by") -> Claim:
    """How the runs ended: ``"40 of 84 runs converged (their validation bound stopped
    improving); 44 reached the epoch cap"``."""
    if column not in summary:
        return Claim("n/a (no training record)", f"no column {column}")
    counts = summary[column].fillna("unrecorded").value_counts()
    n = len(summary)
    words = {
        "converged": "converged (their validation bound stopped improving)",
        "cap": "reached the epoch cap",
        "budget": "spent the step budget",
    }
    done = counts.get("converged", 0)
    parts = [f"{c} {words.get(k, k)}" for k, c in counts.items() if k != "converged"]
    head = f"{done} of {n} run{'s' if n != 1 else ''} {words['converged']}"
    basis = ", ".join(f"{k}: {c}" for k, c in counts.items())
    return Claim(head + ("; " + join(parts) if parts else ""), basis)
