"""The one writer of ``metrics.json``, with provenance, and atomic file writes.

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

METRICS = "metrics.json"
PACKAGES = ("vaeinf", "torch", "numpy", "pandas", "scikit-learn", "zuko")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


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


def read_metrics(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / METRICS).read_text())
