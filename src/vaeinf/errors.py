"""The errors a run can end with, and the exit status of each: one table shared by the command
line (:mod:`vaeinf.cli`) and the workflow's job entry points (:mod:`vaeinf.study`)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range (one line)."""


class DataError(ValueError):
    """A dataset cannot be loaded or downloaded (one line naming the file and what to do)."""


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


class DivergedObjective(NonFiniteLoss):
    """An epoch's training objective left the range a bound on log p(x) can have (see
    :meth:`vaeinf.methods.base.Method.check_epoch`); stops training like a non-finite loss."""


class Preempted(RuntimeError):
    """Training stopped on SIGTERM/SIGINT after writing a checkpoint."""


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a scheduler expects of a job it stopped

#: exception class -> (exit status, what the one-line message starts with)
EXIT_CODES: dict[type[BaseException], tuple[int, str]] = {
    ConfigError: (EXIT_BAD_INPUT, "error"),
    DataError: (EXIT_BAD_INPUT, "error"),
    FileNotFoundError: (EXIT_BAD_INPUT, "error"),
    Preempted: (EXIT_PREEMPTED, ""),
    NonFiniteLoss: (EXIT_FAILED, "error"),
}


def exit_status(error: BaseException) -> tuple[int, str] | None:
    """(exit status, one-line message) of an expected failure; None for anything else."""
    for cls, (code, prefix) in EXIT_CODES.items():
        if isinstance(error, cls):
            return code, f"vaeinf: {prefix + ': ' if prefix else ''}{error}"
    return None
