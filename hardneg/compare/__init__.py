"""Compare negative-mining strategies on your own data: one model per strategy, the same budget.

Use :func:`compare` (``hardneg compare RECIPE.toml --out OUT``) before settling a recipe: every row
starts from the recipe's model and trains on the same queries (one row per train query per epoch, its
positive a seeded choice each epoch), the same steps, batch, k, max length and learning rate; only the
negatives differ (:data:`STRATEGIES`, one line each in :func:`describe`). Rows are judged on the dev
split (the recipe's, or held-out train queries: :func:`hardneg.loop.split_dev`); the best one on dev
becomes ``OUT/recommended.toml``; the test figures are computed once per row and only reported.

Writes ``OUT/units/<row>-s<seed>.json`` (one per finished (row, seed): a rerun skips it and refuses
one of another config), ``OUT/table.md`` and ``compare.json`` (NDCG@10 mean ± sd over seeds,
Recall@100, MRR@10, NDCG@10 without the hub documents and on clean queries, paired p and bootstrap
intervals vs base and vs the best row, queries kept, cost), ``OUT/trap.json`` (the share of each
policy's negatives that are hidden positives: :mod:`~hardneg.compare.trap`), the figure
``OUT/plots/quality_vs_compute.png`` and ``OUT/report.html``. :func:`measure_trap` (``--trap-only``)
writes the trap table alone, in minutes, with nothing trained.

The parts: :mod:`~hardneg.compare.config`, :mod:`~hardneg.compare.context` (shared state),
:mod:`~hardneg.compare.strategies` (the registry), :mod:`~hardneg.compare.units`,
:mod:`~hardneg.compare.table`, :mod:`~hardneg.compare.trap`, :mod:`~hardneg.compare.outputs`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from hardneg.compare.config import CompareConfig
from hardneg.compare.context import Context
from hardneg.compare.outputs import write_outputs
from hardneg.compare.strategies import STRATEGIES, Strategy, describe
from hardneg.compare.table import build_table
from hardneg.compare.trap import format_trap, trap_of
from hardneg.compare.units import read_unit, run_unit, unit_hash, unit_path
from hardneg.data import Dataset, leakage
from hardneg.encode.cache import memoised_texts_hashes
from hardneg.errors import HardnegError
from hardneg.files import atomic_write_json, atomic_write_text
from hardneg.loop import RunConfig

__all__ = ["CompareConfig", "CompareResult", "STRATEGIES", "compare", "measure_trap"]

log = logging.getLogger("hardneg.compare")


@dataclass
class CompareResult:
    """The table (``compare.json``'s), the best row on dev, the rows skipped and why, the files written."""

    table: dict[str, Any]
    best: str
    skipped: dict[str, str]
    files: dict[str, Path]
    units: dict[str, list[dict[str, Any]]]


def compare(config: RunConfig, out: str | Path, strategies: Sequence[str] | None = None, seeds: int | None = None,
            *, options: CompareConfig | None = None, table_only: bool = False, data: Dataset | None = None,
            progress: Callable[[str], None] | None = None,
            on_unit: Callable[[dict[str, Any]], None] | None = None) -> CompareResult:
    """Run every (row, seed) not finished in ``out``, then write the table, trap, recipe and report.

    ``strategies`` / ``seeds`` override ``options`` (:class:`CompareConfig`); ``table_only`` runs nothing
    and rebuilds the outputs from the units there. ``on_unit`` is called with each unit once it is
    stored. Units of another config in ``out`` are refused (:class:`~hardneg.errors.HardnegError`).
    """
    options = _options(options, strategies, seeds)
    with memoised_texts_hashes():
        return _compare(_context(config, options, data, out, progress), table_only, on_unit)


def measure_trap(config: RunConfig, out: str | Path, strategies: Sequence[str] | None = None, *,
                 options: CompareConfig | None = None, data: Dataset | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Only the trap table (no training, no units): ``OUT/trap.json`` and ``OUT/trap.md``, the same
    table :func:`compare` writes beside its rows. Use it to see, in minutes, which policies push hidden
    positives away on your data before paying for any training."""
    options = _options(options, strategies, None)
    with memoised_texts_hashes():
        ctx = _context(config, options, data, out, progress)
        trap = _trap(ctx, [s for s in _ordered(options.strategies) if not (s.skip and s.skip(ctx))])
    atomic_write_json(ctx.out / "trap.json", trap)
    atomic_write_text(ctx.out / "trap.md", format_trap(trap) + "\n")
    return trap


def _context(config: RunConfig, options: CompareConfig, data: Dataset | None, out: str | Path,
             progress: Callable[[str], None] | None) -> Context:
    return Context(config, options, data or config.data.load(), Path(out), progress or log.info,
                   warn=progress or log.warning)


def _options(options: CompareConfig | None, strategies: Sequence[str] | None, seeds: int | None) -> CompareConfig:
    options = options or CompareConfig()
    options = replace(options, **{k: v for k, v in (("strategies", strategies), ("seeds", seeds)) if v is not None})
    options = replace(options, strategies=options.strategies or list(STRATEGIES))
    unknown = [s for s in options.strategies if s not in STRATEGIES]
    if unknown:
        raise HardnegError(f"unknown strategies {unknown}; choose from:\n{describe()}")
    return options


def _ordered(names: Sequence[str]) -> list[Strategy]:
    """The rows in the order asked, ``base`` first (every p-value is against it), each after the rows it needs."""
    order: list[str] = []

    def add(name: str) -> None:
        for needed in STRATEGIES[name].after:
            add(needed)
        if name not in order:
            order.append(name)

    for name in ["base", *names]:
        add(name)
    return [STRATEGIES[n] for n in order]


def _compare(ctx: Context, table_only: bool, on_unit) -> CompareResult:
    rows = _ordered(ctx.options.strategies)
    fingerprint, needed = ctx.fingerprint(), {a for s in STRATEGIES.values() for a in s.after}
    units: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    negatives: dict = {}
    ctx.say(f"budget of every trained row: {ctx.budget.steps} steps x batch {ctx.budget.batch_size}, "
            f"k={ctx.k}, {ctx.budget.epochs} epoch(s) of {ctx.budget.queries} train queries; dev: "
            f"{ctx.dev_description}")
    for s in rows:
        reason = s.skip(ctx) if s.skip else None
        if reason:
            skipped[s.name] = reason
            ctx.say(f"{s.name}: skipped ({reason})")
            continue
        for seed in range(ctx.options.seeds) if s.trains else [0]:
            h = unit_hash(fingerprint, s, seed, ctx.budget, _row_options(ctx, s))
            path = unit_path(ctx.out, s.name, seed)
            unit = read_unit(path, h)
            if unit is None and not table_only:
                unit = run_unit(ctx, s, seed, h, s.name in needed, negatives)
                atomic_write_json(path, unit)
                ctx.say(f"{s.name} seed {seed}: dev NDCG@10 {_mean(unit, 'dev'):.4f}, test {_mean(unit, 'test'):.4f}"
                        f" ({unit['timing']['seconds']:.0f}s)")
                if on_unit is not None:
                    on_unit(unit)
            if unit is not None:
                units.setdefault(s.name, []).append(unit)
    if "base" not in units:
        raise HardnegError(f"{ctx.out}: no finished unit of the base row to build a table from")
    trap = _trap(ctx, [s for s in rows if s.name not in skipped])
    leak = leakage(ctx.data, ctx.test, "train")
    table = build_table(units, [s.name for s in rows if s.recipe is not None], leak.clean if leak else None,
                        n_resamples=ctx.config.eval.n_resamples, seed=ctx.config.eval.seed,
                        drop_warning=ctx.options.drop_warning, rrf_k_grid=ctx.config.eval.rrf_k)
    files = write_outputs(ctx.out, ctx.config, table, trap, skipped)
    return CompareResult(table, table["best"], skipped, files, units)


def _row_options(ctx: Context, s: Strategy) -> dict[str, Any]:
    return {"prior_weights": list(ctx.config.eval.prior_weights)} if s.name == "bm25+prior" else {}


def _mean(unit: dict[str, Any], split: str) -> float:
    values = unit["metrics"][split]["ndcg@10"]
    return sum(values) / len(values) if values else 0.0


def _trap(ctx: Context, rows: Sequence[Strategy]) -> dict[str, Any]:
    """The trap table of every selecting row mined with the base model (no training needed)."""
    a = ctx.config.audit
    trap = {"hide": a.hide, "draws": a.draws, "seed": a.seed, "rows": {}}
    for s in rows:
        if s.select is not None and not s.after:
            cands, policy, _ = s.select(ctx, 0)
            trap["rows"][s.name] = trap_of(cands, policy, ctx.view.doc_ids, a.hide, a.draws, a.seed)
    return trap
