"""The study on a real Slurm cluster, through the project's own profile (`--profile slurm`).

`tests/slurm/cluster.sh start` brings up a throw-away single-node Slurm on this machine: fake
GPUs, no accounting. It needs root. The module skips, and prints why, where the cluster cannot
run: not root, or `cluster.sh start` exits 3. The cluster is stopped at the end, also when a
test fails.

The tiny study (tests/config/tiny.yaml, with the overlay tests/slurm/study.yaml: a GPU for each
train/evaluate job, and training that lasts a few seconds) runs in a copy of the workflow in a
temporary directory (as in tests/test_workflow.py). The project's profile stays in force. Only
the site-specific settings the test cluster needs are given on the command line (`SITE`): the
cluster has no accounting, so the job status comes from `squeue`, and the first status check
comes after 1 s. The phases run once per module, in the `study` fixture, and share one tree:

1. a local dry run gives the study's job set;
2. run 1 is interrupted with SIGINT (Ctrl-C) once the first training has finished and other jobs
   are still queued or running;
3. a dry run lists what is missing;
4. run 2 completes the study. One training fails once (fault injection), and another is
   preempted with `scancel --signal=TERM` while it trains. Both are retried
   (`retries` in the profile);
5. run 3 finds nothing to do;
6. the preempted run is trained again locally, without interruption, to compare the models.

A test hook (tests/slurm/jobhook/sitecustomize.py, first on the jobs' PYTHONPATH) records, for
each Python process of a Slurm job, its job id, CUDA_VISIBLE_DEVICES and command line. It also
records the training's "resuming ..." messages and injects the failure. Every snakemake call is
guarded by `timeout -s INT`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from test_workflow import make_tree  # the same fresh-clone layout as the workflow tests

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
CLUSTER = REPO / "tests/slurm/cluster.sh"
HOOK = REPO / "tests/slurm/jobhook"
OVERLAY = "tests/slurm/study.yaml"
EPOCHS = yaml.safe_load((REPO / OVERLAY).read_text())["run"]["train"]["epochs"]
# --configfile takes every argument after it, so this always comes last.
CONFIG = ("--configfile", "tests/config/tiny.yaml", OVERLAY)
# These values are site-specific for the test cluster; everything else comes from profiles/slurm.
SITE = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1")
# The rules that run as Slurm jobs (on the GPU node, like the runs the cost rule times); all
# others are local rules.
REMOTE = ("train", "evaluate", "cost")
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"}
# Upper bounds against hangs, well above the measured times (README: about 2.5 min in all)
LIMIT_S = {"dry": 120, "run1": 240, "run2": 420, "run3": 120, "local": 240}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed"),
]


# ---------------------------------------------------------------------------------------------
# The cluster


def _skip(reason: str):
    print(f"\nSKIP tests/test_slurm.py: {reason}", file=sys.stderr)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    """A running local Slurm cluster for the module; always stopped again afterwards."""
    if not sys.platform.startswith("linux"):
        _skip("the local Slurm test cluster needs Linux")
    if os.geteuid() != 0:
        _skip("the local Slurm test cluster needs root (tests/slurm/cluster.sh)")
    try:
        r = subprocess.run(
            ["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=900
        )
        if r.returncode == 3:
            lines = [ln for ln in r.stderr.splitlines() if ln.startswith("SKIP")]
            _skip(f"tests/slurm/cluster.sh start: {lines[-1] if lines else 'cannot run here'}")
        assert r.returncode == 0, f"cluster.sh start failed:\n{r.stdout}\n{r.stderr[-6000:]}"
        yield
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, timeout=300)


def slurm_jobs() -> dict[int, dict]:
    """Every job the controller knows (finished ones too: MinJobAge=3600), by id."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=30
    ).stdout
    jobs = {}
    for line in out.splitlines():
        m = re.match(r"JobId=(\d+) ", line)
        if m is None:
            continue
        field_ = dict(re.findall(r"(?:^| )(JobState|Comment|TresPerJob|ExitCode)=(\S*)", line))
        jobs[int(m[1])] = {
            "state": field_.get("JobState", ""),
            "comment": field_.get("Comment", ""),
            "tres": field_.get("TresPerJob", ""),
            "exit": field_.get("ExitCode", ""),
        }
    return jobs


# ---------------------------------------------------------------------------------------------
# Snakemake


