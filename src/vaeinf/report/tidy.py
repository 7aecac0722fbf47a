"""The tidy tables of a study's runs, from every run's ``metrics.json``.

Input: the ``metrics.json`` of every run (written by :mod:`vaeinf.rundir`). Output:

``summary.csv``
    one row per run, its complete record under one name per value: the grid columns
    (``dataset``, ``variant``, ``K``, ``seed``) and the variant's base ``method``, every scalar
    of ``metrics`` under its dotted path (``test_nll.mean``,
    ``collapse.mutual_information.value``, ...), the resolved config under ``config.`` (lists
    such as ``config.model.hidden`` as compact JSON, ``method_options`` flattened to
    ``config.method_options.NAME``) and the provenance under ``provenance.``; and
    the columns derived from the long tables: ``latent``, ``test_LK``, ``bound_gap`` (log p^(x)
    minus the run's training bound at its training K, ``metrics.bound_gap``), ``path`` and
    ``objective`` (the run's, from its method options or its method). A scalar the evaluator
    adds appears as a column with no change here.
``bounds.csv``
    one row per (run, split, evaluation K): the L_K curve.
``per_dim.csv``
    one row per (run, latent dimension): KL(q(z_i|x) || p(z_i)) and Cov_x(E_q[z_i|x]).
``per_point.csv``
    one row per (run, per-point quantity, test point): the values behind the run's means
    (``metrics.per_point``: the IS and AIS estimates of log p(x), the training bound, the
    bounds of the gap split), so that a comparison of two runs can be paired per point and its
    uncertainty include the test set's (:data:`POINTWISE`, :mod:`vaeinf.report.claims`).
``cost.csv``
    one row per (dataset, variant, K), with the base ``method``: seconds per epoch from the
    cost rule (:mod:`vaeinf.study.cost`), the study's cost axis (training logs keep their own
    epoch times as a record, ``time_per_epoch.*`` in the summary).
``curves.csv``
    one row per (run, epoch): the validation bound after the epoch (``val_bound``, L_K at the
    run's ``training.val_k``), the cumulative optimizer ``steps`` and ``compute``, the steps
    in multiples of the reference step of the cost rule (``steps`` x the (variant, K)'s
    ``ratio``; the reference, named in ``compute_unit``, is VAE at the smallest K), a
    machine-independent training cost; ``best`` marks the epoch of the evaluated state.
``snr.csv``
    one row per (run, stage, K, part): the gradient's signal-to-noise ratio
    (:mod:`vaeinf.evaluation.snr`) of the encoder or the decoder, each summary with its
    interval; ``stage`` is ``start``, ``middle`` or ``end`` of training (at the training K) or
    ``trained`` (the trained model at each K of the evaluation's grid, ``eval_K``). The fitted
    slopes and the training's values are summary columns too (``snr.slope.*``,
    ``snr.training.*``).

Before any table is written, :func:`check_runs` refuses runs whose files disagree (a
``metrics.json`` without the ``model.pt`` it evaluated, older than it, or written for another
training identity than the run's ``config.yaml``), so no table reads a model that no longer
exists.

The Markdown tables (:mod:`vaeinf.report.tables`), the figures and the paper's variables
(:mod:`vaeinf.report.variables`) are computed from these tables only, so a paper can be rebuilt
from the raw runs without retraining or re-evaluating.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml

from vaeinf.rundir import CONFIG, MODEL, atomic_write_text

GRID = ["dataset", "variant", "K", "seed"]
#: The columns that name a run: the grid's and the variant's base method.
KEYS = ["dataset", "variant", "method", "K", "seed"]


def _gap(a: str, b: str):
    return lambda p: p[a] - p[b]


#: Summary column -> its per-point values, from a run's per-point quantities (a data frame with
#: a column per quantity of ``metrics.per_point``, a row per test point; NaN where a quantity
#: covers fewer points): the mean over the points where it is defined is the summary's value.
POINTWISE = {
    "test_nll.mean": lambda p: -p["log_px_is"],
    "test_LK": lambda p: p["test_LK"],
    "bound_gap": _gap("log_px_is", "training_bound"),
    "ais.mean": lambda p: p["log_px_ais"],
    "ais.is_same_points.mean": lambda p: p["log_px_is"].where(p["log_px_ais"].notna()),
    "ais.minus_is.mean": _gap("log_px_ais", "log_px_is"),
    "gaps.own_family.approximation_gap.mean": _gap("log_px_ais", "gap_elbo_q_star"),
    "gaps.own_family.amortization_gap.mean": _gap("gap_elbo_q_star", "gap_elbo_q_phi"),
    "gaps.own_family.inference_gap.mean": _gap("log_px_ais", "gap_elbo_q_phi"),
    "gaps.training_bound.approximation_gap.mean": _gap("log_px_ais", "gap_train_q_star"),
    "gaps.training_bound.amortization_gap.mean": _gap("gap_train_q_star", "gap_train_q_phi"),
    "gaps.training_bound.inference_gap.mean": _gap("log_px_ais", "gap_train_q_phi"),
    "gaps.gaussian.minus_q_phi.mean": _gap("gap_gauss_q_star", "gap_elbo_q_phi"),
}


def pointwise(wide: pd.DataFrame, column: str) -> pd.Series | None:
    """The per-point values behind summary ``column`` (:data:`POINTWISE`) of one run's
    per-point quantities ``wide``; None when the column has none or the run lacks them."""
    f = POINTWISE.get(column)
    if f is None:
        return None
    try:
        return f(wide).dropna()
    except KeyError:
        return None


def _bound(bounds: list[dict], split: str, K: int) -> float:
    for b in bounds:
        if b["split"] == split and b["K"] == K:
            return b["mean"]
    return math.nan


def flatten(doc: dict) -> dict:
    """Every scalar of a metrics.json document under its dotted path, and the config's lists as
    compact JSON (``config.model.hidden`` = ``[64,64]``); the metrics' lists are left to the long
    tables (bounds.csv, per_dim.csv)."""
    sections = {k: doc.get(k, {}) for k in ("metrics", "config", "provenance")}
    flat = pd.json_normalize(sections).iloc[0]
    row = {}
    for key, value in flat.items():
        if isinstance(value, list) and key.startswith("config."):
            row[key] = json.dumps(value, separators=(",", ":"))
        elif not isinstance(value, list | dict):
            row[key.removeprefix("metrics.")] = value
    return row


def run_rows(doc: dict, path: str = "") -> tuple[dict, list[dict], list[dict], list[dict]]:
    """(summary row, bound rows, per-dimension rows, per-point rows) of one run's metrics.json
    document."""
    m = dict(doc["metrics"])
    m.setdefault("variant", m["method"])  # a run of a study without variants
    key = {k: m[k] for k in KEYS}
    # A config value the metrics repeat at the top level (the grid's dataset, method, K and seed,
    # the estimator) is the same value under a second name: kept once, under the metrics' name;
    # so is ``config.variant`` (null for a method itself), which ``variant`` names.
    config = doc.get("config", {})
    copies = {f"config.{k}" for k, v in m.items() if k in config and config[k] == v}
    copies.add("config.variant")
    flat = {k: v for k, v in flatten(doc).items() if k not in key and k not in copies}
    coll, au = m.get("collapse", {}), m.get("active_units", {})
    kl = coll.get("kl_per_dim") or []
    row = {
        **key,
        "objective": objective(doc),
        "latent": len(kl) or len(au.get("variance", [])),
        "test_LK": _bound(m["bounds"], "test", m["K"]),
        "bound_gap": (m.get("bound_gap") or {}).get("mean", math.nan),
        "path": path,
        **flat,
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
    points = [
        {**key, "quantity": q, "point": i, "value": _num(v)}
        for q, values in (m.get("per_point") or {}).items()
        for i, v in enumerate(values)
    ]
    return row, bounds, per_dim, points


#: The stage of the trained model's grid in snr.csv (the training's are start, middle, end).
TRAINED = "trained"

#: The columns snr.csv always has (a study without SNR measurements writes them alone).
SNR_COLUMNS = [*KEYS, "estimator", "objective", "stage", "epoch", "eval_K", "part"] + [
    f"{name}{end}" for name in ("mean", "median", "rms") for end in ("", "_low", "_high")
]


def objective(doc: dict) -> str:
    """The objective a run trained: its method option, else its method's default."""
    from vaeinf.names import DEFAULT_OBJECTIVES

    options = (doc.get("config") or {}).get("method_options") or {}
    method = doc["metrics"]["method"]
    return options.get("objective") or DEFAULT_OBJECTIVES.get(method, "")


