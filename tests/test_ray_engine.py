"""The Ray engine (``--engine ray``) against the local engine, on a local 2-CPU Ray instance.

On the same vectors, the candidate set mined on Ray (exact top-k per uneven corpus shard,
merged) must be the local engine's exact search, to the byte: same Parquet file. The vectors
Ray embeds itself (a Ray Data job over the shards) equal the local ones to float tolerance:
batches are composed differently, which a CPU's kernels may round differently. The corpus
holds duplicated documents in different shards, so exact score ties cross shard boundaries
and the tie-break (lower corpus index first) is checked end to end.

Tests that need Ray skip where it is not installed; the option checks and the merge run
without it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hardneg.data import Dataset, load_dataset
from hardneg.encode import EncoderConfig
from hardneg.retrieve.ray_engine import check_options, merge_topk, shard_bounds
from hardneg.errors import HardnegError
from hardneg.mine import MineConfig, mine_candidates
from hardneg.retrieve.search import exact_topk

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scifact-sample"
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")  # Ray Data's own settings


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance with 2 CPUs, no dashboard; shut down after the module."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")  # the extra is ray[data]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def dataset_with_duplicates(n_queries: int = 24, n_docs: int = 101) -> Dataset:
    """SciFact sample texts: the first queries' positives, other abstracts, and 6 verbatim copies of
    early documents appended at the end (so a copy lives in another shard than its original)."""
    ds = load_dataset(SAMPLE)
    pos = ds.positives("train")
    qids = list(pos)[:n_queries]
    keep = dict.fromkeys(d for q in qids for d in pos[q])
    keep.update(dict.fromkeys(ds.doc_ids))
    docs = list(keep)[:n_docs]
    texts = [ds.doc_text(d) for d in docs]
    copies = [0, 3, 5, 10, 17, 30]
    ids, texts = docs + [f"copy-of-{docs[i]}" for i in copies], texts + [texts[i] for i in copies]
    return Dataset(ids, [""] * len(ids), texts, {q: ds.queries[q] for q in qids},
                   {"train": {q: {d: 1 for d in pos[q]} for q in qids}})


def corpus_vectors(cache: Path, n_docs: int) -> np.ndarray:
    """The corpus entry (``n_docs`` rows) among a cache folder's .npy files."""
    (path,) = [p for p in cache.rglob("*.npy") if np.load(p, mmap_mode="r").shape[0] == n_docs]
    return np.load(path)


def test_ray_candidates_equal_the_local_engines(ray_local, tiny_model_dir, tmp_path):
    ds = dataset_with_duplicates()  # 107 documents: 3 shards of 36, 35, 36
    encoder = EncoderConfig(model=str(tiny_model_dir), batch_size=8)
    mine = dict(retriever="hybrid", depth=20, query_chunk=10)  # BM25 stays local, dense goes to Ray
    local = mine_candidates(ds, MineConfig(**mine, search="exact"), encoder, cache=tmp_path / "cache-local")
    on_ray = mine_candidates(ds, MineConfig(**mine, engine="ray", ray_shards=3, ray_actors=1), encoder,
                             cache=tmp_path / "cache-ray")
    # the ray run embedded the corpus itself (its own, empty cache): corpus + query vectors stored
    assert len(list((tmp_path / "cache-ray").rglob("*.npy"))) == 2
    n_docs = len(ds.doc_ids)
    ray_vectors = corpus_vectors(tmp_path / "cache-ray", n_docs)
    # Ray's actors embed shard by shard, in other batches than the local run: equal to float tolerance
    # (bit-equal where the CPU's kernels compute a text alike whatever its batch, as this one's do)
    local_vectors = corpus_vectors(tmp_path / "cache-local", n_docs)
    np.testing.assert_allclose(ray_vectors, local_vectors, rtol=1e-5, atol=1e-6)
    assert on_ray.meta == local.meta
    if np.array_equal(ray_vectors, local_vectors):
        assert on_ray.table.equals(local.table)
    # the local engine on Ray's vectors (served from the cache, under the same key: nothing re-embedded)
    same_vectors = mine_candidates(ds, MineConfig(**mine, search="exact"), encoder, cache=tmp_path / "cache-ray")
    assert len(list((tmp_path / "cache-ray").rglob("*.npy"))) == 2

    table = on_ray.table
    copies = table[table.doc_id.str.startswith("copy-of-")]
    pairs = table.merge(copies.assign(doc_id=copies.doc_id.str.removeprefix("copy-of-")),
                        on=["query_id", "doc_id"], suffixes=("", "_copy")).dropna(subset=["rank_dense_copy"])
    assert len(pairs) > 0
    np.testing.assert_allclose(pairs.score_dense, pairs.score_dense_copy, rtol=1e-5, atol=1e-6)
    index = {d: i for i, d in enumerate(ds.doc_ids)}
    identical = np.array([np.array_equal(ray_vectors[index[d]], ray_vectors[index[f"copy-of-{d}"]])
                          for d in pairs.doc_id])
    tied = pairs[identical]  # a copy whose vector is bit-equal to its original's scores exactly the same
    assert (tied.score_dense == tied.score_dense_copy).all()  # real cross-shard ties
    assert (tied.rank_dense < tied.rank_dense_copy).all()  # the original (lower index) ranks first

    assert on_ray.meta == same_vectors.meta
    assert on_ray.table.equals(same_vectors.table)
    same_vectors.write(tmp_path / "local.parquet")
    on_ray.write(tmp_path / "ray.parquet")
    assert (tmp_path / "ray.parquet").read_bytes() == (tmp_path / "local.parquet").read_bytes()


