"""Typed run configuration: dataclasses with defaults, loaded from YAML and validated.

Every bad value raises :class:`ConfigError` with a one-line message that names the key, the bad
value and what is allowed, before anything is written to disk. Ranges are declared once, on the
field (``field(metadata=limits(ge=1))``), and checked by one function for every section,
method options included. The resolved config (defaults filled in) is saved with every run, so
a run directory describes itself.

A leaf of the package: it imports only :mod:`vaeinf.names` and :mod:`vaeinf.errors`, never
torch, so that the workflow can check every run config of a study cheaply.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vaeinf.errors import ConfigError
from vaeinf.names import (
    DATASETS,
    DREG_OBJECTIVES,
    GROUPED_OBJECTIVES,
    METHODS,
    VARIANT_NAME,
)

__all__ = [
    "ConfigError",
    "RunConfig",
    "from_dict",
    "load_config",
    "merge",
    "read_yaml",
    "validate",
]

#: Seeds are used as they are (``torch.manual_seed``), as 3 * seed + split for the data's fixed
#: binarizations, and as seed + 1_000_000 for evaluation; below 2**32 every one of them is a seed
#: torch accepts (it takes 0 .. 2**64 - 1).
SEED_LIMIT = 2**32

#: Widths of a layer (hidden units, latent size): a width beyond this is a typo, and a layer of
#: that width would not fit in memory anyway.
MAX_WIDTH = 2**16

#: Samples per data point in evaluation (eval.ks, eval.nll_k): memory stays within
#: eval.memory_mb whatever K, but time grows with it.
MAX_EVAL_SAMPLES = 10**9

#: Draws of a gradient for its signal-to-noise ratio (train.snr_draws, eval.snr_draws): every
#: draw's gradient is held at once, one value per parameter.
MAX_SNR_DRAWS = 10**5


def limits(**bounds) -> dict:
    """Field metadata declaring the allowed range of a number (or of every item of a list):
    ``ge``, ``gt``, ``le``, ``lt``; for lists also ``length`` (exact) and ``min_length``."""
    return {"limits": bounds}


_RULES = {
    "ge": (lambda v, b: v >= b, ">= {}"),
    "gt": (lambda v, b: v > b, "> {}"),
    "le": (lambda v, b: v <= b, "<= {}"),
    "lt": (lambda v, b: v < b, "< {}"),
}


def _rule_text(bounds: dict) -> str:
    parts = [text.format(bounds[k]) for k, (_, text) in _RULES.items() if k in bounds]
    return " and ".join(parts)


def _show(value: Any, width: int = 60) -> str:
    """repr of a value for a one-line message, shortened when long."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 5] + " ...]"


def check_limits(obj: Any, prefix: str = "") -> None:
    """Check every field of dataclass ``obj`` (recursively) against its declared limits."""
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_limits(value, key)
            continue
        bounds = f.metadata.get("limits")
        if not bounds or value is None:
            continue
        if isinstance(value, list):
            if "length" in bounds and len(value) != bounds["length"]:
                raise ConfigError(
                    f"config key '{key}': {_show(value)}; must be {bounds['length']} numbers "
                    f"{_rule_text(bounds)}"
                )
            if len(value) < bounds.get("min_length", 0):
                raise ConfigError(
                    f"config key '{key}': {_show(value)}; must list at least "
                    f"{bounds['min_length']} value(s)"
                )
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(key, value)]
        for k, v in items:
            for name, (ok, _) in _RULES.items():
                if name in bounds and not ok(v, bounds[name]):
                    raise ConfigError(
                        f"config key '{k}': {v!r} is out of range; must be {_rule_text(bounds)}"
                    )


#: Field metadata of an operational setting: where or how a run is computed (device, memory
#: budget, checkpoint period, data folder), never what it computes. Operational settings are
#: no part of a run's identity (:meth:`RunConfig.identity`), so changing one reruns nothing.
OPERATIONAL = {"operational": True}

