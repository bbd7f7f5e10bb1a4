"""How a corpus's vectors are searched: the kinds (:class:`Search`) and exact top-k by dot product.

:func:`exact_topk` is the default search: exact, deterministic and chunked over both
queries and corpus, so memory is bounded by ``query_chunk x corpus_chunk`` scores and
never grows with queries x corpus. Use :func:`faiss_flat_topk` (``search="faiss"``) when
faiss's multithreaded BLAS is faster on your machine; it gives the same top-k on untied
scores but does not promise an order among exactly tied ones. For big corpora the ANN kinds
(``ivf``, ``hnsw``, ``ivf-sq8``, or ``auto``) build their index in :mod:`hardneg.retrieve.ann`.
"""
from __future__ import annotations

from enum import Enum

import numpy as np

from hardneg.errors import HardnegError

__all__ = ["Search", "exact_topk"]


class Search(str, Enum):
    """How :class:`DenseRetriever` searches the corpus embeddings."""

    EXACT = "exact"  # chunked numpy, deterministic ties
    FAISS = "faiss"  # faiss IndexFlatIP, exact scores
    IVF = "ivf"  # faiss IVF-Flat: approximate, recall measured at build time
    HNSW = "hnsw"  # faiss HNSW-Flat graph: approximate, recall measured
    IVF_SQ8 = "ivf-sq8"  # IVF over 8-bit scalar-quantised codes: 1/4 of the memory
    AUTO = "auto"  # exact below hardneg.retrieve.ann.AUTO_THRESHOLD documents, else IVF


def _check_pair(queries: np.ndarray, corpus: np.ndarray, k: int) -> None:
    if queries.ndim != 2 or corpus.ndim != 2:
        raise HardnegError(f"queries {queries.shape} and corpus {corpus.shape} must both be 2-D")
    if queries.shape[1] != corpus.shape[1]:
        raise HardnegError(f"query dim {queries.shape[1]} differs from corpus dim {corpus.shape[1]}")
    if k < 0:
        raise HardnegError(f"k must be non-negative, not {k}")


