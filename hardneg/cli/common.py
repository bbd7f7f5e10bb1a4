"""What every command shares: the ``app``, :func:`show`, errors (``friendly``) and options (``with_options``)."""
from __future__ import annotations

import sys
import time

import typer
from rich.console import Console
from rich.text import Text

from hardneg.encode import EncoderConfig
from hardneg.encode.cache import CacheConfig
from hardneg.export import ExportConfig, select_and_export, selection_summary
from hardneg.loop import DataConfig
from hardneg.mine import MineConfig, chunked_with_note
from hardneg.options import Opts, with_options
from hardneg.output import configure, friendly, working
from hardneg.select import SelectionPolicy

__all__: list[str] = []  # internal: the commands' shared parts

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Mine, select and audit hard negatives; fine-tune and evaluate embedding retrievers.")
console = Console(width=None if sys.stdout.isatty() else 120)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show everything the libraries print: progress "
                                 "bars, the trainer's logs (else only in the run folder's train.log) and each "
                                 "repeat of a warning. Before the command: `hardneg --verbose demo`."),
) -> None:
    configure(verbose)


def show(*items) -> None:
    """Print what the library formatted: text unwrapped (paths stay whole), tables as they are."""
    for item in items:
        console.print(item, soft_wrap=isinstance(item, (str, Text)))


def _say(msg: str) -> None:
    """One progress line (a stage done): printed as it is, never read as markup."""
    console.print(msg, style="dim", markup=False, highlight=False)


def _working(text: str):
    """A transient status line while a stage runs (:func:`hardneg.output.working`)."""
    return working(console, text)


#: the encoder options of commands that embed (the device and normalisation stay recipe keys)
ENCODER = Opts(EncoderConfig, "model", exclude=("device", "normalize"))
CACHE = Opts(CacheConfig, "model")
DATA = Opts(DataConfig, "data", only=("path", "corpus", "skip_unknown"), required=("path",))
POLICY = Opts(SelectionPolicy, "select")
EXPORT = Opts(ExportConfig, "select")


def _chunk(ds, mine: MineConfig, encoder: EncoderConfig):
    """``ds`` chunked (:mod:`hardneg.chunking`), or as it is without ``--chunk-tokens``."""
    chunked, note = chunked_with_note(ds, mine, encoder)
    show(*filter(None, [note]))
    return chunked


def _select_and_print(cands, ds, out, policy, export) -> None:
    start = time.perf_counter()
    mined, report = select_and_export(cands, ds, out, policy, export.format)
    show(*selection_summary(mined, report, out, time.perf_counter() - start))
