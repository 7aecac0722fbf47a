"""The workflow's jobs: the entry points of ``workflow/scripts/`` for training, evaluation and
downloads, each at vaeinf's error boundary (one line and an exit status), and the decision to
resume or restart a training. The only module that sees Snakemake's ``snakemake`` object.
"""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path

from vaeinf.config import RunConfig
from vaeinf.rundir import CHECKPOINT, CONFIG, METRICS, MODEL, SAMPLES, TRAIN_LOG, TRAIN_SNR
from vaeinf.study import jobserver
from vaeinf.study.grid import (
    data_dir,
    resolved_run_config,
    run_config,
    run_overrides,
    set_args,
    train_command,
)


def download(dataset: str, root: str | Path, manifest: str | Path) -> list[Path]:
    """``vaeinf download`` (checksummed) plus a manifest of ``sha256  path`` lines."""
    from vaeinf.core.downloads import DOWNLOADS
    from vaeinf.core.downloads import download as fetch
    from vaeinf.rundir import atomic_write_text

    paths = fetch(dataset, root)
    sums = {str(Path(root) / f.relpath): f.sha256 for f in DOWNLOADS[dataset]}
    atomic_write_text(manifest, "".join(f"{sums[str(p)]}  {p}\n" for p in paths))
    return paths


def snakemake_download(smk) -> None:
    """Entry point of ``workflow/scripts/download.py``."""
    manifest = Path(smk.output.manifest)
    with job_log(smk):
        for p in download(smk.wildcards.dataset, manifest.parent, manifest):
            print(p)


@contextlib.contextmanager
def job_log(smk):
    """Send a script job's output to its log file, and end the job at its error boundary: an
    expected failure (:data:`vaeinf.errors.EXIT_CODES`) ends the log with its one line and
    exits with its status; anything else (or ``VAEINF_DEBUG=1``) logs the full traceback."""
    from vaeinf.errors import report_failure

    with contextlib.ExitStack() as stack:
        if smk.log:
            log = stack.enter_context(open(smk.log[0], "w"))  # noqa: SIM115
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        try:
            yield
        except Exception as e:
            raise SystemExit(report_failure(e)) from None


def stale_files(run_dir: str | Path, cfg: RunConfig, attempt: int = 1) -> tuple[list[Path], str]:
    """Files of a previous training in ``run_dir`` that this training must not resume from.

    * a run directory whose ``config.yaml`` has another training identity (the study config
      changed what the run trains, :meth:`RunConfig.identity`), or cannot be read:
      ``config.yaml`` and ``checkpoint.pt`` go, the run starts afresh (evaluation and
      operational settings are no part of the comparison);
    * on a job's first attempt, a checkpoint of a *finished* training (the job is rerun on
      purpose: forced, or its code changed): the checkpoint goes, the run starts afresh;
    * otherwise a checkpoint is kept and resumed from: a retry after preemption or a failure
      (``attempt > 1``) or an interrupted training (``--rerun-incomplete``).

    Returns (files to delete, reason).
    """
    from vaeinf.core.train import n_epochs, read_training_config
    from vaeinf.errors import DamagedFile

    run_dir = Path(run_dir)
    saved, ckpt = run_dir / CONFIG, run_dir / CHECKPOINT
    if saved.exists():
        try:
            same = read_training_config(saved, "").identity() == cfg.identity()
        except DamagedFile:  # damaged or of another version: start afresh
            same = False
        if not same:
            return [p for p in (saved, ckpt) if p.exists()], "the run's training identity changed"
    if attempt == 1 and ckpt.exists():
        import torch

        try:
            done = torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]
        except Exception:  # unreadable: start afresh rather than fail
            return [ckpt], "the checkpoint is unreadable"
        if done >= n_epochs(cfg):
            return [ckpt], "the training is rerun (forced or changed)"
    return [], ""


