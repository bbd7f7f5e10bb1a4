"""The whole loop (docs/recipes.md): ``run`` a recipe, the ``demo``, and the default ``recipe``."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich import box

from hardneg.cli.common import Opts, _say, _working, friendly, show, with_options
from hardneg.compare import CompareConfig, compare, measure_trap
from hardneg.compare.trap import format_trap
from hardneg.files import atomic_write_text
from hardneg.loop import LoopConfig, format_run_table, run
from hardneg.recipe import (default_recipe_text, demo_recipe, dump_recipe, load_recipe, merge_overrides, parse_override,
                            preflight)

__all__: list[str] = []  # the commands: registered on the app by hardneg.cli


def _run_and_print(config, out: Path, title: str, restart: bool = False) -> None:
    preflight(config, out)  # nothing is written before every input is checked
    with _working("starting"):  # run() writes out/recipe.toml once it has checked the folder
        result = run(config, out, progress=_say, restart=restart, recipe=dump_recipe(config))
    table = format_run_table(result, title=f"{title}: {result.metrics['split']}, {result.metrics['n_queries']} queries")
    table.box = box.SIMPLE_HEAD  # light rules: the same table in two thirds of the bytes
    show(table, *result.summary(out))


SetOpt = typer.Option([], "--set", help="Override a recipe key: SECTION.KEY=VALUE (TOML value), repeatable.")


#: `hardneg run`'s shortcuts for [loop] keys: unset, the recipe's value stands
LOOP_FLAGS = ("rounds", "round_init", "round_gate")


@friendly
@with_options(loop=Opts(LoopConfig, "loop", only=LOOP_FLAGS, defaults=tuple((k, None) for k in LOOP_FLAGS),
                        build=False))
def run_cmd(
    recipe: Path = typer.Argument(..., help="A TOML recipe (`hardneg recipe` prints the commented default)."),
    out: Path = typer.Option(..., "--out", help="Output folder (report.md, metrics.json, ...); rerun to resume."),
    set_: List[str] = SetOpt,
    restart: bool = typer.Option(False, "--restart", help="Discard the run in --out (another recipe's) first."),
    loop: Any = None,
):
    """Run a recipe: baselines -> mine -> select -> train -> rounds -> test evaluation with lift and p-values."""
    loop_keys = {k: v for k, v in loop.items() if v is not None}
    overrides = merge_overrides(*(parse_override(s) for s in set_), {"loop": loop_keys} if loop_keys else {})
    config = load_recipe(recipe, overrides, override_source="command line")
    _run_and_print(config, out, f"hardneg run {recipe.name}", restart)


@friendly
def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder (an earlier run in it is replaced)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset (default: the repo's examples/scifact-sample)."),
    set_: List[str] = SetOpt,
):
    """The default recipe, scaled down, on the SciFact sample: ~1 minute on 2 cores with AMX, ~6 without."""
    start = time.perf_counter()
    config, banner = demo_recipe(data, merge_overrides(*(parse_override(s) for s in set_)))
    show(banner)
    _run_and_print(config, out, "demo", restart=True)
    show(f"demo wall time {time.perf_counter() - start:.0f}s")


@friendly
def recipe_cmd(
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of printing."),
):
    """Print the commented default recipe (every key, full-quality defaults) to start your own."""
    if out is None:
        return print(default_recipe_text(), end="")
    atomic_write_text(out, default_recipe_text())
    show(f"wrote {out}")


@friendly
@with_options(options=Opts(CompareConfig))
def compare_cmd(
    recipe: Path = typer.Argument(..., help="A TOML recipe: model, data, budget, the default row's policy."),
    out: Path = typer.Option(..., "--out", help="Output folder (units/, table.md, report.html, ...); rerun resumes."),
    set_: List[str] = SetOpt,
    table_only: bool = typer.Option(False, "--table-only", help="Run nothing: rebuild the outputs from the units."),
    trap_only: bool = typer.Option(False, "--trap-only", help="Train nothing: only trap.json and trap.md (minutes)."),
    options: Any = None,
):
    """One model per negative strategy, the same budget: the table, the trap, the best row on dev."""
    config = load_recipe(recipe, merge_overrides(*(parse_override(s) for s in set_)), override_source="command line")
    with _working("comparing"):
        if trap_only:
            return show(format_trap(measure_trap(config, out, options=options, progress=_say)), f"wrote {out}/trap.*")
        result = compare(config, out, options=options, table_only=table_only, progress=_say)
    show(result.files["table"].read_text(encoding="utf-8"), f"wrote {', '.join(map(str, result.files.values()))}")
