"""ANN search: recall measured like a hand count, recall on clustered data, auto choice, float16 cache key."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest

from hardneg.encode.cache import CACHE_FORMAT, CacheKey
from hardneg.errors import HardnegError
from hardneg.retrieve.ann import AUTO_THRESHOLD, AnnIndex, SearchConfig, build_index, recall_at_k, resolve_kind
from hardneg.retrieve.dense import DenseRetriever
from hardneg.retrieve.search import Search, exact_topk


def clustered(n: int, dim: int, n_clusters: int, seed: int, noise: float = 0.5) -> np.ndarray:
    """Unit vectors around random unit centres (a crude stand-in for text embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    x = centres[rng.integers(0, n_clusters, n)] + noise * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_top(queries: np.ndarray, corpus: np.ndarray, k: int) -> list[set[int]]:
    full = queries.astype(np.float64) @ corpus.astype(np.float64).T
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in full]


@pytest.fixture(scope="module")
def data20k():
    # noise as large as the centres: a query's top-50 spans several clusters, so the
    # default starting nprobe (nlist // 64) reaches only ~0.9 and tuning has work to do
    both = clustered(20_300, 48, 200, seed=3, noise=1.0)
    return both[:20_000], both[20_000:]  # corpus, queries from the same clusters


# ---- the recall kernel and its use at build time -----------------------------------------------
def test_recall_at_k_is_the_mean_overlap_fraction():
    approx = np.array([[1, 2, 3], [4, 5, 6], [7, -1, -1]])
    exact = np.array([[1, 2, 9], [6, 5, 4], [7, 8, 0]])
    # 2/3, 3/3 and 1/3 (faiss's -1 "no result" never counts)
    assert recall_at_k(approx, exact) == pytest.approx((2 / 3 + 1 + 1 / 3) / 3)
    assert np.isnan(recall_at_k(np.empty((0, 3)), np.empty((0, 3))))
    with pytest.raises(HardnegError):
        recall_at_k(approx[:2], exact)


