"""Embedding cache: hits, misses on any change that alters vectors, file format; bundled MiniLM."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hardneg.encode.cache import CacheKey, EmbeddingCache, default_cache_dir, texts_hash
from hardneg.encode.fingerprint import model_fingerprint
from hardneg.encode import Encoder, EncoderConfig, default_model_path
from hardneg.errors import HardnegError

TEXTS = ["first passage about cats", "second one, about dogs", "a third, longer passage " * 8]


def tiny(tiny_model_dir, cache, **config) -> Encoder:
    return Encoder(EncoderConfig(model=str(tiny_model_dir), **config), cache=cache)


def some_weight(encoder: Encoder) -> torch.Tensor:
    """A transformer weight that changes the embeddings (layer 0 attention query)."""
    params = dict(encoder.model.named_parameters())
    return next(p for name, p in params.items() if "layer.0" in name and "query.weight" in name)


def test_second_encode_is_a_hit_and_returns_the_same_vectors(tiny_model_dir, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    enc = tiny(tiny_model_dir, cache)
    first = enc.encode_passages(TEXTS)
    assert (cache.hits, cache.misses) == (0, 1)
    second = enc.encode_passages(TEXTS)
    assert (cache.hits, cache.misses) == (1, 1)
    assert first.dtype == second.dtype == np.float32 and first.shape == (3, 32)
    np.testing.assert_array_equal(first, second)
    # a fresh encoder and cache object on the same folder (a new process) hits too
    other = EmbeddingCache(tmp_path)
    np.testing.assert_array_equal(tiny(tiny_model_dir, other).encode_passages(TEXTS), first)
    assert (other.hits, other.misses) == (1, 0)


def test_cached_vectors_equal_uncached_ones(tiny_model_dir, tmp_path) -> None:
    cached = tiny(tiny_model_dir, tmp_path).encode_queries(TEXTS)
    plain = tiny(tiny_model_dir, None).encode_queries(TEXTS)
    np.testing.assert_allclose(cached, plain, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, rtol=1e-5)


def test_perturbed_weight_is_a_miss(tiny_model_dir, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    enc = tiny(tiny_model_dir, cache)
    before_fp = enc.fingerprint
    before = enc.encode_passages(TEXTS)
    with torch.no_grad():
        some_weight(enc)[0, 0] += 0.5  # in place, as an optimizer step would
    assert enc.fingerprint != before_fp
    after = enc.encode_passages(TEXTS)
    assert (cache.hits, cache.misses) == (0, 2)
    assert not np.allclose(before, after)


def test_a_weight_that_does_not_change_vectors_still_changes_the_fingerprint(tiny_model_dir, tmp_path) -> None:
    enc = tiny(tiny_model_dir, None)
    before = model_fingerprint(enc.model)
    pooler = next(p for name, p in enc.model.named_parameters() if "pooler" in name)  # unused by mean pooling
    with torch.no_grad():
        pooler.view(-1)[0] += 1e-3
    assert model_fingerprint(enc.model) != before


def test_fingerprint_ignores_path_but_not_saved_weights(tiny_model_dir, tmp_path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(tiny_model_dir, moved)
    enc = tiny(tiny_model_dir, tmp_path / "cache")
    same = tiny(moved, tmp_path / "cache")
    assert same.fingerprint == enc.fingerprint  # the same weights under another path
    enc.encode_passages(TEXTS)
    same.encode_passages(TEXTS)
    assert same.cache.hits == 1
    # a saved, modified copy (e.g. a fine-tuned checkpoint) must not reuse the vectors
    with torch.no_grad():
        some_weight(same)[1, 1] -= 0.25
    tuned_dir = tmp_path / "tuned"
    same.model.save(str(tuned_dir))
    tuned = tiny(tuned_dir, tmp_path / "cache")
    assert tuned.fingerprint not in (enc.fingerprint, model_fingerprint(enc.model))
    tuned.encode_passages(TEXTS)
    assert (tuned.cache.hits, tuned.cache.misses) == (0, 1)


def test_data_edits_need_refresh(tiny_model_dir) -> None:
    enc = tiny(tiny_model_dir, None)
    before = enc.fingerprint
    some_weight(enc).data[0, 0] += 1.0  # .data bypasses torch's version counter
    assert enc.refresh_fingerprint() != before


@pytest.mark.parametrize(
    "change",
    [
        {"passage_prompt": "passage: "},
        {"passage_max_length": 8},
        {"normalize": False},
        {"precision": "bf16-weights"},
        {"precision": "autocast-bf16"},
    ],
)
def test_settings_that_change_vectors_are_misses(tiny_model_dir, tmp_path, change) -> None:
    cache = EmbeddingCache(tmp_path)
    base = tiny(tiny_model_dir, cache).encode_passages(TEXTS)
    changed = tiny(tiny_model_dir, cache, **change).encode_passages(TEXTS)
    assert (cache.hits, cache.misses) == (0, 2)
    assert changed.shape == base.shape and not np.array_equal(changed, base)


def test_text_order_and_query_vs_passage_prompts_are_separate_entries(tiny_model_dir, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    enc = tiny(tiny_model_dir, cache, query_prompt="query: ")
    enc.encode_passages(TEXTS)
    enc.encode_passages(TEXTS[::-1])
    enc.encode_queries(TEXTS)
    assert (cache.hits, cache.misses) == (0, 3)
    assert enc.model.max_seq_length == 64  # a temporary max length is restored


def test_entry_is_npy_plus_json_sidecar_without_pickle(tiny_model_dir, tmp_path) -> None:
    enc = tiny(tiny_model_dir, tmp_path, passage_max_length=16)
    vectors = enc.encode_passages(TEXTS)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert [p.suffix for p in files] == [".json", ".npy"]  # no pickle, no leftover temp file
    assert files[0].stem == files[1].stem
    meta = json.loads(files[0].read_text())
    assert meta["key"]["model"] == enc.fingerprint
    assert meta["key"]["max_length"] == 16 and meta["key"]["normalize"] is True
    assert meta["key"]["texts"] == texts_hash(TEXTS)
    assert meta["shape"] == [3, 32] and meta["dtype"] == "float32"
    assert files[1].read_bytes()[:6] == b"\x93NUMPY"
    np.testing.assert_array_equal(np.load(files[1], allow_pickle=False), vectors)


def test_damaged_entry_is_a_miss_and_is_rewritten(tiny_model_dir, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    enc = tiny(tiny_model_dir, cache)
    good = np.array(enc.encode_passages(TEXTS))  # a copy: the result is a memmap of the file damaged below
    (npy,) = tmp_path.rglob("*.npy")
    npy.write_bytes(npy.read_bytes()[:40])
    again = enc.encode_passages(TEXTS)
    assert (cache.hits, cache.misses) == (0, 2)
    np.testing.assert_allclose(again, good, rtol=1e-6)
    enc.encode_passages(TEXTS)
    assert cache.hits == 1


def test_cache_key_and_text_hash() -> None:
    key = CacheKey("m", "", 128, True, "torch", "fp32", texts_hash(["a", "b"]))
    assert texts_hash(["ab"]) != texts_hash(["a", "b"]) != texts_hash(["b", "a"])
    assert key.digest != CacheKey("m", "", 128, True, "torch", "fp16", key.texts).digest
    assert key.digest == CacheKey("m", "", 128, True, "torch", "fp32", texts_hash(["a", "b"])).digest


def test_cache_dir_from_env(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HARDNEG_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert EmbeddingCache().root == tmp_path / "c"
    assert EmbeddingCache(tmp_path / "x").root == tmp_path / "x"
    monkeypatch.delenv("HARDNEG_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "hardneg")


def test_bad_inputs_are_user_errors(tiny_model_dir, tmp_path) -> None:
    enc = tiny(tiny_model_dir, None)
    with pytest.raises(HardnegError):
        enc.encode_queries("a single string")
    assert enc.encode_queries([]).shape == (0, 32)
    with pytest.raises(HardnegError):
        EncoderConfig(precision="int3")
    with pytest.raises(HardnegError):
        Encoder(EncoderConfig(model=str(tmp_path / "not-there")), cache=None)


def test_wraps_an_already_loaded_model(tiny_model_dir, tmp_path) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), local_files_only=True, device="cpu")
    wrapped = Encoder(model=model, cache=tmp_path)
    loaded = tiny(tiny_model_dir, tmp_path)
    assert wrapped.model is model and wrapped.fingerprint == loaded.fingerprint
    np.testing.assert_array_equal(wrapped.encode_passages(TEXTS), loaded.encode_passages(TEXTS))


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return Encoder(EncoderConfig(), cache=None)


def test_bundled_minilm_loads_offline_with_unit_vectors(minilm) -> None:
    from pathlib import Path

    assert Path(default_model_path(), "model.safetensors").is_file()
    vectors = minilm.encode_passages(TEXTS)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_dense_scores_match_sentence_transformers_cos_sim(minilm) -> None:
    from sentence_transformers import SentenceTransformer, util

    from hardneg.retrieve.dense import DenseRetriever

    queries = ["what do cats eat", "python lists"]
    docs = ["Cats are carnivores and eat meat.", "A list in Python is mutable.", "The stock market fell."]
    ranking = DenseRetriever(minilm, ["a", "b", "c"], docs).search(["q1", "q2"], queries, k=3)
    reference = SentenceTransformer(default_model_path(), local_files_only=True, device="cpu")
    cos = util.cos_sim(reference.encode(queries), reference.encode(docs)).numpy()  # (2, 3), an independent cosine
    ours = np.take_along_axis(cos, ranking.indices, axis=1)
    np.testing.assert_allclose(ranking.scores, ours, atol=1e-5)
    assert ranking.indices[:, 0].tolist() == [0, 1]


def test_retrievers_use_the_default_cache_when_none_is_given(tiny_model_dir, monkeypatch, tmp_path):
    """`hardneg eval` / `mine` without --cache-dir must still cache (a second run never re-encodes)."""
    from hardneg.encode import EncoderConfig
    from hardneg.retrieve import build_retrievers

    monkeypatch.setenv("HARDNEG_CACHE", str(tmp_path / "default-cache"))
    r = build_retrievers(["dense"], ["d1"], ["some text"], EncoderConfig(model=str(tiny_model_dir)))["dense"]
    encoder = getattr(r, "inner", r).encoder
    assert encoder.cache is not None and str(tmp_path / "default-cache") in str(encoder.cache.root)