POSITIVE = limits(ge=1)
WIDTH = limits(ge=1, le=MAX_WIDTH)
WIDTH_LIST = limits(ge=1, le=MAX_WIDTH, min_length=1)
#: Flow and refinement steps: each is a module (or a pass) of its own; more than this is a typo.
STEPS = limits(ge=1, le=1000)


@dataclass
class ModelConfig:
    """Encoder/decoder MLPs. ``preset: burda1`` is Burda et al. (2015)'s 1-stochastic-layer net:
    784-200-200-50 with tanh (their Sec. 5); it overrides hidden, latent and activation."""

    preset: Literal["burda1"] | None = None
    hidden: list[int] = field(default_factory=lambda: [64, 64], metadata=WIDTH_LIST)
    latent: int = field(default=8, metadata=WIDTH)
    activation: Literal["tanh", "relu", "elu", "softplus"] = "tanh"

    def resolved(self) -> ModelConfig:
        if self.preset == "burda1":
            return ModelConfig(preset=None, hidden=[200, 200], latent=50, activation="tanh")
        return self


@dataclass
class TrainConfig:
    """Optimisation. ``schedule: burda`` is Burda et al. (2015) Sec. 5: 8 stages, stage i runs
    3**i epochs at lr 1e-3 * 10**(-i/7), i = 0..7 (3280 epochs); ``epochs`` then truncates it
    when set, and defaults to the full 3280. ``patience``, ``min_delta``, ``smoothing`` and
    ``max_steps`` end a run earlier (early stopping on the validation bound, Prechelt 1998,
    "Early stopping -- but when?"); see the comment on the fields."""

    epochs: int | None = field(default=30, metadata=POSITIVE)
    batch_size: int = field(default=100, metadata=POSITIVE)
    lr: float = field(default=1e-3, metadata=limits(gt=0))
    betas: list[float] = field(
        default_factory=lambda: [0.9, 0.999], metadata=limits(ge=0, lt=1, length=2)
    )
    eps: float = field(default=1e-4, metadata=limits(gt=0))
    schedule: Literal["constant", "burda"] = "constant"
    checkpoint_every: int = field(default=1, metadata=POSITIVE | OPERATIONAL)
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=OPERATIONAL)
    compile: bool = field(default=False, metadata=OPERATIONAL)
    val_points: int | None = field(default=1000, metadata=POSITIVE)
    # Train on a fixed random sample of this many training points (null: all of them); for
    # quick checks of a configuration, such as the tiny run of the cluster study in the tests.
    train_points: int | None = field(default=None, metadata=POSITIVE)
    # When the run ends (vaeinf.core.train.stop_reason): after `epochs` epochs (the cap, "cap"),
    # after `max_steps` optimizer steps (a budget, "budget"; null: none), or once the smoothed
    # validation bound has not risen by more than `min_delta` nats for `patience` epochs
    # ("converged"; null: never). The smoothed bound is the exponential moving average
    # s_t = smoothing s_{t-1} + (1 - smoothing) v_t of the validation bound v_t, taken with
    # `val_k` samples (null: the training K; one value for every run puts every run's curve
    # on the same yardstick). No run converges before `min_epochs` epochs: early in training a
    # bound can sit on a plateau (e.g. while the posterior collapses) for longer than
    # `patience`. The saved model is the state of the best validation bound.
    patience: int | None = field(default=None, metadata=POSITIVE)
    min_epochs: int = field(default=1, metadata=POSITIVE)
    min_delta: float = field(default=0.0, metadata=limits(ge=0))
    smoothing: float = field(default=0.0, metadata=limits(ge=0, lt=1))
    max_steps: int | None = field(default=None, metadata=POSITIVE)
    val_k: int | None = field(default=None, metadata=POSITIVE)
    # The gradient's signal-to-noise ratio at the run's K at the start, the middle and the end
    # of training (vaeinf.core.snr): snr_draws draws of the samples (0: not measured) on a
    # fixed minibatch of snr_points training points, with its own random numbers (the training
    # is the same with or without it).
    snr_draws: int = field(default=32, metadata=limits(ge=0, le=MAX_SNR_DRAWS))
    snr_points: int = field(default=10, metadata=POSITIVE)


