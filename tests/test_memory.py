"""Training that fits: the memory plan, the bounded (GradCache) path, and the precision modes."""
from __future__ import annotations

import numpy as np
import pytest

from hardneg.errors import HardnegError
from hardneg.memory import GB, activation_bytes, available_bytes, plan, rss_bytes
from hardneg.precision import machine_info, resolve_encode, resolve_train
from hardneg.train import TrainConfig, build_train_dataset, train
from hardneg.train.losses import build_loss

from test_train import FAST, toy_dataset, toy_rows


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu")


def _columns(n_neg: int = 3) -> dict[str, list[str]]:
    ds, _ = build_train_dataset(toy_rows(n_neg), n_neg)
    return {c: ds[c] for c in ds.column_names}


# ---- what the machine has -----------------------------------------------------------------------
def test_available_memory_is_at_most_memavailable():
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    mem_available = int(meminfo["MemAvailable"].split()[0]) * 1024
    mem_total = int(meminfo["MemTotal"].split()[0]) * 1024
    got = available_bytes()
    assert 0 < got <= mem_available * 1.05 and got < mem_total  # never MemTotal
    assert 10 * 2**20 < rss_bytes() < mem_total


# ---- the plan -----------------------------------------------------------------------------------
def test_activations_follow_the_transformer_formula(tiny):
    from hardneg.memory import ACTIVATION_FACTOR, _shape

    shape = _shape(tiny)
    assert shape == (2, 32, 2)  # the tiny BERT: 2 layers, hidden 32, 2 heads
    # per token and layer: factor x (34 x hidden + 5 x heads x L) bytes
    f = ACTIVATION_FACTOR["no"]
    assert activation_bytes(shape, 3, 10, "no") == int(3 * 10 * 2 * f * (34 * 32 + 5 * 2 * 10))
    # quadratic in length through attention, linear in sequences
    assert activation_bytes(shape, 6, 10, "no") == 2 * activation_bytes(shape, 3, 10, "no")
    assert activation_bytes(shape, 3, 20, "no") > 2 * activation_bytes(shape, 3, 10, "no")


def test_longest_text_is_measured_in_model_tokens(tiny):
    p = plan(tiny, {"anchor": ["a b c"], "positive": ["one two three four five six seven", "x"]}, loss="mnrl",
             batch_size=4, max_length=6, precision="no", mini_batch_size=None, memory_gb=None)
    # [CLS] a b c [SEP]; the positive is cut at max_length 6
    assert p.longest == {"anchor": 5, "positive": 6}


def test_auto_keeps_plain_mnrl_when_it_fits_and_caches_when_not(tiny):
    cols = _columns()
    small = plan(tiny, cols, loss="auto", batch_size=4, max_length=32, precision="no",
                 mini_batch_size=None, memory_gb=None)
    assert small.loss == "mnrl" and small.mini_batch_size is None
    # a batch of 4096 rows x 5 columns: the plain path's activations alone are GBs, a chunk's are MBs
    kw = dict(batch_size=4096, max_length=32, precision="no", mini_batch_size=None)
    plain_gb = plan(tiny, cols, loss="mnrl", memory_gb=None, **kw).estimate / GB
    cached = plan(tiny, cols, loss="cached-mnrl", memory_gb=None, **kw)
    assert plain_gb > cached.estimate / GB + 0.5
    budget = (plain_gb + cached.estimate / GB) / 2
    chosen = plan(tiny, cols, loss="auto", memory_gb=budget, **kw)
    assert chosen.loss == "cached-mnrl" and chosen.mini_batch_size == 8192 // max(chosen.longest.values())
    with pytest.raises(HardnegError, match=r"training would need about .* GB but .* lower --batch-size .*cached-mnrl"):
        plan(tiny, cols, loss="mnrl", memory_gb=budget, **kw)


def test_a_run_that_would_not_fit_is_refused_before_anything_is_written(tiny_model_dir, tmp_path):
    config = TrainConfig(max_steps=2, holdout_fraction=0.0, memory_gb=0.01, **FAST)
    with pytest.raises(HardnegError, match="training would need about"):
        train(toy_dataset(dev=False), toy_rows(), str(tiny_model_dir), tmp_path / "m", config)
    assert not (tmp_path / "m").exists()


def test_explicit_chunk_is_kept_and_bounds_the_estimate(tiny):
    cols = _columns()
    kw = dict(loss="cached-mnrl", batch_size=64, max_length=32, precision="no", memory_gb=None)
    two, eight = plan(tiny, cols, mini_batch_size=2, **kw), plan(tiny, cols, mini_batch_size=8, **kw)
    assert two.mini_batch_size == 2 and eight.mini_batch_size == 8 and two.estimate < eight.estimate


