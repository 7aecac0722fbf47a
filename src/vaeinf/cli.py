"""Command line: ``vaeinf train``, ``vaeinf evaluate``, ``vaeinf download``.

Bad input (unknown key, wrong type, out-of-range value, unknown dataset/method/estimator,
missing data) prints one line ``vaeinf: error: ...`` and exits with status 2, before anything
is written. Training stopped by SIGTERM/SIGINT exits 143 after checkpointing; a non-finite
loss exits 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from vaeinf.errors import EXIT_BAD_INPUT, EXIT_PREEMPTED, exit_status

__all__ = ["EXIT_BAD_INPUT", "EXIT_PREEMPTED", "build_parser", "main"]


def _parse_set(items: list[str]) -> dict:
    """``--set a.b=value`` pairs -> nested dict; values parsed as YAML (so 5 is an int)."""
    from vaeinf.config import ConfigError

    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set K=5")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(raw)
    return out


def _train(args) -> int:
    from vaeinf.config import load_config
    from vaeinf.train import train

    cfg = load_config(args.config, _parse_set(args.set))
    path = train(cfg, args.out, progress=None if not args.no_progress else False)
    print(f"trained: {path}")
    return 0


def _evaluate(args) -> int:
    from vaeinf.evaluate import evaluate

    m = evaluate(args.run, memory_mb=args.memory_mb)
    nll = m["test_nll"]
    print(
        f"{m['dataset']} {m['method']} K={m['K']} seed={m['seed']}: test NLL "
        f"{nll['mean']:.3f} ± {nll['stderr']:.3f} (K={nll['K']}), "
        f"active units {m['active_units']['count']}; wrote {Path(args.run) / 'metrics.json'}"
    )
    return 0


def _download(args) -> int:
    from vaeinf.data import download

    for p in download(args.dataset, args.data_dir):
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaeinf", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one run (resumes from RUN_DIR/checkpoint.pt)")
    t.add_argument("--config", type=Path, help="YAML run config (defaults when omitted)")
    t.add_argument("--out", type=Path, required=True, help="run directory")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set K=50 --set train.epochs=10 (repeatable)",
    )
    t.add_argument("--no-progress", action="store_true", help="plain log lines, no progress bar")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="evaluate a trained run; writes RUN_DIR/metrics.json")
    e.add_argument("--run", type=Path, required=True, help="run directory of a finished training")
    e.add_argument("--memory-mb", type=float, default=None, help="override eval.memory_mb")
    e.set_defaults(func=_evaluate)

    d = sub.add_parser("download", help="download a dataset's canonical files (checksummed)")
    d.add_argument("dataset", help="binarized_mnist or mnist")
    d.add_argument("--data-dir", type=Path, default=Path("data"))
    d.set_defaults(func=_download)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except Exception as e:
        status = exit_status(e)
        if status is None:
            raise
        print(status[1], file=sys.stderr)
        return status[0]


if __name__ == "__main__":
    sys.exit(main())
