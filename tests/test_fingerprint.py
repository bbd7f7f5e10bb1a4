"""The model fingerprint from a saved folder's files equals the one from the loaded model (one
definition, two readers), so warm runs never load a model and fine-tuned models keep theirs."""
from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
import torch

from hardneg.encode.cache import EmbeddingCache, memoised_texts_hashes, texts_hash
from hardneg.encode.fingerprint import folder_fingerprint, model_fingerprint
from hardneg.encode import Encoder, EncoderConfig, default_model_path
from hardneg.errors import HardnegError

TEXTS = ["first passage about cats", "second one, about dogs", "a third, longer passage " * 8]


def load(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if anything builds a SentenceTransformer."""
    from sentence_transformers import SentenceTransformer

    def refuse(self, *args, **kwargs):
        raise AssertionError("a SentenceTransformer was constructed")

    monkeypatch.setattr(SentenceTransformer, "__init__", refuse)


def test_files_and_memory_agree_for_the_bundled_minilm():
    files = folder_fingerprint(default_model_path())
    model = load(default_model_path())
    assert files is not None and files.fingerprint == model_fingerprint(model)
    assert files.max_seq_length == model.max_seq_length == 256
    assert files.content.mismatch(__import__("hardneg.encode.fingerprint", fromlist=["x"]).model_content(model)) is None


def test_files_and_memory_agree_for_a_tiny_model_before_and_after_a_training_step(tiny_model_dir, tmp_path):
    model = load(tiny_model_dir)
    before = folder_fingerprint(tiny_model_dir).fingerprint
    assert before == model_fingerprint(model)
    # one optimizer step, then save: the folder's files and the model in memory still agree
    model.train()
    features = model.preprocess(["a query about cats", "a passage about dogs"])
    loss = model(features)["sentence_embedding"].pow(2).sum()
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    trained = model_fingerprint(model)
    assert trained != before
    model.save(str(tmp_path / "trained"))
    files = folder_fingerprint(tmp_path / "trained")
    assert files.fingerprint == trained == model_fingerprint(load(tmp_path / "trained"))
    assert Encoder(EncoderConfig(model=str(tmp_path / "trained")), cache=None).fingerprint == trained
    assert Encoder(model=model, cache=None).fingerprint == trained


def test_a_changed_weight_or_pooling_mode_changes_the_file_fingerprint(tiny_model_dir, tmp_path):
    base = folder_fingerprint(tiny_model_dir).fingerprint
    flipped = tmp_path / "flipped"
    shutil.copytree(tiny_model_dir, flipped)
    weights = flipped / "model.safetensors"
    data = bytearray(weights.read_bytes())
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    data[8 + n + 100] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert folder_fingerprint(flipped).fingerprint not in (base, None)
    cls = tmp_path / "cls"
    shutil.copytree(tiny_model_dir, cls)
    config = json.loads((cls / "1_Pooling" / "config.json").read_text())
    (cls / "1_Pooling" / "config.json").write_text(json.dumps(config | {"pooling_mode": "cls"}))
    files = folder_fingerprint(cls)
    assert files.fingerprint != base and files.fingerprint == model_fingerprint(load(cls))


def test_a_pytorch_bin_folder_is_loaded_to_fingerprint_it(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    shutil.copytree(tiny_model_dir, tmp_path / "bin")  # the same weights as pytorch_model.bin
    torch.save(load_file(tmp_path / "bin" / "model.safetensors"), tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "model.safetensors").unlink()
    assert folder_fingerprint(tmp_path / "bin") is None
    enc = Encoder(EncoderConfig(model=str(tmp_path / "bin")), cache=None)
    assert not enc.loaded
    assert enc.fingerprint == folder_fingerprint(tiny_model_dir).fingerprint  # the same weights, read from memory
    assert enc.loaded


def test_a_model_without_weights_is_refused(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    empty = SentenceTransformer(modules=[Pooling(8)], device="cpu")
    with pytest.raises(HardnegError, match="no weights"):
        model_fingerprint(empty)
    empty.save(str(tmp_path / "empty"))
    assert folder_fingerprint(tmp_path / "empty") is None  # nothing to hash in the files either


def test_an_encoder_on_a_folder_loads_its_model_only_to_encode(tiny_model_dir, tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path)
    enc = Encoder(EncoderConfig(model=str(tiny_model_dir)), cache=cache)
    fp = enc.fingerprint
    assert not enc.loaded and enc.model_max_length == 64  # both read from the folder's files
    first = enc.encode_passages(TEXTS)  # a miss: loads the model
    assert enc.loaded and enc.fingerprint == fp and cache.misses == 1
    warm = Encoder(EncoderConfig(model=str(tiny_model_dir)), cache=cache)
    with monkeypatch.context() as m:
        from sentence_transformers import SentenceTransformer

        m.setattr(SentenceTransformer, "__init__", lambda *a, **k: pytest.fail("loaded a model on a cache hit"))
        np.testing.assert_array_equal(warm.encode_passages(TEXTS), first)
        assert warm.fingerprint == fp
    assert not warm.loaded and cache.hits == 1
    # weights changed in memory: the fingerprint follows them, not the files
    with torch.no_grad():
        next(p for n, p in warm.model.named_parameters() if "query.weight" in n)[0, 0] += 1.0
    assert warm.fingerprint != fp


def test_a_warm_mine_does_not_load_the_model(tiny_model_dir, tmp_path, monkeypatch):
    from hardneg.data import load_dataset
    from hardneg.mine import MineConfig, mine_candidates
    from toybeir import write_toy_beir

    ds = load_dataset(write_toy_beir(tmp_path / "toy"))
    enc = EncoderConfig(model=str(tiny_model_dir))
    cold = mine_candidates(ds, MineConfig(depth=8), enc, cache=tmp_path / "cache")
    from sentence_transformers import SentenceTransformer

    monkeypatch.setattr(SentenceTransformer, "__init__", lambda *a, **k: pytest.fail("a warm mine loaded the model"))
    warm = mine_candidates(ds, MineConfig(depth=8), enc, cache=tmp_path / "cache")
    assert warm.meta["models"] == cold.meta["models"]
    assert warm.table.equals(cold.table)


def test_texts_hashes_are_memoised_within_a_run_only_for_the_same_strings():
    texts = [f"document number {i}" for i in range(300)]
    digest = texts_hash(texts)
    calls = []
    with memoised_texts_hashes():
        assert texts_hash(texts) == digest
        import hardneg.encode.cache as cache

        real = cache.hashlib.sha256
        with pytest.MonkeyPatch.context() as m:
            m.setattr(cache.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
            assert texts_hash(list(texts)) == digest  # a new list of the same strings: memoised
            assert calls == []
            rebuilt = [f"document number {i}" for i in range(300)]
            assert texts_hash(rebuilt) == digest and calls == [1]  # equal, but other objects: hashed
            rebuilt[5] = "changed"
            assert texts_hash(rebuilt) != digest
    assert cache._TEXTS_MEMO.get() is None
