"""The study's grid: the runs (dataset x variant x K x seed) one config file describes.

Torch-free, so the workflow parses (and dry-runs) without loading torch: expanding the grid,
each run's config from the study config, what identifies its training and its evaluation,
checking every run config before any job starts, and the data files a dataset needs.

Study config (``config/config.yaml``; schema in ``workflow/schemas/config.schema.yaml``)::

    datasets: [digits]            # the grid
    methods: [vae, iwae, ...]     # each a variant of itself
    variants:                     # named variants of a method: its run config overridden
      iwae-dreg: {method: iwae, estimator: dreg, Ks: [50], label: IWAE (DReG)}
    Ks: [1, 5, 10, 25, 50]
    method_Ks: {flow: [1, 50]}    # a method at some of the Ks only (default: all of them)
    seeds: [0]
    run: {...}                    # RunConfig defaults for every run (vaeinf validates them)
    method_overrides: {avb: {...}}     # merged over ``run`` for one method (and its variants)
    dataset_overrides: {mnist: {...}}  # merged over ``run`` for one dataset
    resources: {train: {...}, evaluate: {...}}
    paper: {...}

The variants of a study are its ``methods`` (each named by itself) and then the keys of
``variants``; a method runs at its ``method_Ks`` (default all of the study's Ks), a variant of
``variants`` at its ``Ks`` (default: the study's; a K of its own too, e.g. IWAE at the samples
of another objective). A run's config is ``run`` <- ``dataset_overrides[dataset]`` <-
``method_overrides[method]`` <- the variant's overrides <- ``{dataset, method, variant, K,
seed}``, and its ``eval.ks`` always contains every K of the grid and of the variant (so the
bound at the training K is measured for every run). ``variant`` is null for a method itself, so
its runs are the runs of a study without variants.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vaeinf.config import ConfigError, RunConfig, merge
from vaeinf.names import DATASETS, LABELS, METHODS, VARIANT_NAME
from vaeinf.rundir import RUN_DIR


class StudyError(ValueError):
    """The study config is inconsistent (one line, naming the key)."""


#: Keys of a run config set by the grid, never by ``run``, an override or a variant (a
#: variant's ``method`` is its base method).
SET_BY_GRID = {
    "dataset": "datasets",
    "method": "methods",
    "variant": "variants",
    "K": "Ks",
    "seed": "seeds",
}

#: Keys of a variant that are not run config: its base method, its Ks, its display name.
VARIANT_KEYS = ("method", "Ks", "label")


@dataclass(frozen=True, order=True)
class Run:
    dataset: str
    variant: str
    K: int
    seed: int
    method: str = ""  # the variant's base method

    @property
    def dir(self) -> str:
        return RUN_DIR.format(dataset=self.dataset, variant=self.variant, K=self.K, seed=self.seed)


def variants(config: dict) -> dict[str, dict]:
    """Every variant of the study, in order (its ``methods``, then the keys of ``variants``):
    name -> ``{method, Ks, label, overrides}``, ``overrides`` being the variant's run config."""
    own = config.get("method_Ks") or {}
    out = {
        m: {
            "method": m,
            "Ks": [int(k) for k in (own.get(m) or config["Ks"])],
            "label": LABELS.get(m, m),
            "overrides": {},
        }
        for m in config["methods"]
    }
    for name, spec in (config.get("variants") or {}).items():
        spec = spec or {}
        out[name] = {
            "method": spec.get("method"),
            "Ks": [int(k) for k in (spec.get("Ks") or config["Ks"])],
            "label": str(spec.get("label") or name),
            "overrides": {k: v for k, v in spec.items() if k not in VARIANT_KEYS},
        }
    return out


def labels(config: dict) -> dict[str, str]:
    """variant -> the name the paper shows (the methods' from :data:`vaeinf.names.LABELS`, a
    variant's ``label`` or its name): the one place tables, figures and text take names from."""
    return {name: v["label"] for name, v in variants(config).items()}