@contextlib.contextmanager
def _redirected(log_path: str | None, mode: str = "a"):
    """stdout and stderr written to ``log_path`` (appended by default; nothing when None)."""
    if log_path is None:
        yield
        return
    with (
        open(log_path, mode) as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        yield


#: What a training job makes stale before it starts: the run's model and its evaluation. Whatever
#: the job then does (finish, fail, be interrupted), the run is never left with the evaluation
#: of a model that no longer exists, and Snakemake plans its evaluation again.
TRAINED = (MODEL, METRICS, SAMPLES)


def train_job(
    run_dir: str,
    overrides: dict,
    log_path: str | None = None,
    threads: int = 1,
    attempt: int = 1,
    identity: dict | None = None,
) -> int:
    """The workflow's train job: :func:`vaeinf.core.train.train` on one run, in this process.

    Sets torch's threads, drops stale state (:func:`stale_files`) and the files the training
    makes obsolete (:data:`TRAINED`), says in the log why it starts afresh (the training says
    from which epoch and batch it resumes), leaves none of its outputs when it fails or is
    interrupted (the checkpoint stays), and returns the exit status
    of ``vaeinf train`` for the same run (:mod:`vaeinf.errors`: 0, 2 bad input, 143 preempted
    after checkpointing, 1 non-finite loss), the one-line reason last in the log.
    """
    import torch

    from vaeinf.core.train import train
    from vaeinf.errors import report_failure

    torch.set_num_threads(max(1, int(threads)))
    with _redirected(log_path):
        print(f"# attempt {attempt}, {threads} thread(s); equivalent command:", flush=True)
        print(train_command(run_dir, overrides), flush=True)
        try:
            cfg = resolved_run_config(overrides)
            if identity is not None and cfg.identity() != identity:
                raise RuntimeError("the job's training identity differs from its run config")
            stale, reason = stale_files(run_dir, cfg, attempt)
            for p in stale:
                print(f"# {reason}: removing {p}", flush=True)
                p.unlink()
            for p in (Path(run_dir) / name for name in TRAINED):
                if p.exists():
                    print(f"# trained again, so no longer current: removing {p}", flush=True)
                    p.unlink()
            if not (Path(run_dir) / CHECKPOINT).exists():
                why = reason or "the run has not been trained before, or its checkpoint is gone"
                print(f"# starting afresh: {why}", flush=True)
            print(f"trained: {train(cfg, run_dir, progress=False)}", flush=True)
            return 0
        except Exception as e:
            # No output of an unfinished job stays behind (Snakemake keeps them when it is
            # interrupted itself, and would then ask for --rerun-incomplete): a plain rerun
            # trains the run again, resuming from the checkpoint, which stays.
            for p in (Path(run_dir) / name for name in (TRAIN_LOG, TRAIN_SNR, MODEL)):
                if p.exists():
                    print(f"# the training did not finish: removing {p}", flush=True)
                    p.unlink()
            return report_failure(e)


def snakemake_train(smk) -> int:
    """Entry point of ``workflow/scripts/train.py`` (``smk`` is Snakemake's ``snakemake``).

    The run's training identity is ``params.identity``, so that changing it (and only it)
    reruns the job; the operational settings (device, checkpoint period, data folder) are read
    from the study config as it is now."""
    w = smk.wildcards
    overrides = run_overrides(smk.config, w.dataset, w.variant, int(w.K), int(w.seed))
    overrides.pop("eval", None)  # the evaluate job's settings, not the training's
    return jobserver.call(
        "train",
        run_dir=str(Path(smk.output.model).parent),
        overrides=overrides,
        log_path=smk.log[0],
        threads=smk.threads,
        attempt=int(smk.resources.get("attempt", 1)),
        identity=dict(smk.params.identity),
    )


def evaluate_job(
    run_dir: str, settings: dict, memory_mb: float, log_path: str | None = None, threads: int = 1
) -> int:
    """The workflow's evaluate job: :func:`vaeinf.evaluation.evaluate.evaluate` on one run with
    the evaluation ``settings``; returns the exit status of ``vaeinf evaluate``."""
    import torch

    from vaeinf.errors import report_failure
    from vaeinf.evaluation.evaluate import evaluate

    torch.set_num_threads(max(1, int(threads)))
    with _redirected(log_path, "w"):
        print(f"# {threads} thread(s); equivalent command:", flush=True)
        args = ["vaeinf", "evaluate", "--run", run_dir, *set_args({"eval": settings})]
        print(shlex.join([*args, "--memory-mb", str(memory_mb)]), flush=True)
        try:
            m = evaluate(run_dir, settings, memory_mb=memory_mb)
            nll = m["test_nll"]
            print(f"test NLL {nll['mean']:.3f} ± {nll['stderr']:.3f} (K={nll['K']})", flush=True)
            return 0
        except Exception as e:
            return report_failure(e)


def snakemake_evaluate(smk) -> int:
    """Entry point of ``workflow/scripts/evaluate.py``: the evaluation settings are
    ``params.eval`` (changing them re-evaluates, never retrains); the memory budget is
    operational, read from the study config."""
    w = smk.wildcards
    cfg = run_config(smk.config, w.dataset, w.variant, int(w.K), int(w.seed))
    return jobserver.call(
        "evaluate",
        run_dir=str(Path(smk.output.metrics).parent),
        settings=dict(smk.params.eval),
        memory_mb=cfg.eval.memory_mb,
        log_path=smk.log[0],
        threads=smk.threads,
    )


def cost_job(
    dataset: str,
    contenders: list,
    settings: dict,
    threads: int,
    data_dir: str,
    out: str,
    log_path: str | None = None,
) -> int:
    """The workflow's cost job: :func:`vaeinf.study.cost.measure` on ``contenders`` (a list of
    (variant, K, step identity)) of one dataset, written to ``out``; its exit status."""
    from vaeinf.errors import report_failure
    from vaeinf.study.cost import measure, write_cost

    with _redirected(log_path, "w"):
        try:
            # The data folder is operational: no part of a contender's identity.
            runs = {(v, int(k)): run | {"data_dir": data_dir} for v, k, run in contenders}
            rows = measure(runs, threads=threads, **settings)
            write_cost(rows, out)
            for r in rows:
                print(f"{r['variant']} K={r['K']}: {r['epoch_s_fastest']:.4f} s/epoch "
                      f"(x{r['ratio']:.2f})", flush=True)  # fmt: skip
            return 0
        except Exception as e:
            return report_failure(e)


def snakemake_cost(smk) -> int:
    """Entry point of ``workflow/scripts/cost.py``: the contenders and timing settings are
    params (changing what a step computes reruns it); the data folder is operational."""
    return jobserver.call(
        "cost",
        dataset=smk.wildcards.dataset,
        contenders=[[v, int(k), run] for (v, k), run in smk.params.contenders],
        settings=dict(smk.params.settings),
        threads=int(smk.params.threads),
        data_dir=str(data_dir(smk.config)),
        out=smk.output.cost,
        log_path=smk.log[0],
    )
