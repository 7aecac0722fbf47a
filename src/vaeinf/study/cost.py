"""The cost axis of the study: seconds per training epoch of every (variant, K), timed fairly.

Why: epoch times in training logs of jobs sharing a machine time each other's load. Here every
contender runs in its own worker process (its own allocator), all started before timing; the
coordinator runs rounds in a rotating order, each turn one untimed step then at least ``steps``
timed steps and ``min_seconds``, the first ``warmup`` rounds discarded. A contender's step time
is its fastest counted step (interference only adds time; the median and quartiles are
reported beside it), seconds per epoch (``epoch_s_fastest``) = step time x minibatches
per epoch, and the ratio is to
the reference contender (``vae`` at the smallest K when present, else the first variant). The
measurements behind these choices are in the benchmark report.

Reference: the minimum of repeated timings, as argued in the documentation of Python's
``timeit``. Output: one CSV row per contender (:data:`COLUMNS`).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

COLUMNS = [
    "dataset",
    "variant",
    "method",
    "K",
    "device",
    "batch_size",
    "batches_per_epoch",
    "step_s",
    "step_s_q1",
    "step_s_median",
    "step_s_q3",
    "epoch_s_fastest",
    "ratio",
    "reference",
    "timed_steps",
    "threads",
]


def _worker(overrides: dict, threads: int, conn) -> None:
    """One contender, in its own process: build the run's model, then for every request
    ``(n, s)`` received on ``conn`` time at least ``n`` training steps and at least ``s``
    seconds of them, answering the step times; ``None`` ends it."""
    import torch

    from vaeinf.config import load_config
    from vaeinf.core.train import prepare

    torch.set_num_threads(threads)
    cfg = load_config(None, overrides)
    data, model, device = prepare(cfg)
    optimizers = model.make_optimizers(cfg.train.lr, cfg.train.betas, cfg.train.eps)
    train_x = data.train.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    batch = min(cfg.train.batch_size, len(train_x))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model.train()

    def timed_step() -> float:
        x = data.binarize(train_x[torch.randint(len(train_x), (batch,), generator=gen)])
        sync()
        t0 = time.perf_counter()
        model.train_step(x, cfg.K, cfg.estimator, optimizers)
        sync()
        return time.perf_counter() - t0

    conn.send([str(device), math.ceil(len(train_x) / cfg.train.batch_size)])
    while (request := conn.recv()) is not None:
        n, floor = request
        # One untimed step first: after waiting idle, the first step pays for the caches and
        # memory pages that the other workers' bursts evicted, a cost of the timing setup.
        timed_step()
        times: list[float] = []
        while len(times) < n or sum(times) < floor:
            times.append(timed_step())
        conn.send(times)


def _ask(worker, conn, steps: int | None = None, min_seconds: float = 0.0):
    if steps is not None:
        conn.send((steps, min_seconds))
    try:
        return conn.recv()
    except EOFError:
        worker.join()
        raise RuntimeError(
            f"a timing worker exited with status {worker.exitcode} (its stderr above)"
        ) from None


def measure(
    contenders: dict[tuple[str, int], dict],
    rounds: int = 15,
    warmup: int = 2,
    steps: int = 10,
    min_seconds: float = 0.0,
    threads: int = 1,
) -> list[dict]:
    """Time every contender ((variant, K) -> its run config overrides, ``method`` the
    variant's base method); one row per contender."""
    keys = list(contenders)
    names = [v for v, _ in keys]
    ref_name = "vae" if "vae" in names else names[0]
    ref_key = (ref_name, min(K for v, K in keys if v == ref_name))
    # Forked where that is safe (Linux: this process has imported torch but run nothing on its
    # threads), so that a worker does not import torch again; spawned elsewhere.
    fork = sys.platform.startswith("linux")
    if fork:  # imported once, for every worker (an optimizer's first use imports torch._dynamo)
        import torch._dynamo  # noqa: F401

        import vaeinf.core.train  # noqa: F401
    ctx = multiprocessing.get_context("fork" if fork else "spawn")
    workers: dict[tuple[str, int], tuple] = {}
    try:
        for key in keys:
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(contenders[key], threads, theirs))
            proc.start()
            theirs.close()
            workers[key] = (proc, ours)
        info = {key: _ask(*worker) for key, worker in workers.items()}
        # Per contender, every step time of the counted rounds.
        times: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
        for r in range(warmup + rounds):
            shift = r % len(keys)
            for key in keys[shift:] + keys[:shift]:  # a rotating order
                got = _ask(*workers[key], steps, min_seconds)
                if r >= warmup:
                    times[key].extend(got)
    finally:
        for _, conn in workers.values():
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc, conn in workers.values():
            proc.join(timeout=30)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
            conn.close()
    ref_step = min(times[ref_key])
    rows = []
    for (variant, K), t in times.items():
        device, per_epoch = info[(variant, K)]
        q1, median, q3 = statistics.quantiles(t, n=4)
        step = min(t)  # the fastest step: the cost of the work itself (see the module's doc)
        rows.append(
            {
                "dataset": contenders[(variant, K)]["dataset"],
                "variant": variant,
                "method": contenders[(variant, K)]["method"],
                "K": K,
                "device": device,
                "batch_size": contenders[(variant, K)].get("train", {}).get("batch_size"),
                "batches_per_epoch": per_epoch,
                "step_s": step,
                "step_s_q1": q1,
                "step_s_median": median,
                "step_s_q3": q3,
                "epoch_s_fastest": step * per_epoch,
                "ratio": step / ref_step,
                "reference": f"{ref_key[0]} K={ref_key[1]}",
                "timed_steps": len(t),
                "threads": threads,
            }
        )
    return rows


#: What changes the time of a training step: the model, the method and its options, K, the
#: estimator, the data and its binarization, the batch size, the device kind and compilation.
#: Nothing else of a run config is part of a contender (seed, learning rate, epochs and the
#: evaluation settings change no step's time), so changing them never reruns the cost rule.
STEP_IDENTITY = ("dataset", "binarization", "method", "K", "estimator", "model", "method_options")
STEP_TRAIN_IDENTITY = ("batch_size", "device", "compile")


def step_identity(cfg) -> dict:
    """The part of a resolved RunConfig that changes its training step's time."""
    d = cfg.to_dict()
    return {k: d[k] for k in STEP_IDENTITY} | {
        "train": {k: d["train"][k] for k in STEP_TRAIN_IDENTITY}
    }


def study_contenders(config: dict, dataset: str) -> dict[tuple[str, int], dict]:
    """Every (variant, K) of a study on ``dataset`` (a variant at its own Ks), as the run config
    of its training step (:func:`step_identity` of its first seed's run)."""
    from vaeinf.study.grid import run_config, variants

    seed = config["seeds"][0]
    return {
        (v, int(K)): step_identity(run_config(config, dataset, v, int(K), seed))
        for v, spec in variants(config).items()
        for K in sorted(spec["Ks"])
    }


def write_cost(rows: list[dict], out: str | Path) -> None:
    import pandas as pd

    from vaeinf.rundir import atomic_write_text

    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df:
            df[c] = None
    atomic_write_text(out, df[COLUMNS].to_csv(index=False, float_format="%.6g"))
