"""Per-query retrieval metrics: ranx computes them, an independent numpy computation checks them.

Every metric hardneg publishes (evaluation tables, the round gate's dev scores, benchmark units)
comes from :func:`per_query_scores`. It scores each ranking twice, with ranx and with
:func:`reference_scores` (plain numpy, written from the definitions below, sharing no code with
ranx), and raises :class:`MetricsMismatch` when any query's value differs by more than
:data:`TOLERANCE`: a wrong metric is an error, never a file.

Definitions (ranx's, at relevance level 1; ``k`` is the cut-off):

* a document is relevant when its qrels grade is >= 1; gains are the grades themselves;
* ``ndcg@k``: sum of grade / log2(rank + 1) over ranks 1..k, divided by the same sum over the
  grades sorted best first (Järvelin and Kekäläinen's linear-gain formulation); 0 with no relevant;
* ``recall@k``: relevant documents in the top k over all relevant documents;
* ``mrr@k``: 1 / rank of the first relevant document within the top k, else 0;
* ``map@k``: the sum of precision@r over the ranks r <= k holding a relevant document, divided by
  the number of relevant documents.

Ties: the order is the ranking's own (best first, as written in the TREC files' rank column). A
document ranked twice counts at its first rank. ranx is handed that order as strictly decreasing
scores, so it never re-sorts equal scores its own way, and the two computations rank alike.

Why the ids ranx sees are not the user's: ranx compiles its numba kernels once per maximum doc-id
length and caches them on disk; a second process compiling another length into the same cache at
the same moment can leave one signature's index entry pointing at the other's machine code, a
cross-process race numba does not guard (numba#10128, #4807). hardneg hands ranx fixed-width
tokens instead (one signature, compiled once per cache), keeps numba's cache in hardneg's own
cache folder (:func:`private_numba_cache`, set by the command line's entry point), and holds a
file lock beside it while ranx compiles, loads or runs.
"""
from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from hardneg.encode.cache import default_cache_dir
from hardneg.errors import MetricsMismatch

__all__ = ["MetricsMismatch", "per_query_scores", "reference_scores"]

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100")
#: the largest difference allowed between ranx and :func:`reference_scores` for one query's value
TOLERANCE = 1e-9
_KINDS = ("ndcg", "recall", "mrr", "map")
_TOKEN_WIDTH = 12  # every id ranx sees has this many characters: one compiled signature


def parse_metric(metric: str) -> tuple[str, int]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; one of :data:`_KINDS` with a positive cut-off."""
    match = re.fullmatch(r"([a-z]+)@([1-9][0-9]*)", metric)
    if match is None or match.group(1) not in _KINDS:
        raise ValueError(f"unsupported metric {metric!r}: use one of {', '.join(k + '@K' for k in _KINDS)}")
    return match.group(1), int(match.group(2))


def ranked_lists(ranking) -> list[list[str]]:
    """Each query's ranked doc ids, best first, a document ranked twice kept at its first rank."""
    return [list(dict.fromkeys(ranking.doc_ids[j] for j in row)) for row in ranking.indices]


def reference_scores(qrels: Mapping[str, Mapping[str, int]], query_ids: Sequence[str],
                     lists: Sequence[Sequence[str]], metrics: Sequence[str] = METRICS) -> dict[str, np.ndarray]:
    """The metrics of :mod:`hardneg.metrics`' definitions in numpy: ``{metric: (n_queries,)}``.

    Independent of ranx on purpose (the cross-check of :func:`per_query_scores`); use it directly
    to score rankings without numba.
    """
    parsed = [parse_metric(m) for m in metrics]
    depth = max([k for _, k in parsed], default=0)
    out = {m: np.zeros(len(query_ids), dtype=np.float64) for m in metrics}
    for i, (q, docs) in enumerate(zip(query_ids, lists)):
        grades = {d: g for d, g in qrels[q].items() if g >= 1}
        if not grades:
            continue
        gains = np.array([grades.get(d, 0) for d in docs[:depth]], dtype=np.float64)
        ideal = np.sort(np.array(list(grades.values()), dtype=np.float64))[::-1]
        for m, (kind, k) in zip(metrics, parsed):
            out[m][i] = _one(kind, gains[:k], ideal[:k], len(grades))
    return out


