"""The paper's findings as phrases chosen by the runs, each with the numbers behind it.

Every sentence of the paper that states a direction or a comparison takes its wording from here,
so the text says what the runs say, with its uncertainty:

- a *change* between two conditions of the same runs (two values of K, two methods) is paired
  over seeds: for every seed s run under both, d_s = x_b(s) - x_a(s); it is reported as the mean
  of the d_s ± its standard error with the number n of seeds;
- the standard error counts both sources of chance: the seeds, s_seeds^2 / n (the spread of the
  d_s), and the test set, s_points^2 / N, where the quantity has per-point values
  (:data:`vaeinf.report.tidy.POINTWISE`): the per-point differences, paired per test point and
  averaged over the seeds, spread by s_points over the N points (the test set is shared by the
  seeds, so its part does not shrink with n); a quantity without per-point values but with a
  bootstrap over test points (active units) adds that bootstrap's variance;
- it is *resolved* when a two-sided t-test rejects a zero mean (Welch-Satterthwaite degrees of
  freedom for the two parts), with the family of every test the paper states held at a
  familywise error rate of :data:`ALPHA` by Holm's (1979) step-down procedure (:func:`family`):
  then the phrase names its direction ("improves by 0.51 ± 0.05 nats (3 seeds, paired)"),
  otherwise it says the difference does not exceed the spread, and with one seed that it cannot
  be told from noise;
- a *comparison* names the best condition and its paired margin to the runner-up, resolved or
  not by the same rule;
- the *cost* trend reads the cost rule's table (:mod:`vaeinf.study.cost`): a growth from the
  smallest to the largest K is resolved when the interquartile ranges of the step times at the
  two ends do not overlap (no test, not part of the family), and its shape (in proportion to K
  or less) is the elasticity log(time ratio) / log(K ratio).

Each function returns a :class:`Claim`: the phrase, and ``basis``, one line with the numbers
and the rule that chose the words (listed by the manuscript check).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vaeinf.report.text import join
from vaeinf.report.tidy import KEYS, pointwise

#: The familywise error rate of the paper's tests (Holm's procedure), and the level of a test
#: made outside a family.
ALPHA = 0.05


@dataclass(frozen=True)
class Claim:
    text: str
    basis: str


def t_quantile(n: int, dof: float | None = None) -> float:
    """t_{1 - ALPHA/2, dof} (dof: n - 1 by default), the multiple of the standard error a mean
    over n seeds must exceed at level ALPHA (scipy comes with scikit-learn, a dependency of
    vaeinf)."""
    from scipy import stats

    dof = n - 1 if dof is None else dof
    return float(stats.t.ppf(1 - ALPHA / 2, dof)) if n > 1 and dof > 0 else math.inf


@dataclass
class Family:
    """The tests a set of claims makes, held together at familywise error rate ALPHA by Holm's
    step-down procedure (Holm 1979, "A simple sequentially rejective multiple test procedure"):
    sort the m p-values, reject the i-th smallest while p_(i) <= ALPHA / (m - i + 1). Two passes:
    the first records every p-value (``decisions`` None), the second reads each test's Holm
    decision and adjusted p-value, min(1, max_{j <= i} (m - j + 1) p_(j))."""

    p_values: dict = field(default_factory=dict)
    decisions: dict | None = None

    def holm(self) -> dict:
        """{key: (resolved, adjusted p)} for every recorded test."""
        keys = sorted(self.p_values, key=lambda k: self.p_values[k])
        m, running, out = len(keys), 0.0, {}
        for i, k in enumerate(keys):
            running = max(running, min(1.0, (m - i) * self.p_values[k]))
            out[k] = (running <= ALPHA, running)
        return out

    @property
    def size(self) -> int:
        return len(self.p_values)


_FAMILY: contextvars.ContextVar[Family | None] = contextvars.ContextVar("family", default=None)


@contextlib.contextmanager
def family(decided: Family | None = None):
    """Within this context every tested :class:`Estimate` belongs to one family: a new one that
    records the p-values (first pass), or ``decided``, whose Holm decisions it then reads
    (second pass; ``decided.decisions`` set from :meth:`Family.holm`). Yields the family."""
    fam = decided or Family()
    token = _FAMILY.set(fam)
    try:
        yield fam
    finally:
        _FAMILY.reset(token)


@dataclass(frozen=True)
class Estimate:
    """Per-seed values (paired differences, or one quantity per seed) and their mean ± s.e.;
    ``point_var``: the test set's part of the variance of the mean (see the module docstring),
    0 when not known, and ``n_points`` the points it rests on."""

    values: tuple[float, ...]
    seeds: tuple
    label: str
    paired: bool = True
    point_var: float = 0.0
    n_points: int = 0

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def seed_var(self) -> float:
        return float(np.var(self.values, ddof=1) / self.n) if self.n > 1 else math.nan

    @property
    def se(self) -> float:
        return math.sqrt(self.seed_var + self.point_var) if self.n > 1 else math.nan

    @property
    def dof(self) -> float:
        """Welch-Satterthwaite degrees of freedom of the two variance parts."""
        a, b = self.seed_var, self.point_var
        if self.n < 2:
            return 0.0
        if b <= 0 or self.n_points < 2:
            return float(self.n - 1)
        if a <= 0:
            return float(self.n_points - 1)
        return (a + b) ** 2 / (a * a / (self.n - 1) + b * b / (self.n_points - 1))

    @property
    def identical(self) -> bool:
        """Every paired difference is exactly zero (e.g. two objectives that coincide)."""
        return self.n > 0 and all(v == 0 for v in self.values)

    @property
    def p_value(self) -> float:
        """Two-sided p-value of a zero mean (t distribution, :attr:`dof`)."""
        from scipy import stats

        if self.n < 2 or self.identical:
            return 1.0
        if not self.se > 0:
            return 0.0 if self.mean != 0 else 1.0
        return float(2 * stats.t.sf(abs(self.mean) / self.se, self.dof))

    def _key(self) -> tuple:
        return (self.label, self.values, self.seeds, self.point_var)

    @property
    def adjusted(self) -> tuple[bool, float, int]:
        """(resolved, p-value, family size): by the active :func:`family`'s Holm decision, or
        at level ALPHA alone outside a family (family size 1)."""
        p = self.p_value
        fam = _FAMILY.get()
        if self.n < 2 or self.identical:
            return False, p, fam.size if fam else 1
        if fam is None:
            return p < ALPHA, p, 1
        if fam.decisions is None:
            fam.p_values[self._key()] = p
            return p < ALPHA, p, 0
        resolved, p_adj = fam.decisions.get(self._key(), (p < ALPHA, p))
        return resolved, p_adj, fam.size

    @property
    def resolved(self) -> bool:
        return self.adjusted[0]

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
        points = f" and {self.n_points} test points" if self.point_var > 0 else ""
        return f"{seeds}{points}, paired" if self.paired else f"{seeds}{points}"

    def basis(self) -> str:
        values = ", ".join(f"{v:+.4g}" for v in self.values)
        seeds = ", ".join(str(s) for s in self.seeds)
        head = f"{self.label} over seeds [{seeds}]: [{values}]"
        if self.n == 0:
            return f"{self.label}: no seed has both conditions"
        if self.n == 1:
            return f"{head}; one seed: no test"
        resolved, p, m = self.adjusted
        verdict = "resolved" if resolved else "not resolved"
        parts = f"s.e. {self.se:.3g} (seeds {math.sqrt(self.seed_var):.3g}"
        parts += f", test set {math.sqrt(self.point_var):.3g} over {self.n_points} points)"
        rule = f"Holm-adjusted p = {p:.3g} in a family of {m} tests" if m > 1 else f"p = {p:.3g}"
        return (
            f"{head}; mean {self.mean:+.4g}, {parts}; t-test, {self.dof:.3g} d.o.f., {rule}: "
            f"{verdict}"
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


class Points:
    """The runs' per-point values (``per_point.csv`` of :mod:`vaeinf.report.tidy`), for the
    test set's part of an uncertainty: :meth:`values` gives, for a summary column with per-point
    values (:data:`vaeinf.report.tidy.POINTWISE`), those of the runs matching a condition, a
    column per seed, a row per test point."""

    def __init__(self, long: pd.DataFrame):
        self.runs: dict[tuple, pd.DataFrame] = {}
        if len(long):
            wide = long.set_index([*KEYS, "point", "quantity"])["value"].unstack("quantity")
            for key, g in wide.groupby(level=list(range(len(KEYS))), sort=False):
                self.runs[key] = g.droplevel(list(range(len(KEYS))))

    def values(self, column: str, where: dict) -> pd.DataFrame | None:
        """Per-point values of ``column`` (points x seeds) for the runs matching ``where``; None
        when the column has none or a matching run lacks them."""
        cols = {}
        for key, wide in self.runs.items():
            run = dict(zip(KEYS, key, strict=True))
            if all(run.get(k) == v for k, v in where.items()):
                v = pointwise(wide, column)
                if v is None:
                    return None
                cols[run["seed"]] = v
        return pd.DataFrame(cols) if cols else None


#: The runs' per-point values the claims in this context draw on (:func:`points`).
_POINTS: contextvars.ContextVar[Points | None] = contextvars.ContextVar("points", default=None)

#: Summary column -> the column with its standard deviation over bootstrap resamples of the
#: test points, for quantities without per-point values.
BOOTSTRAP = {"active_units.count": "active_units.bootstrap_sd"}


@contextlib.contextmanager
def points(per_point: pd.DataFrame | None):
    """Within this context, :func:`paired`, :func:`over_seeds` and :func:`ranking` add the
    test set's part to their uncertainties from ``per_point`` (the long per-point table)."""
    token = _POINTS.set(Points(per_point) if per_point is not None else None)
    try:
        yield
    finally:
        _POINTS.reset(token)