@dataclass
class EvalConfig:
    """Evaluation: ``ks`` is the L_K curve, ``nll_k`` the importance samples of the test NLL."""

    ks: list[int] = field(
        default_factory=lambda: [1, 5, 10, 50, 100, 500, 1000, 5000],
        metadata=limits(ge=1, le=MAX_EVAL_SAMPLES, min_length=1),
    )
    nll_k: int = field(default=5000, metadata=limits(ge=1, le=MAX_EVAL_SAMPLES))
    memory_mb: int = field(default=512, metadata=POSITIVE | OPERATIONAL)
    max_points: int | None = field(default=None, metadata=POSITIVE)
    # Latent diagnostics (vaeinf.evaluation.latent): a unit is active when the variance over x
    # of its posterior mean exceeds active_threshold, collapsed when its KL is below
    # collapse_threshold, which must be at most half of it (then no unit is both); posteriors
    # without closed-form moments use moment_samples draws per point (the KL of the flows and
    # IAF too); the mutual information uses mi_samples draws on the first mi_points points.
    active_threshold: float = field(default=0.01, metadata=limits(ge=0))
    collapse_threshold: float = field(default=0.005, metadata=limits(ge=0))
    moment_samples: int = field(default=500, metadata=limits(ge=2))
    mi_points: int = field(default=2000, metadata=limits(ge=2))
    mi_samples: int = field(default=1, metadata=POSITIVE)
    n_images: int = field(default=16, metadata=POSITIVE)
    n_prior_samples: int = field(default=64, metadata=POSITIVE)
    # AIS from the prior (Wu et al. 2017) on a fixed random subset of ais_points test points
    # (0: off), with HMC step sizes from a pilot run, BDMC (Grosse et al. 2015) on bdmc_points
    # simulated points (0: off) in the same batches, and the approximation / amortization gaps
    # (Cremer et al. 2018) on the first gap_points of that subset, with q* found by at most
    # qstar_steps Adam steps (see vaeinf.evaluation.ais and gaps). The AIS defaults are
    # calibrated on the default study's runs: AIS at least as tight as IS with K = 1000 on the
    # same points, BDMC gap below 0.05 nats (the README gives the measurement).
    ais_points: int = field(default=50, metadata=limits(ge=0))
    ais_steps: int = field(default=500, metadata=POSITIVE)
    ais_chains: int = field(default=8, metadata=POSITIVE)
    ais_leapfrog: int = field(default=2, metadata=POSITIVE)
    bdmc_points: int = field(default=20, metadata=limits(ge=0))
    gap_points: int = field(default=50, metadata=limits(ge=0))
    qstar_steps: int = field(default=300, metadata=POSITIVE)
    qstar_lr: float = field(default=1e-2, metadata=limits(gt=0))
    qstar_tol: float = field(default=1e-4, metadata=limits(gt=0, lt=1))
    elbo_samples: int = field(default=500, metadata=POSITIVE)
    # The gradient's signal-to-noise ratio of the trained model at each K of snr_ks (a slope of
    # log SNR against log K is fitted over them), from snr_draws draws of the samples (0: not
    # measured) on a fixed minibatch of snr_points training points (vaeinf.evaluation.snr).
    snr_ks: list[int] = field(
        default_factory=lambda: [1, 5, 10, 50, 100],
        metadata=limits(ge=1, le=MAX_EVAL_SAMPLES, min_length=1),
    )
    snr_draws: int = field(default=32, metadata=limits(ge=0, le=MAX_SNR_DRAWS))
    snr_points: int = field(default=10, metadata=POSITIVE)


