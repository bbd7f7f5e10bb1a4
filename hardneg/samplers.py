"""Samplers: which of a query's surviving candidates become its k negatives.

Each sampler is a pure function of one query's candidate scores, ``k`` and a seeded
``numpy.random.Generator``; it returns the chosen positions (indices into ``scores``),
without replacement, in the order chosen. Pick one by the hardness you want:

* :func:`top`: the k highest scores: the hardest negatives, also the likeliest false
  negatives; pair it with a positive-aware filter (NV-Retriever: ``percent 0.95``).
* :func:`uniform`: any k survivors alike: a softer, more diverse mix.
* :func:`simans`: SimANS: prefers candidates whose score is near the positive's, neither
  the top (probably unlabeled positives) nor the tail (too easy).
* :func:`softmax`: weights ``exp(z / temperature)``: between ``top`` (small temperature) and
  ``uniform`` (large temperature).

Weighted samplers draw with the Gumbel-top-k trick: adding independent Gumbel noise to the
log-weights and keeping the k largest is an exact draw of k items without replacement with
probability proportional to the weights (successive sampling / Plackett-Luce). It needs one
vectorised noise draw, so :func:`grouped_top_k` can sample every query at once.
``simans`` and ``softmax`` work on per-query standardised scores ``z = (s - mean) / std``,
so ``a`` and ``temperature`` mean the same on cosine, BM25 and cross-encoder scales.
A NaN score has zero weight: it is chosen only when nothing else is left.
"""
from __future__ import annotations

import numpy as np

from hardneg.errors import HardnegError

__all__ = [
    "top",
    "uniform",
    "simans",
    "softmax",
    "standardize",
    "simans_log_weights",
    "softmax_log_weights",
    "gumbel_keys",
    "grouped_top_k",
]


# ---- per-query samplers ----------------------------------------------------------------------
def top(scores: np.ndarray, k: int, rng: np.random.Generator | None = None, *,
        ranks: np.ndarray | None = None) -> np.ndarray:
    """The k highest scores, ties broken by original rank (then position). ``rng`` is unused."""
    scores = _as_scores(scores)
    return grouped_top_k(scores, np.zeros(len(scores), np.int64), k, tiebreak=ranks)


