"""The job server (vaeinf.study.jobserver): a served job runs in a fork of the server with the
script's streams, directory, environment and exit status; without a server it runs in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vaeinf.study import jobserver

pytestmark = pytest.mark.skipif(not jobserver.available(), reason="the job server forks (Linux)")

CLIENT = """
import os, sys
from vaeinf.study.jobserver import call
os.environ["PROBE_ENV"] = "from the script"
print("script", os.getpid(), flush=True)
message = os.environ["PROBE_ENV"] + " in " + os.getcwd()
log = sys.argv[2] if len(sys.argv) > 2 else None
status = call("probe", message=message, status=int(sys.argv[1]), log_path=log)
print("status", status, flush=True)
sys.exit(status)
"""


def served(tmp_path: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    command = [sys.executable, str(script), *args]
    return subprocess.run(
        [sys.executable, "-m", "vaeinf.study.jobserver", *command],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, **kwargs,
    )  # fmt: skip


def test_a_served_job_runs_in_a_fork_with_the_scripts_streams_and_status(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("the job's own output\n")
    r = served(tmp_path, "3", str(log))
    assert r.returncode == 3, r.stderr
    lines = r.stdout.splitlines()
    script_pid = int(lines[0].split()[1])
    probe = next(line for line in lines if line.startswith("probe"))
    assert int(probe.split()[1].removeprefix("pid=")) != script_pid  # another process
    assert f"from the script in {tmp_path}" in probe  # the script's environment and directory
    assert lines[-1] == "status 3"
    usage = jobserver.read_usage(log)
    assert usage is not None and usage[0] >= 0 and usage[1] > 0


def test_without_a_server_the_job_runs_in_the_script(tmp_path):
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = {k: v for k, v in os.environ.items() if k != jobserver.ENV}
    for env_here in (env, env | {jobserver.ENV: str(tmp_path / "gone.socket")}):
        r = subprocess.run([sys.executable, str(script), "0", str(tmp_path / "x.log")],
                           capture_output=True, text=True, env=env_here, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[1].startswith(f"probe pid={lines[0].split()[1]} ")  # the same process
        assert jobserver.read_usage(tmp_path / "x.log") is None


def test_the_server_returns_the_commands_status_and_refuses_unknown_jobs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vaeinf.study.jobserver", sys.executable, "-c",
                        "import sys; sys.exit(5)"], capture_output=True, timeout=120)  # fmt: skip
    assert r.returncode == 5
    with pytest.raises(ValueError, match="unknown job 'nope'; allowed: train, evaluate"):
        jobserver.call("nope")


SLOW = """
import os, sys, time
from vaeinf.study.jobserver import call
print("script", os.getpid(), flush=True)
run = {"dataset": "digits", "train": {"epochs": 1000, "device": "cpu"},
       "model": {"hidden": [8], "latent": 2}}
sys.exit(call("train", run_dir=sys.argv[1], overrides=run, log_path=sys.argv[2]))
"""


def test_sigterm_to_the_script_reaches_the_served_training(tmp_path):
    """A scheduler's SIGTERM to the job script stops the training in the server's child, which
    checkpoints and exits 143 (preempted), and the script exits with that status."""
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    log = tmp_path / "train.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaeinf.study.jobserver", sys.executable, str(script),
         str(tmp_path / "run"), str(log)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    script_pid = int(proc.stdout.readline().split()[1])
    deadline = time.monotonic() + 90
    while "epoch " not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.2)
    os.kill(script_pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert (tmp_path / "run/checkpoint.pt").exists()
    assert jobserver.read_usage(log)[0] > 0


def test_ctrl_c_reaches_the_command(tmp_path):
    """SIGINT to the process group (Ctrl-C) stops the command, and with it the server."""
    wait = "import time; print('up', flush=True); time.sleep(60)"
    # A terminal's SIGINT disposition, whatever this test process inherited (a test worker
    # may ignore SIGINT, and an ignored SIGINT is inherited by the server and the command).
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaeinf.study.jobserver", sys.executable, "-c", wait],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "up"
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) != 0  # the command's KeyboardInterrupt status