def snr_rows(doc: dict) -> list[dict]:
    """The rows of snr.csv of one run's metrics.json document (none without an ``snr`` block)."""
    m = dict(doc["metrics"])
    m.setdefault("variant", m["method"])
    key = {k: m[k] for k in KEYS}
    block = m.get("snr") or {}
    records = [
        (stage, r.get("epoch"), r.get("K", m["K"]), r)
        for stage, r in (block.get("training") or {}).items()
    ]
    epochs = (m.get("time_per_epoch") or {}).get("epochs")
    records += [(TRAINED, epochs, r["K"], r) for r in block.get("grid") or []]
    named = {**key, "estimator": m.get("estimator"), "objective": objective(doc)}
    return [
        {**named, "stage": stage, "epoch": epoch, "eval_K": K, "part": part, **values}
        for stage, epoch, K, r in records
        for part, values in r.items()
        if isinstance(values, dict)
    ]


def _num(v) -> float:
    return math.nan if v is None else float(v)


def collect(paths: list[str | Path]) -> tuple[pd.DataFrame, ...]:
    """Read every metrics.json: (summary, bounds, per_dim, per_point) data frames, the summary
    sorted by the grid."""
    rows, bounds, dims, points = [], [], [], []
    for p in paths:
        r, b, d, q = run_rows(json.loads(Path(p).read_text()), str(p))
        rows.append(r)
        bounds += b
        dims += d
        points += q
    summary = pd.DataFrame(rows)
    if len(summary):
        summary = summary.sort_values(GRID, kind="stable").reset_index(drop=True)
    columns = [*KEYS, "quantity", "point", "value"]
    return summary, pd.DataFrame(bounds), pd.DataFrame(dims), pd.DataFrame(points, columns=columns)