def job_env(record: Path, **extra: str) -> dict[str, str]:
    """The environment of the snakemake calls (and, through sbatch --export=ALL, of the jobs).

    Leaves out the caller's Slurm and GPU variables: `sbatch --export=ALL` would otherwise pass
    CUDA_VISIBLE_DEVICES on to the jobs, and SLURM_JOB_ID would switch the test hook on locally.
    """
    drop = ("SLURM_", "SBATCH_", "SRUN_", "VAEINF_SLURM_TEST_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop)
        and k not in ("CUDA_VISIBLE_DEVICES", "VAEINF_BINARIZED_MNIST_NPZ")
    }
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOOK), env.get("PYTHONPATH")) if p)
    env["VAEINF_SLURM_TEST_RECORD"] = str(record)
    env.update(extra)
    return env


class Snakemake:
    """One snakemake call in the background, under `timeout -s INT`, its output in a file."""

    def __init__(self, tree: Path, args: tuple[str, ...], env: dict, name: str, limit: str):
        self.limit = LIMIT_S[limit]
        self.path = tree.parent / f"{name}.out"
        self.t0 = time.monotonic()
        with open(self.path, "w") as out:
            self.proc = subprocess.Popen(
                # --foreground: `timeout` passes a signal (its own SIGINT at the limit, or ours)
                # to snakemake only. Without it, it also signals its process group, snakemake
                # included, and a second SIGINT interrupts snakemake while it cancels its jobs.
                ["timeout", "--foreground", "-s", "INT", "-k", "60", str(self.limit)]
                + [str(SNAKEMAKE), *args],
                cwd=tree,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.seconds = None

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def interrupt(self) -> None:
        """Like Ctrl-C: `timeout` passes one SIGINT on to snakemake."""
        self.proc.send_signal(signal.SIGINT)

    def wait(self) -> int:
        rc = self.proc.wait(timeout=self.limit + 120)
        self.seconds = round(time.monotonic() - self.t0, 1)
        return rc

    @property
    def output(self) -> str:
        return self.path.read_text(errors="replace")

    def tail(self, n: int = 6000) -> str:
        return f"--- {self.path} (last {n} characters) ---\n{self.output[-n:]}"


def run_snakemake(tree: Path, args: tuple[str, ...], env: dict, name: str, limit: str) -> Snakemake:
    sm = Snakemake(tree, args, env, name, limit)
    sm.wait()
    return sm


Key = tuple[str, str]  # (rule, "dataset=digits,variant=vae,K=1,seed=0")

_BLOCK = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", re.M)


def planned(output: str) -> dict[int, dict]:
    """The jobs Snakemake printed (dry run or real run): {jobid: {key, outputs}}."""
    jobs = {}
    for m in _BLOCK.finditer(output):
        body = dict(re.findall(r"^    (\w+): (.*)$", m[2], re.M))
        if "jobid" not in body:
            continue
        wildcards = body.get("wildcards", "").replace(" ", "")
        jobs[int(body["jobid"])] = {
            "key": (m[1], wildcards),
            "outputs": body["output"].split(", ") if "output" in body else [],
        }
    return jobs


def finished(output: str) -> set[Key]:
    """The jobs a (real) run finished."""
    jobs = planned(output)
    return {jobs[int(i)]["key"] for i in re.findall(r"^Finished jobid: (\d+) ", output, re.M)}


def submitted(output: str) -> list[tuple[int, Key]]:
    """(Slurm job id, job) of every submission, retries included, in order."""
    jobs = planned(output)
    return [
        (int(slurm_id), jobs[int(jobid)]["key"])
        for jobid, slurm_id in re.findall(
            r"^Job (\d+) has been submitted with SLURM jobid (\d+)", output, re.M
        )
    ]


def comment(key: Key) -> str:
    """The --comment the plugin gives the Slurm job of a Snakemake job."""
    rule, wildcards = key
    values = [kv.split("=", 1)[1] for kv in wildcards.split(",")]
    return f"rule_{rule}_wildcards_{'_'.join(values)}"


def slurm_log(tree: Path, rule: str, wildcards: str, slurm_id: int) -> Path:
    """Where the plugin has Slurm write a job's output (rule logs are under logs/)."""
    values = "_".join(kv.split("=", 1)[1] for kv in wildcards.split(","))
    return tree / ".snakemake/slurm_logs" / f"rule_{rule}" / values / f"{slurm_id}.log"


def run_dir(tree: Path, wildcards: str) -> Path:
    w = dict(kv.split("=", 1) for kv in wildcards.split(","))
    return tree / f"results/{w['dataset']}/{w['variant']}/k{w['K']}/seed{w['seed']}"


def workflow_copy(dest: Path) -> Path:
    """A fresh-clone copy of the workflow (tests/test_workflow.py) plus the test's overlay."""
    dest.mkdir()
    make_tree(dest)
    (dest / OVERLAY).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / OVERLAY, dest / OVERLAY)
    return dest


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# The scenario