def uniform(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k survivors uniformly at random (a random permutation cut at k)."""
    scores = _as_scores(scores)
    keys = gumbel_keys(np.zeros(len(scores)), rng)
    return grouped_top_k(keys, np.zeros(len(scores), np.int64), k)


def simans(scores: np.ndarray, k: int, rng: np.random.Generator, *, pos_score: float,
           a: float = 1.0, b: float = 0.0, center: float | None = None,
           scale: float | None = None) -> np.ndarray:
    """SimANS: draw with probability ``∝ exp(-a * (z - z_pos - b)**2)``.

    ``z`` standardises the scores by ``center``/``scale`` (default: the mean and standard
    deviation of ``scores``; :func:`hardneg.select.select` passes those of the query's whole
    retrieved list, so filtering does not change the scale). The paper (Zhou et al., EMNLP
    2022) uses raw scores with ``b = 0`` and a per-dataset ``a`` (its released code uses 0.5
    to 3); on standardised scores the default ``a = 1`` is a Gaussian of width
    ``1/sqrt(2) ≈ 0.7`` standard deviations centred on the positive's score (``b = 0``).
    A negative ``b`` moves the peak below the positive's score.
    """
    scores = _as_scores(scores)
    z, z_pos = standardize(scores, pos_score, center, scale)
    keys = gumbel_keys(simans_log_weights(z, z_pos, a, b), rng)
    return grouped_top_k(keys, np.zeros(len(scores), np.int64), k)


def softmax(scores: np.ndarray, k: int, rng: np.random.Generator, *, temperature: float = 1.0,
            center: float | None = None, scale: float | None = None) -> np.ndarray:
    """Draw with probability ``∝ exp(z / temperature)`` on standardised scores ``z``.

    Small temperatures approach :func:`top`, large ones :func:`uniform`; ``temperature`` is
    in standard deviations of the query's scores, whatever the scorer.
    """
    scores = _as_scores(scores)
    z, _ = standardize(scores, 0.0, center, scale)
    keys = gumbel_keys(softmax_log_weights(z, temperature), rng)
    return grouped_top_k(keys, np.zeros(len(scores), np.int64), k)


# ---- kernels shared with hardneg.select (flat arrays, any number of queries) ---------------
def standardize(scores: np.ndarray, pos_score: float | np.ndarray, center: float | np.ndarray | None = None,
                scale: float | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(scores - center) / scale`` and the same for ``pos_score``.

    Defaults: mean and standard deviation of the finite ``scores``; a zero or undefined
    scale becomes 1 (all scores equal: every z is then 0).
    """
    finite = scores[np.isfinite(scores)]
    if center is None:
        center = float(finite.mean()) if finite.size else 0.0
    if scale is None:
        scale = float(finite.std()) if finite.size > 1 else 1.0
    scale = np.where(np.isfinite(scale) & (np.asarray(scale) > 0), scale, 1.0)
    return (scores - center) / scale, (np.asarray(pos_score, dtype=np.float64) - center) / scale


def simans_log_weights(z: np.ndarray, z_pos: float | np.ndarray, a: float = 1.0, b: float = 0.0) -> np.ndarray:
    """``-a * (z - z_pos - b)**2``: the SimANS log-weight (NaN stays NaN: weight 0)."""
    if a < 0:
        raise HardnegError(f"simans a must be >= 0, got {a}")
    return -a * (z - z_pos - b) ** 2


def softmax_log_weights(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``z / temperature``: the softmax log-weight."""
    if not temperature > 0:
        raise HardnegError(f"softmax temperature must be > 0, got {temperature}")
    return z / temperature


def gumbel_keys(log_weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Perturbed keys: the k largest are a weighted draw of k without replacement."""
    if not isinstance(rng, np.random.Generator):
        raise HardnegError("pass a seeded numpy.random.Generator (np.random.default_rng(seed))")
    return np.asarray(log_weights, dtype=np.float64) + rng.gumbel(size=len(log_weights))


def grouped_top_k(keys: np.ndarray, groups: np.ndarray, k: int,
                  tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Positions of the k largest ``keys`` within each group, ordered by group then key.

    Ties go to the smaller ``tiebreak`` (e.g. the original rank), then the earlier position;
    NaN keys count as -inf. This is the whole selection step for every query at once.
    """
    if k < 0:
        raise HardnegError(f"the number of negatives must be >= 0, got {k}")
    n = len(keys)
    if n == 0 or k == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.float64)
    keys = np.where(np.isnan(keys), -np.inf, keys)
    groups = np.asarray(groups)
    tiebreak = np.zeros(n, np.int64) if tiebreak is None else np.asarray(tiebreak)
    if _already_ordered(keys, groups, tiebreak):  # e.g. top-k of a rank-sorted table: no sort
        order = np.arange(n)
    else:
        order = np.lexsort((tiebreak, -keys, groups))  # lexsort is stable: then by position
    g_sorted = groups[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    within = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return order[within < k]


def _already_ordered(keys: np.ndarray, groups: np.ndarray, tiebreak: np.ndarray) -> bool:
    """True when entries are sorted by group, then key descending, then tiebreak."""
    if np.any(groups[1:] < groups[:-1]):
        return False
    same = groups[1:] == groups[:-1]
    ok = (keys[:-1] > keys[1:]) | ((keys[:-1] == keys[1:]) & (tiebreak[:-1] <= tiebreak[1:]))
    return bool(np.all(ok | ~same))


def _as_scores(scores: np.ndarray) -> np.ndarray:
    return np.asarray(scores, dtype=np.float64)
