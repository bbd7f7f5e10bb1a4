"""What a person sees: one line per stage, the libraries' chatter kept off the terminal.

The command line calls :func:`configure` once per command. Without ``--verbose``:

* the progress bars of the Hugging Face hub, transformers (``Loading weights``, ``Writing model
  shards``) and hardneg's own encoding and scoring bars are off (:func:`bars`);
* the trainer's logs (its ``{'loss': ...}`` dicts, its INFO lines and warnings) go to a log file
  in the run folder instead of the terminal (``hardneg.train``, :func:`library_logs_to`);
* a transient status line (:func:`status`) says what is running; the command prints one line
  when a stage is done;
* each hardneg warning is shown once (:class:`OnceFilter`).

With ``--verbose``, and in a program that never calls :func:`configure` (the library default),
everything prints as the libraries print it; the trainer's log file is written all the same.
"""
from __future__ import annotations

import functools
import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from hardneg.errors import HardnegError, MetricsMismatch, first_line

__all__: list[str] = []  # internal: what the command line prints and where library logs go

_verbose = True  # the library default: print as the libraries do
_bars_off = False  # whether configure() turned the libraries' bars off (and must turn them on again)
_status: Callable[[str], None] | None = None

#: the libraries whose loggers a training log file receives
LIBRARY_LOGGERS = ("transformers", "sentence_transformers")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(verbose: bool) -> None:
    """Set the command's verbosity: quiet turns the hub's and transformers' progress bars off
    (``Loading weights``, ``Writing model shards``); verbose turns on again what quiet turned off."""
    global _verbose, _bars_off
    _verbose = verbose
    if _bars_off != verbose:
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    (enable_progress_bars if verbose else disable_progress_bars)()  # transformers reads it when imported
    if "transformers" in sys.modules:  # imported already: its own switch, as the hub's now is
        from transformers.utils import logging as tlogging

        (tlogging.disable_progress_bar if are_progress_bars_disabled() else tlogging.enable_progress_bar)()
    _bars_off = not verbose


def verbose() -> bool:
    """True with ``--verbose`` and in library use: the libraries print as they do, and hardneg
    shows its own tqdm bars (encoding, cross-encoder scoring)."""
    return _verbose


def status(text: str) -> None:
    """Show ``text`` as the transient status line, when a command shows one (else nothing)."""
    if _status is not None:
        _status(text)


@contextmanager
def status_hook(update: Callable[[str], None]) -> Iterator[None]:
    """Route :func:`status` to ``update`` (the command line's rich status) for the block."""
    global _status
    before, _status = _status, update
    try:
        yield
    finally:
        _status = before


@contextmanager
def working(console, text: str) -> Iterator[None]:
    """A transient status line on ``console`` while a stage runs (quiet only): what runs (updated
    through :func:`status`) and for how long. It vanishes when done, leaving the lines the command
    prints, and shows nothing when the output is not a terminal."""
    from rich.text import Text

    if _verbose:  # the libraries' own bars draw on the terminal: no live line beneath them
        yield
        return
    start = time.perf_counter()
    with console.status(Text(text)) as live, \
            status_hook(lambda t: live.update(Text(f"{t} ({time.perf_counter() - start:.0f}s)"))):
        yield


class OnceFilter(logging.Filter):
    """Pass each message once: a warning repeated (per round, per chunk) is shown the first time."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _verbose:
            key = f"{record.levelno}:{record.getMessage()}"
            if key in self.seen:
                return False
            self.seen.add(key)
        return True


class _Stderr(logging.StreamHandler):
    """A handler writing to the current ``sys.stderr`` (a rich status or a test runner may swap it)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


def warnings_to_stderr() -> None:
    """hardneg's own warnings (skipped rows, merged queries) to stderr as ``warning: ...``, each once
    without --verbose (:class:`OnceFilter`, reset by each call: one per command); libraries stay quiet."""
    log = logging.getLogger("hardneg")
    if not log.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        handler.addFilter(OnceFilter())
        log.addHandler(handler)
        log.propagate = False
    for f in (f for h in log.handlers for f in h.filters if isinstance(f, OnceFilter)):
        f.seen.clear()


def friendly(fn):
    """Show user errors as one line (``FILE:LINE: what is wrong``) and exit 2, and faults of the
    machine (a read-only folder, a full disk: :class:`OSError`) as one line naming the path and the
    reason, exit 1, as is a metric ranx and the numpy reference disagree on (:mod:`hardneg.metrics`);
    never a traceback for these. Other exceptions are bugs and keep theirs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        warnings_to_stderr()
        try:
            return fn(*args, **kwargs)
        except HardnegError as e:
            _exit(str(e), 2)
        except OSError as e:
            _exit(os_error_line(e), 1)
        except MetricsMismatch as e:  # a metric that cannot be trusted: never a file, one line
            _exit(str(e), 1)

    return wrapper


def _exit(line: str, code: int):
    print(f"error: {line}", file=sys.stderr)  # one line, never wrapped
    import typer  # the command line's own library, only on an error

    raise typer.Exit(code) from None


def os_error_line(e: OSError) -> str:
    """``PATH: reason`` of an I/O fault (``No space left on device``), on one line."""
    reason = e.strerror or first_line(e)
    return f"{e.filename}: {reason}" if e.filename else reason


@contextmanager
def library_logs_to(path: str | Path, logger: logging.Logger) -> Iterator[logging.Handler]:
    """Send the libraries' log records, and ``logger``'s, to the log file ``path`` for the block.

    Quiet (not :func:`verbose`): transformers' INFO lines too, and none of them on the terminal;
    verbose: the terminal keeps what it showed, the file gets a copy. The file is a log, not a
    result: it is written as things happen (opened afresh, appended line by line), so a run
    stopped midway leaves its log up to that point; no result file is ever half-written.
    """
    from transformers.utils import logging as tlogging

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    libs = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    saved = [(lib, lib.propagate) for lib in libs]
    verbosity = tlogging.get_verbosity()
    logger_state = (logger.level, logger.propagate)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for lib in [*libs, logger]:
        lib.addHandler(handler)
    if not _verbose:
        tlogging.disable_default_handler()
        tlogging.set_verbosity_info()
        for lib in libs[1:]:
            lib.propagate = False  # no handler of its own: it reached the terminal through the root
    try:
        yield handler
    finally:
        for lib in [*libs, logger]:
            lib.removeHandler(handler)
        for lib, propagate in saved:
            lib.propagate = propagate
        logger.setLevel(logger_state[0])
        logger.propagate = logger_state[1]
        if not _verbose:
            tlogging.set_verbosity(verbosity)
            tlogging.enable_default_handler()
        handler.close()
