"""The whole loop (docs/recipes.md): ``run`` a recipe, the ``demo``, and the default ``recipe``."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from hardneg.cli.common import _say, _working, console, friendly
from hardneg.errors import HardnegError
from hardneg.files import atomic_write_text
from hardneg.loop import format_run_table, run
from hardneg.recipe import (default_recipe_text, demo_data_path, demo_overrides, dump_recipe, load_recipe,
                            merge_overrides, parse_override)
from hardneg.train.config import TRAIN_LOG

__all__: list[str] = []  # the commands: registered on the app by hardneg.cli


def _run_and_print(config, out: Path, title: str) -> None:
    from rich import box

    atomic_write_text(out / "recipe.toml", dump_recipe(config))
    with _working("starting"):
        result = run(config, out, progress=_say)
    table = format_run_table(result, title=f"{title}: {result.metrics['split']}, {result.metrics['n_queries']} queries")
    table.box = box.SIMPLE_HEAD  # light rules: the same table in two thirds of the bytes
    console.print(table)
    if not result.metrics["tuned_kept_on_dev"]:
        console.print("note: no round beat the base model on dev; 'tuned' is round r0, shown for the record")
    for note in result.metrics["notes"]:
        console.print(f"note: {note}")
    console.print(f"wrote {out}/report.html, report.md, metrics.json, recipe.toml, eval/, rounds/ (the trainer's "
                  f"logs: rounds/r<i>/{TRAIN_LOG}){', model/' if result.metrics['tuned_kept_on_dev'] else ''} "
                  f"({result.seconds:.0f}s)")


SetOpt = typer.Option([], "--set", help="Override a recipe key: SECTION.KEY=VALUE (TOML value), repeatable.")


def _overrides(sets: List[str], **loop) -> dict:
    loop_keys = {k: v for k, v in loop.items() if v is not None}
    return merge_overrides(*(parse_override(s) for s in sets), {"loop": loop_keys} if loop_keys else {})


@friendly
def run_cmd(
    recipe: Path = typer.Argument(..., help="A TOML recipe (`hardneg recipe` prints the commented default)."),
    out: Path = typer.Option(..., "--out", help="Output folder: report.md, metrics.json, model/, eval/, rounds/."),
    set_: List[str] = SetOpt,
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Re-mining rounds after the first fine-tune ([loop] rounds)."),
    round_init: Optional[str] = typer.Option(None, "--round-init", help="base | previous ([loop] round_init)."),
    round_gate: Optional[str] = typer.Option(None, "--round-gate", help="gain | significant ([loop] round_gate)."),
):
    """Run a recipe: baselines -> mine -> select -> train -> rounds -> test evaluation with lift and p-values."""
    overrides = _overrides(set_, rounds=rounds, round_init=round_init, round_gate=round_gate)
    config = load_recipe(recipe, overrides, override_source="command line")
    _run_and_print(config, out, f"hardneg run {recipe.name}")


@friendly
def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset (default: the repo's examples/scifact-sample)."),
    set_: List[str] = SetOpt,
):
    """The default recipe, scaled down, on the SciFact sample: under 5 minutes on 2 CPU cores."""
    start = time.perf_counter()
    path = data or demo_data_path()
    if not path.exists():
        raise HardnegError(f"{path}: not found; the demo reads the repository's examples/ folder: run it from a "
                           "source checkout or pass --data")
    overrides = merge_overrides(demo_overrides(path), *(parse_override(s) for s in set_))
    config = load_recipe(None, overrides, override_source="demo settings")
    console.print(f"demo: the default recipe on {path} with smaller settings "
                  f"(passage max length {config.encoder.passage_max_length}, {config.train.max_steps} training "
                  f"steps of {config.train.batch_size}, {config.loop.rounds} re-mining round); "
                  f"full settings: `hardneg recipe`")
    _run_and_print(config, out, "demo")
    console.print(f"demo wall time {time.perf_counter() - start:.0f}s")


@friendly
def recipe_cmd(
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of printing."),
):
    """Print the commented default recipe (every key, full-quality defaults) to start your own."""
    text = default_recipe_text()
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out}")