def _points_var(frames: list[pd.DataFrame]) -> tuple[float, int]:
    """The test set's variance of a mean over seeds: the per-point values (points x seeds, one
    frame, or the difference of two), averaged over the seeds, spread over the N points where
    every seed has one: Var_points / N, and N."""
    d = frames[0] if len(frames) == 1 else frames[1] - frames[0]
    d = d.dropna()
    if len(d) < 2:
        return 0.0, 0
    mean = d.mean(axis=1)
    return float(mean.var(ddof=1) / len(mean)), len(mean)


def test_set_part(
    df: pd.DataFrame, column: str, conditions: list[dict], seeds: list
) -> tuple[float, int]:
    """(variance, points) of the test set's part of the uncertainty of the mean over ``seeds``
    of ``column`` under one condition, or of the difference between two (b - a), from the
    runs' per-point values in context (:func:`points`), paired per point; else from the
    bootstrap over test points of :data:`BOOTSTRAP` (the two runs counted as independent); (0,
    0) when neither is known."""
    pts = _POINTS.get()
    if pts is not None and seeds:
        frames = [pts.values(column, c) for c in conditions]
        if all(f is not None for f in frames):
            frames = [f.reindex(columns=seeds) for f in frames]
            return _points_var(frames)
    sd_col = BOOTSTRAP.get(column)
    if sd_col is not None and sd_col in df and seeds:
        var = sum(by_seed(df, sd_col, c).reindex(seeds).pow(2) for c in conditions)
        n_pts = int(pd.to_numeric(df.get("test_nll.n"), errors="coerce").max())
        return float(var.mean()), n_pts
    return 0.0, 0