@dataclass
class RunConfig:
    """One run of the grid: dataset x variant x K x seed. ``variant`` names a study's variant
    of ``method`` (None: the method itself); the study's grid sets it."""

    dataset: str = "digits"
    binarization: Literal["static", "dynamic"] | None = None  # None: the dataset's default
    data_dir: str = field(default="data", metadata=OPERATIONAL)
    method: str = "iwae"
    variant: str | None = None
    K: int = field(default=5, metadata=POSITIVE)
    seed: int = field(default=0, metadata=limits(ge=0, lt=SEED_LIMIT))
    estimator: Literal["standard", "stl", "dreg"] = "standard"
    model: ModelConfig = field(default_factory=ModelConfig)
    method_options: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """What determines the trained model: every setting but ``eval`` and the operational
        ones. Two configs with the same identity train the same model."""
        return _without_operational(self, skip=("eval",))

    def training(self) -> dict:
        """The run directory's ``config.yaml``: every setting but ``eval`` (the identity plus
        the operational settings the training ran with)."""
        return {k: v for k, v in self.to_dict().items() if k != "eval"}

    def evaluation(self) -> dict:
        """The evaluation settings that change ``metrics.json`` (``eval`` less the
        operational ones)."""
        return _without_operational(self.eval)

    def options(self):
        """``method_options`` as the method's options dataclass (:data:`METHOD_OPTIONS`)."""
        return from_dict(METHOD_OPTIONS[self.method], self.method_options, "method_options")


def _without_operational(obj: Any, skip: tuple[str, ...] = ()) -> dict:
    """``dataclasses.asdict(obj)`` without the fields marked :data:`OPERATIONAL` (at any
    depth) and the fields named in ``skip``."""
    out = {}
    for f in dataclasses.fields(obj):
        if f.name in skip or f.metadata.get("operational"):
            continue
        value = getattr(obj, f.name)
        out[f.name] = _without_operational(value) if dataclasses.is_dataclass(value) else value
    return out


def operational_keys(cls: type | None = None, prefix: str = "") -> list[str]:
    """The dotted keys of every operational setting of :class:`RunConfig`."""
    cls = cls or RunConfig
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.metadata.get("operational"):
            out.append(key)
        elif dataclasses.is_dataclass(hints[f.name]):
            out += operational_keys(hints[f.name], key + ".")
    return out


# ---------------------------------------------------------------------------------------------
# Method options (``method_options`` of a run), by method name. Methods without options of
# their own take :class:`NoOptions`.


@dataclass
class NoOptions:
    """A method without options of its own."""


@dataclass
class IWAEOptions:
    """``method_options`` of `iwae`: the bound its Gaussian posterior is trained on, from the K
    samples of each point (Rainforth et al. 2018, Sec. 4).

    objective: "iwae", L_K (Burda et al. 2015); "miwae", MIWAE(M, K / M), the mean of
        L_{K/M} over M groups of the samples; "ciwae", CIWAE(beta) = beta ELBO + (1 - beta)
        L_K; "piwae", PIWAE(M, K / M): the decoder trained on L_K, the encoder on
        MIWAE(M, K / M), both from the same samples.
    groups: M of miwae and piwae (it divides K); null for the other objectives.
    beta: beta of ciwae, in [0, 1]; null for the other objectives.
    """

    objective: Literal["iwae", "miwae", "ciwae", "piwae"] = "iwae"
    groups: int | None = field(default=None, metadata=limits(ge=1, le=MAX_EVAL_SAMPLES))
    beta: float | None = field(default=None, metadata=limits(ge=0, le=1))


@dataclass
class FlowOptions:
    """``method_options`` of `flow`.

    objective: the bound trained, L_K ("iwae", Burda et al. 2015) or the K-sample ELBO ("elbo").
    flow: "planar" (Rezende & Mohamed 2015, Eq. 10) or "radial" (Eq. 14) steps.
    steps: the number of flow steps T.
    """

    objective: Literal["iwae", "elbo"] = "iwae"
    flow: Literal["planar", "radial"] = "planar"
    steps: int = field(default=8, metadata=STEPS)


