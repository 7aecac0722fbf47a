"""CPU benchmark of the IWAE training step and the test log-likelihood: ``python bench/step.py``.

What it measures, all in one process and one run (the machine is shared and noisy, so every
comparison is a ratio of medians taken in the same run, with the contenders interleaved):

1. ms per ``iwae`` training step (forward + backward + Adam step) of Burda et al. (2015)'s
   1-stochastic-layer net (``model.preset: burda1``: 784-200-200-50 tanh, decoder 50-200-200-784)
   on binarized MNIST, batch 100, at K = 1, 5, 50, for

   - ``vaeinf``: :meth:`vaeinf.core.methods.base.Method.train_step`, eager
     (``train.compile: false``) and, unless ``--no-compile``, compiled (``train.compile: true``);
   - ``plain``: the same recipe written plainly in PyTorch in this file (:class:`PlainIWAE`: expand
     mu and sigma, decode K*B rows, ``torch.distributions.Normal`` for log q and log p(z),
     ``F.binary_cross_entropy_with_logits`` against the expanded x, logsumexp), with the same
     initial weights and the same Adam settings;
   - ``FLOP bound``: the step's matmul FLOPs (3x the forward's: the encoder on B rows plus the
     decoder on K*B rows, 2*m*n*k per matmul) divided by the GFLOP/s of a 2048x2048 float32
     matmul, timed once per round between the steps (median over the rounds of that K);
   - ``matmuls alone``: the step's own matmuls at their shapes and nothing else
     (:class:`StepMatmuls`), which shows how much of the gap to the bound is the library
     matmuls' speed at these shapes and how much is everything else in the step.

   Each round runs every contender once on the same batch, in a rotating order, and one matmul;
   medians are over ``--steps`` rounds after ``--warmup`` untimed ones. The first call of the
   compiled step for each K (the compilation) is timed on its own and reported as start-up cost,
   with an empty Inductor cache (a cold start; ``--warm-cache`` keeps the user's cache).

2. The Bernoulli log-likelihood term alone (forward + backward at the largest K):
   ``torch.distributions`` vs ``F.binary_cross_entropy_with_logits`` vs
   :func:`vaeinf.core.nets.bernoulli_log_prob`, the measured reason the library uses the latter.

3. The test NLL at K = 5000 on the 10000 test images with
   :func:`vaeinf.evaluation.likelihood.log_likelihood` under a memory budget (``--memory-mb``), in a
   subprocess so that its peak resident memory is its own: wall time, FLOP-bound ratio and the
   peak RSS, also at a larger K (``--big-k``) on a few points to show memory does not grow with K.
   The model is untrained (the Burda initialisation): the NLL value is only reported, the time
   and memory do not depend on the weights.

Prints a markdown table and, with ``--out``, writes it (``.md``) or everything as JSON (any other
suffix, the table included under ``markdown``). ``--quick`` is a seconds-long smoke run; the
default run takes minutes, most of it the NLL at K = 5000. ``python bench/report.py`` runs it
into the benchmark report.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal

from vaeinf.config import load_config
from vaeinf.core.data import BINARIZED_MNIST_NPZ_ENV, load_dataset
from vaeinf.core.methods import build_model
from vaeinf.core.nets import bernoulli_log_prob

MM_N = 2048
NLL_SLICE = 1000  # test points per log_likelihood call (progress report only)
GIB = 2**30

# ---------------------------------------------------------------------------------------------
# The plain recipe, as a user would write it


class PlainIWAE(nn.Module):
    """The IWAE loss written plainly: expanded mu and sigma, K*B decoder rows, logsumexp."""

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def loss(self, x: Tensor, K: int) -> Tensor:
        B = x.shape[0]
        mu, log_var = self.encoder(x).chunk(2, dim=-1)
        sigma = torch.exp(0.5 * log_var)
        mu, sigma = mu.expand(K, *mu.shape), sigma.expand(K, *sigma.shape)  # (K, B, D)
        z = mu + sigma * torch.randn_like(mu)
        logits = self.decoder(z)  # (K, B, 784)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, x.expand(K, B, x.shape[-1]), reduction="none"
        ).sum(-1)
        log_pz = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
        log_qz = Normal(mu, sigma).log_prob(z).sum(-1)
        log_w = log_px + log_pz - log_qz  # (K, B)
        return -(torch.logsumexp(log_w, 0) - math.log(K)).mean()


def plain_from(model) -> PlainIWAE:
    """A PlainIWAE with copies of the vaeinf model's initial weights."""
    return PlainIWAE(copy.deepcopy(model.posterior.encoder.net), copy.deepcopy(model.decoder.net))


