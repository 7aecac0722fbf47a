"""Test hook for tests/test_slurm.py, imported by every Python process of a Slurm job.

tests/test_slurm.py puts this folder first on the PYTHONPATH of the `snakemake --profile slurm`
it runs. `sbatch --export=ALL` hands that on to the jobs, so each Python process of a job
imports this module when it starts: the jobstep snakemake, the snakemake under `srun`, the
train script and `vaeinf evaluate`. The hook does nothing outside a Slurm job
($SLURM_JOB_ID unset) or when $VAEINF_SLURM_TEST_RECORD is unset. So the local snakemake, the
local rules and every other user of this environment are never affected.

What it does inside a job:

* It writes one JSON line per process to $VAEINF_SLURM_TEST_RECORD, with the Slurm job id, the
  job's CUDA_VISIBLE_DEVICES, the process's command line, and the Snakemake job it serves
  ("train:dataset=digits,method=vae,K=1,seed=0"). Snakemake's own process in the job gets the
  job from --target-jobs and passes it down to its children in the environment.
* In a train script process, it also writes the INFO messages of the `vaeinf.core.train` logger,
  such as "resuming RUN from epoch E batch B", as lines {"log": ...}. For that it sets this
  logger to INFO, so those messages also reach the rule's train.log.
* Fault injection: when $VAEINF_SLURM_TEST_FAIL names a train job (the same string as above),
  the first train script process of that job exits 1 before it trains. The marker file
  $VAEINF_SLURM_TEST_RECORD.failed makes sure this happens only once.
"""

import json
import os
import sys


def _write(path: str, entry: dict) -> None:
    line = (json.dumps(entry) + "\n").encode()
    fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o644)
    try:
        os.write(fd, line)  # one write of one line in O_APPEND mode: lines never interleave
    finally:
        os.close(fd)


def _hook() -> None:
    record = os.environ.get("VAEINF_SLURM_TEST_RECORD")
    job_id = os.environ.get("SLURM_JOB_ID")
    if not record or not job_id:
        return
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        argv = list(sys.argv)
    if "--target-jobs" in argv[:-1]:
        os.environ["VAEINF_SLURM_TEST_TARGET"] = argv[argv.index("--target-jobs") + 1]
    target = os.environ.get("VAEINF_SLURM_TEST_TARGET", "")
    base = {"job_id": job_id, "target": target, "pid": os.getpid()}
    entry = {**base, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "argv": argv}
    train_script = target.startswith("train:") and any(a.endswith("train.py") for a in argv)

    if train_script and target == os.environ.get("VAEINF_SLURM_TEST_FAIL"):
        try:
            fd = os.open(record + ".failed", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pass  # failed once already: this is the retry
        else:
            os.write(fd, job_id.encode())
            os.close(fd)
            _write(record, {**entry, "injected_failure": True})
            sys.stderr.write(f"vaeinf test hook: injected failure of {target}\n")
            sys.stderr.flush()
            os._exit(1)
    _write(record, entry)

    if train_script:
        import logging

        class _Record(logging.Handler):
            def emit(self, rec: logging.LogRecord) -> None:
                _write(record, {**base, "log": rec.getMessage()})

        logger = logging.getLogger("vaeinf.core.train")
        logger.setLevel(logging.INFO)
        logger.addHandler(_Record(logging.INFO))


try:
    _hook()
except Exception as e:  # the test hook must never break a job by itself
    sys.stderr.write(f"vaeinf test hook: {e!r}\n")