def _identity(config) -> dict | None:
    """The training identity of a config mapping (None when it is not a valid run config)."""
    from vaeinf.config import RunConfig, from_dict, validate
    from vaeinf.errors import ConfigError

    try:
        return validate(from_dict(RunConfig, config)).identity()
    except (ConfigError, TypeError):
        return None


def disagreement(metrics: str | Path) -> str | None:
    """Why a run's ``metrics.json`` does not describe its current model, or None when it does:
    the run directory has no ``model.pt``, the evaluation is older than the model, or it was
    written for another training identity than the run's ``config.yaml``."""
    metrics = Path(metrics)
    model, config = metrics.parent / MODEL, metrics.parent / CONFIG
    if not model.exists():
        return f"no {MODEL}"
    if metrics.stat().st_mtime < model.stat().st_mtime:
        return f"{metrics.name} older than {MODEL}"
    try:
        saved = _identity(yaml.safe_load(config.read_text()))
    except (OSError, yaml.YAMLError):
        saved = None
    if saved is None:
        return f"no readable {CONFIG}"
    if _identity(json.loads(metrics.read_text()).get("config")) != saved:
        return f"{metrics.name} of another training identity than {CONFIG}"
    return None


def check_runs(paths) -> None:
    """Raise DataError (one line naming every such run) when the files of a run disagree
    (:func:`disagreement`)."""
    from vaeinf.errors import DataError

    bad = [(Path(p).parent, why) for p in paths if (why := disagreement(p))]
    if bad:
        runs = "; ".join(f"{run} ({why})" for run, why in bad)
        raise DataError(
            f"refusing to aggregate {len(bad)} run(s) whose files disagree: {runs}; "
            "rebuild them with snakemake (a run without its model retrains)"
        )