def load_study(path: str | Path) -> dict:
    """Read a study config file (no defaults filled in; the workflow's schema does that).
    A key given twice, or a file that is not a YAML mapping, is a StudyError."""
    from vaeinf.config import read_yaml

    try:
        data = read_yaml(path, "study config")
    except ConfigError as e:
        raise StudyError(str(e)) from None
    if data is not None and not isinstance(data, dict):
        raise StudyError(f"study config '{path}': expected a mapping at the top level")
    return data or {}


def runs(config: dict) -> list[Run]:
    """Every run of the grid, in a stable order (a variant only at its own Ks)."""
    table = variants(config)
    return [
        Run(d, v, int(k), int(s), table[v]["method"])
        for d, v in itertools.product(config["datasets"], table)
        for k, s in itertools.product(table[v]["Ks"], config["seeds"])
    ]


def run_overrides(config: dict, dataset: str, variant: str, K: int, seed: int) -> dict:
    """The nested run config (before vaeinf's defaults) of one run of the study."""
    spec = variants(config)[variant]
    method = spec["method"]
    cfg = merge(config.get("run") or {}, (config.get("dataset_overrides") or {}).get(dataset, {}))
    cfg = merge(cfg, (config.get("method_overrides") or {}).get(method, {}))
    cfg = merge(cfg, spec["overrides"])
    ks = set((cfg.get("eval") or {}).get("ks") or RunConfig().eval.ks) | {
        int(k) for k in [*config.get("Ks", []), *spec["Ks"]]
    }
    cfg = merge(cfg, {"eval": {"ks": sorted(ks)}})
    cfg.update(
        dataset=dataset,
        method=method,
        variant=None if variant in config["methods"] else variant,
        K=int(K),
        seed=int(seed),
    )
    return cfg


def run_config(config: dict, dataset: str, variant: str, K: int, seed: int) -> RunConfig:
    """The resolved, validated RunConfig of one run of the study (raises ConfigError)."""
    return resolved_run_config(run_overrides(config, dataset, variant, K, seed))


def without_operational(config: dict) -> dict:
    """The study config without the operational settings of its ``run`` section and overrides
    (device, checkpoint period, memory budget, data folder): what the paper's setup section and
    variables describe, so that changing one of them rebuilds nothing."""
    from vaeinf.config import operational_keys

    def strip(section: dict) -> dict:
        section = json.loads(json.dumps(section or {}))
        for key in operational_keys():
            *parents, leaf = key.split(".")
            node = section
            for p in parents:
                node = node.get(p) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(leaf, None)
        return section

    out = dict(config)
    if "run" in out:
        out["run"] = strip(out["run"])
    for kind in ("method_overrides", "dataset_overrides", "variants"):
        if kind in out:
            out[kind] = {name: strip(over) for name, over in (out[kind] or {}).items()}
    return out


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k != "method_options":
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def _yaml_value(v: Any) -> str:
    """A value as ``vaeinf train --set`` reads it back (YAML); plain where unambiguous."""
    if isinstance(v, str) and yaml.safe_load(v) == v and v.strip() == v and v:
        return v
    return json.dumps(v)


def set_args(overrides: dict) -> list[str]:
    """``["--set", "key=value", ...]`` for ``vaeinf train`` from a nested run config."""
    args = []
    for key, value in _flatten(overrides):
        args += ["--set", f"{key}={_yaml_value(value)}"]
    return args


def train_command(run_dir: str, overrides: dict) -> str:
    """The ``vaeinf train`` command line equivalent to the workflow's train job (for logs)."""
    return shlex.join(["vaeinf", "train", "--out", run_dir, *set_args(overrides), "--no-progress"])


def resolved_run_config(overrides: dict) -> RunConfig:
    """The validated RunConfig of a run (vaeinf's own checks; raises ConfigError)."""
    from vaeinf.config import load_config

    return load_config(None, overrides)