def test_build_index_reports_the_recall_a_hand_count_gives():
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((2000, 16)).astype(np.float32)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    # nprobe fixed (no tuning) at 1 of 40 lists: clearly approximate; the sample covers all 50 queries
    config = SearchConfig(kind="ivf", nlist=40, nprobe=1, recall_sample=50)
    index, info = build_index(corpus, queries, 10, config)
    found = index.search(queries, 10)[0]
    truth = brute_top(queries, corpus, 10)
    by_hand = np.mean([len(set(row.tolist()) & t) / 10 for row, t in zip(found, truth)])
    assert info.recall_at_depth == pytest.approx(by_hand, abs=1e-6)
    assert 0.1 < info.recall_at_depth < 0.9  # a case where the measurement has something to measure
    assert info.recall_sample == 50 and not info.tuned and info.params["nprobe"] == 1
    assert info.to_meta()["recall_at_depth"] == info.recall_at_depth
    assert "build_seconds" not in info.to_meta()  # timings vary: kept out of the candidate metadata


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivf-sq8"])
def test_ann_recall_on_clustered_vectors(data20k, kind):
    corpus, queries = data20k
    index, info = build_index(corpus, queries, 50, SearchConfig(kind=kind, recall_sample=100, target_recall=0.95))
    assert info.kind == kind and info.tuned
    assert info.recall_at_depth >= 0.95, info
    if kind != "hnsw":
        assert info.params["nprobe"] > info.params["nlist"] // 64  # tuned up from the start
    idx, sc = index.search(queries, 50)
    truth = brute_top(queries, corpus, 50)
    assert np.mean([len(set(r.tolist()) & t) / 50 for r, t in zip(idx, truth)]) >= 0.9
    # scores are the exact dot products of the returned documents, best first
    ref = np.einsum("qd,qkd->qk", queries.astype(np.float64), corpus[idx].astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(sc, ref)
    assert np.all(np.diff(sc, axis=1) <= 0)


def test_rows_the_index_cannot_fill_are_completed_exactly():
    corpus = clustered(400, 8, 10, seed=1)
    queries = clustered(20, 8, 10, seed=2)
    index = AnnIndex.create(corpus, "ivf", SearchConfig(nlist=10, nprobe=1))
    idx, sc = index.search(queries, 150)  # more than one list holds: faiss pads with -1
    ref_i, ref_s = exact_topk(queries, corpus, 150)
    assert (idx >= 0).all() and all(len(set(r)) == 150 for r in idx.tolist())
    assert np.all(np.diff(sc, axis=1) <= 0)
    assert (idx == ref_i).all(axis=1).any()  # at least one row was redone by exact search


def test_same_seed_same_index_and_save_load_round_trip(data20k, tmp_path):
    corpus, queries = data20k
    corpus = corpus[:5000]
    a, info = build_index(corpus, queries, 20, SearchConfig(kind="ivf-sq8", recall_sample=50, seed=7))
    b, _ = build_index(corpus, queries, 20, SearchConfig(kind="ivf-sq8", recall_sample=50, seed=7))
    np.testing.assert_array_equal(a.search(queries, 20)[0], b.search(queries, 20)[0])
    a.save(tmp_path / "x.faiss", info)
    c, info_c = AnnIndex.load(tmp_path / "x.faiss", corpus)
    assert info_c.to_meta() == info.to_meta() and c.params == a.params
    np.testing.assert_array_equal(c.search(queries, 20)[0], a.search(queries, 20)[0])
    with pytest.raises(HardnegError, match="does not match"):
        AnnIndex.load(tmp_path / "x.faiss", corpus[:100])


def test_float16_memmap_corpus_is_searched_without_a_float32_copy_of_it(data20k, tmp_path):
    corpus, queries = data20k
    np.save(tmp_path / "c.npy", corpus.astype(np.float16))
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    idx, sc = exact_topk(queries[:30], mm, 10)
    _, info = build_index(mm, queries, 10, SearchConfig(kind="ivf", recall_sample=30))
    ref = exact_topk(queries[:30], corpus.astype(np.float16).astype(np.float32), 10)
    np.testing.assert_array_equal(idx, ref[0])
    assert info.recall_at_depth >= 0.9


# ---- choosing the kind -----------------------------------------------------------------------
def test_auto_is_exact_below_the_threshold_and_ivf_from_it():
    assert resolve_kind("auto", AUTO_THRESHOLD - 1) is Search.EXACT
    assert resolve_kind("auto", AUTO_THRESHOLD) is Search.IVF
    assert resolve_kind("auto", 50, threshold=50) is Search.IVF
    assert resolve_kind("hnsw", 10) is Search.HNSW  # an explicit kind is never overridden


def test_dense_retriever_auto_builds_an_ivf_index_past_the_threshold(tiny_encoder_words):
    encoder, docs, queries = tiny_encoder_words
    ids = [f"d{i}" for i in range(len(docs))]
    small = DenseRetriever(encoder, ids, docs, search="auto")
    assert small.search_mode is Search.EXACT
    big = DenseRetriever(encoder, ids, docs, search=SearchConfig(kind="auto", auto_threshold=100, recall_sample=20))
    assert big.search_mode is Search.IVF
    ranking = big.search([f"q{i}" for i in range(len(queries))], queries, 5)
    assert big.search_info.kind == "ivf" and big.search_info.recall_at_depth is not None
    exact = small.search([f"q{i}" for i in range(len(queries))], queries, 5)
    assert recall_at_k(ranking.indices, exact.indices) >= 0.8


def test_search_options_are_checked():
    with pytest.raises(HardnegError, match="search must be one of"):
        SearchConfig(kind="annoy")
    with pytest.raises(HardnegError, match="nprobe"):
        SearchConfig(nprobe=0)
    with pytest.raises(HardnegError, match="target_recall"):
        SearchConfig(target_recall=1.5)


# ---- float16 storage in the cache --------------------------------------------------------------
def test_float16_storage_is_part_of_the_cache_key_and_float32_keys_are_unchanged(tiny_encoder_words):
    key = CacheKey(model="m", prompt="", max_length=8, normalize=True, backend="torch", precision="fp32", texts="t")
    legacy = {"format": CACHE_FORMAT, **{k: v for k, v in asdict(key).items() if k != "storage"}}
    assert key.digest == hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()
    half = CacheKey(**(asdict(key) | {"storage": "float16"}))
    assert half.digest != key.digest

    encoder, docs, _ = tiny_encoder_words
    from hardneg.encode import Encoder, EncoderConfig

    f16 = Encoder(EncoderConfig(model=encoder.config.model, float16=True), model=encoder.model, cache=encoder.cache)
    full, half_vecs = encoder.encode_passages(docs), f16.encode_passages(docs)
    assert full.dtype == np.float32 and half_vecs.dtype == np.float16
    assert f16.encode_queries(docs[:2]).dtype == np.float32  # queries stay float32
    np.testing.assert_allclose(half_vecs.astype(np.float32), full, atol=2e-3)
    assert f16.cache_key(docs, "", None, "float16").digest != encoder.cache_key(docs, "", None).digest
    assert isinstance(half_vecs, np.memmap)  # served from the cache file, not held in memory


@pytest.fixture(scope="module")
def tiny_encoder_words(tiny_model_dir, tmp_path_factory):
    from hardneg.encode import Encoder, EncoderConfig

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    docs = [" ".join(rng.choice(words, 8)) for _ in range(300)]
    queries = [" ".join(rng.choice(words, 3)) for _ in range(40)]
    encoder = Encoder(EncoderConfig(model=str(tiny_model_dir)), cache=tmp_path_factory.mktemp("cache"))
    return encoder, docs, queries