def labelled(df: pd.DataFrame, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """``df`` with a column ``label``: each row's display name, ``labels[variant]`` (the study's
    :func:`vaeinf.study.grid.labels`, the one place names come from), else its variant's name.
    Tables and figures group and order their rows and series by it. A table without a
    ``variant`` column (a study without variants) is named by its ``method``."""
    df = df.copy()
    key = df["variant"] if "variant" in df else df["method"]
    df["label"] = key.map(lambda v: (labels or {}).get(v, v))
    return df


def display_order(variants: list[str] | None, labels: dict[str, str] | None) -> list[str] | None:
    """The display names of ``variants``, in their order (None: as the rows come)."""
    return [(labels or {}).get(v, v) for v in variants] if variants else None


def curve_rows(doc: dict) -> list[dict]:
    """(run, epoch, steps, val_bound) rows of one run's metrics.json (none for a run trained
    by a vaeinf that did not record its curve)."""
    m = dict(doc["metrics"])
    m.setdefault("variant", m["method"])
    key = {k: m[k] for k in KEYS}
    tr = m.get("training") or {}
    return [
        {**key, **point, "val_k": tr["val_k"], "best": point["epoch"] == tr["best_epoch"]}
        for point in tr.get("curve") or []
    ]


def curve_table(paths, cost: pd.DataFrame) -> pd.DataFrame:
    """The validation curves of every run against cumulative training compute: ``curves.csv``
    (see the module's doc), joined with the cost rule's ``ratio`` per (dataset, variant, K)."""
    rows = [r for p in paths for r in curve_rows(json.loads(Path(p).read_text()))]
    columns = [*KEYS, "epoch", "steps", "compute", "compute_unit", "val_k", "val_bound", "best"]
    if not rows:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(rows)
    ratio = cost[["dataset", "variant", "K", "ratio", "reference"]].rename(
        columns={"reference": "compute_unit"}
    )
    df = df.merge(ratio, on=["dataset", "variant", "K"], how="left", validate="many_to_one")
    df["compute"] = df["steps"] * df["ratio"]
    return df.sort_values([*GRID, "epoch"], kind="stable")[columns].reset_index(drop=True)


def _write_csv(df: pd.DataFrame, path: str | Path) -> None:
    atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))


def collect_snr(paths: list[str | Path]) -> pd.DataFrame:
    """snr.csv's rows of every metrics.json, sorted by the grid, the stage and the K."""
    rows = [r for p in paths for r in snr_rows(json.loads(Path(p).read_text()))]
    df = pd.DataFrame(rows, columns=list(dict.fromkeys(SNR_COLUMNS + [k for r in rows for k in r])))
    return df.sort_values([*GRID, "eval_K"], kind="stable").reset_index(drop=True)


def write_aggregate(
    paths,
    cost_paths,
    summary: str,
    bounds: str,
    per_dim: str,
    cost: str,
    curves: str | None = None,
    snr: str | None = None,
    per_point: str | None = None,
) -> pd.DataFrame:
    """The tidy tables of the runs' metrics.json, the cost rule's tables of every dataset
    in one (``cost.csv``, see :mod:`vaeinf.study.cost`), the validation curves against
    compute (``curves.csv``), the gradient's SNR (``snr.csv``) and the per-point values
    (``per_point.csv``). Refuses runs whose files disagree (:func:`check_runs`) before writing
    anything."""
    check_runs(paths)
    s, b, d, q = collect(paths)
    c = pd.concat([pd.read_csv(p) for p in cost_paths], ignore_index=True)
    _write_csv(s, summary)
    _write_csv(b, bounds)
    _write_csv(d, per_dim)
    _write_csv(c, cost)
    if curves is not None:
        _write_csv(curve_table(paths, c), curves)
    if snr is not None:
        _write_csv(collect_snr(paths), snr)
    if per_point is not None:
        _write_csv(q, per_point)
    return s
