"""Errors a user can act on. The CLI prints them as one line and exits 2."""
from __future__ import annotations

__all__ = ["DataError", "HardnegError"]  # MetricsMismatch: public as hardneg.metrics.MetricsMismatch


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none): for one-line errors."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class HardnegError(Exception):
    """A problem with the user's input or options (not a bug in hardneg)."""


class OptionError(HardnegError):
    """An option's value out of its declared range or choices: ``key what`` (``seed must be ...``);
    the command line names the flag instead (``--seed: must be ...``), a recipe its file and section."""

    def __init__(self, key: str, what: str):
        self.key, self.what = key, what
        super().__init__(f"{key} {what}")


class DataError(HardnegError):
    """Bad input data, located as ``FILE:LINE: what is wrong``."""

    def __init__(self, path: object, line: int | None, message: str):
        self.path, self.line, self.message = str(path), line, message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class MetricsMismatch(RuntimeError):
    """ranx and the numpy reference disagree (:mod:`hardneg.metrics`): the metric cannot be trusted,
    so nothing is written. Not the user's input: the command line exits 1."""