# ---------------------------------------------------------------------------------------------
# FLOPs and the matmul rate


def linear_sizes(net: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]


def forward_flops(model, n_enc_rows: int, n_dec_rows: int) -> int:
    """Matmul FLOPs (2*m*n*k each) of the encoder on n_enc_rows and the decoder on n_dec_rows."""
    enc = sum(i * o for i, o in linear_sizes(model.posterior.encoder))
    dec = sum(i * o for i, o in linear_sizes(model.decoder))
    return 2 * (n_enc_rows * enc + n_dec_rows * dec)


class MatmulRate:
    """GFLOP/s of one float32 MM_N x MM_N matmul, timed on preallocated buffers."""

    def __init__(self, n: int = MM_N):
        g = torch.Generator().manual_seed(0)
        self.n = n
        self.a, self.b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        self.out = torch.empty(n, n)
        torch.mm(self.a, self.b, out=self.out)  # warm-up

    @property
    def flops(self) -> int:
        return 2 * self.n**3

    def __call__(self) -> float:
        t = time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        return 2 * self.n**3 / (time.perf_counter() - t) / 1e9

    def median(self, repeats: int) -> float:
        return statistics.median(self() for _ in range(repeats))


class StepMatmuls:
    """The step's matmuls alone, at their shapes: for every linear layer (the encoder's on B
    rows, the decoder's on K*B rows) the forward X W^T, the input gradient G W and the weight
    gradient G^T X, on preallocated buffers. Their time is what any implementation built on
    these library matmuls must spend at least; the rest of a step is elementwise work,
    reductions, the random numbers, Adam and overhead."""

    def __init__(self, model, n_enc_rows: int, n_dec_rows: int):
        g = torch.Generator().manual_seed(0)
        self.bufs = []
        for net, rows in ((model.posterior.encoder, n_enc_rows), (model.decoder, n_dec_rows)):
            for n_in, n_out in linear_sizes(net):
                x, w = torch.randn(rows, n_in, generator=g), torch.randn(n_out, n_in, generator=g)
                grad = torch.randn(rows, n_out, generator=g)
                outs = (torch.empty(rows, n_out), torch.empty(rows, n_in), torch.empty(n_out, n_in))
                self.bufs.append((x, w, grad, outs))

    def __call__(self) -> None:
        for x, w, grad, (y, grad_x, grad_w) in self.bufs:
            torch.mm(x, w.t(), out=y)  # forward (rows, out)
            torch.mm(grad, w, out=grad_x)  # input gradient (rows, in)
            torch.mm(grad.t(), x, out=grad_w)  # weight gradient (out, in)


# ---------------------------------------------------------------------------------------------
# Memory


def proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Setup


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable before any inter-op work
        torch.set_num_interop_threads(n)


def data_kwargs(args) -> dict:
    """Point vaeinf.core.data at the npz (``--data``, else $VAEINF_BINARIZED_MNIST_NPZ, else the
    usual files under ``--data-dir``)."""
    if args.dataset == "binarized_mnist" and args.data:
        os.environ[BINARIZED_MNIST_NPZ_ENV] = str(Path(args.data).resolve())
    return {"data_dir": args.data_dir}


def make_cfg(args, compile_: bool):
    return load_config(
        overrides={
            "dataset": args.dataset,
            "method": "iwae",
            "model": {"preset": "burda1"},
            "seed": args.seed,
            "train": {"batch_size": args.batch, "device": "cpu", "compile": compile_},
        }
    )


def make_model(cfg, data):
    torch.manual_seed(cfg.seed)
    return build_model(cfg, data.dim, data.train_mean())


