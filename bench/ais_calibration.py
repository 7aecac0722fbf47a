"""Calibration of the AIS settings on trained runs: for each setting, log p_AIS - log p_IS on the
same test points (AIS from vaeinf.evaluation.ais, IS with K importance samples), its paired
standard error and z = mean / s.e. per run, the delta-method estimate of AIS's downward bias
(Var over chains of log w / 2S), the BDMC gap on simulated points, and the CPU seconds of AIS
and BDMC together (one batch, 1 thread); then, per setting, the mean over runs with its
standard error, the smallest z and the mean BDMC gap.

    python bench/ais_calibration.py RUN_DIR... [--settings 500:8:2 600:4:2] [--points 50]

A setting is T:S:L (steps, chains, leapfrog steps); the run directories are trained runs (e.g.
``results/digits/*/k*/seed*`` of a study). Prints Markdown.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from vaeinf.core.train import load_trained
from vaeinf.evaluation import ais
from vaeinf.evaluation.likelihood import log_likelihood


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="trained run directories")
    ap.add_argument("--settings", nargs="+", default=["500:8:2"], help="T:S:L")
    ap.add_argument("--points", type=int, default=50, help="test points (the AIS subset)")
    ap.add_argument("--bdmc", type=int, default=20, help="simulated points of BDMC")
    ap.add_argument("--is-k", type=int, default=1000, help="importance samples of IS")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    print("| run | T:S:L | AIS − IS (nats) | s.e. | z | bias estimate | BDMC gap | CPU s |")
    print("|:---|:---|---:|---:|---:|---:|---:|---:|")
    for run in args.runs:
        cfg, data, model = load_trained(run)
        x = data.subset("test", args.points)[0]
        torch.manual_seed(123)
        is_pp = log_likelihood(model, x, args.is_k, 256)["per_point"]
        name = f"{cfg.variant or cfg.method}/K={cfg.K}/seed={cfg.seed}/latent={model.latent}"
        for setting in args.settings:
            T, S, L = (int(v) for v in setting.split(":"))
            s = ais.AISSettings(steps=T, chains=S, leapfrog=L)
            torch.manual_seed(7)
            t = time.process_time()
            est, check = ais.log_likelihood_and_bdmc(model, x, args.bdmc, s, 256)
            cpu = time.process_time() - t
            d = est["per_point"] - is_pp
            se = d.std().item() / math.sqrt(len(d))
            row = {
                "setting": setting,
                "diff": d.mean().item(),
                "z": d.mean().item() / se,
                "bias": est["bias_estimate"],
                "bdmc": check["gap"],
                "cpu": cpu,
            }
            rows.append(row)
            print(
                f"| {name} | {setting} | {row['diff']:+.4f} | {se:.4f} | {row['z']:+.2f} | "
                f"{row['bias']:.4f} | {row['bdmc']:+.4f} | {cpu:.2f} |",
                flush=True,
            )
    print("\n| T:S:L | runs | mean AIS − IS | s.e. | min z | mean BDMC gap | s.e. | CPU s |")
    print("|:---|---:|---:|---:|---:|---:|---:|---:|")
    for setting in args.settings:
        r = [row for row in rows if row["setting"] == setting]
        diff, bdmc = [v["diff"] for v in r], [v["bdmc"] for v in r]
        se = statistics.stdev(diff) / math.sqrt(len(r)) if len(r) > 1 else math.nan
        se_b = statistics.stdev(bdmc) / math.sqrt(len(r)) if len(r) > 1 else math.nan
        print(
            f"| {setting} | {len(r)} | {statistics.mean(diff):+.4f} | {se:.4f} | "
            f"{min(v['z'] for v in r):+.2f} | {statistics.mean(bdmc):.4f} | {se_b:.4f} | "
            f"{statistics.mean(v['cpu'] for v in r):.2f} |"
        )


if __name__ == "__main__":
    main()
