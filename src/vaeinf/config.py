"""Typed run configuration: dataclasses with defaults, loaded from YAML and validated.

Every bad value raises :class:`ConfigError` with a one-line message that names the key, the bad
value and what is allowed, before anything is written to disk. The resolved config (defaults
filled in) is saved with every run, so a run directory describes itself.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range (one line)."""


@dataclass
class ModelConfig:
    """Encoder/decoder MLPs. ``preset: burda1`` is Burda et al. (2015)'s 1-stochastic-layer net:
    784-200-200-50 with tanh (their Sec. 5); it overrides hidden, latent and activation."""

    preset: Literal["burda1"] | None = None
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    latent: int = 8
    activation: Literal["tanh", "relu", "elu", "softplus"] = "tanh"

    def resolved(self) -> ModelConfig:
        if self.preset == "burda1":
            return ModelConfig(preset=None, hidden=[200, 200], latent=50, activation="tanh")
        return self


@dataclass
class TrainConfig:
    """Optimisation. ``schedule: burda`` is Burda et al. (2015) Sec. 5: 8 stages, stage i runs
    3**i epochs at lr 1e-3 * 10**(-i/7), i = 0..7 (3280 epochs); ``epochs`` then truncates it
    when set, and defaults to the full 3280."""

    epochs: int | None = 30
    batch_size: int = 100
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-4
    schedule: Literal["constant", "burda"] = "constant"
    checkpoint_every: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    val_points: int | None = 1000


@dataclass
class EvalConfig:
    """Evaluation: ``ks`` is the L_K curve, ``nll_k`` the importance samples of the test NLL."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 50, 100, 500, 1000, 5000])
    nll_k: int = 5000
    memory_mb: int = 512
    max_points: int | None = None
    active_threshold: float = 0.01
    collapse_threshold: float = 0.01
    moment_samples: int = 100
    mi_points: int = 2000
    n_images: int = 16
    n_prior_samples: int = 64
    # AIS from the prior (Wu et al. 2017) on a fixed random subset of ais_points test points
    # (0: off), BDMC (Grosse et al. 2015) on bdmc_points simulated points (0: off), and the
    # approximation / amortization gaps (Cremer et al. 2018) on the first gap_points of that
    # subset, with q* found by at most qstar_steps Adam steps (see vaeinf.gaps).
    ais_points: int = 50
    ais_steps: int = 100
    ais_chains: int = 4
    ais_leapfrog: int = 5
    bdmc_points: int = 20
    gap_points: int = 50
    qstar_steps: int = 300
    qstar_lr: float = 1e-2
    qstar_tol: float = 1e-4
    elbo_samples: int = 500


@dataclass
class RunConfig:
    """One run of the grid: dataset x method x K x seed."""

    dataset: str = "digits"
    binarization: Literal["static", "dynamic"] | None = None  # None: the dataset's default
    data_dir: str = "data"
    method: str = "iwae"
    K: int = 5
    seed: int = 0
    estimator: Literal["standard", "stl", "dreg"] = "standard"
    model: ModelConfig = field(default_factory=ModelConfig)
    method_options: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Generic dict -> dataclass conversion with one-line errors.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise bad
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key)
    if tp is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping: unknown keys and wrong types raise ConfigError."""
    where = f"'{prefix}'" if prefix else "the top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            dotted = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(
                f"unknown config key '{dotted}'; allowed at {where}: {', '.join(names)}"
            )
    kwargs = {}
    for name in names:
        if name in data:
            dotted = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _convert(hints[name], data[name], dotted)
    return cls(**kwargs)


def _check_positive(key: str, value: int | float | None, minimum: float = 1) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"config key '{key}': {value!r} is out of range; must be >= {minimum}")


def validate(cfg: RunConfig) -> RunConfig:
    """Range and registry checks that types alone cannot express. Returns cfg for chaining."""
    from vaeinf.data import DATASETS
    from vaeinf.methods import REGISTRY

    if cfg.dataset not in DATASETS:
        raise ConfigError(
            f"config key 'dataset': unknown dataset {cfg.dataset!r}; "
            f"allowed: {', '.join(sorted(DATASETS))}"
        )
    if cfg.method not in REGISTRY:
        raise ConfigError(
            f"config key 'method': unknown method {cfg.method!r}; "
            f"allowed: {', '.join(sorted(REGISTRY))}"
        )
    _check_positive("K", cfg.K)
    _check_positive("seed", cfg.seed, 0)
    _check_positive("model.latent", cfg.model.latent)
    for i, h in enumerate(cfg.model.hidden):
        _check_positive(f"model.hidden[{i}]", h)
    _check_positive("train.epochs", cfg.train.epochs)
    _check_positive("train.batch_size", cfg.train.batch_size)
    _check_positive("train.checkpoint_every", cfg.train.checkpoint_every)
    _check_positive("train.val_points", cfg.train.val_points)
    if not cfg.train.lr > 0:
        raise ConfigError(f"config key 'train.lr': {cfg.train.lr!r} is out of range; must be > 0")
    if len(cfg.train.betas) != 2 or not all(0 <= b < 1 for b in cfg.train.betas):
        raise ConfigError(
            f"config key 'train.betas': {cfg.train.betas!r}; must be two numbers in [0, 1)"
        )
    for i, k in enumerate(cfg.eval.ks):
        _check_positive(f"eval.ks[{i}]", k)
    _check_positive("eval.nll_k", cfg.eval.nll_k)
    _check_positive("eval.memory_mb", cfg.eval.memory_mb)
    _check_positive("eval.max_points", cfg.eval.max_points)
    _check_positive("eval.moment_samples", cfg.eval.moment_samples)
    _check_positive("eval.mi_points", cfg.eval.mi_points, 2)
    ev = cfg.eval
    for key in ("ais_points", "bdmc_points", "gap_points"):
        _check_positive(f"eval.{key}", getattr(ev, key), 0)
    for key in ("ais_steps", "ais_chains", "ais_leapfrog", "qstar_steps", "elbo_samples"):
        _check_positive(f"eval.{key}", getattr(ev, key))
    if ev.gap_points > ev.ais_points:
        raise ConfigError(
            f"config key 'eval.gap_points': {ev.gap_points!r} is out of range; must be <= "
            f"eval.ais_points ({ev.ais_points}), the points with an AIS estimate"
        )
    if not ev.qstar_lr > 0:
        raise ConfigError(
            f"config key 'eval.qstar_lr': {ev.qstar_lr!r} is out of range; must be > 0"
        )
    if not 0 < ev.qstar_tol < 1:
        raise ConfigError(
            f"config key 'eval.qstar_tol': {ev.qstar_tol!r} is out of range; must be in (0, 1)"
        )
    # The method checks its own options and whether it supports the estimator.
    REGISTRY[cfg.method].check_config(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Read YAML at ``path`` (or only defaults), apply ``overrides`` (a nested dict), validate."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"config file '{path}' is not valid YAML: {first}") from None
    if overrides:
        data = _merge(data, overrides)
    return validate(from_dict(RunConfig, data))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out
