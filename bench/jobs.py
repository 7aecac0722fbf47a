"""What a study job costs as its own process, and as a fork of the job server.

    python bench/jobs.py [--repeats 5] [--epochs 1]

Times whole jobs, alternating A B A B in separate processes: (A) a job script that runs the
job itself (``import torch``, the job's code, the job), as a cluster job does; (B) the same
script under the job server (:mod:`vaeinf.study.jobserver`), as ``make study`` runs it. Two
jobs: ``probe`` (nothing to do: the fixed cost of a job) and a training of the default study's
VAE at K = 1 on digits for ``--epochs`` epochs. CPU seconds of A are the script process's; of B
the script's plus the served child's (from the usage line it appends to the job's log). Prints
Markdown: medians over the repeats.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = """
import sys, json
from vaeinf.study.jobserver import call
job, kwargs = sys.argv[1], json.loads(sys.argv[2])
sys.exit(call(job, **kwargs))  # without a server, the job (and its imports) run here
"""


def run(job: str, kwargs: dict, served: bool, env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one job script."""
    import json

    from vaeinf.study.jobserver import ENV, read_usage

    env = dict(env) if served else {k: v for k, v in env.items() if k != ENV}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    command = [sys.executable, "-c", SCRIPT, job, json.dumps(kwargs)]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if served:
        usage = read_usage(kwargs["log_path"])
        assert usage is not None, "the job was not served"
        cpu += usage[0]
    return wall, cpu


def inner(args) -> int:
    """Under the server: alternate A B and print the table."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train = {
            "run_dir": "",
            "overrides": {"dataset": "digits", "method": "vae", "K": 1,
                          "model": {"hidden": [64, 64], "latent": 8},
                          "train": {"epochs": args.epochs, "device": "cpu"}},
        }  # fmt: skip
        for job, kwargs in (("probe", {}), ("train", train)):
            got = {False: [], True: []}
            for i in range(args.repeats):
                for served in (False, True):  # A B A B
                    kw = dict(kwargs, log_path=str(Path(tmp) / f"{job}{i}{served}.log"))
                    if job == "train":
                        kw["run_dir"] = str(Path(tmp) / f"run{i}{served}")
                    got[served].append(run(job, kw, served, os.environ))
            for served in (False, True):
                walls, cpus = zip(*got[served], strict=True)
                rows.append((job, served, statistics.median(walls), statistics.median(cpus)))
    print(f"# {args.repeats} repeats A B A B; train = vae K=1 on digits, {args.epochs} epoch(s)")
    print()
    print("| Job | Run as | Wall s (median) | CPU s (median) |")
    print("|:---|:---|---:|---:|")
    for job, served, wall, cpu in rows:
        how = "fork of the job server" if served else "its own process"
        print(f"| {job} | {how} | {wall:.2f} | {cpu:.2f} |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.inner:
        return inner(args)
    me = [sys.executable, __file__, "--inner", "--repeats", str(args.repeats)]
    me += ["--epochs", str(args.epochs)]
    return subprocess.call([sys.executable, "-m", "vaeinf.study.jobserver", *me])


if __name__ == "__main__":
    sys.exit(main())
