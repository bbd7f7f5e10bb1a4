"""One (row, seed) of a comparison: its training rows, its model, its per-query scores, stored as a small
JSON under ``OUT/units/<row>-s<seed>.json`` so that a rerun skips it.

A unit's file holds its ``config_hash`` (the recipe's decisive keys, the data, the base model's weights,
the precision, the row, the seed, the budget): a rerun refuses a file whose hash differs. Every key but
``timing`` is the same, byte for byte, for the same inputs and seed; ``timing`` holds the seconds.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hardneg.checkpoint import digest
from hardneg.compare.config import Budget
from hardneg.compare.context import Context
from hardneg.compare.strategies import TRAIN_POSITIVES, Negatives, Strategy, selected_negatives
from hardneg.data import Dataset
from hardneg.errors import HardnegError
from hardneg.run_state import clear_dir
from hardneg.train import ShortRows, train

__all__: list[str] = []  # internal: import from hardneg.compare

#: the one key of a unit whose values differ between identical runs
TIMING = "timing"


def unit_path(out: Path, row: str, seed: int) -> Path:
    return out / "units" / f"{row}-s{seed}.json"


def unit_hash(fingerprint: Mapping[str, str], strategy: Strategy, seed: int, budget: Budget,
              row_options: Mapping[str, Any]) -> str:
    """What decides a unit's files (never its timings)."""
    return digest({"fingerprint": dict(fingerprint), "row": strategy.name, "seed": seed, "budget": budget.to_dict(),
                   "row options": dict(row_options)})


def read_unit(path: Path, expected_hash: str) -> dict[str, Any] | None:
    """A finished unit, None when there is none; a unit of another config is refused."""
    if not path.is_file():
        return None
    unit = json.loads(path.read_text(encoding="utf-8"))
    if unit.get("config_hash") != expected_hash:
        raise HardnegError(f"{path} was computed with another recipe, data, model or budget (config hash "
                           f"{str(unit.get('config_hash'))[:12]}, now {expected_hash[:12]}): compare into another "
                           "--out, or remove the units of the old config")
    return unit