def adam(params, cfg):
    return torch.optim.Adam(
        params, lr=cfg.train.lr, betas=tuple(cfg.train.betas), eps=cfg.train.eps
    )


# ---------------------------------------------------------------------------------------------
# 1. Training steps


def bench_steps(args, data) -> dict:
    cfg_eager, cfg_comp = make_cfg(args, False), make_cfg(args, True)
    eager = make_model(cfg_eager, data)
    plain = plain_from(eager)
    contenders = {"vaeinf": eager}
    opts = {
        "vaeinf": eager.make_optimizers(
            cfg_eager.train.lr, cfg_eager.train.betas, cfg_eager.train.eps
        ),
        "plain": [adam(plain.parameters(), cfg_eager)],
    }
    if args.compile:
        comp = make_model(cfg_comp, data)
        contenders["vaeinf_compiled"] = comp
        opts["vaeinf_compiled"] = comp.make_optimizers(
            cfg_comp.train.lr, cfg_comp.train.betas, cfg_comp.train.eps
        )
    contenders["plain"] = plain
    matmuls: StepMatmuls | None = None  # the current K's, built when its rounds start

    def step(name: str, x: Tensor, K: int) -> None:
        if name == "matmuls":
            matmuls()
        elif name == "plain":
            (opt,) = opts["plain"]
            loss = plain.loss(x, K)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            contenders[name].train_step(x, K, "standard", opts[name])

    train_x = data.train
    n_batches = len(train_x) // args.batch
    batch_at = lambda i: train_x[(i % n_batches) * args.batch : (i % n_batches + 1) * args.batch]  # noqa: E731

    # Same computation: with the same weights and the same random numbers, the losses agree.
    checks = {}
    x0 = batch_at(0)
    for K in args.ks:
        torch.manual_seed(1)
        lv, _ = _eager_loss(eager, x0, K)
        torch.manual_seed(1)
        lp = plain.loss(x0, K)
        checks[K] = {"abs_diff_loss_vaeinf_vs_plain": abs(lv.item() - lp.item())}

    rate = MatmulRate(args.matmul_n)
    out = {"per_K": {}, "checks": checks, "compile_startup_s": {}}
    names = [*contenders, "matmuls"]
    i = 0
    for K in args.ks:
        matmuls = StepMatmuls(eager, args.batch, K * args.batch)
        if args.compile:  # the compilation for this K, timed on its own
            x = batch_at(i)
            t = time.perf_counter()
            step("vaeinf_compiled", x, K)
            out["compile_startup_s"][K] = time.perf_counter() - t
            torch.manual_seed(1)
            lc, _ = _compiled_loss(contenders["vaeinf_compiled"], x0, K)
            torch.manual_seed(1)
            le, _ = _eager_loss(contenders["vaeinf_compiled"], x0, K)
            checks[K]["abs_diff_loss_compiled_vs_eager"] = abs(lc.item() - le.item())
        for _ in range(args.warmup):
            i += 1
            for name in names:
                step(name, batch_at(i), K)
        wall: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        rates, cpu_rates = [], []
        flops = 3 * forward_flops(eager, args.batch, K * args.batch)
        gc.collect()
        gc.disable()
        try:
            for r in range(args.steps):
                i += 1
                x = batch_at(i)
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    c, t = time.process_time(), time.perf_counter()
                    step(name, x, K)
                    wall[name].append(time.perf_counter() - t)
                    cpu[name].append((time.process_time() - c) / args.threads)
                c = time.process_time()
                rates.append(rate())
                cpu_rates.append(rate.flops / 1e9 / ((time.process_time() - c) / args.threads))
        finally:
            gc.enable()
        res = _summarise(wall, rates, flops)
        res["cpu"] = _summarise(cpu, cpu_rates, flops)
        res["step_gflop"] = flops / 1e9
        res["n_steps"] = args.steps
        out["per_K"][K] = res
        if args.compile:
            out["compile_startup_s"][K] -= res["ms"]["vaeinf_compiled"] / 1e3
        print(
            f"K={K}: " + ", ".join(f"{n} {v:.2f} ms" for n, v in res["ms"].items()),
            flush=True,
        )
    return out


