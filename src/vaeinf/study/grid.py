"""The study: a grid of runs (dataset x method x K x seed) described by one config file.

This module holds the logic the Snakemake workflow (``Snakefile``, ``workflow/``) needs, so the
rules stay declarative: expanding the grid, building each run's ``vaeinf train --set`` overrides
from the study config, checking every run config before any job starts, the data files a
dataset needs, and the train job itself (start afresh or resume from a checkpoint).

Study config (``config/config.yaml``; schema in ``workflow/schemas/config.schema.yaml``)::

    datasets: [digits]            # the grid
    methods: [vae, iwae, ...]
    Ks: [1, 5, 10, 25, 50]
    seeds: [0]
    run: {...}                    # RunConfig defaults for every run (vaeinf validates them)
    method_overrides: {avb: {...}}     # merged over ``run`` for one method
    dataset_overrides: {mnist: {...}}  # merged over ``run`` for one dataset
    resources: {train: {...}, evaluate: {...}}
    paper: {...}

A run's config is ``run`` <- ``dataset_overrides[dataset]`` <- ``method_overrides[method]`` <-
``{dataset, method, K, seed}``, and its ``eval.ks`` always contains every K of the grid (so the
bound at the training K is measured for every run).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vaeinf.config import ConfigError, RunConfig, from_dict
from vaeinf.names import DATASETS, METHODS

#: The path of one run below ``results/``, which ``logs/`` and ``benchmarks/`` mirror: the one
#: definition of the run-directory layout (the workflow's wildcards come from it).
RUN_PATH = "{dataset}/{method}/k{K}/seed{seed}"
RUN_DIR = f"results/{RUN_PATH}"

#: Keys of a run that the grid sets; ``run`` and the overrides may not set them.
GRID_KEYS = ("dataset", "method", "K", "seed")


class StudyError(ValueError):
    """The study config is inconsistent (one line, naming the key)."""


@dataclass(frozen=True, order=True)
class Run:
    dataset: str
    method: str
    K: int
    seed: int

    @property
    def dir(self) -> str:
        return RUN_DIR.format(dataset=self.dataset, method=self.method, K=self.K, seed=self.seed)


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
    """Every run of the grid, in a stable order."""
    return [
        Run(d, m, int(k), int(s))
        for d, m, k, s in itertools.product(
            config["datasets"], config["methods"], config["Ks"], config["seeds"]
        )
    ]


def merge(base: dict, over: dict) -> dict:
    """Deep merge of mappings: ``over`` wins, nested mappings are merged key by key."""
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def run_overrides(config: dict, dataset: str, method: str, K: int, seed: int) -> dict:
    """The nested run config (before vaeinf's defaults) of one run of the study."""
    cfg = merge(config.get("run") or {}, (config.get("dataset_overrides") or {}).get(dataset, {}))
    cfg = merge(cfg, (config.get("method_overrides") or {}).get(method, {}))
    ks = set((cfg.get("eval") or {}).get("ks") or RunConfig().eval.ks) | {
        int(k) for k in config.get("Ks", [])
    }
    cfg = merge(cfg, {"eval": {"ks": sorted(ks)}})
    cfg.update(dataset=dataset, method=method, K=int(K), seed=int(seed))
    return cfg


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
        for key in GRID_KEYS:
            if key in section:
                grid_key = {"dataset": "datasets", "method": "methods", "K": "Ks", "seed": "seeds"}
                raise StudyError(
                    f"{source}: key '{where}.{key}' is set by the grid; list the values under "
                    f"'{grid_key[key]}' instead"
                )
    # Every run of the grid (cheap: no torch): a seed or K can be out of range on its own.
    for run in runs(config):
        over = run_overrides(config, run.dataset, run.method, run.K, run.seed)
        try:
            resolved_run_config(over)
        except ConfigError as e:
            raise StudyError(
                f"{source}: run config of dataset={run.dataset} method={run.method} K={run.K} "
                f"seed={run.seed} (from 'run', 'dataset_overrides.{run.dataset}', "
                f"'method_overrides.{run.method}', the grid): {e}"
            ) from None


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


def download(dataset: str, root: str | Path, manifest: str | Path) -> list[Path]:
    """``vaeinf download`` (checksummed) plus a manifest of ``sha256  path`` lines."""
    from vaeinf.core.downloads import DOWNLOADS
    from vaeinf.core.downloads import download as fetch
    from vaeinf.rundir import atomic_write_text

    paths = fetch(dataset, root)
    sums = {str(Path(root) / f.relpath): f.sha256 for f in DOWNLOADS[dataset]}
    atomic_write_text(manifest, "".join(f"{sums[str(p)]}  {p}\n" for p in paths))
    return paths


def snakemake_download(smk) -> None:
    """Entry point of ``workflow/scripts/download.py``."""
    manifest = Path(smk.output.manifest)
    with job_log(smk):
        for p in download(smk.wildcards.dataset, manifest.parent, manifest):
            print(p)


# ---------------------------------------------------------------------------------------------
# Jobs


@contextlib.contextmanager
def job_log(smk):
    """Send a script job's output to its log file, and end the job at its error boundary: an
    expected failure (:data:`vaeinf.errors.EXIT_CODES`) ends the log with its one line and
    exits with its status; anything else (or ``VAEINF_DEBUG=1``) logs the full traceback."""
    from vaeinf.errors import report_failure

    with contextlib.ExitStack() as stack:
        if smk.log:
            log = stack.enter_context(open(smk.log[0], "w"))  # noqa: SIM115
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        try:
            yield
        except Exception as e:
            raise SystemExit(report_failure(e)) from None


def stale_files(run_dir: str | Path, cfg: RunConfig, attempt: int = 1) -> tuple[list[Path], str]:
    """Files of a previous training in ``run_dir`` that this training must not resume from.

    * a run directory whose ``config.yaml`` differs from ``cfg`` (the study config changed):
      ``config.yaml`` and ``checkpoint.pt`` go, the run starts afresh (a ``config.yaml`` that
      only lacks keys a newer vaeinf added, at their defaults, is the same run: it is rewritten
      and kept);
    * on a job's first attempt, a checkpoint of a *finished* training (the job is rerun on
      purpose: forced, or its code changed): the checkpoint goes, the run starts afresh;
    * otherwise a checkpoint is kept and resumed from: a retry after preemption or a failure
      (``attempt > 1``) or an interrupted training (``--rerun-incomplete``).

    Returns (files to delete, reason).
    """
    from vaeinf.core.train import CHECKPOINT, CONFIG, n_epochs

    run_dir = Path(run_dir)
    saved, ckpt = run_dir / CONFIG, run_dir / CHECKPOINT
    if saved.exists():
        from vaeinf.config import read_yaml

        try:
            raw = read_yaml(saved, "the run's config file")
            old = from_dict(RunConfig, raw).to_dict()
        except ConfigError:  # damaged or of another version: start afresh
            raw = old = None
        if old != cfg.to_dict():
            return [p for p in (saved, ckpt) if p.exists()], "the run's config changed"
        if raw != cfg.to_dict():
            # Same run, written by a vaeinf with fewer config keys: record it with the defaults
            # filled in, so that training resumes instead of refusing the directory.
            from vaeinf.rundir import atomic_write_text

            atomic_write_text(saved, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if attempt == 1 and ckpt.exists():
        import torch

        try:
            done = torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]
        except Exception:  # unreadable: start afresh rather than fail
            return [ckpt], "the checkpoint is unreadable"
        if done >= n_epochs(cfg):
            return [ckpt], "the training is rerun (forced or changed)"
    return [], ""


def train_job(
    run_dir: str,
    overrides: dict,
    log_path: str | None = None,
    threads: int = 1,
    attempt: int = 1,
) -> int:
    """The workflow's train job: :func:`vaeinf.core.train.train` on one run, in this process.

    Sets torch's threads, drops stale state (:func:`stale_files`) and returns the exit status
    of ``vaeinf train`` for the same run (:mod:`vaeinf.errors`: 0, 2 bad input, 143 preempted
    after checkpointing, 1 non-finite loss), the one-line reason last in the log.
    """
    import torch

    from vaeinf.core.train import train
    from vaeinf.errors import report_failure

    torch.set_num_threads(max(1, int(threads)))
    log = open(log_path, "a") if log_path else None  # noqa: SIM115
    with contextlib.ExitStack() as stack:
        if log is not None:
            stack.enter_context(log)
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        print(f"# attempt {attempt}, {threads} thread(s); equivalent command:", flush=True)
        print(train_command(run_dir, overrides), flush=True)
        try:
            cfg = resolved_run_config(overrides)
            stale, reason = stale_files(run_dir, cfg, attempt)
            for p in stale:
                print(f"# {reason}: removing {p}", flush=True)
                p.unlink()
            print(f"trained: {train(cfg, run_dir, progress=False)}", flush=True)
            return 0
        except Exception as e:
            return report_failure(e)


def snakemake_train(smk) -> int:
    """Entry point of ``workflow/scripts/train.py`` (``smk`` is Snakemake's ``snakemake``); the
    run's overrides come as ``params.run`` so that a change to them reruns the job."""
    return train_job(
        str(Path(smk.output.model).parent),
        dict(smk.params.run),
        log_path=smk.log[0],
        threads=smk.threads,
        attempt=int(smk.resources.get("attempt", 1)),
    )
