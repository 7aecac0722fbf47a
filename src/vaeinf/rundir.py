"""The run directory: its place in a study, its files, the one writer of ``metrics.json``, and
atomic writes.

Every output is written to a temporary file in the same directory and renamed into place, so a
killed process never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

#: Keys of the grid that name a run, in the order of its path. A variant is a method with
#: overrides of its run config (the six methods are variants of themselves; see
#: :mod:`vaeinf.study.grid`).
GRID_KEYS = ("dataset", "variant", "K", "seed")

#: The path of one run below ``results/``, which ``logs/`` and ``benchmarks/`` mirror.
RUN_PATH = "{dataset}/{variant}/k{K}/seed{seed}"
RUN_DIR = f"results/{RUN_PATH}"

# The files of a run directory, in the order they are written.
#: The training config: the run's identity and the operational settings it trained with.
CONFIG = "config.yaml"
#: The evaluation settings given with ``vaeinf train`` (the defaults of ``vaeinf evaluate``).
EVAL = "eval.yaml"
#: The latest training state (not an output of the workflow, so a retry resumes from it).
CHECKPOINT = "checkpoint.pt"
#: One row per epoch: learning rate, training objective, validation bounds, seconds.
TRAIN_LOG = "train_log.csv"
#: The gradient's signal-to-noise ratio at the start, the middle and the end of training.
TRAIN_SNR = "train_snr.json"
#: The trained weights, written last by the training.
MODEL = "model.pt"
#: The evaluation: every metric, the resolved config it was computed with, provenance.
METRICS = "metrics.json"
#: Images for the figures: data, reconstructions, prior samples.
SAMPLES = "samples.npz"
PACKAGES = ("vaeinf", "torch", "numpy", "pandas", "scikit-learn", "zuko")


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file ``.NAME.*.tmp`` renamed into place.

    The file gets the mode a plain ``open`` would give it (0666 less the umask), not
    mkstemp's 0600. An OSError names ``path`` (a failed write or fsync alone names no file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files that a write killed midway (SIGKILL, power loss) left
    in ``folder``; returns them. Call it when a process takes over a run directory."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp") if p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def check_writable_dir(path: str | Path, what: str) -> None:
    """Raise ConfigError (one line) unless ``path`` is, or can be created as, a directory this
    process may write to. Writes nothing: the check asks the file system (access(2), which
    also reports a read-only file system) of the nearest existing ancestor."""
    from vaeinf.errors import ConfigError

    path = Path(path)
    if str(path) == "":
        raise ConfigError(f"{what}: the path is empty; give a directory")
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise ConfigError(
                f"{what} '{path}': the name '{part[:20]}...' has {len(os.fsencode(part))} "
                "bytes; at most 255 are allowed per name"
            )
    existing = path
    while not existing.exists():
        if existing.is_symlink():  # a dangling link
            raise ConfigError(f"{what} '{path}': '{existing}' is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies below '{existing}', a file"
        raise ConfigError(f"{what} '{path}' {where}; give a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "is on a read-only file system" if _read_only(existing) else "is not writable"
        raise ConfigError(
            f"{what} '{path}': '{existing}' {reason}; choose a directory you may write to"
        )


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit of the vaeinf checkout in use (with '-dirty' if modified), or None."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_info(device) -> dict:
    import torch

    info = {
        "device": str(device),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if getattr(device, "type", str(device)) == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu_threads"] = torch.get_num_threads()
    return info


def _clean(obj):
    """JSON-safe: NaN/inf become null, tuples lists, numpy/torch scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as JSON atomically, NaN and inf as null."""
    atomic_write_text(path, json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n")


def write_metrics(run_dir: str | Path, metrics: dict, config: dict, device, wall: dict) -> Path:
    """Write ``run_dir/metrics.json``: the metrics plus resolved config and provenance."""
    doc = {
        "metrics": metrics,
        "config": config,
        "provenance": {
            "packages": package_versions(),
            "git_commit": git_commit(),
            **device_info(device),
            "wall_seconds": wall,
        },
    }
    path = Path(run_dir) / METRICS
    atomic_write_text(path, json.dumps(_clean(doc), indent=2, allow_nan=False) + "\n")
    return path
