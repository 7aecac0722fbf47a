"""A forking job server for local studies: torch is imported once, every job is a fork of it.

Why: a study's jobs are short (a default-study training or evaluation is seconds of work),
while each job process pays the import of torch and vaeinf first, several CPU seconds that
outweigh the work of many jobs (the benchmark report has the figures). Started as

    python -m vaeinf.study.jobserver snakemake --cores all     (what ``make study`` runs)

this module imports the job code, opens a Unix socket and runs the command with
``VAEINF_JOB_SERVER`` naming the socket. A job script hands its work to :func:`call`: with a
server reachable, the server forks a child that runs the job function with the script's
standard streams, working directory and environment, and the script waits for it, forwarding
SIGTERM/SIGINT/SIGHUP, and exits with its status; without one (a cluster, a plain ``snakemake``
call, a platform without ``fork``) the script runs the job function itself. Either way the
job function, its files and its exit status are the same.

Snakemake's benchmark record of a served job times the waiting script, so the script appends
the child's own CPU time and peak memory to the job's log (:data:`USAGE_PREFIX`), which the
provenance appendix reads in its place.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

#: The environment variable that names the server's socket.
ENV = "VAEINF_JOB_SERVER"

#: The job functions a client may ask for, by name (nothing else is ever called).
JOBS = {
    "train": "vaeinf.study.jobs:train_job",
    "evaluate": "vaeinf.study.jobs:evaluate_job",
    "cost": "vaeinf.study.jobs:cost_job",
    "probe": "vaeinf.study.jobserver:probe",
}

#: What the server imports before serving: everything a job function imports. torch.optim
#: imports torch._dynamo when the first optimizer is built (its methods are wrapped to be left
#: out of compilation), which costs a job as much CPU as importing torch itself.
PRELOAD = (
    "torch",
    "torch._dynamo",
    "numpy",
    "pandas",
    "vaeinf.core.methods",
    "vaeinf.core.train",
    "vaeinf.evaluation.evaluate",
    "vaeinf.study.cost",
    "vaeinf.study.jobs",
)

#: The line a served job's script appends to its log: the child's CPU seconds and peak memory.
USAGE_PREFIX = "# resources of the job (run by the job server):"
_USAGE = re.compile(re.escape(USAGE_PREFIX) + r" cpu_s=([0-9.]+) max_rss_mb=([0-9.]+)")

_HEADER = struct.Struct("!Q")  # the request's length, sent with the client's three stream fds
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def available() -> bool:
    """Whether this platform can serve jobs by forking (Linux only: elsewhere forking a process
    that has imported torch is not safe)."""
    return sys.platform.startswith("linux")


def call(job: str, **kwargs) -> int:
    """Run the job function named ``job`` (:data:`JOBS`) with ``kwargs`` (JSON values) on the
    job server when one is reachable, else in this process; its exit status."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; allowed: {', '.join(JOBS)}")
    path = os.environ.get(ENV)
    if path and available():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:  # no server (any more): the job runs here
            sock.close()
        else:
            with sock:
                return _served(sock, job, kwargs)
    return _function(job)(**kwargs)


def _function(job: str):
    module, name = JOBS[job].split(":")
    return getattr(importlib.import_module(module), name)


def _served(sock: socket.socket, job: str, kwargs: dict) -> int:
    """The client's side: send the request and this process's stdin/stdout/stderr, wait for
    the child's status, forwarding termination signals to it."""
    request = json.dumps(
        {"job": job, "kwargs": kwargs, "cwd": os.getcwd(), "env": dict(os.environ)}
    ).encode()
    sys.stdout.flush()
    sys.stderr.flush()
    socket.send_fds(sock, [_HEADER.pack(len(request))], [0, 1, 2])
    sock.sendall(request)
    replies = sock.makefile("r")
    pid = int(replies.readline() or 0)
    if pid <= 0:
        print("vaeinf: error: the job server could not start the job", file=sys.stderr)
        return 1

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in _FORWARDED}
    try:
        reply = replies.readline().split()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if not reply:
        print(f"vaeinf: error: the job server's child {pid} ended without a status",
              file=sys.stderr)  # fmt: skip
        return 1
    status, cpu_s, max_rss_mb = int(reply[0]), float(reply[1]), float(reply[2])
    if kwargs.get("log_path"):
        with open(kwargs["log_path"], "a") as log:
            log.write(f"{USAGE_PREFIX} cpu_s={cpu_s:.2f} max_rss_mb={max_rss_mb:.0f}\n")
    return status


def read_usage(log_path: str | Path) -> tuple[float, float] | None:
    """(CPU seconds, peak memory in MB) of a job from its log's last line, which a served job's
    script appends when the job has ended; None when its last run was not served (then its
    benchmark record holds its usage)."""
    try:
        lines = Path(log_path).read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return None
    found = _USAGE.fullmatch(lines[-1]) if lines else None
    return (float(found[1]), float(found[2])) if found else None


def probe(message: str = "", status: int = 0, log_path: str | None = None) -> int:
    """A job that prints its process id and ``message`` and returns ``status`` (for checking
    a server: the pid differs from the script's when served)."""
    print(f"probe pid={os.getpid()} {message}", flush=True)
    return int(status)


# ---------------------------------------------------------------------------------------------
# The server's side.


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("the client closed the connection mid-request")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _child(conn: socket.socket) -> int:
    """In the forked child: take over the client's streams, directory and environment, run the
    job function, and reply its status and resource usage."""
    head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if len(head) < _HEADER.size:
        head += _recv_exact(conn, _HEADER.size - len(head))
    request = json.loads(_recv_exact(conn, _HEADER.unpack(head)[0]))
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    conn.sendall(f"{os.getpid()}\n".encode())
    try:
        status = _function(request["job"])(**request["kwargs"])
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu_s = sum(u.ru_utime + u.ru_stime for u in usage)
    max_rss_mb = max(u.ru_maxrss for u in usage) / 1024  # Linux: kilobytes
    status = int(status or 0)
    conn.sendall(f"{status} {cpu_s:.3f} {max_rss_mb:.1f}\n".encode())
    return status


def _fork(conn: socket.socket, listener: socket.socket) -> int:
    """Fork a child for the request on ``conn``; the child's pid (the child never returns)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        listener.close()
        for s in (*_FORWARDED, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        status = _child(conn)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def serve(command: list[str]) -> int:
    """Import the job code, then run ``command`` with :data:`ENV` naming this server's socket,
    serving its jobs until it exits; its exit status."""
    for module in PRELOAD:
        importlib.import_module(module)
    children: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="vaeinf-jobs-") as tmp:
        path = os.path.join(tmp, "socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(128)
        listener.settimeout(0.2)
        proc = subprocess.Popen(command, env=os.environ | {ENV: path})
        # Ctrl-C reaches the whole process group; the command decides what it means, and this
        # process serves until the command has exited (ignored only now: the command would
        # inherit an ignored SIGINT).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            while proc.poll() is None:
                for pid in list(children):
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        children.discard(pid)
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.settimeout(None)
                    children.add(_fork(conn, listener))
        finally:
            listener.close()
            for pid in children:  # jobs the command left running (it was killed)
                try:
                    os.kill(pid, signal.SIGTERM)
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                except ProcessLookupError:
                    pass
            if proc.poll() is None:
                proc.terminate()
    return proc.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        print("usage: python -m vaeinf.study.jobserver COMMAND [ARG ...]", file=sys.stderr)
        return 2
    if not available():
        return subprocess.call(argv)
    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