def test_actor_udf_with_a_model_shipped_through_the_object_store(ray_local, tiny_model_dir):
    """A model passed in memory (e.g. just fine-tuned) reaches the actors as an ObjectRef; same vectors."""
    from sentence_transformers import SentenceTransformer

    from hardneg.encode import Encoder
    from hardneg.retrieve.ray_engine import _EncodeBatch

    model = SentenceTransformer(str(tiny_model_dir), device="cpu", local_files_only=True)
    config = EncoderConfig(batch_size=4)  # config.model unset: the shipped model must be the one used
    texts = ["a short one", "a somewhat longer text about proteins", "x", "cells", "more words here"]
    udf = _EncodeBatch(config, ray_local.put(model))
    out = udf({"i": np.array([7, 3, 1, 0, 9]), "text": np.array(texts, dtype=object)})
    assert out["i"].tolist() == [7, 3, 1, 0, 9]
    np.testing.assert_array_equal(out["emb"], Encoder(config, model=model, cache=None).encode_passages(texts))


def test_merge_topk_breaks_ties_by_lower_index():
    # query 0: shard A holds docs 0-2, shard B docs 3-5; score 0.5 appears in both shards
    a = (np.array([[2, 0], [1, 0]]), np.array([[0.5, 0.25], [0.9, 0.1]], dtype=np.float32))
    b = (np.array([[3, 5], [4, 5]]), np.array([[0.5, 0.5], [0.9, 0.2]], dtype=np.float32))
    indices, scores = merge_topk([b, a], 3)  # shard order does not matter
    assert indices.tolist() == [[2, 3, 5], [1, 4, 5]]
    assert scores.tolist() == [[0.5, 0.5, 0.5], [pytest.approx(0.9), pytest.approx(0.9), pytest.approx(0.2)]]
    assert merge_topk([a], 5)[0].tolist() == [[2, 0], [1, 0]]  # k beyond what the shards hold


def test_sharded_topk_equals_exact_topk_with_ties():
    rng = np.random.default_rng(0)
    corpus = rng.integers(-2, 3, size=(53, 4)).astype(np.float32)  # few distinct vectors: many exact ties
    queries = rng.integers(-2, 3, size=(9, 4)).astype(np.float32)
    want = exact_topk(queries, corpus, 10)
    bounds = shard_bounds(len(corpus), 4)
    assert [hi - lo for lo, hi in bounds] == [13, 13, 14, 13]  # uneven; contiguous, covering 0..53
    assert bounds[0][0] == 0 and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:])) and bounds[-1][1] == 53
    parts = [(i + lo, s) for lo, hi in bounds for i, s in [exact_topk(queries, corpus[lo:hi], 10)]]
    got = merge_topk(parts, 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_shard_bounds_cover_small_corpora():
    assert shard_bounds(2, 5) == [(0, 1), (1, 2)]
    assert shard_bounds(0, 3) == [(0, 0)]


def test_options_are_checked():
    with pytest.raises(HardnegError, match="--engine must be one of local, ray"):
        MineConfig(engine="spark")
    with pytest.raises(HardnegError, match="--search ivf needs --engine local"):
        MineConfig(engine="ray", search="ivf")
    with pytest.raises(HardnegError, match="--ray-shards must be >= 1"):
        MineConfig(engine="ray", ray_shards=0)
    check_options("local", "ivf", 2, 1)  # checked without Ray: the local engine never needs it


def test_ray_options_pass_where_ray_is_installed():
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    check_options("ray", "auto", 2, 1)
    check_options("ray", "exact")


def test_cli_refuses_an_approximate_search_on_ray(tmp_path):
    from typer.testing import CliRunner

    from hardneg.cli import app
    from toybeir import write_toy_beir

    toy = write_toy_beir(tmp_path / "beir")
    result = CliRunner().invoke(app, ["mine", "--data", str(toy), "--out", str(tmp_path / "out"), "--engine", "ray",
                                      "--search", "hnsw", "--ray-shards", "2"])
    assert result.exit_code == 2
    assert "--engine ray searches exactly (sharded top-k); --search hnsw needs --engine local" in result.output


def test_missing_ray_says_how_to_install(monkeypatch):
    from hardneg.retrieve import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(HardnegError, match=r"pip install 'hardneg\[ray\]'"):
        ray_engine.connect()
    with pytest.raises(HardnegError, match=r"pip install 'hardneg\[ray\]'"):  # before anything runs
        MineConfig(engine="ray")
    MineConfig(engine="local", ray_shards=4)  # the local engine never needs Ray