@dataclass
class Study:
    tree: Path
    local_tree: Path
    record: Path
    expected: dict[int, dict]  # the local dry run's jobs
    run1: Snakemake
    run1_rc: int
    run1_jobs: dict[int, dict]  # the Slurm jobs of run 1, after the abort
    active_at_abort: list[int]
    missing: set[Key]  # the remote jobs the dry run after the abort planned
    run2: Snakemake
    run2_rc: int
    run2_first_id: int
    fail_target: str
    preempt: Key
    preempted_id: int | None
    preempted_at: tuple[int, int, bool] | None  # the checkpoint it left: epoch, batch, on TERM?
    ckpt_after_preemption: bool | None
    run3: Snakemake
    run3_rc: int
    jobs_before_run3: dict[int, dict]
    jobs: dict[int, dict]  # every Slurm job, at the end
    local: Snakemake
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def records(self) -> list[dict]:
        return read_records(self.record)

    @property
    def expected_remote(self) -> set[Key]:
        return {j["key"] for j in self.expected.values() if j["key"][0] in REMOTE}


def _wait_until_final(ids, seconds: float = 30) -> dict[int, dict]:
    end = time.monotonic() + seconds
    while True:
        jobs = slurm_jobs()
        if all(jobs.get(i, {}).get("state") not in ACTIVE for i in ids):
            return jobs
        if time.monotonic() > end:
            return jobs
        time.sleep(0.3)