def check_study(config: dict, source: str = "the study config") -> None:
    """Checks the schema cannot express: registry names, grid keys, every run config valid.

    Raises :class:`StudyError` with one line naming the key, before any job runs.
    """
    for key, allowed in (("datasets", DATASETS), ("methods", METHODS)):
        for i, name in enumerate(config[key]):
            if name not in allowed:
                raise StudyError(
                    f"{source}: key '{key}[{i}]': unknown {key[:-1]} {name!r}; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
        if len(set(config[key])) != len(config[key]):
            raise StudyError(f"{source}: key '{key}' lists a name twice: {config[key]}")
    for key in ("Ks", "seeds"):
        if len(set(config[key])) != len(config[key]):
            raise StudyError(f"{source}: key '{key}' lists a value twice: {config[key]}")
    check_method_ks(config, source)
    sections = [("run", config.get("run") or {})]
    for kind, registry in (("method_overrides", METHODS), ("dataset_overrides", DATASETS)):
        for name, over in (config.get(kind) or {}).items():
            if name not in registry:
                raise StudyError(
                    f"{source}: key '{kind}.{name}': unknown {kind.split('_')[0]} {name!r}; "
                    f"allowed: {', '.join(sorted(registry))}"
                )
            sections.append((f"{kind}.{name}", over or {}))
    for where, section in sections:
        if not isinstance(section, dict):
            raise StudyError(f"{source}: key '{where}': expected a mapping, got {section!r}")
        if where != "run" and "data_dir" in section:
            raise StudyError(
                f"{source}: key '{where}.data_dir': the data folder is set once, as 'run.data_dir'"
            )
        for key, grid_key in SET_BY_GRID.items():
            if key in section:
                raise StudyError(
                    f"{source}: key '{where}.{key}' is set by the grid; list the values under "
                    f"'{grid_key}' instead"
                )
    check_variants(config, source)
    # Every run of the grid (cheap: no torch): a seed or K can be out of range on its own.
    for run in runs(config):
        over = run_overrides(config, run.dataset, run.variant, run.K, run.seed)
        try:
            resolved_run_config(over)
        except ConfigError as e:
            if run.variant != run.method:
                raise StudyError(
                    f"{source}: variant '{run.variant}': run config of dataset={run.dataset} "
                    f"K={run.K} seed={run.seed} (from 'run', 'dataset_overrides.{run.dataset}', "
                    f"'method_overrides.{run.method}', 'variants.{run.variant}', the grid): {e}"
                ) from None
            raise StudyError(
                f"{source}: run config of dataset={run.dataset} method={run.method} K={run.K} "
                f"seed={run.seed} (from 'run', 'dataset_overrides.{run.dataset}', "
                f"'method_overrides.{run.method}', the grid): {e}"
            ) from None


def check_method_ks(config: dict, source: str = "the study config") -> None:
    """The study's ``method_Ks``: for methods of the study, each a non-empty list of distinct
    Ks of the study. Raises :class:`StudyError` (one line naming the key)."""
    table = config.get("method_Ks") or {}
    if not isinstance(table, dict):
        raise StudyError(f"{source}: key 'method_Ks': expected a mapping of methods, got {table!r}")
    for name, ks in table.items():
        where = f"{source}: key 'method_Ks.{name}'"
        if name not in config["methods"]:
            raise StudyError(
                f"{where}: {name!r} is not a method of the study; allowed: "
                f"{', '.join(config['methods'])}"
            )
        if not isinstance(ks, list) or not ks or not set(ks) <= set(config["Ks"]):
            raise StudyError(f"{where}: {ks!r}; must list some of the study's Ks {config['Ks']}")
        if len(set(ks)) != len(ks):
            raise StudyError(f"{where} lists a value twice: {ks}")


def check_variants(config: dict, source: str = "the study config") -> None:
    """The study's ``variants``: each a safe, unique name with an existing base method, Ks of
    the study, a display name of its own and overrides that leave the grid's keys to the grid.
    Raises :class:`StudyError` (one line naming the variant)."""
    table = config.get("variants") or {}
    if not isinstance(table, dict):
        raise StudyError(f"{source}: key 'variants': expected a mapping of names, got {table!r}")
    shown = {LABELS.get(m, m): m for m in config["methods"]}
    for name, spec in table.items():
        where = f"{source}: variant '{name}'"
        if not isinstance(name, str) or not re.match(VARIANT_NAME, name):
            raise StudyError(
                f"{where}: not a valid name (a path segment: lower case letters, digits, '_', "
                "'.', '-', starting with a letter or digit; no '/')"
            )
        if name in METHODS:
            raise StudyError(
                f"{where}: the name of a method; a variant needs a name of its own "
                f"(methods: {', '.join(METHODS)})"
            )
        if not isinstance(spec, dict):
            raise StudyError(f"{where}: expected a mapping (method, overrides), got {spec!r}")
        base = spec.get("method")
        if base not in METHODS:
            raise StudyError(
                f"{where}: key 'method': unknown base method {base!r}; allowed: "
                f"{', '.join(sorted(METHODS))}"
            )
        ks = spec.get("Ks")
        if ks is not None:
            if (
                not isinstance(ks, list)
                or not ks
                or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks)
            ):
                raise StudyError(
                    f"{where}: key 'Ks': {ks!r}; must list integers >= 1 (some of the study's "
                    f"Ks {config['Ks']}, or Ks of its own)"
                )
            if len(set(ks)) != len(ks):
                raise StudyError(f"{where}: key 'Ks' lists a value twice: {ks}")
        label = spec.get("label", name)
        if not isinstance(label, str) or not label.strip():
            raise StudyError(f"{where}: key 'label': expected a display name, got {label!r}")
        if label in shown:
            raise StudyError(
                f"{where}: label {label!r} is already the name of '{shown[label]}'; give each "
                "variant a label of its own"
            )
        shown[label] = name
        for key in ("dataset", "variant", "K", "seed", "data_dir"):
            if key in spec:
                what = (
                    "the data folder is set once, as 'run.data_dir'"
                    if key == "data_dir"
                    else f"'{key}' is set by the grid"
                )
                raise StudyError(f"{where}: key '{key}': {what}")
        over = {k: v for k, v in spec.items() if k not in VARIANT_KEYS}
        try:
            from vaeinf.config import from_dict

            from_dict(RunConfig, merge(over, {"method": base}))
        except ConfigError as e:
            raise StudyError(f"{where}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Data


def data_dir(config: dict) -> str:
    """The study's data folder: ``run.data_dir`` (default ``data``)."""
    return str((config.get("run") or {}).get("data_dir") or "data")


def data_files(config: dict, dataset: str) -> list[str]:
    """The files a run on ``dataset`` depends on, for the train rule's input.

    Empty for ``digits`` (bundled with scikit-learn). For ``binarized_mnist``, a packed ``.npz``
    already in place (``$VAEINF_BINARIZED_MNIST_NPZ``, ``DATA/binarized_mnist.npz`` or
    ``DATA/binarized_mnist/binarized_mnist.npz``) is used as it is. Otherwise the manifest
    ``DATA/{dataset}.sha256`` of the download rule, which lists the verified files.
    """
    import os

    from vaeinf.core.downloads import BINARIZED_MNIST_NPZ_ENV, DOWNLOADS

    if not DOWNLOADS.get(dataset):
        return []
    root = Path(data_dir(config))
    if dataset == "binarized_mnist":
        env = os.environ.get(BINARIZED_MNIST_NPZ_ENV)
        if env:
            return [env]
        for npz in (root / "binarized_mnist.npz", root / dataset / "binarized_mnist.npz"):
            if npz.is_file():
                return [str(npz)]
    return [str(root / f"{dataset}.sha256")]