# ---- the bounded path computes the same gradients -----------------------------------------------
def _grads(model, loss, features, labels):
    model.zero_grad()
    loss(features, labels).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradcache_gradients_equal_the_plain_path(tiny_model_dir):
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.eval()  # no dropout: both paths see the same function
    model.max_seq_length = 32
    cols = _columns()
    n = 8
    features = [model.tokenize(cols[c][:n]) for c in cols]
    cfg = TrainConfig(**FAST)
    plain = build_loss(model, TrainConfig(loss="mnrl", **FAST), 3)
    from hardneg.memory import MemoryPlan

    chunked = build_loss(model, cfg, 3, memory=MemoryPlan("cached-mnrl", 3, 0, 0, 0, 0, {}))
    assert type(chunked).__name__ == "CachedMultipleNegativesRankingLoss" and chunked.mini_batch_size == 3
    g_plain = _grads(model, plain, features, torch.empty(0))
    g_cached = _grads(model, chunked, features, torch.empty(0))
    assert g_plain.keys() == g_cached.keys() and len(g_plain) > 10
    for name in g_plain:
        torch.testing.assert_close(g_cached[name], g_plain[name], rtol=1e-4, atol=1e-6, msg=name)
    assert max(float(g.abs().max()) for g in g_plain.values()) > 1e-4  # the gradients are not all zero


# ---- precision ----------------------------------------------------------------------------------
def test_precision_resolution(monkeypatch):
    monkeypatch.setenv("HARDNEG_AUTO_PRECISION", "fp32")
    assert resolve_train("auto", cuda=False) == "no" and resolve_encode("auto") == "fp32"
    monkeypatch.setenv("HARDNEG_AUTO_PRECISION", "bf16")
    assert resolve_train("auto", cuda=False) == "bf16" and resolve_encode("auto") == "autocast-bf16"
    assert resolve_encode("auto", backend="onnx") == "fp32"  # ONNX Runtime has its own kernels
    assert resolve_train("no", cuda=False) == "no" and resolve_encode("fp32") == "fp32"  # explicit wins
    with pytest.raises(HardnegError, match="fp16 needs a CUDA GPU"):
        resolve_train("fp16", cuda=False)
    monkeypatch.setenv("HARDNEG_AUTO_PRECISION", "fp8")
    with pytest.raises(HardnegError, match="HARDNEG_AUTO_PRECISION must be fp32 or bf16"):
        resolve_encode("auto")
    monkeypatch.delenv("HARDNEG_AUTO_PRECISION")
    info = machine_info()
    assert resolve_train("auto", cuda=False) == ("bf16" if info["amx_bf16"] else "no")
    assert set(info) >= {"cpu", "amx_bf16", "avx512_bf16", "cpu_capability"}


def test_bf16_trains_on_any_cpu_and_fp16_is_refused(tiny_model_dir, tmp_path):
    config = TrainConfig(max_steps=2, holdout_fraction=0.0, mixed_precision="bf16", **FAST)
    res = train(toy_dataset(dev=False), toy_rows(), str(tiny_model_dir), tmp_path / "m", config)
    assert res.precision == "bf16" and len(res.losses) == 2 and all(np.isfinite(x) for _, x in res.losses)
    assert "Precision: bf16 on" in (tmp_path / "m" / "README.md").read_text()
    with pytest.raises(HardnegError, match="fp16 needs a CUDA GPU"):
        train(toy_dataset(dev=False), toy_rows(), str(tiny_model_dir), tmp_path / "f",
              TrainConfig(max_steps=1, holdout_fraction=0.0, mixed_precision="fp16", **FAST))


def test_encoder_precisions_are_keyed_apart(tiny_model_dir, tmp_path):
    from hardneg.encode import Encoder, EncoderConfig

    docs = [f"document number {i} about topic {i % 3}" for i in range(12)]
    vecs, keys = {}, {}
    for mode in ("auto", "fp32", "autocast-bf16", "bf16-weights"):
        enc = Encoder(EncoderConfig(model=str(tiny_model_dir), precision=mode), cache=tmp_path / "cache")
        vecs[mode], keys[mode] = enc.encode_passages(docs), enc.cache_key(docs, "", None)
    assert keys["auto"] == keys["fp32"]  # the key holds the resolved mode (fp32 in the tests)
    assert len({k.digest for k in keys.values()}) == 3
    np.testing.assert_array_equal(vecs["auto"], vecs["fp32"])
    for mode in ("autocast-bf16", "bf16-weights"):
        cos = (vecs[mode] * vecs["fp32"]).sum(axis=1)
        assert vecs[mode].dtype == np.float32 and cos.min() > 0.99, (mode, cos.min())
        assert not np.array_equal(vecs[mode], vecs["fp32"])