@pytest.fixture(scope="module")
def study(cluster, tmp_path_factory) -> Study:
    t_start = time.monotonic()
    base = tmp_path_factory.mktemp("slurm")
    tree = workflow_copy(base / "tree")
    record = base / "jobs.jsonl"
    env = job_env(record)
    profile = ("--profile", "slurm", *SITE)
    timings: dict[str, float] = {}
    procs: list[Snakemake] = []

    def timed(label, t0):
        timings[label] = round(time.monotonic() - t0, 1)

    try:
        # 1. The study's job set, from a local dry run.
        dry = run_snakemake(tree, ("--cores", "1", "--dry-run", *CONFIG), env, "dry", "dry")
        assert dry.proc.returncode == 0, dry.tail()
        expected = planned(dry.output)
        timings["local dry run"] = dry.seconds

        # 2. Run 1, interrupted like Ctrl-C once a training has finished while jobs still run.
        first1 = max(slurm_jobs(), default=0)
        run1 = Snakemake(tree, (*profile, *CONFIG), env, "run1", "run1")
        procs.append(run1)
        active_at_abort: list[int] = []
        while run1.running and time.monotonic() - run1.t0 < LIMIT_S["run1"]:
            jobs = {i: j for i, j in slurm_jobs().items() if i > first1}
            trained = [
                i
                for i, j in jobs.items()
                if j["comment"].startswith("rule_train_") and j["state"] == "COMPLETED"
            ]
            active = [i for i, j in jobs.items() if j["state"] in ACTIVE]
            if trained and active:
                run1.interrupt()
                active_at_abort = active
                break
            time.sleep(0.2)
        run1_rc = run1.wait()
        run1_jobs = {i: j for i, j in _wait_until_final(active_at_abort).items() if i > first1}
        left = [i for i, j in run1_jobs.items() if j["state"] in ACTIVE]
        assert not left, f"interrupted, snakemake left Slurm jobs {left} running\n{run1.tail()}"
        timings["run 1 (interrupted)"] = run1.seconds

        # 3. What is missing now, from a dry run with the profile.
        t0 = time.monotonic()
        dry2 = run_snakemake(tree, (*profile, "--dry-run", *CONFIG), env, "dry2", "dry")
        assert dry2.proc.returncode == 0, dry2.tail()
        missing = {j["key"] for j in planned(dry2.output).values() if j["key"][0] in REMOTE}
        timed("dry run after the abort", t0)

        # 4. Run 2: one training fails once, another is preempted while it trains.
        missing_train = sorted(wc for rule, wc in missing if rule == "train")
        assert len(missing_train) >= 2, (
            f"the interrupted run 1 left {missing_train} to train; the test needs two\n"
            + run1.tail()
        )
        # Preempt a run that has no checkpoint yet if there is one: its checkpoint then
        # appears only once this run's training is under way.
        fresh = [wc for wc in missing_train if not (run_dir(tree, wc) / "checkpoint.pt").exists()]
        preempt = ("train", (fresh or missing_train)[0])
        fail = next(wc for wc in missing_train if wc != preempt[1])
        ckpt = run_dir(tree, preempt[1]) / "checkpoint.pt"
        ckpt_before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        first2 = max(slurm_jobs(), default=0)
        # 6. (meanwhile) The run to preempt, trained locally without interruption; the train
        # rule sets torch's threads, so the two trainings compute the same.
        local_tree = workflow_copy(base / "local")
        model = str(run_dir(local_tree, preempt[1]).relative_to(local_tree) / "model.pt")
        local = Snakemake(local_tree, ("--cores", "1", model, *CONFIG), env, "local", "local")
        procs.append(local)
        run2 = Snakemake(
            tree,
            (*profile, *CONFIG),
            job_env(record, VAEINF_SLURM_TEST_FAIL=f"train:{fail}"),
            "run2",
            "run2",
        )
        procs.append(run2)
        preempted_id = job_id = preempted_at = None
        ckpt_after_preemption = None
        next_query = 0.0
        while run2.running:
            if preempted_id is None:
                if job_id is None and time.monotonic() > next_query:
                    # the job starts seconds before its training does (two snakemake
                    # start-ups); look it up, then watch the checkpoint closely
                    job_id = next(
                        (
                            i
                            for i, j in slurm_jobs().items()
                            if i > first2
                            and j["comment"] == comment(preempt)
                            and j["state"] == "RUNNING"
                        ),
                        None,
                    )
                    next_query = time.monotonic() + 0.3
                mtime = ckpt.stat().st_mtime_ns if ckpt.exists() else None
                if job_id is not None and mtime is not None and mtime != ckpt_before:
                    # The training writes a checkpoint every epoch: it is under way. Send
                    # SIGTERM to the job's steps, as the time limit or `sbatch
                    # --signal=TERM@SECONDS` do. Not --full: that also signals the batch step,
                    # where the plugin's srun runs, and srun answers SIGTERM by killing the
                    # step at once (SIGKILL), racing the checkpoint.
                    subprocess.run(
                        ["scancel", "--signal=TERM", str(job_id)], check=True, timeout=30
                    )
                    preempted_id = job_id
                time.sleep(0.02)
                continue
            if ckpt_after_preemption is None and any(
                i > preempted_id and j["comment"] == comment(preempt)
                for i, j in slurm_jobs().items()
            ):
                # The retry is submitted: Snakemake has handled the failure and removed the
                # job's declared outputs. The retry's training starts seconds later, so this is
                # the checkpoint the preempted training wrote.
                ckpt_after_preemption = ckpt.exists()
                if ckpt_after_preemption:
                    state = torch.load(io.BytesIO(ckpt.read_bytes()), weights_only=False)
                    # (epoch, batch, whether the SIGTERM handler wrote it: only a checkpoint
                    # taken mid-epoch carries the RNG state)
                    preempted_at = (
                        int(state["epoch"]),
                        int(state["batch"]),
                        state.get("rng") is not None,
                    )
            time.sleep(0.3)
        run2_rc = run2.wait()
        timings["run 2"] = run2.seconds

        # 5. Run 3: nothing to do.
        jobs_before_run3 = slurm_jobs()
        run3 = run_snakemake(tree, (*profile, *CONFIG), env, "run3", "run3")
        timings["run 3 (nothing to do)"] = run3.seconds
        jobs = slurm_jobs()

        local.wait()  # it ran alongside run 2
        timings["total (cluster start excluded)"] = round(time.monotonic() - t_start, 1)
        print("\nSlurm study phases (s):", json.dumps(timings), file=sys.stderr)

        return Study(
            tree=tree,
            local_tree=local_tree,
            record=record,
            expected=expected,
            run1=run1,
            run1_rc=run1_rc,
            run1_jobs=run1_jobs,
            active_at_abort=active_at_abort,
            missing=missing,
            run2=run2,
            run2_rc=run2_rc,
            run2_first_id=first2,
            fail_target=f"train:{fail}",
            preempt=preempt,
            preempted_id=preempted_id,
            preempted_at=preempted_at,
            ckpt_after_preemption=ckpt_after_preemption,
            run3=run3,
            run3_rc=run3.proc.returncode,
            jobs_before_run3=jobs_before_run3,
            jobs=jobs,
            local=local,
            timings=timings,
        )
    finally:
        for p in procs:
            if p.running:
                p.interrupt()
                try:
                    p.proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    p.proc.kill()


