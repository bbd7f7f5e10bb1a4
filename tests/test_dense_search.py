"""Exact chunked top-k against brute force, tie-breaking, faiss agreement, DenseRetriever."""
from __future__ import annotations

import numpy as np
import pytest

from hardneg.errors import HardnegError
from hardneg.retrieve.base import Ranking
from hardneg.retrieve.dense import DenseRetriever
from hardneg.retrieve.search import exact_topk, faiss_flat_topk, pair_scores

CHUNKS = [(1, 1), (3, 7), (5, 4), (16, 33), (64, 1000), (1024, 65536)]


def brute_force(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full score matrix (float64, rounded to float32), then a stable sort by (-score, index)."""
    full = (queries.astype(np.float64) @ corpus.astype(np.float64).T).astype(np.float32)  # (Q, N)
    idx = np.broadcast_to(np.arange(corpus.shape[0]), full.shape)
    order = np.lexsort((idx, -full), axis=-1)[:, :k]
    return order, np.take_along_axis(full, order, axis=1)


@pytest.mark.parametrize("query_chunk,corpus_chunk", CHUNKS)
def test_exact_topk_matches_brute_force_on_random_vectors(query_chunk: int, corpus_chunk: int) -> None:
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((37, 8)).astype(np.float32)
    corpus = rng.standard_normal((101, 8)).astype(np.float32)
    ref_i, ref_s = brute_force(queries, corpus, 10)
    idx, sc = exact_topk(queries, corpus, 10, query_chunk=query_chunk, corpus_chunk=corpus_chunk)
    assert idx.dtype == np.int64 and sc.dtype == np.float32
    assert idx.shape == sc.shape == (37, 10)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(sc, ref_s)
    assert np.all(np.diff(sc, axis=1) <= 0)
    # and a plain float32 product agrees up to rounding
    np.testing.assert_allclose(sc, np.take_along_axis(queries @ corpus.T, idx, axis=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("query_chunk,corpus_chunk", CHUNKS)
def test_duplicate_float_vectors_tie_exactly_whatever_the_chunking(query_chunk: int, corpus_chunk: int) -> None:
    rng = np.random.default_rng(6)
    base = rng.standard_normal((30, 24)).astype(np.float32)
    corpus = np.concatenate([base, base[::-1], base[5:9]])  # doc i duplicates doc 59 - i, ...
    queries = rng.standard_normal((11, 24)).astype(np.float32)
    ref_i, ref_s = brute_force(queries, corpus, 9)
    idx, sc = exact_topk(queries, corpus, 9, query_chunk=query_chunk, corpus_chunk=corpus_chunk)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(sc, ref_s)
    for row_i, row_s in zip(idx, sc):  # equal scores always list the lower index first
        for a in range(len(row_i) - 1):
            if row_s[a] == row_s[a + 1]:
                assert row_i[a] < row_i[a + 1]
    assert np.any(sc[:, :-1] == sc[:, 1:])  # the fixture really has ties inside the top-k


@pytest.mark.parametrize("query_chunk,corpus_chunk", CHUNKS)
def test_ties_are_broken_by_lower_corpus_index(query_chunk: int, corpus_chunk: int) -> None:
    rng = np.random.default_rng(1)
    # integer vectors in {-1, 0, 1}: scores are exact small integers with many ties
    queries = rng.integers(-1, 2, size=(29, 3)).astype(np.float32)
    base = rng.integers(-1, 2, size=(40, 3)).astype(np.float32)
    corpus = np.concatenate([base, base[::-1], base[:13]])  # plus exact duplicates
    ref_i, ref_s = brute_force(queries.astype(np.int64), corpus.astype(np.int64), 12)
    idx, sc = exact_topk(queries, corpus, 12, query_chunk=query_chunk, corpus_chunk=corpus_chunk)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(sc, ref_s.astype(np.float32))


def test_hand_worked_ties() -> None:
    corpus = np.array([[0, 1], [1, 0], [0, 1], [1, 0], [1, 0]], dtype=np.float32)
    query = np.array([[1, 0]], dtype=np.float32)
    for corpus_chunk in (1, 2, 3, 5):
        idx, sc = exact_topk(query, corpus, 2, corpus_chunk=corpus_chunk)
        assert idx.tolist() == [[1, 3]]
        assert sc.tolist() == [[1.0, 1.0]]
    idx, _ = exact_topk(query, corpus, 4, corpus_chunk=2)
    assert idx.tolist() == [[1, 3, 4, 0]]


def test_k_larger_than_corpus_returns_whole_corpus_ranked() -> None:
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((4, 5)).astype(np.float32)
    corpus = rng.standard_normal((6, 5)).astype(np.float32)
    idx, sc = exact_topk(queries, corpus, 50, corpus_chunk=4)
    ref_i, ref_s = brute_force(queries, corpus, 50)
    assert idx.shape == (4, 6)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(sc, ref_s, rtol=1e-6)


def test_degenerate_shapes_and_errors() -> None:
    corpus = np.eye(3, dtype=np.float32)
    idx, sc = exact_topk(corpus, corpus, 0)
    assert idx.shape == sc.shape == (3, 0)
    idx, sc = exact_topk(np.zeros((0, 3), np.float32), corpus, 2)
    assert idx.shape == (0, 2)
    idx, _ = exact_topk(corpus, np.zeros((0, 3), np.float32), 2)
    assert idx.shape == (3, 0)
    with pytest.raises(HardnegError):
        exact_topk(corpus, np.eye(4, dtype=np.float32), 2)


def test_memory_mapped_corpus(tmp_path) -> None:
    rng = np.random.default_rng(3)
    corpus = rng.standard_normal((50, 6)).astype(np.float32)
    queries = rng.standard_normal((7, 6)).astype(np.float32)
    np.save(tmp_path / "c.npy", corpus)
    mapped = np.load(tmp_path / "c.npy", mmap_mode="r")
    a = exact_topk(queries, mapped, 5, corpus_chunk=8)
    b = exact_topk(queries, corpus, 5)
    np.testing.assert_array_equal(a[0], b[0])


def test_faiss_flat_gives_same_topk_on_untied_data() -> None:
    rng = np.random.default_rng(4)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    corpus = rng.standard_normal((300, 16)).astype(np.float32)
    ei, es = exact_topk(queries, corpus, 15, corpus_chunk=64)
    fi, fs = faiss_flat_topk(queries, corpus, 15)
    # untied at the cut: the 15th and 16th scores lie far apart against float32 rounding (faiss's own
    # BLAS kernels round differently from the float64 products), so the same 15 on every CPU
    full = -np.sort(-(queries.astype(np.float64) @ corpus.astype(np.float64).T), axis=1)
    assert (full[:, 14] - full[:, 15]).min() > 1e-4
    assert fi.dtype == np.int64 and fs.dtype == np.float32 and fi.shape == (20, 15)
    assert [set(r) for r in fi] == [set(r) for r in ei]
    np.testing.assert_allclose(fs, es, rtol=1e-4, atol=1e-4)
    assert faiss_flat_topk(queries, corpus[:3], 15)[0].shape == (20, 3)


def test_pair_scores_matches_dot_products() -> None:
    rng = np.random.default_rng(5)
    q = rng.standard_normal((9, 4)).astype(np.float32)
    d = rng.standard_normal((12, 4)).astype(np.float32)
    pairs = rng.integers(0, 12, size=(9, 3))
    expected = np.array([[q[i] @ d[j] for j in row] for i, row in enumerate(pairs)])
    np.testing.assert_allclose(pair_scores(q, d, pairs, chunk=2), expected, rtol=1e-5)
    np.testing.assert_allclose(pair_scores(q, d, pairs[:, 0]), expected[:, 0], rtol=1e-5)


DOCS = [
    "the cat sat on the mat",
    "dogs chase cats in the park",
    "stock markets fell sharply today",
    "a recipe for tomato soup",
    "python is a programming language",
    "the mat was red and soft",
    "interest rates and inflation",
    "how to train a puppy",
    "soup with basil and garlic",
    "java and rust are languages too",
    "the cat sat on the mat",  # exact duplicate of doc 0: equal scores, lower index first
]
QUERIES = ["cat on a mat", "cooking soup", "programming languages", "economy news"]


@pytest.fixture()
def tiny_encoder(tiny_model_dir, tmp_path):
    from hardneg.encode import Encoder, EncoderConfig

    return Encoder(EncoderConfig(model=str(tiny_model_dir)), cache=tmp_path / "cache")


def test_dense_retriever_search_is_consistent_with_exact_topk(tiny_encoder) -> None:
    doc_ids = [f"d{i}" for i in range(len(DOCS))]
    retriever = DenseRetriever(tiny_encoder, doc_ids, DOCS, corpus_chunk=3)
    ranking = retriever.search(["q0", "q1", "q2", "q3"], QUERIES, k=5)
    assert isinstance(ranking, Ranking) and retriever.name == "dense"
    assert ranking.k == 5 and ranking.query_ids == ["q0", "q1", "q2", "q3"]
    assert np.all(np.diff(ranking.scores, axis=1) <= 0)
    q = tiny_encoder.encode_queries(QUERIES)
    idx, sc = exact_topk(q, retriever.doc_embeddings, 5)
    np.testing.assert_array_equal(ranking.indices, idx)
    np.testing.assert_array_equal(ranking.scores, sc)
    # the scores are the dot products of the pairs, also via score_pairs with texts or vectors
    np.testing.assert_array_equal(retriever.score_pairs(QUERIES, ranking.indices), ranking.scores)
    np.testing.assert_array_equal(retriever.score_pairs(q, ranking.indices[:, 0]), ranking.scores[:, 0])
    # duplicate docs 0 and 10 score the same; 0 always comes first
    whole = DenseRetriever(tiny_encoder, doc_ids, DOCS)
    full = whole.search(["q0"], QUERIES[:1], k=100)
    order = full.indices[0].tolist()
    assert len(order) == len(DOCS) and abs(order.index(10) - order.index(0)) == 1
    # the two copies sit at other rows of one encoding batch: their vectors are bit-equal where the
    # CPU's kernels compute a row alike wherever it sits (as they do here), else equal to rounding;
    # exact ties themselves are checked on every CPU by the tests on hand-made vectors above
    np.testing.assert_allclose(whole.doc_embeddings[10], whole.doc_embeddings[0], rtol=1e-5, atol=1e-6)
    if np.array_equal(whole.doc_embeddings[10], whole.doc_embeddings[0]):
        assert order.index(10) == order.index(0) + 1
        assert full.to_dict()["q0"]["d0"] == full.to_dict()["q0"]["d10"]


def test_dense_retriever_faiss_mode_agrees(tiny_encoder) -> None:
    doc_ids = [f"d{i}" for i in range(len(DOCS))]
    exact = DenseRetriever(tiny_encoder, doc_ids, DOCS).search(["a", "b", "c", "d"], QUERIES, k=3)
    flat = DenseRetriever(tiny_encoder, doc_ids, DOCS, search="faiss").search(["a", "b", "c", "d"], QUERIES, k=3)
    np.testing.assert_allclose(flat.scores, exact.scores, rtol=1e-5, atol=1e-6)
    with pytest.raises(HardnegError):
        DenseRetriever(tiny_encoder, doc_ids, DOCS, search="annoy")  # not a search kind
    with pytest.raises(HardnegError):
        DenseRetriever(tiny_encoder, doc_ids, DOCS[:-1])