def _sort_rows(indices: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by score descending, equal scores by lower index; keep the first k."""
    order = np.lexsort((indices, -scores), axis=-1)[:, :k]
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _block_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Column positions of the k best scores per row (unordered); at the cut, lower columns win.

    ``np.argpartition`` picks arbitrarily among values tied with the k-th best, so rows
    where such ties straddle the cut are redone one by one (rare for real embeddings).
    """
    rows, n = scores.shape
    if k == 0:
        return np.empty((rows, 0), dtype=np.int64)
    if k >= n:
        return np.broadcast_to(np.arange(n, dtype=np.int64), (rows, n)).copy()
    picked = np.empty((rows, k), dtype=np.int64)
    for r0 in range(0, rows, 128):  # argpartition's int64 output is 2x the scores: keep it small
        picked[r0 : r0 + 128] = np.argpartition(scores[r0 : r0 + 128], n - k, axis=1)[:, n - k :]
    kth = np.take_along_axis(scores, picked, axis=1).min(axis=1, keepdims=True)  # (rows, 1)
    n_above = np.count_nonzero(scores > kth, axis=1)
    n_tied = np.count_nonzero(scores == kth, axis=1)
    for r in np.flatnonzero(n_above + n_tied > k):
        above = np.flatnonzero(scores[r] > kth[r])
        tied = np.flatnonzero(scores[r] == kth[r])[: k - above.size]
        picked[r] = np.concatenate([above, tied])
    return picked


def scores_block(q64: np.ndarray, corpus_block: np.ndarray, sub: int = 8192) -> np.ndarray:
    """``q64 @ corpus_block.T`` accumulated in float64, rounded to float32; (qc, cc).

    float32 BLAS results can depend on a column's position within the matrix (kernel
    blocking), so two identical documents can score one ulp apart and the order would change
    with the chunk sizes. Rounding a float64 product makes a score a function of the two
    vectors alone. Column sub-blocks keep the float64 buffer at ``qc x sub``.
    """
    out = np.empty((q64.shape[0], corpus_block.shape[0]), dtype=np.float32)
    for s in range(0, corpus_block.shape[0], sub):
        out[:, s : s + sub] = q64 @ np.asarray(corpus_block[s : s + sub], dtype=np.float64).T
    return out


def exact_topk(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    query_chunk: int = 1024,
    corpus_chunk: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product, chunked over queries and corpus.

    Returns ``(indices int64 (Q, k'), scores float32 (Q, k'))`` with ``k' = min(k, N)``,
    best first. Ties are deterministic: equal scores are ordered by lower corpus index,
    whatever the chunk sizes; scores are float64 dot products rounded to float32, so
    identical documents get identical scores. Peak extra memory is about
    ``query_chunk x corpus_chunk`` float32 scores (256 MiB at the defaults) plus
    ``query_chunk x 8192`` float64 (64 MiB); it never grows with Q x N. Works on
    memory-mapped inputs.
    """
    _check_pair(queries, corpus, k)
    if query_chunk < 1 or corpus_chunk < 1:
        raise HardnegError("query_chunk and corpus_chunk must be at least 1")
    n_queries, n_docs = queries.shape[0], corpus.shape[0]
    k = min(k, n_docs)
    indices = np.empty((n_queries, k), dtype=np.int64)
    scores = np.empty((n_queries, k), dtype=np.float32)
    for q0 in range(0, n_queries, query_chunk):
        q = np.asarray(queries[q0 : q0 + query_chunk], dtype=np.float64)  # (qc, d)
        best_i = np.empty((q.shape[0], 0), dtype=np.int64)
        best_s = np.empty((q.shape[0], 0), dtype=np.float32)
        for c0 in range(0, n_docs, corpus_chunk):
            block = scores_block(q, corpus[c0 : c0 + corpus_chunk])  # (qc, cc) float32
            cols = _block_topk(block, k)  # (qc, <=k)
            cand_i = np.concatenate([best_i, cols + c0], axis=1)
            cand_s = np.concatenate([best_s, np.take_along_axis(block, cols, axis=1)], axis=1)
            best_i, best_s = _sort_rows(cand_i, cand_s, k)
        indices[q0 : q0 + q.shape[0]] = best_i
        scores[q0 : q0 + q.shape[0]] = best_s
    return indices, scores


def faiss_flat_topk(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product with faiss ``IndexFlatIP``; same return shapes as :func:`exact_topk`.

    Rows are re-sorted by (score desc, index asc), but which of several documents tied at
    the k-th score makes the cut is up to faiss.
    """
    import faiss

    _check_pair(queries, corpus, k)
    k = min(k, corpus.shape[0])
    if k == 0 or queries.shape[0] == 0:
        return np.empty((queries.shape[0], k), dtype=np.int64), np.empty((queries.shape[0], k), dtype=np.float32)
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(np.ascontiguousarray(corpus, dtype=np.float32))
    scores, indices = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return _sort_rows(indices.astype(np.int64), scores.astype(np.float32), k)


def pair_scores(
    query_embs: np.ndarray, doc_embs: np.ndarray, doc_indices: np.ndarray, chunk: int = 4096
) -> np.ndarray:
    """Dot products of query i with the documents ``doc_indices[i]``; same shape as ``doc_indices``.

    ``doc_indices`` is (Q,) for one document per query or (Q, m) for m per query. Use it to
    score given (query, candidate) pairs, e.g. a positive against mined negatives.
    Chunked over queries, so memory stays near ``min(chunk x m x dim, 2M)`` float64 values.

    Scores are computed like :func:`exact_topk` (float64, rounded to float32), so they equal
    the scores a ranking reported for the same pairs.
    """
    doc_indices = np.asarray(doc_indices, dtype=np.int64)
    if doc_indices.ndim not in (1, 2) or doc_indices.shape[0] != query_embs.shape[0]:
        raise HardnegError(f"doc_indices {doc_indices.shape} must be (Q,) or (Q, m) with Q={query_embs.shape[0]}")
    flat = doc_indices.reshape(doc_indices.shape[0], -1)  # (Q, m)
    out = np.empty(flat.shape, dtype=np.float32)
    # at most ~2M gathered float64 values (16 MiB) at a time: big buffers are slower, not only bigger
    chunk = max(1, min(chunk, (1 << 21) // max(1, flat.shape[1] * query_embs.shape[1])))
    for s in range(0, flat.shape[0], chunk):
        q = np.asarray(query_embs[s : s + chunk], dtype=np.float64)  # (c, d)
        d = np.asarray(doc_embs[flat[s : s + chunk]], dtype=np.float64)  # (c, m, d)
        out[s : s + chunk] = np.einsum("cd,cmd->cm", q, d)
    return out.reshape(doc_indices.shape)