# ---------------------------------------------------------------------------------------------
# The tests


def test_study_completes_on_slurm(study):
    assert study.run2_rc == 0, study.run2.tail()
    assert study.run3_rc == 0, study.run3.tail()


def test_every_job_ran_as_a_slurm_job_with_a_gpu(study):
    expected = study.expected_remote
    assert (
        len(expected) == 11
    )  # tiny: 5 runs (2 methods x 2 Ks, one variant), train + evaluate; one cost job
    by_comment = {comment(k): k for k in expected}
    jobs = study.jobs
    # only train, evaluate and cost jobs went to Slurm; each asked for a GPU (resource gpu=1
    # -> --gpus=1)
    assert {j["comment"] for j in jobs.values()} <= set(by_comment), jobs
    assert all(j["tres"] == "gres:gpu:1" for j in jobs.values()), jobs
    records = study.records
    for key in sorted(expected):
        rule, wildcards = key
        ids = sorted(i for i, j in jobs.items() if j["comment"] == comment(key))
        assert ids, f"{key} never ran as a Slurm job"
        slurm_id = ids[-1]  # the job that made the outputs
        if jobs[slurm_id]["state"] != "COMPLETED":
            # The one other way: the job had done its work when the interrupted run 1 cancelled
            # it, so the outputs were complete and the rerun did not plan it again.
            assert jobs[slurm_id]["state"] == "CANCELLED", (key, jobs)
            assert slurm_id in study.run1_jobs and key not in study.missing, (key, jobs)
        # Inside the job, the process doing the work saw the job's id and a GPU.
        mine = [r for r in records if r["job_id"] == str(slurm_id) and "argv" in r]
        assert mine, f"no process of Slurm job {slurm_id} ({rule} {wildcards}) was recorded"
        assert all(r["target"] == f"{rule}:{wildcards}" for r in mine), mine
        # every remote job is a script job: the process running its script did the work
        work = [r for r in mine if r["argv"][-1].endswith(f"{rule}.py")]
        assert len(work) == 1, mine
        assert re.fullmatch(r"\d+", work[0]["cuda"] or ""), work[0]
    # the local rules did not run inside Slurm
    assert {r["target"].split(":")[0] for r in records} <= set(REMOTE)


def test_outputs_and_job_set_match_a_local_dry_run(study):
    # The jobs of a local dry run ran, train and evaluate as Slurm jobs, the others locally.
    by_comment = {comment(k): k for k in study.expected_remote}
    assert {by_comment[j["comment"]] for j in study.jobs.values()} == study.expected_remote
    local = {j["key"] for j in study.expected.values()} - study.expected_remote
    ran_locally = finished(study.run1.output) | finished(study.run2.output)
    assert {k for k in ran_locally if k[0] not in REMOTE} == local
    assert {"aggregate", "figure", "check_manuscript", "all"} <= {rule for rule, _ in local}
    outputs = [o for j in study.expected.values() for o in j["outputs"]]
    assert len(outputs) > 20
    missing = [o for o in outputs if not (study.tree / o).exists()]
    assert not missing
    assert (
        (study.tree / "paper/_generated/manuscript-check.txt")
        .read_text()
        .startswith("manuscript check: OK")
    )
    # The rules' logs, and the Slurm logs of the failed jobs (the plugin deletes those of the
    # jobs it saw succeed, unless --slurm-keep-successful-logs)
    for rule, wildcards in study.expected_remote:
        if rule == "cost":  # one job per dataset: logs/{dataset}/cost.log
            log = Path(wildcards.removeprefix("dataset="))
        else:
            log = run_dir(study.tree, wildcards).relative_to(study.tree / "results")
        assert (study.tree / "logs" / log / f"{rule}.log").stat().st_size > 0
    failed = {i: j for i, j in study.jobs.items() if j["state"] == "FAILED"}
    assert len(failed) == 2  # the injected failure and the preemption
    for i, j in failed.items():
        path = slurm_log(study.tree, *by_comment[j["comment"]], i)
        assert "Error in rule train" in path.read_text(), path


def test_second_invocation_submits_nothing(study):
    assert study.run3_rc == 0, study.run3.tail()
    assert "Nothing to be done" in study.run3.output
    assert submitted(study.run3.output) == []
    assert study.jobs == study.jobs_before_run3


