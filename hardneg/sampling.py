"""Seeded draws shared by every module: one :func:`sample`, one held-out split (:func:`holdout`).

Each draw is ``rng.choice(n, size, replace=False)`` with its indices sorted, so a sample keeps
the order it was drawn from; a population no larger than ``size`` is returned whole without
touching the generator. ``seed`` is an int (a fresh ``np.random.default_rng(seed)``) or a
``Generator`` that later draws continue from.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

__all__: list[str] = []  # internal: the seeded draws every stage shares

T = TypeVar("T")


def sample(population: int | Sequence[T] | np.ndarray, size: int, seed: int | np.random.Generator) -> Any:
    """``size`` of ``population`` without replacement, in the population's order.

    ``population`` an int ``n``: sorted row indices (an int64 array, ``arange(n)`` when ``n <=
    size``); an array: its elements at those indices (an array); any other sequence: a list.
    """
    n = population if isinstance(population, (int, np.integer)) else len(population)
    if n <= size:
        if isinstance(population, (int, np.integer)):
            return np.arange(n)
        return population if isinstance(population, np.ndarray) else list(population)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    picked = np.sort(rng.choice(n, size=size, replace=False))
    if isinstance(population, (int, np.integer)):
        return picked
    if isinstance(population, np.ndarray):
        return population[picked]
    return [population[i] for i in picked]


def holdout_size(n: int, fraction: float, max_queries: int | None = None) -> int:
    """How many of ``n`` queries a ``fraction`` holds out: rounded, at most ``max_queries``."""
    size = int(round(fraction * n))
    return size if max_queries is None else min(max_queries, size)


def holdout(query_ids: Sequence[str], fraction: float, seed: int | np.random.Generator,
            max_queries: int | None = None) -> list[str]:
    """The held-out queries: :func:`holdout_size` of the sorted distinct ``query_ids``, drawn with
    ``seed``, in sorted order. Empty when that is none or all of them (nothing to hold out, or
    nothing left to train on): the caller decides whether that is an error."""
    pool = sorted(set(query_ids))
    size = holdout_size(len(pool), fraction, max_queries)
    if size < 1 or size >= len(pool):
        return []
    return sample(pool, size, seed)
