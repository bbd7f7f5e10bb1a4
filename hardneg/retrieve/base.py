"""The one result shape every retriever returns (a dense (queries x k) top-k table) and what
the rest of hardneg may use of a retriever, declared once:

* :class:`Retriever`: a ``name`` and ``search`` (evaluation, fusion, chunk collapsing use no more);
* :class:`Scorer`: a retriever that also scores chosen (query, document) pairs, as mining does for
  every candidate row under every scorer (``score_docs``);
* :class:`DenseScorer`: a scorer over an embedded corpus, whose query vectors mining computes once
  and reuses for search, pair scores and positive cosines, whose index it builds (and checkpoints)
  before the first chunk, and whose encoder a run may swap for a model it holds.

``isinstance(r, Scorer)`` and ``isinstance(r, DenseScorer)`` check that the members exist without
evaluating them (a dense retriever's ``doc_embeddings`` would embed the corpus).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from hardneg.encode import Encoder
from hardneg.files import atomic_write_text
from hardneg.retrieve.ann import SearchInfo
from hardneg.retrieve.search import Search

__all__ = ["DenseScorer", "Ranking", "Retriever", "Scorer"]


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
        lines = [
            f"{q} Q0 {d} {r} {s:.6f} {system}"
            for i, q in enumerate(self.query_ids)
            for r, (d, s) in enumerate(self.row(i), start=1)
        ]
        atomic_write_text(path, "\n".join(lines) + "\n")


_MISSING = object()


class _DeclaredMembers(type(Protocol)):
    """isinstance against a protocol looks its members up statically, as Python 3.12 does.

    Python 3.10 and 3.11 test members with ``hasattr``, which runs properties: checking a dense
    retriever would embed its corpus (with whatever model it holds at that moment).
    """

    def __instancecheck__(cls, instance) -> bool:
        if not getattr(cls, "_is_protocol", False):
            return super().__instancecheck__(instance)
        return all(inspect.getattr_static(instance, m, _MISSING) is not _MISSING for m in protocol_members(cls))


def protocol_members(protocol: type) -> list[str]:
    """The members a protocol declares, its bases' included (annotated attributes and methods)."""
    names: dict[str, None] = {}
    for base in reversed(protocol.__mro__):
        if base is Protocol or not getattr(base, "_is_protocol", False) or base.__module__ == "typing":
            continue
        names.update(dict.fromkeys(vars(base).get("__annotations__", {})))
        names.update(dict.fromkeys(n for n in vars(base) if not n.startswith("_")))
    return list(names)


@runtime_checkable
class Retriever(Protocol, metaclass=_DeclaredMembers):
    """Anything that ranks a fixed corpus for a batch of queries; ``name`` is given at construction
    and names its system (columns, run files)."""

    name: str

    def search(self, query_ids: Sequence[str], query_texts: Sequence[str], k: int) -> Ranking: ...


@runtime_checkable
class Scorer(Retriever, Protocol):
    """A retriever that also scores given pairs: what mining needs of every scorer it runs."""

    def score_docs(self, query_text: str, doc_indices: np.ndarray) -> np.ndarray:
        """Float32 scores of one query against documents (positions in the corpus), like ``search``'s."""
        ...


@runtime_checkable
class DenseScorer(Scorer, Protocol):
    """A scorer over corpus embeddings; mining embeds each query once (``encoder``) and reuses the
    vectors for ``search_embeddings``, ``score_pairs`` and positive cosines (``doc_embeddings``).

    ``prepare`` builds (or loads from ``index_path``) an index kind's index before the first chunk;
    ``search_info`` says what it cost and its recall; ``search_mode`` is the resolved search kind
    (scores of an exact search's ranked rows are reused, not recomputed). A run that holds its own
    model sets ``encoder`` and calls ``reset`` (forget vectors and index).
    """

    encoder: "Encoder"
    search_mode: "Search"
    search_info: "SearchInfo"

    @property
    def doc_embeddings(self) -> np.ndarray: ...

    def prepare(self, query_embs: np.ndarray, k: int, index_path: str | Path | None = None) -> "SearchInfo": ...

    def reset(self) -> None: ...

    def search_embeddings(self, query_ids: Sequence[str], query_embs: np.ndarray, k: int) -> Ranking: ...

    def score_pairs(self, queries: Sequence[str] | np.ndarray, doc_indices: np.ndarray) -> np.ndarray: ...
