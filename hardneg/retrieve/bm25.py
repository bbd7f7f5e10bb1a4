"""BM25 with bm25s (Lucene variant by default): the baseline every tuned model must beat."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hardneg.retrieve.base import Ranking

__all__ = ["BM25Config", "BM25Retriever"]


@dataclass(frozen=True)
class BM25Config:
    """Defaults follow Lucene/Pyserini as used for BEIR: k1=1.2, b=0.75, English stemmer + stopwords."""

    k1: float = 1.2
    b: float = 0.75
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"


class BM25Retriever:
    """Lexical retrieval over a fixed corpus. Use it as the baseline and as a teacher whose
    mistakes differ from the dense model's. It satisfies :class:`~hardneg.retrieve.base.Scorer`;
    :meth:`with_name` gives it under another name over the same index."""

    def __init__(self, doc_ids: Sequence[str], doc_texts: Sequence[str], config: BM25Config = BM25Config(),
                 name: str = "bm25", show_progress: bool = False):
        import bm25s

        self.name, self.doc_ids, self.config, self._progress = name, list(doc_ids), config, show_progress
        self._stemmer = _make_stemmer(config.stemmer)
        self._bm25 = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
        self._bm25.index(self._tokenize(doc_texts), show_progress=show_progress)

    def with_name(self, name: str) -> "BM25Retriever":
        """This retriever under another name, over the same index (nothing is indexed again)."""
        view = copy.copy(self)
        view.name = name
        return view

    def _tokenize(self, texts: Sequence[str]):
        import bm25s

        return bm25s.tokenize(list(texts), stopwords=self.config.stopwords or [], stemmer=self._stemmer,
                              show_progress=self._progress, return_ids=False)

    def search(self, query_ids: Sequence[str], query_texts: Sequence[str], k: int) -> Ranking:
        k = min(k, len(self.doc_ids))
        tokens = self._tokenize(query_texts)
        idx, scores = self._bm25.retrieve(tokens, k=k, show_progress=self._progress, n_threads=1)
        idx, scores = _stable_order(np.asarray(idx, dtype=np.int64), np.asarray(scores, dtype=np.float32))
        return Ranking(list(query_ids), self.doc_ids, idx, scores)

    def score_docs(self, query_text: str, doc_indices: np.ndarray) -> np.ndarray:
        """BM25 scores of one query against chosen documents (e.g. positives below the depth)."""
        tokens = self._tokenize([query_text])[0]
        if not tokens:  # only stopwords: bm25s cannot score an empty query, every score is 0
            return np.zeros(len(np.atleast_1d(doc_indices)), dtype=np.float32)
        return self._bm25.get_scores(tokens)[np.asarray(doc_indices, dtype=np.int64)].astype(np.float32)


def _make_stemmer(language: str | None):
    if not language:
        return None
    import Stemmer

    return Stemmer.Stemmer(language).stemWords


def _stable_order(idx: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by score descending, ties by lower document index (deterministic)."""
    order = np.lexsort((idx, -scores), axis=-1)
    return np.take_along_axis(idx, order, 1), np.take_along_axis(scores, order, 1)