@dataclass
class AutoregressiveOptions:
    """``method_options`` of `autoregressive`.

    objective: the bound trained, L_K ("iwae") or the K-sample ELBO ("elbo").
    steps: the number of IAF steps T.
    made_hidden: hidden widths of each MADE; null: two layers as wide as the encoder's last.
    """

    objective: Literal["iwae", "elbo"] = "iwae"
    steps: int = field(default=2, metadata=STEPS)
    made_hidden: list[int] | None = field(default=None, metadata=WIDTH_LIST)


@dataclass
class AVBOptions:
    """``method_options`` of `avb`.

    noise_dim: size of the encoder's noise input eps (null: the latent size).
    adaptive_contrast: true (default): T contrasts q(z|x) with the Gaussian r(z|x) of q's mean
        and covariance instead of with p(z) (Mescheder et al. 2017, Sec. 4); false: plain AVB,
        whose adversary lags a narrowing posterior (see vaeinf.core.methods.avb).
    contrast_samples: the draws per point, besides the K, from which (with the K) r's moments
        are estimated, with gradient (null: twice the latent size; "full" needs more than the
        latent size).
    contrast_covariance: "full" (default) or "diag" (the paper's r, which a rotated, thin q
        defeats; see vaeinf.core.methods.avb).
    adversary_hidden: hidden widths of T (null: the model's hidden widths).
    adversary_lr, adversary_betas: Adam for T (the second optimizer; it does not follow the
        learning-rate schedule, which drives the encoder/decoder optimizer).
    proposal_samples: samples of the implicit posterior per point to fit the proposal.
    proposal_covariance: "full" or "diag" covariance S of the fitted Gaussian.
    proposal_scales: the proposal is the equal-weight mixture of N(m, c^2 S) over these std
        multipliers c (values >= 1 widen the tails, the safe direction for importance sampling).
    proposal_prior_weight: alpha of the defensive mixture (1 - alpha) [Gaussians] + alpha p(z)
        (Hesterberg 1995, "Weighted average importance sampling and defensive mixture
        distributions"): every weight is then at most p(x|z) / alpha, so the estimator has
        finite variance however poorly the Gaussian fits; the price at large K is at most
        -log(1 - alpha) nats (0.05 nats for the default). The mixture is deterministic
        (Owen & Zhou 2000): floor(alpha K) of every K samples come from p(z), so below
        K = 1 / alpha the proposal is the Gaussian alone (see AVB.eval_log_weights).
    divergence_tolerance: training stops (AVB.check_epoch) when an epoch's T-based objective
        is above 0 or above the validation L_K of the explicit proposal by more than this
        fraction of |L_K| (null: only the first test).
    """

    noise_dim: int | None = field(default=None, metadata=WIDTH)
    adaptive_contrast: bool = True
    contrast_samples: int | None = field(default=None, metadata=limits(ge=2))
    contrast_covariance: Literal["full", "diag"] = "full"
    adversary_hidden: list[int] | None = field(default=None, metadata=WIDTH_LIST)
    adversary_lr: float = field(default=1e-3, metadata=limits(gt=0))
    adversary_betas: list[float] = field(
        default_factory=lambda: [0.9, 0.999], metadata=limits(ge=0, lt=1, length=2)
    )
    proposal_samples: int = field(default=512, metadata=limits(ge=2))
    proposal_covariance: Literal["full", "diag"] = "full"
    proposal_scales: list[float] = field(
        default_factory=lambda: [1.2], metadata=limits(gt=0, min_length=1)
    )
    proposal_prior_weight: float = field(default=0.05, metadata=limits(ge=0, lt=1))
    divergence_tolerance: float | None = field(default=0.2, metadata=limits(gt=0))