def test_failed_training_is_retried(study):
    failed = [r for r in study.records if r.get("injected_failure")]
    assert [r["target"] for r in failed] == [study.fail_target]
    failed_id = int(failed[0]["job_id"])
    assert study.jobs[failed_id]["state"] == "FAILED"
    assert study.jobs[failed_id]["exit"] == "1:0"
    key = ("train", study.fail_target.split(":", 1)[1])
    retries = [i for i, k in submitted(study.run2.output) if k == key and i > failed_id]
    assert len(retries) == 1 and study.jobs[retries[0]]["state"] == "COMPLETED"
    assert "Error in rule train" in study.run2.output
    assert study.run2_rc == 0, study.run2.tail()


def test_interrupted_run_then_rerun_submits_only_the_missing_jobs(study):
    # Run 1 was stopped (Ctrl-C) while jobs were queued or running; Snakemake cancelled them.
    assert study.run1_rc != 0 and study.active_at_abort
    assert all(j["state"] not in ACTIVE for j in study.run1_jobs.values()), study.run1_jobs
    assert any(j["state"] == "CANCELLED" for j in study.run1_jobs.values()), study.run1_jobs
    by_comment = {comment(k): k for k in study.expected_remote}
    states1: dict[Key, set[str]] = {}
    for j in study.run1_jobs.values():
        states1.setdefault(by_comment[j["comment"]], set()).add(j["state"])
    # The rerun plans the jobs whose outputs run 1 did not complete: neither the jobs that
    # completed, nor ...
    done1 = study.expected_remote - study.missing
    assert {k for k, s in states1.items() if "COMPLETED" in s} <= done1
    assert study.missing and done1
    # ... a job that had done its work when it was cancelled (its outputs are complete) ...
    for key in done1:
        assert states1.get(key, set()) & {"COMPLETED", "CANCELLED"}, (key, states1)
    # ... but every job that never ran.
    assert study.expected_remote - set(states1) <= study.missing
    # ... and submitted only those: each once, plus one retry each for the failed and the
    # preempted training.
    subs = submitted(study.run2.output)
    assert {k for _, k in subs} == study.missing
    assert len(subs) == len(study.missing) + 2
    assert all(i > study.run2_first_id for i, _ in subs)
    assert set(study.jobs) - set(study.jobs_before_run3) == set()
    assert {i for i in study.jobs if i > study.run2_first_id} == {i for i, _ in subs}


def test_preempted_training_resumes_from_its_checkpoint(study):
    assert study.preempted_id is not None, "the training to preempt was never seen running"
    job = study.jobs[study.preempted_id]
    assert job["state"] == "FAILED", job  # exit 143 after checkpointing: Snakemake retries
    # checkpoint.pt is not a declared output: Snakemake's cleanup after the failure kept it.
    assert study.ckpt_after_preemption is True
    # It was written mid-training, by the SIGTERM handler ...
    epoch, batch, on_signal = study.preempted_at
    assert on_signal and (epoch, batch) != (0, 0) and epoch < EPOCHS, study.preempted_at
    # ... and the retry resumed from it, not from scratch.
    resumed = [
        r["log"]
        for r in study.records
        if r.get("log", "").startswith("resuming")
        and r["target"] == f"train:{study.preempt[1]}"
        and int(r["job_id"]) > study.preempted_id
    ]
    assert len(resumed) == 1, resumed
    assert resumed[0].endswith(f" from epoch {epoch} batch {batch}"), resumed
    retry = [
        i for i, k in submitted(study.run2.output) if k == study.preempt and i > study.preempted_id
    ]
    assert len(retry) == 1 and study.jobs[retry[0]]["state"] == "COMPLETED"


def test_preempted_training_equals_an_uninterrupted_one(study):
    assert study.local.proc.returncode == 0, study.local.tail()
    wildcards = study.preempt[1]
    a, b = run_dir(study.tree, wildcards), run_dir(study.local_tree, wildcards)
    resumed = torch.load(a / "model.pt", weights_only=True)
    straight = torch.load(b / "model.pt", weights_only=True)
    assert resumed.keys() == straight.keys()
    for name in resumed:
        assert torch.equal(resumed[name], straight[name]), name

    def log_rows(d: Path) -> list[dict]:
        with open(d / "train_log.csv") as f:
            return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]

    assert log_rows(a) == log_rows(b)
    assert len(log_rows(a)) == EPOCHS
