"""Hybrid retrieval by reciprocal rank fusion (RRF) of several retrievers."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from hardneg.errors import HardnegError
from hardneg.retrieve.base import Ranking, Retriever

__all__ = ["HybridRetriever", "rrf"]


def rrf(rankings: Sequence[Ranking], k: int, rrf_k: int = 60, depth: int | None = None) -> Ranking:
    """Fuse rankings over the same queries and corpus: score(d) = sum 1 / (rrf_k + rank(d)).

    Cormack et al. (2009) use rrf_k = 60. Ties are broken by lower document index.
    """
    first = rankings[0]
    n_q = len(first.query_ids)
    rows_idx, rows_score = [], []
    for i in range(n_q):
        fused: dict[int, float] = {}
        for r in rankings:
            if r.query_ids[i] != first.query_ids[i]:
                raise ValueError("rankings must list the same queries in the same order")
            cols = r.indices[i] if depth is None else r.indices[i, :depth]
            for rank, j in enumerate(cols.tolist(), start=1):
                fused[j] = fused.get(j, 0.0) + 1.0 / (rrf_k + rank)
        items = sorted(fused.items(), key=lambda t: (-t[1], t[0]))[:k]
        rows_idx.append([j for j, _ in items])
        rows_score.append([s for _, s in items])
    width = min(len(r) for r in rows_idx) if rows_idx else 0
    idx = np.array([r[:width] for r in rows_idx], dtype=np.int64).reshape(n_q, width)
    scores = np.array([r[:width] for r in rows_score], dtype=np.float32).reshape(n_q, width)
    return Ranking(list(first.query_ids), first.doc_ids, idx, scores)


class HybridRetriever:
    """RRF of any retrievers (``build_retrievers``'s ``hybrid``: BM25 + dense): robust when neither
    dominates. Each one ranks the top ``max(k, depth)``; ``fuse`` fuses rankings already made (mining
    searches its scorers once and fuses their top-``depth`` lists)."""

    def __init__(self, scorers: Sequence[Retriever], name: str = "hybrid", rrf_k: int = 60, depth: int = 1000):
        if not scorers:
            raise HardnegError(f"hybrid retriever '{name}' needs at least one retriever to fuse")
        self.scorers, self.name, self.rrf_k, self.depth = list(scorers), name, rrf_k, depth

    def search(self, query_ids: Sequence[str], query_texts: Sequence[str], k: int) -> Ranking:
        return self.fuse([r.search(query_ids, query_texts, max(k, self.depth)) for r in self.scorers], k)

    def fuse(self, rankings: Sequence[Ranking], k: int) -> Ranking:
        """RRF of ``rankings``, one per scorer in ``scorers``' order, over the same queries."""
        if len(rankings) != len(self.scorers):
            raise HardnegError(f"{len(rankings)} rankings for the {len(self.scorers)} scorers of '{self.name}'")
        return rrf(rankings, k, self.rrf_k)
