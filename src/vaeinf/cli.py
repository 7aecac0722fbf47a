"""Command line: ``vaeinf train``, ``vaeinf evaluate``, ``vaeinf download``.

Bad input (unknown key, wrong type, out-of-range value, unknown dataset/method/estimator,
missing or damaged data, a damaged run directory, a path that cannot be written) prints one
line ``vaeinf: error: ...`` and exits with status 2, before anything is written. Training
stopped by SIGTERM/SIGINT exits 143 after checkpointing; a non-finite loss, a full disk or too
little memory exit 1 with one line. ``--debug`` (or ``VAEINF_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import yaml

from vaeinf.errors import EXIT_BAD_INPUT, EXIT_PREEMPTED, UsageError, debugging, exit_status

__all__ = ["EXIT_BAD_INPUT", "EXIT_PREEMPTED", "build_parser", "main"]


def _parse_set(items: list[str]) -> dict:
    """``--set a.b=value`` pairs -> nested dict; values parsed as YAML (so 5 is an int)."""
    from vaeinf.config import ConfigError

    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or "" in key.split("."):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set K=5")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or type(e).__name__
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({problem})") from None
        node = out
        *parents, leaf = key.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                section = ".".join(parents[: i + 1])
                raise ConfigError(
                    f"--set {item!r}: an earlier --set gave '{section}' a value, so it has no "
                    f"key '{key[len(section) + 1 :]}'; set the keys of '{section}' one by one"
                )
        if isinstance(node.get(leaf), dict):
            raise ConfigError(
                f"--set {item!r}: an earlier --set gave keys of '{key}'; set them one by one, "
                "not the whole section"
            )
        node[leaf] = value
    return out


def _train(args) -> int:
    from vaeinf.config import load_config
    from vaeinf.core.train import train
    from vaeinf.rundir import EVAL, atomic_write_text, check_writable_dir

    check_writable_dir(args.out, "--out")
    cfg = load_config(args.config, _parse_set(args.set))
    path = train(cfg, args.out, progress=None if not args.no_progress else False)
    # The evaluation settings given here are the defaults of a later `vaeinf evaluate`.
    atomic_write_text(args.out / EVAL, yaml.safe_dump(cfg.to_dict()["eval"], sort_keys=False))
    print(f"trained: {path}")
    return 0


def eval_overrides(config: Path | None, items: list[str]) -> dict:
    """The ``eval`` settings of ``vaeinf evaluate``: the ``eval`` section of a YAML run config
    (its other keys are the run's own and are not used), then ``--set eval.KEY=VALUE``."""
    from vaeinf.config import ConfigError, merge, read_yaml

    settings: dict = {}
    if config is not None:
        data = read_yaml(config) or {}
        if not isinstance(data, dict) or not isinstance(data.get("eval") or {}, dict):
            raise ConfigError(f"config file '{config}': expected a mapping with an 'eval' section")
        settings = dict(data.get("eval") or {})
    given = _parse_set(items)
    other = sorted(k for k in given if k != "eval")
    if other:
        raise ConfigError(
            f"--set {other[0]}=...: evaluate takes only eval.* settings; the training identity "
            "is the run's own (train another run to change it)"
        )
    return merge(settings, given.get("eval") or {})


def _evaluate(args) -> int:
    from vaeinf.evaluation.evaluate import evaluate

    m = evaluate(args.run, eval_overrides(args.config, args.set), memory_mb=args.memory_mb)
    nll = m["test_nll"]
    print(
        f"{m['dataset']} {m['method']} K={m['K']} seed={m['seed']}: test NLL "
        f"{nll['mean']:.3f} ± {nll['stderr']:.3f} (K={nll['K']}), "
        f"active units {m['active_units']['count']}; wrote {Path(args.run) / 'metrics.json'}"
    )
    return 0


def _download(args) -> int:
    from vaeinf.core.data import download
    from vaeinf.rundir import check_writable_dir

    check_writable_dir(args.data_dir, "--data-dir")
    for p in download(args.dataset, args.data_dir):
        print(p)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line ``vaeinf: error: ...`` (status 2) like
    every other bad input, not the usage text followed by the error."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _memory_mb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of megabytes > 0")
    return value


def _path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vaeinf", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of a failure (also VAEINF_DEBUG=1)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one run (resumes from RUN_DIR/checkpoint.pt)")
    t.add_argument("--config", type=_path, help="YAML run config (defaults when omitted)")
    t.add_argument("--out", type=_path, required=True, help="run directory")
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
    e.add_argument("--run", type=_path, required=True, help="run directory of a finished training")
    e.add_argument(
        "--config", type=_path, help="YAML whose 'eval' section sets the evaluation settings"
    )
    e.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="eval.KEY=VALUE",
        help="override an evaluation setting, e.g. --set eval.nll_k=5000 (repeatable)",
    )
    e.add_argument("--memory-mb", type=_memory_mb, default=None, help="override eval.memory_mb")
    e.set_defaults(func=_evaluate)

    d = sub.add_parser("download", help="download a dataset's canonical files (checksummed)")
    d.add_argument("dataset", help="binarized_mnist or mnist")
    d.add_argument("--data-dir", type=_path, default=Path("data"))
    d.set_defaults(func=_download)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; an expected failure prints one line and returns its exit status
    (:data:`vaeinf.errors.EXIT_CODES`), anything else raises."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debugging() or "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(asctime)s %(name)s: %(message)s",
        )
        return args.func(args)
    except KeyboardInterrupt:  # training turns SIGINT into a checkpoint; anything else stops
        if debug:
            raise
        print("vaeinf: interrupted; files are written whole or not at all", file=sys.stderr)
        return 130
    except Exception as e:
        status = exit_status(e)
        if status is None or debug:
            raise
        print(status[1], file=sys.stderr)
        return status[0]


if __name__ == "__main__":
    sys.exit(main())
