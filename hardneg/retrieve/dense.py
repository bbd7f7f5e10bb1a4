"""Dense retrieval: embed with an :class:`~hardneg.encode.Encoder`, rank by dot product.

:class:`DenseRetriever` searches its corpus vectors exactly (:mod:`hardneg.retrieve.search`:
:func:`~hardneg.retrieve.search.exact_topk`, faiss flat) or through an ANN index
(:mod:`hardneg.retrieve.ann`: ``ivf``, ``hnsw``, ``ivf-sq8``, ``auto``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from hardneg.encode import Encoder
from hardneg.errors import HardnegError
from hardneg.retrieve.ann import AnnIndex, SearchConfig, SearchInfo, build_index, resolve_kind
from hardneg.retrieve.base import Ranking
from hardneg.retrieve.search import Search, exact_topk, pair_scores

__all__ = ["DenseRetriever"]


class _Shared:
    """What the views of one dense retriever share (:meth:`DenseRetriever.with_name`): the encoder,
    the corpus vectors, the index and its :class:`~hardneg.retrieve.ann.SearchInfo` (and whatever
    a subclass keeps beside them)."""

    def __init__(self, encoder: "Encoder"):
        self.encoder, self.doc_embeddings, self.index, self.search_info = encoder, None, None, None


def _shared_attr(attr: str) -> property:
    """An attribute kept in the retriever's :class:`_Shared` state, so every view sees one value."""
    return property(lambda self: getattr(self._shared, attr), lambda self, value: setattr(self._shared, attr, value),
                    doc=f"``{attr}``, shared by every view of this retriever (see ``with_name``)")


class DenseRetriever:
    """Rank a fixed corpus by embedding dot product (cosine when the encoder normalises).

    The corpus is embedded lazily on first use, once, through the encoder's cache (a cached
    corpus is a read-only memmap: search reads it block by block). Use ``doc_embeddings`` or
    :meth:`score_pairs` to score arbitrary (query, document) pairs with the same vectors the
    ranking used. ``search`` is a :class:`Search` kind or a
    :class:`~hardneg.retrieve.ann.SearchConfig`; index kinds are built on the first search
    (or by :meth:`prepare`) and ``search_info`` then says what they cost and their recall.
    :meth:`with_name` gives the same retriever under another name (one encoder, one set of
    vectors, one index). It satisfies :class:`~hardneg.retrieve.base.DenseScorer`.
    """

    encoder = _shared_attr("encoder")
    index = _shared_attr("index")  # an AnnIndex once built (index kinds only)
    search_info = _shared_attr("search_info")
    _doc_embeddings = _shared_attr("doc_embeddings")

    def __init__(
        self,
        encoder: "Encoder",
        doc_ids: Sequence[str],
        doc_texts: Sequence[str],
        name: str = "dense",
        search: "Search | str | SearchConfig" = Search.EXACT,
        query_chunk: int = 1024,
        corpus_chunk: int = 65536,
    ):
        if len(doc_ids) != len(doc_texts):
            raise HardnegError(f"{len(doc_ids)} doc ids but {len(doc_texts)} doc texts")
        self.search_config = search if isinstance(search, SearchConfig) else SearchConfig(kind=search)
        self.search_mode = resolve_kind(self.search_config.kind, len(doc_ids), self.search_config.auto_threshold)
        self._shared = _Shared(encoder)
        self.doc_ids = list(doc_ids)
        self.doc_texts = doc_texts
        self.name = name
        self.query_chunk, self.corpus_chunk = query_chunk, corpus_chunk
        self.search_info = SearchInfo(kind=self.search_mode.value)

    def with_name(self, name: str) -> "DenseRetriever":
        """This retriever under another name: a view sharing its encoder, vectors and index (a model
        set on one, an index built by one, is the other's too)."""
        view = copy.copy(self)
        view.name = name
        return view

    @property
    def doc_embeddings(self) -> np.ndarray:
        """(N, dim) passage embeddings (float32, or float16 when the encoder stores float16),
        row i for ``doc_ids[i]``; computed on first access."""
        if self._doc_embeddings is None:
            self._doc_embeddings = self.encoder.encode_passages(list(self.doc_texts))
        return self._doc_embeddings

    def reset(self) -> None:
        """Forget the corpus vectors and the index (after the encoder's model changed)."""
        self._doc_embeddings, self.index = None, None
        self.search_info = SearchInfo(kind=self.search_mode.value)

    def prepare(self, query_embs: np.ndarray, k: int, index_path: "str | Path | None" = None):
        """Build the index for an index kind and measure its recall@k on a sample of ``query_embs``.

        With ``index_path``, an index saved there is loaded instead (with the recall it measured)
        and a new one is saved there: a resumed mining run reuses the very same index. Exact
        kinds need nothing. Returns :attr:`search_info`.
        """
        if self.search_mode is Search.EXACT or self.index is not None:
            return self.search_info
        if index_path is not None and AnnIndex.exists(index_path):
            self.index, info = AnnIndex.load(index_path, self.doc_embeddings)
            self.search_info = info or self.search_info
            self.search_info.build_seconds = self.search_info.recall_seconds = 0.0  # loaded, not built
            return self.search_info
        config = replace(self.search_config, kind=self.search_mode)
        self.index, self.search_info = build_index(self.doc_embeddings, query_embs, k, config)
        if index_path is not None:
            self.index.save(index_path, self.search_info)
        return self.search_info

    def search(self, query_ids: Sequence[str], query_texts: Sequence[str], k: int) -> Ranking:
        """Embed the queries and return their top-k documents."""
        if len(query_ids) != len(query_texts):
            raise HardnegError(f"{len(query_ids)} query ids but {len(query_texts)} query texts")
        return self.search_embeddings(query_ids, self.encoder.encode_queries(list(query_texts)), k)

    def search_embeddings(self, query_ids: Sequence[str], query_embs: np.ndarray, k: int) -> Ranking:
        """Top-k for queries already embedded (e.g. shared between retrievers)."""
        start = time.perf_counter()
        if self.search_mode is Search.EXACT:
            indices, scores = exact_topk(query_embs, self.doc_embeddings, k, self.query_chunk, self.corpus_chunk)
        else:
            self.prepare(query_embs, k)
            indices, scores = self.index.search(query_embs, k, self.search_config.query_chunk)
        self.search_info.search_seconds += time.perf_counter() - start
        return Ranking([str(q) for q in query_ids], self.doc_ids, indices, scores)

    def score_pairs(self, queries: Sequence[str] | np.ndarray, doc_indices: np.ndarray) -> np.ndarray:
        """Scores of query i with documents ``doc_indices[i]`` ((Q,) or (Q, m) positions in ``doc_ids``).

        ``queries`` is a list of query texts (embedded with the query settings) or a (Q, dim)
        array of query embeddings.
        """
        embs = queries if isinstance(queries, np.ndarray) else self.encoder.encode_queries(list(queries))
        return pair_scores(embs, self.doc_embeddings, doc_indices)

    def score_docs(self, query_text: str, doc_indices: np.ndarray) -> np.ndarray:
        """Scores of one query against documents ``doc_indices`` (positions in ``doc_ids``), same shape."""
        doc_indices = np.asarray(doc_indices, dtype=np.int64)
        return self.score_pairs([query_text], doc_indices.reshape(1, -1)).reshape(doc_indices.shape)