@dataclass
class SemiAmortizedOptions:
    """``method_options`` of `semi_amortized`.

    Steps, momentum and clipping follow Kim et al. (2018) (20 steps, momentum 0.5, gradient norm
    clipped at 5). Their step size of 1 does not carry over to the gradient of each point's own
    ELBO used here (so that a point's refinement does not depend on the batch), so 0.01 was
    chosen by measurement: starting from a VAE encoder on binarized MNIST (Burda's net, 3
    epochs), the 20 steps raised the mean test ELBO by +2.4 nats (99% of points) at 0.01, +2.2
    at 0.02, and lowered it at 0.1 (-1.9) and 1.0 (-88, divergent).

    objective: the bound trained on the refined posterior, L_K ("iwae") or the ELBO ("elbo").
    steps: refinement steps T (0: the plain amortized Gaussian).
    lr, momentum: SGD with momentum on lambda = (mu, log sigma^2) of each point,
        v <- momentum v + grad f, lambda <- lambda + lr v.
    grad_clip: the gradient of each point is rescaled to at most this L2 norm (null: no clipping);
        per point, so a point's refined posterior never depends on the rest of the batch.
    refine_samples: Monte Carlo samples of E_q[log p(x|z)] per refinement step.
    backprop_through_refinement: true: the encoder's gradient flows through the refinement;
        false: the ablation described in the module docstring.
    """

    objective: Literal["iwae", "elbo"] = "iwae"
    steps: int = field(default=20, metadata=limits(ge=0, le=1000))
    lr: float = field(default=0.01, metadata=limits(gt=0))
    momentum: float = field(default=0.5, metadata=limits(ge=0, lt=1))
    grad_clip: float | None = field(default=5.0, metadata=limits(gt=0))
    refine_samples: int = field(default=1, metadata=limits(ge=1, le=10_000))
    backprop_through_refinement: bool = True


METHOD_OPTIONS: dict[str, type] = {
    "vae": NoOptions,
    "iwae": IWAEOptions,
    "flow": FlowOptions,
    "autoregressive": AutoregressiveOptions,
    "avb": AVBOptions,
    "semi_amortized": SemiAmortizedOptions,
}


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
    bad = ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {_show(value)}")
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
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        if not math.isfinite(value):
            raise ConfigError(f"config key '{key}': expected a finite number, got {value!r}")
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
        raise ConfigError(f"config section {where}: expected a mapping, got {_show(data)}")
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