def paired(df: pd.DataFrame, column: str, a: dict, b: dict, label: str | None = None) -> Estimate:
    """x_b(s) - x_a(s) of ``column`` for every seed run under both conditions ``a`` and ``b``
    (dicts of column -> value, e.g. {"method": "iwae", "K": 1}), with the test set's part of the
    uncertainty (:func:`test_set_part`)."""
    xa, xb = by_seed(df, column, a), by_seed(df, column, b)
    seeds = sorted(set(xa.index) & set(xb.index))
    diffs = tuple(float(xb[s] - xa[s]) for s in seeds)
    label = label or f"{column}({_describe(b)}) − {column}({_describe(a)})"
    var, n_pts = test_set_part(df, column, [a, b], seeds)
    return Estimate(diffs, tuple(seeds), label, point_var=var, n_points=n_pts)


def over_seeds(df: pd.DataFrame, column: str, where: dict, label: str | None = None) -> Estimate:
    """One value of ``column`` per seed (already a difference within each run), with the test
    set's part of the uncertainty (:func:`test_set_part`)."""
    x = by_seed(df, column, where).sort_index()
    label = label or f"{column}({_describe(where)})"
    var, n_pts = test_set_part(df, column, [where], list(x.index))
    return Estimate(
        tuple(float(v) for v in x), tuple(x.index), label, paired=False, point_var=var,
        n_points=n_pts,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Phrases


@dataclass(frozen=True)
class Words:
    """How a change of a quantity reads: verbs for an increase and a decrease, the phrase for
    a difference within its uncertainty (seeds and test points), and the unit."""

    up: str = "grows"
    down: str = "shrinks"
    null: str = "does not change beyond its uncertainty"
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
    its uncertainty for vae (+0.02 ± 0.03 nats), paired over 3 seeds"``. The caller puts
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
    test_set: tuple | None = None,
) -> Claim:
    """The best key of ``values`` (columns key, seed, value) by its mean over seeds, and its
    margin to the runner-up, paired over seeds: ``"flow has the lowest test NLL (30.12 nats),
    0.31 ± 0.05 nats below the runner-up iwae (3 seeds, paired)"``. ``name`` turns a key into
    words. ``test_set``: (summary, column, key -> condition dict), to add the test set's part
    to the margin's uncertainty (:func:`test_set_part`)."""
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
    var, n_pts = 0.0, 0
    if test_set is not None:
        df, column, where_of = test_set
        var, n_pts = test_set_part(df, column, [where_of(best), where_of(runner)], list(both.index))
    est = Estimate(
        tuple(float(v) for v in sign * (both[runner] - both[best])),
        tuple(both.index),
        f"margin of {name(best)} over {name(runner)} in {what}",
        point_var=var,
        n_points=n_pts,
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
            f"{name(runner)}, {est.pm(unit, digits)} ({est.note()}), is within its "
            "uncertainty"
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


def cost_trend(cost: pd.DataFrame, methods: list[str], name=str) -> Claim:
    """``"grows with K for every method, ×9.9 (median; ×9.1–×10.2) from K = 1 to
    K = 50 (50 times the samples): less than in proportion to K (elasticity 0.52–0.61)"``;
    methods whose growth is not resolved are named apart (``name``: method -> words). The
    caller puts the subject ("the time per epoch") in front."""
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
        who = "every method" if not other else join(name(m) for m in growing)
        lo, hi = f"×{min(factors):.1f}", f"×{max(factors):.1f}"
        spread = lo if lo == hi else f"×{np.median(factors):.1f} (median; {lo}–{hi})"
        if len(set(shapes.values())) == 1:
            form = next(iter(shapes.values()))
            lo, hi = f"{min(slopes):.2f}", f"{max(slopes):.2f}"
            form = f"{form} (elasticity {lo if lo == hi else lo + '–' + hi})"
        else:
            form = "; ".join(
                f"{s} for {join(name(m) for m in shapes if shapes[m] == s)}"
                for s in dict.fromkeys(shapes.values())
            )
        parts.append(
            f"grows with K for {who}, {spread} from K = {k0} to K = {k1} "
            f"({k1 / k0:g} times the samples): {form}"
        )
    if other:
        members = join(f"{name(m)} (×{v['factor']:.2f})" for m, v in other.items())
        parts.append(
            f"for {members} the change from K = {k0} to K = {k1} does not exceed the "
            "interquartile range of the step times"
        )
    if not growing:
        members = join(f"{name(m)} ×{v['factor']:.2f}" for m, v in other.items())
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


def rule_text(n_seeds: int, n_tests: int = 0) -> str:
    """The decision rule in words, for the paper (stated once, in the Methods): the paired
    differences, the two parts of their standard error, the t-test and Holm's procedure over
    the family of ``n_tests`` tests the paper states."""
    if n_seeds < 2:
        return (
            "With one seed per configuration no difference can be told from seed-to-seed noise; "
            "differences are reported as measured, without a test"
        )
    family = (
        f"the {n_tests} tests behind the sentences of this paper form one family, held at a "
        f"familywise error rate of {100 * ALPHA:g} % by Holm's step-down procedure"
    )
    return (
        "Differences between two conditions are paired over seeds (the same seed under both) "
        "and, where the quantity is a mean over test points, over the test points too, and are "
        "reported as the mean ± standard error of the paired differences; the standard error "
        "adds the seed-to-seed variance of the differences (over the "
        f"{n_seeds} seeds) to the test-set variance of the per-point differences averaged over "
        "the seeds (the seeds share the test set, so this part does not shrink with more "
        "seeds; for the active units, the variance of a bootstrap over test points). A "
        "difference is called resolved when a two-sided t-test (Welch–Satterthwaite degrees of "
        f"freedom for the two parts) rejects no difference, where {family}; otherwise it is "
        "said to be within its uncertainty. The cost comparisons are not tests: they read the "
        "interquartile ranges of the step times"
    ) + _seed_only_reach(n_seeds, n_tests)


def _seed_only_reach(n_seeds: int, n_tests: int) -> str:
    """What Holm's procedure asks of a difference measured over seeds alone (n_seeds - 1
    degrees of freedom): the multiple of its standard error it must exceed at the first and at
    the last step, so that a reader can weigh a large "within its uncertainty" difference."""
    if n_tests < 2:
        return ""
    from scipy import stats

    dof = n_seeds - 1
    first = float(stats.t.ppf(1 - ALPHA / (2 * n_tests), dof))
    last = t_quantile(n_seeds)
    return (
        f". A difference measured over the {n_seeds} seeds alone ({dof} degrees of freedom) is "
        f"resolved only beyond {first:.0f} standard errors at the procedure's first step and "
        f"{last:.1f} at its last, so such a difference can be large and still within its "
        "uncertainty; its mean ± standard error is given beside it"
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
            f"for {name}, no step beyond K = {ks[0]} is a resolved gain (K = {ks[0]} → "
            f"{ks[1]}: {e.pm('nats')}, {e.note()})"
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
            f"{ks[last + 1]}: {paid.pm('nats')}), and no larger step is a resolved gain (K = "
            f"{ks[last + 1]} → {ks[last + 2]}: {after.pm('nats')}, {after.note()})"
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