def training_rows(view: Dataset, negatives: Negatives | None, budget: Budget, seed: int, k: int,
                  short_rows: ShortRows, allowed: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """``budget.epochs`` passes of one row per train query, its positive drawn per epoch (seeded by
    ``seed`` and the epoch); a query whose negatives the trainer would drop (fewer than ``k`` under
    ``short_rows = drop``, none under ``repeat``) gets no row. ``negatives`` None: in-batch only.
    ``allowed`` (positive consistency): per query the positives it may draw; a query absent gets no row."""
    rows = []
    positives = view.positives("train")
    if allowed is not None:
        kept = {q: set(allowed.get(q, ())) for q in positives}
        positives = {q: [d for d in docs if d in kept[q]] for q, docs in positives.items()}
        positives = {q: docs for q, docs in positives.items() if docs}
    for epoch in range(budget.epochs):
        rng = np.random.default_rng([seed, epoch])
        for q in sorted(positives):
            docs = positives[q]
            p = docs[int(rng.integers(len(docs)))]
            neg = [] if negatives is None else negatives.get((q, p), negatives.get((q, None)))
            if neg is None or not (len(neg) >= k or (short_rows is ShortRows.REPEAT and neg)):
                continue
            rows.append({"query_id": q, "query": view.queries[q], "pos_ids": [p], "pos": [view.doc_text(p)],
                         "neg": list(neg)})
    return rows


def run_unit(ctx: Context, strategy: Strategy, seed: int, config_hash: str, keep_model: bool,
             negatives_cache: dict) -> dict[str, Any]:
    """Compute one unit: rank (untrained rows) or select, train and rank; return its JSON document."""
    start = time.perf_counter()
    timing: dict[str, float] = {}
    queries = {"train": ctx.budget.queries}
    if not strategy.trains:
        rankings, info = strategy.rank(ctx)
        cost = {"encoded_mining": 0, "encoded_training": 0}
    else:
        negatives, info = _negatives(ctx, strategy, seed, negatives_cache)
        timing["mine_seconds"] = float(info.pop("mine_seconds"))
        k = 0 if negatives is None else ctx.k
        rows = training_rows(ctx.view, negatives, ctx.budget, seed, k, ctx.config.train.short_rows,
                             info.pop(TRAIN_POSITIVES, None))
        queries |= _kept(ctx, strategy, {r["query_id"] for r in rows})
        cost = {"encoded_mining": int(info.pop("encoded")),
                "encoded_training": ctx.budget.steps * ctx.budget.batch_size * (2 + k) if rows else 0}
        rankings, timing["train_seconds"] = _trained(ctx, strategy, seed, rows, k, keep_model)
    scored = time.perf_counter()
    metrics = ctx.scores(rankings)
    if strategy.fused:
        metrics["hybrid"] = ctx.hybrid_scores(rankings)
    timing |= {"eval_seconds": time.perf_counter() - scored, "seconds": time.perf_counter() - start}
    return {"dataset": str(ctx.data.source), "row": strategy.name, "seed": seed,
            "split": {"dev": ctx.dev_description, "test": ctx.test}, "config_hash": config_hash,
            "cpu": ctx.machine["cpu"], "cuda": ctx.machine["cuda"], "precision": ctx.machine["precision"],
            "budget": ctx.budget.to_dict(), "queries": queries, "info": info, "cost": cost, "metrics": metrics,
            TIMING: timing}


def _negatives(ctx: Context, strategy: Strategy, seed: int, cache: dict) -> tuple[Negatives | None, dict]:
    """The row's negatives, computed once per row (per seed for a row mined with a trained model)."""
    key = (strategy.name, seed if strategy.after else None)
    if key not in cache:
        if strategy.select is not None:
            cache[key] = selected_negatives(ctx, strategy.select(ctx, seed))
        else:
            cache[key] = strategy.negatives(ctx, seed)
    negatives, info = cache[key]
    return negatives, json.loads(json.dumps(info))  # a copy: the unit pops its cost keys


def _kept(ctx: Context, strategy: Strategy, kept: set[str]) -> dict[str, Any]:
    """How many train queries keep a training row; a loud warning past ``drop_warning``."""
    n = ctx.budget.queries
    dropped = 1 - len(kept) / n if n else 0.0
    if dropped > ctx.options.drop_warning:
        msg = (f"WARNING: {strategy.name} drops {dropped:.0%} of the train queries ({n - len(kept)} of {n} have "
               f"no row: too few negatives survive its selection); its row trains on the rest")
        ctx.warn(msg)
    return {"kept": len(kept), "dropped_share": round(dropped, 6)}


def _trained(ctx: Context, strategy: Strategy, seed: int, rows: list[dict[str, Any]], k: int, keep_model: bool):
    """Train from the base model on ``rows`` with the shared budget; the model's rankings and the
    training seconds. No row left: the base model's rankings (nothing to learn from)."""
    if not rows:
        msg = f"WARNING: {strategy.name} (seed {seed}) has no training row: its figures are the base model's"
        ctx.warn(msg)
        return ctx.rankings(ctx.base), 0.0
    budget = ctx.budget
    config = replace(ctx.config.train, num_negatives=k, max_steps=budget.steps, epochs=1, seed=seed)
    folder = ctx.out / "work" / "models" / f"{strategy.name}-s{seed}"
    clear_dir(folder)
    result = train(ctx.view, rows, ctx.config.encoder.model, folder, config, dev_split="dev",
                   meta={"strategy": strategy.name, "compare": "hardneg compare"},
                   log_file=folder.parent / f"{strategy.name}-s{seed}.train.log")
    rankings = ctx.rankings(ctx.model(folder))
    if not keep_model:  # only a model another row mines with stays (default, for default+round)
        clear_dir(folder)
    return rankings, float(result.train_seconds)
