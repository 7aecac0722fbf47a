"""The cluster study (config/mnist.yaml) end to end, made tiny (tests/config/mnist_tiny.yaml),
on the packed binarized MNIST: a config or code path only the cluster reaches fails here first.
Its own file, so that the test workers run it beside the other workflow tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_workflow import REPO, expected, job_stats, make_tree, snakemake


def packed_mnist() -> Path | None:
    """The packed binarized MNIST: ``$VAEINF_BINARIZED_MNIST_NPZ``, else the shared data folder
    beside the repository (``../shared/data``); None when neither exists."""
    env = os.environ.get("VAEINF_BINARIZED_MNIST_NPZ")
    for path in (Path(env) if env else None, REPO.parent / "shared/data/binarized_mnist.npz"):
        if path is not None and path.is_file():
            return path
    return None


MNIST_TINY = "tests/config/mnist_tiny.yaml"


@pytest.mark.skipif(
    packed_mnist() is None,
    reason="no packed binarized_mnist.npz ($VAEINF_BINARIZED_MNIST_NPZ or ../shared/data)",
)
def test_mnist_study_end_to_end_tiny(tmp_path):
    """config/mnist.yaml, the cluster study, end to end on the packed binarized MNIST with the
    overrides of tests/config/mnist_tiny.yaml (one dataset, K = 1 and 50, one seed, one epoch
    of 200 points, a small evaluation and AIS): Burda's net and schedule, its evaluation keys
    and its ablations run here first."""
    tree = make_tree(tmp_path)
    shutil.copy2(REPO / MNIST_TINY, tree / MNIST_TINY)
    (tree / "data").mkdir()
    (tree / "data/binarized_mnist.npz").symlink_to(packed_mnist())
    cfg = ("--configfile", "config/mnist.yaml", MNIST_TINY)
    r = snakemake(tree, "--cores", "2", *cfg, served=True)
    assert r.returncode == 0, r.stderr[-4000:]
    # 6 methods x K in {1, 50}, the 4 ablations at K = 50, and IWAE and Rainforth et al.'s
    # three objectives at K = 64; no download (the file is there)
    assert job_stats(r.stderr) == expected(6 * 2 + 4 + 4, preview=False)
    summary = pd.read_csv(tree / "results/summary.csv")
    assert len(summary) == 20 and set(summary["dataset"]) == {"binarized_mnist"}
    assert (summary["latent"] == 50).all()  # Burda's net
    assert (summary["config.train.schedule"] == "burda").all()
    assert summary["test_nll.mean"].between(50, 800).all(), summary["test_nll.mean"]
    curves = pd.read_csv(tree / "results/curves.csv")
    assert len(curves) == 20 and (curves["steps"] == 10).all()  # 200 points in batches of 20
    assert (tree / "paper/_generated/manuscript-check.txt").exists()
