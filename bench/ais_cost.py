"""Cost of AIS (vaeinf.evaluation.ais) per (point, chain, intermediate distribution) against the
decoder's forward + backward FLOPs, on Burda et al. (2015)'s net (decoder 50-200-200-784,
untrained: the cost does not depend on the weights) and binarized MNIST test images, on 2 CPU
threads.

    python bench/ais_cost.py --npz PATH      (or set VAEINF_BINARIZED_MNIST_NPZ)

One AIS step costs ``leapfrog`` gradient evaluations of log p(x|z) + log p(z) w.r.t. z, each a
decoder forward plus a backward to z (no weight gradients): 2 x the forward's matmul FLOPs,
2 m n k per matmul. Reported: microseconds per (point, chain, distribution); that cost over the
FLOP count at the machine's 2048^2 float32 matmul rate (the FLOP bound); and over a bare
decoder forward + backward to z of the same rows (what the HMC bookkeeping adds). Prints
Markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from vaeinf.config import ModelConfig, RunConfig
from vaeinf.core.data import BINARIZED_MNIST_NPZ_ENV, load_dataset
from vaeinf.core.methods import build_model
from vaeinf.evaluation import ais


def decoder_forward_flops(model) -> int:
    """Matmul FLOPs of one decoder forward on one row: 2 * sum(in * out) over its layers."""
    return sum(
        2 * m.in_features * m.out_features
        for m in model.decoder.net
        if isinstance(m, torch.nn.Linear)
    )


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def bare_gradient_seconds(model, x, chains: int, reps: int) -> float:
    """Median seconds of one decoder forward + backward to z on (chains, points) rows."""
    z = torch.randn(chains, len(x), model.latent, requires_grad=True)
    times = []
    for _ in range(reps + 2):
        t = time.perf_counter()
        lp = model.decoder.log_prob(x, model.decoder(z)).sum()
        torch.autograd.grad(lp, z)
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", type=Path, default=None, help="packed binarized MNIST .npz")
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--chains", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--leapfrog", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.npz is not None:
        os.environ[BINARIZED_MNIST_NPZ_ENV] = str(args.npz)
    if not os.environ.get(BINARIZED_MNIST_NPZ_ENV):
        ap.error(f"give --npz PATH or set {BINARIZED_MNIST_NPZ_ENV}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = load_dataset("binarized_mnist")
    model = build_model(RunConfig(model=ModelConfig(preset="burda1")), data.dim, data.train_mean())
    model.eval()
    x = data.test[: args.points]
    fwd = decoder_forward_flops(model)
    per_eval = 2 * fwd  # forward + backward to z
    peak = matmul_gflops()

    print(f"# AIS cost ({args.threads} CPU threads, torch {torch.__version__})\n")
    print(
        f"Burda net decoder: {fwd / 1e6:.3f} MFLOP per row forward, {per_eval / 1e6:.3f} "
        f"forward + backward to z; 2048^2 float32 matmul: {peak:.1f} GFLOP/s. "
        f"{args.points} test points, {args.steps} annealing steps, {args.leapfrog} leapfrog "
        "steps per HMC transition.\n"
    )
    print(
        "| chains | s per AIS run | us per (point, chain, distribution) | FLOP bound (us) "
        "| x FLOP bound | bare fwd+bwd (us) | x bare |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for S in args.chains:
        s = ais.AISSettings(steps=args.steps, chains=S, leapfrog=args.leapfrog)
        ais.log_likelihood(model, x, ais.AISSettings(steps=3, chains=S, leapfrog=1))  # warm-up
        t = time.perf_counter()
        ais.log_likelihood(model, x, s, memory_mb=2048)
        secs = time.perf_counter() - t
        units = args.points * S * args.steps
        per_unit = secs / units * 1e6
        bound = args.leapfrog * per_eval / (peak * 1e9) * 1e6
        bare = bare_gradient_seconds(model, x, S, 10) / (args.points * S) * args.leapfrog * 1e6
        print(
            f"| {S} | {secs:.2f} | {per_unit:.2f} | {bound:.2f} | {per_unit / bound:.1f} "
            f"| {bare:.2f} | {per_unit / bare:.2f} |"
        )


if __name__ == "__main__":
    main()
