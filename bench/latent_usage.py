"""Latent usage of trained runs, for choosing a study's latent size: active units (exact means
for the diagonal Gaussians, otherwise sample means with their noise floor subtracted), collapsed
units, KL(q(z|x) || p(z)) and the test NLL (IS), per run and per (latent size, method, K).

    python bench/latent_usage.py RUN_DIR... [--samples 500]

The run directories are trained runs of several latent sizes (e.g. a study's grid trained with
``--set model.latent=...``). Prints Markdown.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from vaeinf.core.train import load_trained
from vaeinf.evaluation.latent import active_units, collapse, posterior_statistics
from vaeinf.evaluation.likelihood import log_likelihood


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="trained run directories")
    ap.add_argument("--samples", type=int, default=500, help="draws per point for moments")
    ap.add_argument("--active", type=float, default=0.01, help="activity threshold")
    ap.add_argument("--collapse", type=float, default=0.005, help="collapse threshold")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cells = defaultdict(list)
    for run in args.runs:
        cfg, data, model = load_trained(run)
        x = data.subset("test", None)[0]
        torch.manual_seed(0)
        stats = posterior_statistics(model, x, args.samples, 256)
        au = active_units(stats, args.active)
        c = collapse(stats, args.collapse, au)
        nll = -log_likelihood(model, x, 1000, 256)["mean"]
        cells[(model.latent, cfg.variant or cfg.method, cfg.K)].append(
            (au["count"], c["collapsed_units"], c.get("kl_total"), nll)
        )
    print("| latent | method | K | active units (per seed) | collapsed | KL (nats) | test NLL |")
    print("|---:|:---|---:|:---|:---|:---|:---|")
    for (latent, method, K), v in sorted(cells.items()):
        kl = ", ".join("—" if r[2] is None else f"{r[2]:.2f}" for r in v)
        print(
            f"| {latent} | {method} | {K} | {', '.join(str(r[0]) for r in v)} | "
            f"{', '.join(str(r[1]) for r in v)} | {kl} | "
            f"{', '.join(f'{r[3]:.2f}' for r in v)} |"
        )


if __name__ == "__main__":
    main()