def validate(cfg: RunConfig) -> RunConfig:
    """Checks that types alone cannot express: names, declared limits, the method's options and
    estimator. Returns cfg for chaining."""
    for key, value, allowed in (
        ("dataset", cfg.dataset, DATASETS),
        ("method", cfg.method, METHODS),
    ):
        if value not in allowed:
            raise ConfigError(
                f"config key '{key}': unknown {key} {value!r}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
    if cfg.variant is not None and not re.match(VARIANT_NAME, cfg.variant):
        raise ConfigError(
            f"config key 'variant': {cfg.variant!r} is not a valid variant name; must match "
            f"{VARIANT_NAME} (lower case letters, digits, '_', '.', '-'; no '/')"
        )
    check_limits(cfg)
    options = cfg.options()
    check_limits(options, "method_options")
    # Every option at its value, defaults included: writing a default out changes nothing.
    cfg.method_options = dataclasses.asdict(options)
    if cfg.estimator not in METHODS[cfg.method]:
        raise ConfigError(
            f"config key 'estimator': {cfg.estimator!r} is not available for method "
            f"{cfg.method!r}; allowed: {', '.join(METHODS[cfg.method])}"
        )
    check_objective(options, cfg.K)
    objective = getattr(options, "objective", "iwae")
    if cfg.estimator == "dreg" and objective not in DREG_OBJECTIVES:
        raise ConfigError(
            f"config key 'estimator': 'dreg' needs an importance-weighted objective, "
            f"method_options.objective {' or '.join(map(repr, DREG_OBJECTIVES))} (DReG is "
            f"defined for the importance-weighted bound); got {objective!r}"
        )
    for key in ("train.snr_draws", "eval.snr_draws"):
        draws = _config_value(cfg, key)
        if draws == 1:
            raise ConfigError(
                f"config key '{key}': 1 is out of range; must be 0 (not measured) or >= 2 "
                "(a standard deviation over the draws)"
            )
    latent = cfg.model.resolved().latent
    if (
        isinstance(options, AVBOptions)
        and options.contrast_covariance == "full"
        and options.contrast_samples is not None
        and options.contrast_samples <= latent
    ):
        raise ConfigError(
            f"config key 'method_options.contrast_samples': {options.contrast_samples} is too "
            f"few for a full covariance of {latent} latent dimensions; must be > {latent} "
            "(or null: twice the latent size)"
        )
    ev = cfg.eval
    if ev.collapse_threshold > ev.active_threshold / 2:
        raise ConfigError(
            f"config key 'eval.collapse_threshold': {ev.collapse_threshold!r} is out of range; "
            f"must be <= eval.active_threshold / 2 ({ev.active_threshold / 2:g}), so that no "
            "unit is both active and collapsed"
        )
    if ev.gap_points > ev.ais_points:
        raise ConfigError(
            f"config key 'eval.gap_points': {ev.gap_points!r} is out of range; must be <= "
            f"eval.ais_points ({ev.ais_points}), the points with an AIS estimate"
        )
    return cfg


def check_objective(options, K: int) -> None:
    """The parameters of the objective in a method's ``options``: ``groups`` given for and only
    for MIWAE and PIWAE, dividing K; ``beta`` for and only for CIWAE (one-line ConfigError)."""
    objective = getattr(options, "objective", None)
    if objective is None or not hasattr(options, "groups"):
        return
    grouped = ", ".join(GROUPED_OBJECTIVES)
    if objective in GROUPED_OBJECTIVES:
        if options.groups is None:
            raise ConfigError(
                f"config key 'method_options.groups': objective {objective!r} needs the number "
                f"of groups M of the K = {K} samples (an integer >= 1 that divides K)"
            )
        if K % options.groups:
            raise ConfigError(
                f"config key 'method_options.groups': {options.groups} does not divide K = {K}; "
                f"{objective} splits the K samples of a point into M groups of K / M"
            )
    elif options.groups is not None:
        raise ConfigError(
            f"config key 'method_options.groups': {options.groups!r} is used by objectives "
            f"{grouped} only; method_options.objective is {objective!r}"
        )
    if objective == "ciwae" and options.beta is None:
        raise ConfigError(
            "config key 'method_options.beta': objective 'ciwae' needs beta, the weight of the "
            "ELBO in beta ELBO + (1 - beta) L_K (a number in [0, 1])"
        )
    if objective != "ciwae" and options.beta is not None:
        raise ConfigError(
            f"config key 'method_options.beta': {options.beta!r} is used by objective 'ciwae' "
            f"only; method_options.objective is {objective!r}"
        )


def _config_value(cfg: RunConfig, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (plain YAML
    silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); keep one",
                    None,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The YAML document in ``path``; ConfigError (one line) when it is missing, a directory,
    unreadable, not text, not YAML or gives a key twice."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} '{path}' is a directory; give the YAML file inside it")
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} '{path}' is not a YAML text file (not UTF-8)") from None
    except OSError as e:
        raise ConfigError(f"{what} '{path}' cannot be read: {e.strerror}") from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None)
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        detail = problem or (str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise ConfigError(f"{what} '{path}' is not valid YAML: {detail}{where}") from None


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Read YAML at ``path`` (or only defaults), apply ``overrides`` (a nested dict), validate."""
    data: Any = {}
    if path is not None:
        data = read_yaml(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"config file '{path}': expected a mapping of config keys at the top level, "
                f"got a {type(data).__name__}"
            )
    if overrides:
        data = merge(data, overrides)
    return validate(from_dict(RunConfig, data))


def merge(base: dict, over: dict | None) -> dict:
    """Deep merge of mappings: ``over`` wins, nested mappings are merged key by key."""
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