def _one(kind: str, gains: np.ndarray, ideal: np.ndarray, n_relevant: int) -> float:
    hits = gains > 0
    ranks = np.arange(1, gains.size + 1, dtype=np.float64)
    if kind == "ndcg":
        dcg = float(np.sum(gains / np.log2(ranks + 1)))
        return dcg / float(np.sum(ideal / np.log2(np.arange(2, ideal.size + 2, dtype=np.float64))))
    if kind == "recall":
        return float(hits.sum()) / n_relevant
    if kind == "mrr":
        return 1.0 / float(ranks[hits][0]) if hits.any() else 0.0
    return float(np.sum(np.cumsum(hits)[hits] / ranks[hits])) / n_relevant  # map


def per_query_scores(qrels: Mapping[str, Mapping[str, int]], ranking, metrics: Sequence[str] = METRICS
                     ) -> dict[str, np.ndarray]:
    """Per-query metric values aligned with ``ranking.query_ids``: ranx's, checked against
    :func:`reference_scores`; raises :class:`MetricsMismatch` beyond :data:`TOLERANCE`."""
    qids = list(ranking.query_ids)
    missing = [q for q in qids if q not in qrels]
    if missing:
        raise ValueError(f"{len(missing)} ranked queries have no qrels, e.g. {missing[0]}")
    for m in metrics:
        parse_metric(m)
    lists = ranked_lists(ranking)
    ranx = _ranx_scores(qrels, qids, lists, metrics)
    reference = reference_scores(qrels, qids, lists, metrics)
    for m in metrics:
        gap = np.abs(ranx[m] - reference[m])
        if gap.size and not gap.max() <= TOLERANCE:
            i = int(np.nanargmax(np.where(np.isnan(gap), np.inf, gap)))
            raise MetricsMismatch(
                f"{m} of query {qids[i]!r}: ranx {ranx[m][i]:.6f} but the numpy reference {reference[m][i]:.6f} "
                f"({int((~(gap <= TOLERANCE)).sum())} of {len(qids)} queries differ by more than {TOLERANCE:g}); "
                f"numba's cache at {_numba_cache_location()} may be corrupt: remove it and run again")
    return ranx


def _ranx_scores(qrels: Mapping[str, Mapping[str, int]], qids: Sequence[str], lists: Sequence[Sequence[str]],
                 metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """ranx on fixed-width tokens of the doc ids, each list's order as strictly decreasing scores."""
    tokens: dict[str, str] = {}

    def token(doc_id: str) -> str:
        return tokens.setdefault(doc_id, f"{len(tokens):0{_TOKEN_WIDTH}d}")

    none = "~" * _TOKEN_WIDTH  # ranx needs a document per query; this one is never relevant
    ranx_qrels = {q: {token(d): int(g) for d, g in qrels[q].items()} for q in qids}
    ranx_run = {q: ({token(d): float(len(docs) - r) for r, d in enumerate(docs)} or {none: 0.0})
                for q, docs in zip(qids, lists)}
    with ranx_lock():
        from ranx import Qrels, Run
        from ranx import evaluate as ranx_evaluate

        run = Run(ranx_run)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba's uint64 cast warning inside ranx
            ranx_evaluate(Qrels(ranx_qrels), run, list(metrics), make_comparable=True)
    return {m: np.array([run.scores[m][q] for q in qids], dtype=np.float64) for m in metrics}


def private_numba_cache() -> None:
    """Keep numba's compiled kernels in ``<hardneg cache>/numba`` (unless ``NUMBA_CACHE_DIR`` is set):
    one user's, never a shared site-packages folder. Call before numba is imported (the command
    line's entry point does); a library user may set ``NUMBA_CACHE_DIR`` themselves."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(default_cache_dir() / "numba"))


def _numba_cache_location() -> str:
    return os.environ.get("NUMBA_CACHE_DIR") or "ranx's __pycache__ folders"


@contextmanager
def ranx_lock() -> Iterator[None]:
    """An exclusive lock (``flock``) across this user's processes while ranx compiles, loads or runs."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: one process at a time is then the user's care
        yield
        return
    folder = Path(os.environ.get("NUMBA_CACHE_DIR") or default_cache_dir())
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "ranx.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
