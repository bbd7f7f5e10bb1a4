"""The one result shape every retriever returns: a dense (queries x k) top-k table."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class Ranking:
    """Top-k results of one retriever for a list of queries.

    ``indices[i, j]`` is the position in ``doc_ids`` of the j-th best document for
    ``query_ids[i]`` (best first) and ``scores[i, j]`` its score. Every row has the same
    length ``k`` (at most the corpus size). Ids are strings everywhere.
    """

    query_ids: list[str]
    doc_ids: Sequence[str]
    indices: np.ndarray  # (Q, k) int64 into doc_ids
    scores: np.ndarray  # (Q, k) float32, non-increasing along each row

    def __post_init__(self) -> None:
        if self.indices.shape != self.scores.shape or self.indices.ndim != 2:
            raise ValueError(f"indices {self.indices.shape} and scores {self.scores.shape} must be equal (Q, k)")
        if self.indices.shape[0] != len(self.query_ids):
            raise ValueError("one row of indices per query id is required")

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def row(self, i: int) -> list[tuple[str, float]]:
        """The ranked (doc id, score) list of the i-th query."""
        return [(self.doc_ids[j], float(s)) for j, s in zip(self.indices[i], self.scores[i])]

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{query_id: {doc_id: score}}``, the shape ranx and TREC tools take."""
        return {q: dict(self.row(i)) for i, q in enumerate(self.query_ids)}

    def subset(self, query_ids: Sequence[str]) -> "Ranking":
        pos = {q: i for i, q in enumerate(self.query_ids)}
        rows = np.array([pos[q] for q in query_ids], dtype=np.int64)
        return Ranking(list(query_ids), self.doc_ids, self.indices[rows], self.scores[rows])

    def write_trec(self, path: str | Path, system: str) -> None:
        """Write a TREC run file (``qid Q0 docid rank score system``), atomically."""
        from hardneg.io import atomic_write_text

        lines = [
            f"{q} Q0 {d} {r} {s:.6f} {system}"
            for i, q in enumerate(self.query_ids)
            for r, (d, s) in enumerate(self.row(i), start=1)
        ]
        atomic_write_text(path, "\n".join(lines) + "\n")


class Retriever(Protocol):
    """Anything that ranks a fixed corpus for a batch of queries."""

    name: str

    def search(self, query_ids: Sequence[str], query_texts: Sequence[str], k: int) -> Ranking: ...
