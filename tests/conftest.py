"""Shared fixtures. Real MNIST comes from ``shared/data/binarized_mnist.npz`` beside the checkout
(or ``$VAEINF_BINARIZED_MNIST_NPZ``); tests that need it skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_NPZ = REPO.parent / "shared" / "data" / "binarized_mnist.npz"


def find_mnist_npz() -> Path | None:
    env = os.environ.get("VAEINF_BINARIZED_MNIST_NPZ")
    for p in (Path(env) if env else None, SHARED_NPZ):
        if p is not None and p.is_file():
            return p
    return None


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` first (the sort is stable, so each file's tests stay together and
    in order): under ``make test``'s two workers the longest files start at once instead of
    last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def mnist_npz() -> Path:
    p = find_mnist_npz()
    if p is None:
        pytest.skip(
            f"real binarized MNIST not found at {SHARED_NPZ} (nor $VAEINF_BINARIZED_MNIST_NPZ); "
            "place the packed .npz there to run this test"
        )
    return p


@pytest.fixture(scope="module")
def one_thread():
    """Small nets run fastest on one thread, and a second one only contends on a busy CPU
    (tests that compare bits also need a fixed thread count)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    from vaeinf.core.data import load_dataset

    return load_dataset("digits")
