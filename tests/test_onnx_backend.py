"""The onnx and int8 encoder backends: same embeddings as torch (fp32 exactly, int8 closely),
exported once per weights, and kept apart from torch's in the cache."""
from __future__ import annotations

import numpy as np
import pytest

from hardneg.encode import Encoder, EncoderConfig
from hardneg.errors import HardnegError

TEXTS = [
    "Type 1 diabetes is an autoimmune disease of the pancreas.",
    "Type 2 diabetes is linked to insulin resistance and obesity in adults and, increasingly, children.",
    "Immunoglobulin G antibodies cross the placenta.",
    "short",
    "A much longer passage " * 30,
]


@pytest.fixture(scope="module")
def torch_vectors(tiny_model_dir):
    return Encoder(EncoderConfig(model=str(tiny_model_dir)), cache=None).encode_passages(TEXTS)


def test_onnx_fp32_matches_torch(tiny_model_dir, torch_vectors, tmp_path):
    enc = Encoder(EncoderConfig(model=str(tiny_model_dir), backend="onnx", batch_size=2), cache=tmp_path)
    got = enc.encode_passages(TEXTS)
    np.testing.assert_allclose(got, torch_vectors, atol=1e-4)
    assert (tmp_path / "onnx" / enc.fingerprint / "model.onnx").is_file()


def test_int8_is_close_and_order_preserved(tiny_model_dir, torch_vectors, tmp_path):
    enc = Encoder(EncoderConfig(model=str(tiny_model_dir), backend="int8", batch_size=2), cache=tmp_path)
    got = enc.encode_passages(TEXTS)
    cos = (got * torch_vectors).sum(1)
    assert cos.min() > 0.95, cos
    # each text is closest to its own fp32 vector: order survives the length sort inside
    assert (np.argmax(got @ torch_vectors.T, axis=1) == np.arange(len(TEXTS))).all()
    assert not np.allclose(got, torch_vectors, atol=1e-4)  # really quantised
    assert (tmp_path / "onnx" / enc.fingerprint / "model_int8.onnx").is_file()


def test_backend_is_part_of_the_cache_key(tiny_model_dir, tmp_path):
    keys = {b: Encoder(EncoderConfig(model=str(tiny_model_dir), backend=b), cache=tmp_path)
            .cache_key(TEXTS, "", None).digest for b in ("torch", "onnx", "int8")}
    assert len(set(keys.values())) == 3


def test_prompt_and_max_length_follow_torch(tiny_model_dir):
    cfg = dict(model=str(tiny_model_dir), query_prompt="query: ", query_max_length=8)
    ref = Encoder(EncoderConfig(**cfg), cache=None).encode_queries(TEXTS)
    got = Encoder(EncoderConfig(**cfg, backend="onnx"), cache=None).encode_queries(TEXTS)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_unknown_backend_is_refused():
    with pytest.raises(HardnegError, match="backend must be one of torch, onnx, int8"):
        EncoderConfig(backend="openvino")
