"""Seconds per training epoch of every method, relative to `iwae` at the same K.

    python bench/methods.py [--data-dir DIR] [--ks 1 5] [--steps 20] [--threads N]

Binarized MNIST (Larochelle & Murray 2011; ``$VAEINF_BINARIZED_MNIST_NPZ`` or ``--data-dir``)
with Burda et al. (2015)'s net (``model.preset: burda1``), batch 100, each method's default
options and the standard estimator. For each K, every method is warmed up, then the timed steps
run round-robin (one step of each method in turn, the same minibatch for all), so that a
change in the machine's load hits all methods alike. A method's seconds per epoch is its median
step time times the number of minibatches per epoch (500); the ratio is to `iwae`'s at the same
K. Only the training step is timed (no validation, no checkpointing).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from vaeinf.config import ModelConfig, RunConfig
from vaeinf.core.data import load_dataset
from vaeinf.core.methods import REGISTRY, build_model


def time_methods(
    data, methods: list[str], K: int, steps: int, warmup: int, batch: int, seed: int = 0
) -> dict[str, list[float]]:
    """Step times (seconds) of each method at this K, measured round-robin."""
    models, optimizers = {}, {}
    for name in methods:
        torch.manual_seed(seed)
        cfg = RunConfig(
            dataset="binarized_mnist", method=name, K=K, model=ModelConfig(preset="burda1")
        )
        models[name] = build_model(cfg, data.dim, data.train_mean())
        optimizers[name] = models[name].make_optimizers(1e-3, [0.9, 0.999], 1e-4)
    gen = torch.Generator().manual_seed(seed)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for step in range(warmup + steps):
        x = data.train[torch.randint(len(data.train), (batch,), generator=gen)]
        for name in methods:
            t0 = time.perf_counter()
            models[name].train_step(x, K, "standard", optimizers[name])
            elapsed = time.perf_counter() - t0
            if step >= warmup:
                times[name].append(elapsed)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/methods.py", description=__doc__)
    p.add_argument("--data-dir", default="data", help="folder holding binarized_mnist")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5])
    p.add_argument("--steps", type=int, default=20, help="timed steps per method and K")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--methods", nargs="+", default=list(REGISTRY), choices=list(REGISTRY))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = ["iwae"] + [m for m in args.methods if m != "iwae"]

    data = load_dataset("binarized_mnist", data_dir=args.data_dir)
    per_epoch = -(-len(data.train) // args.batch)  # minibatches per epoch
    print(
        f"# binarized_mnist, burda1, batch {args.batch}, {per_epoch} steps/epoch; "
        f"median of {args.steps} steps after {args.warmup} warm-up, round-robin; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}"
    )
    print("| method | K | s/step (median) | s/epoch | x iwae |")
    print("|---|---|---|---|---|")
    for K in args.ks:
        times = time_methods(data, methods, K, args.steps, args.warmup, args.batch)
        base = statistics.median(times["iwae"])
        for name in methods:
            med = statistics.median(times[name])
            print(
                f"| {name} | {K} | {med:.4f} | {med * per_epoch:.1f} | {med / base:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
