"""The errors a run can end with, and the exit status of each: one table shared by the command
line (:mod:`vaeinf.cli`) and the workflow's job entry points (:mod:`vaeinf.study.grid`).

An expected failure (bad config, missing or damaged data, a damaged run directory, a path that
cannot be written, a full disk, too little memory) ends with one line ``vaeinf: error: ...``
naming the file or key and what to do. Anything else is a bug and keeps its traceback. With
``--debug`` or ``VAEINF_DEBUG=1`` every failure shows its full traceback.
"""

from __future__ import annotations

import errno
import os
import sys


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range (one line)."""


class DataError(ValueError):
    """A dataset cannot be loaded or downloaded (one line naming the file and what to do)."""


class DamagedFile(ValueError):
    """A file of a run directory is truncated, corrupt or does not match the run's config (one
    line naming the file and what to do)."""


class UsageError(ValueError):
    """The command line itself is malformed (unknown option, missing argument)."""


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


class DivergedObjective(NonFiniteLoss):
    """An epoch's training objective left the range a bound on log p(x) can have (see
    :meth:`vaeinf.core.methods.base.Method.check_epoch`); stops training like a non-finite loss."""


class Preempted(RuntimeError):
    """Training stopped on SIGTERM/SIGINT after writing a checkpoint."""


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a scheduler expects of a job it stopped

#: exception class -> (exit status, what the one-line message starts with); the first class
#: that matches wins, so subclasses come before their bases.
EXIT_CODES: dict[type[BaseException], tuple[int, str]] = {
    ConfigError: (EXIT_BAD_INPUT, "error"),
    DataError: (EXIT_BAD_INPUT, "error"),
    DamagedFile: (EXIT_BAD_INPUT, "error"),
    UsageError: (EXIT_BAD_INPUT, "error"),
    Preempted: (EXIT_PREEMPTED, ""),
    NonFiniteLoss: (EXIT_FAILED, "error"),
    MemoryError: (EXIT_FAILED, "error"),
    OSError: (EXIT_BAD_INPUT, "error"),  # refined by errno below
}

#: errno of an OSError -> (exit status, what to do). A path the user gave that cannot be used is
#: bad input (2); a machine that runs out of something is a failure (1). Finished work is kept
#: either way: every file is written atomically.
OS_ERRORS: dict[int, tuple[int, str]] = {
    errno.ENOENT: (EXIT_BAD_INPUT, "check the path"),
    errno.EEXIST: (EXIT_BAD_INPUT, "it exists and is not a directory; choose another path"),
    errno.ENOTDIR: (EXIT_BAD_INPUT, "a part of the path is a file, not a directory"),
    errno.EISDIR: (EXIT_BAD_INPUT, "it is a directory; give a file"),
    errno.EACCES: (EXIT_BAD_INPUT, "choose a directory you may write to"),
    errno.EPERM: (EXIT_BAD_INPUT, "choose a directory you may write to"),
    errno.EROFS: (EXIT_BAD_INPUT, "choose a directory on a writable file system"),
    errno.ENAMETOOLONG: (EXIT_BAD_INPUT, "shorten the path (at most 255 bytes per name)"),
    errno.ENOSPC: (EXIT_FAILED, "free some space and rerun; finished work is kept"),
    errno.EDQUOT: (EXIT_FAILED, "free some space and rerun; finished work is kept"),
    errno.EIO: (EXIT_FAILED, "check the disk and rerun; finished work is kept"),
}

OUT_OF_MEMORY = (
    "out of memory{what}; lower eval.memory_mb (evaluate) or K / train.batch_size (train), "
    "or run on a machine with more memory"
)


def _os_message(error: OSError) -> tuple[int, str]:
    code, todo = OS_ERRORS.get(error.errno, (EXIT_FAILED, "check the path and the disk"))
    reason = error.strerror or str(error) or type(error).__name__
    if error.filename is None:
        return code, f"{reason}; {todo}"
    return code, f"{error.filename}: {reason}; {todo}"


def _torch_out_of_memory(error: BaseException) -> bool:
    torch = sys.modules.get("torch")  # never imported here: this module stays torch-free
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return True
    # the CPU allocator raises a plain RuntimeError
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def exit_status(error: BaseException) -> tuple[int, str] | None:
    """(exit status, one-line message) of an expected failure; None for anything else."""
    if _torch_out_of_memory(error):
        return EXIT_FAILED, "vaeinf: error: " + OUT_OF_MEMORY.format(what="")
    for cls, (code, prefix) in EXIT_CODES.items():
        if isinstance(error, cls):
            if isinstance(error, OSError):
                code, text = _os_message(error)
            elif isinstance(error, MemoryError):
                text = OUT_OF_MEMORY.format(what=f" ({error})" if str(error) else "")
            else:
                text = str(error)
            text = " ".join(text.split())  # one line, whatever the message held
            return code, f"vaeinf: {prefix + ': ' if prefix else ''}{text}"
    return None


def debugging() -> bool:
    """Whether failures should show their full traceback (``VAEINF_DEBUG=1``)."""
    return os.environ.get("VAEINF_DEBUG", "") not in ("", "0")


def report_failure(error: Exception) -> int:
    """In an ``except`` block of a job's entry point: print the one line of an expected failure
    (after its traceback when debugging) and return its exit status; re-raise anything else
    after printing its traceback."""
    import sys
    import traceback

    status = exit_status(error)
    if status is None or debugging():
        traceback.print_exc()
    if status is None:
        raise error
    print(status[1], file=sys.stderr, flush=True)
    return status[0]