def _summarise(times: dict[str, list[float]], rates: list[float], flops: int) -> dict:
    """Medians (ms) of each contender and of the FLOP bound, and same-round ratios: the median
    over rounds of each round's ratio, which cancels load that drifts between rounds."""
    bound = [flops / (g * 1e9) for g in rates]
    series = {**times, "flop_bound": bound}
    names = list(times)
    pairs = [("plain", n) for n in names if n.startswith("vaeinf")]
    pairs += [(n, "flop_bound") for n in names]
    return {
        "ms": {n: 1e3 * statistics.median(v) for n, v in series.items()},
        "ratio": {
            f"{a}/{b}": statistics.median(x / y for x, y in zip(series[a], series[b], strict=True))
            for a, b in pairs
        },
        "matmul_gflops": statistics.median(rates),
        "matmul_gflops_min_max": [min(rates), max(rates)],
    }


def _eager_loss(model, x, K):
    from vaeinf.core import bounds

    return bounds.loss(model, x, K, "iwae", "standard")


def _compiled_loss(model, x, K):
    from vaeinf.core import bounds

    return bounds.compiled_loss()(model, x, K, "iwae", "standard")


# ---------------------------------------------------------------------------------------------
# 2. The Bernoulli term alone


def bench_bernoulli(args, data, K: int) -> dict:
    B, D = args.batch, data.dim
    x = data.train[:B]
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(K, B, D, generator=g) * 3 - 2).requires_grad_()
    grad = torch.randn(K, B, generator=g)
    fns = {
        "torch.distributions Bernoulli": lambda: Independent(Bernoulli(logits=logits), 1).log_prob(
            x
        ),
        "F.binary_cross_entropy_with_logits": lambda: (
            -F.binary_cross_entropy_with_logits(logits, x.expand(K, B, D), reduction="none").sum(-1)
        ),
        "vaeinf.core.nets.bernoulli_log_prob": lambda: bernoulli_log_prob(x, logits),
    }
    ref = fns["torch.distributions Bernoulli"]()
    ref_grad = torch.autograd.grad(ref, logits, grad)[0]
    agree = {}
    for name, f in fns.items():
        v = f()
        gv = torch.autograd.grad(v, logits, grad)[0]
        agree[name] = {
            "max_rel_diff_value": ((v - ref).abs() / ref.abs()).max().item(),
            "max_abs_diff_grad": (gv - ref_grad).abs().max().item(),
        }
    times: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for r in range(args.warmup + args.steps):
        for name in names[r % 3 :] + names[: r % 3]:
            t = time.perf_counter()
            torch.autograd.grad(fns[name](), logits, grad)
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t)
    return {
        "K": K,
        "ms": {n: 1e3 * statistics.median(v) for n, v in times.items()},
        "agreement_with_torch_distributions": agree,
    }


# ---------------------------------------------------------------------------------------------
# 3. Test NLL in a subprocess


def nll_child(spec: dict) -> list[dict]:
    """Runs in a fresh interpreter: time log_likelihood and measure its peak RSS, for each
    (K, points) of ``spec["runs"]`` in turn, the peak reset to the current RSS before each."""
    from vaeinf.core.methods.base import chunking
    from vaeinf.evaluation.likelihood import log_likelihood

    set_threads(spec["threads"])
    args = argparse.Namespace(**spec["args"])
    data = load_dataset(args.dataset, **data_kwargs(args))
    model = make_model(make_cfg(args, False), data)
    model.eval()
    # The reference matmul's buffers exist before the peak is reset: they are not counted in
    # the evaluation's increase (they are in the absolute peak).
    rate = MatmulRate(spec["matmul_n"])
    threads = spec["threads"]
    out = []
    for K, points in spec["runs"]:
        x = data.test[:points].contiguous()
        memory_mb = spec["memory_mb"]

        def one_rate():  # (wall, CPU / threads) GFLOP/s of one matmul
            c = time.process_time()
            g = rate()
            return g, rate.flops / 1e9 / ((time.process_time() - c) / threads)

        rates = [one_rate(), one_rate()]
        gc.collect()
        reset_ok = reset_peak_rss()
        rss0, hwm0 = proc_status_kib("VmRSS"), proc_status_kib("VmHWM")
        torch.manual_seed(spec["seed"])
        wall = cpu = 0.0
        per_point = []
        # Slices report progress and interleave a reference matmul (outside the timing).
        for start in range(0, len(x), NLL_SLICE):
            xs = x[start : start + NLL_SLICE]
            c, t = time.process_time(), time.perf_counter()
            per_point.append(log_likelihood(model, xs, K=K, memory_mb=memory_mb)["per_point"])
            wall += time.perf_counter() - t
            cpu += (time.process_time() - c) / threads
            done = start + len(xs)
            if done < len(x):
                print(
                    f"  NLL K={K}: {done}/{len(x)} points, {wall:.0f} s, about "
                    f"{wall * (len(x) - done) / done:.0f} s to go",
                    file=sys.stderr,
                    flush=True,
                )
            rates.append(one_rate())
        hwm1 = proc_status_kib("VmHWM")
        per_point = torch.cat(per_point)
        b, s = chunking(model, len(x), K, memory_mb)
        n_enc = len(x) * math.ceil(K / s)  # the encoder runs once per sample chunk
        flops = forward_flops(model, n_enc, K * len(x))
        gflops = statistics.median(g for g, _ in rates)
        cpu_gflops = statistics.median(g for _, g in rates)
        r = {
            "K": K,
            "points": len(x),
            "memory_mb": memory_mb,
            "chunk_points": b,
            "chunk_samples": s,
            "wall_s": wall,
            "nll": -per_point.mean().item(),
            "nll_stderr": (per_point.std() / math.sqrt(len(per_point))).item(),
            "gflop": flops / 1e9,
            "matmul_gflops": gflops,
            "flop_bound_s": flops / (gflops * 1e9),
            "cpu_s": cpu,
            "cpu_matmul_gflops": cpu_gflops,
            "cpu_flop_bound_s": flops / (cpu_gflops * 1e9),
            "peak_rss_gib": hwm1 / 2**20 if hwm1 is not None else None,
            "rss_before_gib": rss0 / 2**20 if rss0 is not None else None,
            "peak_increase_gib": (hwm1 - rss0) / 2**20 if None not in (hwm1, rss0) else None,
            "peak_was_reset": reset_ok,
            "peak_before_gib": hwm0 / 2**20 if hwm0 is not None else None,
        }
        print(
            f"NLL K={K} on {r['points']} points: {wall:.1f} s (FLOP bound "
            f"{r['flop_bound_s']:.1f} s), peak RSS {r['peak_rss_gib']:.2f} GiB",
            file=sys.stderr,
            flush=True,
        )
        out.append(r)
    return out


def run_nll(args, runs: list[tuple[int, int]]) -> list[dict]:
    """The NLL runs in one fresh interpreter, so that the peak RSS is the evaluation's own."""
    spec = {
        "threads": args.threads,
        "args": {k: getattr(args, k) for k in ("dataset", "data", "data_dir", "seed", "batch")},
        "runs": runs,
        "memory_mb": args.memory_mb,
        "matmul_n": args.matmul_n,
        "seed": args.seed + 17,
    }
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, __file__, "--child-nll", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the NLL subprocess failed with status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Report


LABELS = {
    "vaeinf": "vaeinf eager",
    "vaeinf_compiled": "vaeinf compiled",
    "plain": "plain",
    "matmuls": "matmuls alone",
}


def step_table(per: dict, key: str | None) -> list[str]:
    """Rows of ms medians and same-round ratios, from wall times (key None) or CPU times."""
    first = next(iter(per.values()))
    names = list(first["ms"])[:-1]  # contenders; flop_bound last
    ratios = list(first["ratio"])
    short = {
        "vaeinf": "eager",
        "vaeinf_compiled": "compiled",
        "plain": "plain",
        "matmuls": "matmuls",
        "flop_bound": "bound",
    }
    head = ["K", *(f"{LABELS[n]} (ms)" for n in names), "FLOP bound (ms)"]
    head += [" / ".join(short[p] for p in r.split("/")) for r in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for K, r in per.items():
        r = r if key is None else r[key]
        row = [str(K), *(f"{r['ms'][n]:.2f}" for n in [*names, "flop_bound"])]
        row += [f"{r['ratio'][q]:.2f}" for q in ratios]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown(result: dict) -> str:
    env, steps, bern, nll = result["env"], result["steps"], result["bernoulli"], result["nll"]
    per = steps["per_K"]
    has_comp = "vaeinf_compiled" in next(iter(per.values()))["ms"]
    lines = [
        f"Command: `{env['command']}`  ",
        f"Machine: {env['cpu']}, {env['cpus']} CPUs, torch {env['torch']}, "
        f"{env['threads']} torch threads (OMP_WAIT_POLICY={env['omp_wait_policy']}); "
        f"load average {env['loadavg_start']} at start, {env['loadavg_end']} at end; "
        f"{env['total_s'] / 60:.1f} min in all.  ",
        f"IWAE training step (forward + backward + Adam) on {env['dataset']}, Burda's 1-layer net "
        f"(burda1), batch {env['batch']}: medians of {env['steps']} interleaved rounds after "
        f"{env['warmup']} warm-up rounds; ratios are medians of the same-round ratios.",
        "",
        *step_table(per, None),
        "",
        "Step matmul GFLOP (3x the forward's): "
        + ", ".join(f"K={K}: {r['step_gflop']:.3f}" for K, r in per.items())
        + f". {env['matmul_n']}x{env['matmul_n']} float32 matmul, GFLOP/s (median, min-max): "
        + ", ".join(
            f"K={K} rounds: {r['matmul_gflops']:.0f} ({r['matmul_gflops_min_max'][0]:.0f}-"
            f"{r['matmul_gflops_min_max'][1]:.0f})"
            for K, r in per.items()
        )
        + ".",
        "",
        "The same rounds timed by process CPU time / threads (insensitive to time lost to other "
        "processes on a shared machine):",
        "",
        *step_table(per, "cpu"),
    ]
    if has_comp:
        cs = steps["compile_startup_s"]
        lines += [
            "",
            "Compile start-up (cold Inductor cache"
            + ("" if env["cold_cache"] else ": no, warm")
            + "), first compiled step minus a steady one: "
            + ", ".join(f"K={K}: {s:.1f} s" for K, s in cs.items())
            + f"; total {sum(cs.values()):.1f} s.",
        ]
    lines += ["", f"Bernoulli log-likelihood term alone, forward + backward, K={bern['K']}:", ""]
    lines += ["| implementation | ms | max rel. diff of value | max abs. diff of gradient |"]
    lines += ["|---|---|---|---|"]
    for n, ms in bern["ms"].items():
        a = bern["agreement_with_torch_distributions"][n]
        lines.append(
            f"| {n} | {ms:.2f} | {a['max_rel_diff_value']:.1e} | {a['max_abs_diff_grad']:.1e} |"
        )
    if nll:
        lines += [
            "",
            "Test NLL with `vaeinf.evaluation.likelihood.log_likelihood` "
            "(untrained Burda-initialised model: "
            "the time and memory do not depend on the weights), in a subprocess; the FLOP bound "
            "is the forward matmuls (encoder once per sample chunk, decoder on K x points rows) "
            "at the rate of a reference matmul timed between slices of 1000 points:",
            "",
            "| K | points | memory budget (MB) | chunk (points x samples) | wall (s) | "
            "FLOP bound (s) | wall / bound | CPU / threads (s) | CPU / CPU bound | "
            "peak RSS (GiB) | peak increase (GiB) | NLL (nats) |",
            "|" + "---|" * 12,
        ]
        for n in nll:
            lines.append(
                f"| {n['K']} | {n['points']} | {n['memory_mb']} | {n['chunk_points']} x "
                f"{n['chunk_samples']} | {n['wall_s']:.1f} | {n['flop_bound_s']:.1f} | "
                f"{n['wall_s'] / n['flop_bound_s']:.2f} | {n['cpu_s']:.1f} | "
                f"{n['cpu_s'] / n['cpu_flop_bound_s']:.2f} | {n['peak_rss_gib']:.2f} | "
                f"{n['peak_increase_gib']:.2f} | {n['nll']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python bench/step.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        help="binarized MNIST npz (default: $VAEINF_BINARIZED_MNIST_NPZ, else the files under "
        "--data-dir)",
    )
    p.add_argument("--data-dir", default="data", help="vaeinf data folder (default: data)")
    p.add_argument("--dataset", default="binarized_mnist", help="default: binarized_mnist")
    p.add_argument("--out", help="write the table (.md) or everything as JSON (other suffixes)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--ks", default="1,5,50", help="training-step K values (default: 1,5,50)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=30, help="timed rounds per K (default: 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds per K (default: 5)")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the compiled step (train.compile: true); default: on",
    )
    p.add_argument(
        "--warm-cache",
        action="store_true",
        help="keep the user's Inductor cache (default: time a cold compilation)",
    )
    p.add_argument("--nll-k", type=int, default=5000)
    p.add_argument("--nll-points", type=int, default=10000)
    p.add_argument("--big-k", type=int, default=20000, help="second NLL run, K (0: skip)")
    p.add_argument("--big-k-points", type=int, default=100)
    p.add_argument(
        "--memory-mb", type=int, default=128, help="evaluation memory budget, MB (default: 128)"
    )
    p.add_argument(
        "--matmul-n", type=int, default=MM_N, help=f"size of the reference matmul (default: {MM_N})"
    )
    p.add_argument("--no-nll", action="store_true", help="skip the NLL part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: K=1,5, 3 rounds, 512x512 reference matmul, NLL K=50 on 20 points "
        "and K=200 on 2",
    )
    p.add_argument("--child-nll", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.ks, args.steps, args.warmup, args.matmul_n = "1,5", 3, 1, 512
        args.nll_k, args.nll_points, args.big_k, args.big_k_points = 50, 20, 200, 2
    args.ks = [int(k) for k in str(args.ks).split(",")]
    return args


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.child_nll:
        print(json.dumps(nll_child(json.loads(args.child_nll))), flush=True)
        return None
    set_threads(args.threads)
    cold_dir = None
    if args.compile and not args.warm_cache:
        cold_dir = tempfile.mkdtemp(prefix="vaeinf-bench-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cold_dir
    t_start = time.perf_counter()
    env = {
        "command": "python bench/step.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "dataset": args.dataset,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "cold_cache": cold_dir is not None,
        "matmul_n": args.matmul_n,
    }
    print(f"threads: {env['threads']} (torch.set_num_threads), CPU: {env['cpu']}", flush=True)
    try:
        data = load_dataset(args.dataset, **data_kwargs(args))
        steps = bench_steps(args, data)
        bern = bench_bernoulli(args, data, max(args.ks))
        nll = []
        if not args.no_nll:
            runs = [(args.nll_k, args.nll_points)]
            if args.big_k:
                runs.append((args.big_k, args.big_k_points))
            nll = run_nll(args, runs)
    finally:
        if cold_dir is not None:
            shutil.rmtree(cold_dir, ignore_errors=True)
    env["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    env["total_s"] = time.perf_counter() - t_start
    result = {"env": env, "steps": steps, "bernoulli": bern, "nll": nll}
    result["markdown"] = markdown(result)
    print()
    print(result["markdown"])
    print(f"total {env['total_s']:.0f} s")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".md":
            out.write_text(result["markdown"])
        else:
            out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    # On a CPU shared with other processes, OpenMP threads that spin while waiting (the GNU
    # default) make every parallel op wait for a descheduled thread. Passive waiting avoids
    # that; it must be set before torch loads OpenMP, so the script restarts itself with it
    # (an explicit setting is kept).
    if "OMP_WAIT_POLICY" not in os.environ:
        os.execve(
            sys.executable,
            [sys.executable, *sys.argv],
            {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
    main()
