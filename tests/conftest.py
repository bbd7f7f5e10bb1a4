"""Shared test setup: never touch the Hugging Face hub; a tiny local model for fast encoding."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# "auto" precision resolves to fp32 on every CPU, so that outputs and expected values do not
# depend on whether this machine has AMX (tests of bf16 ask for it explicitly).
os.environ["HARDNEG_AUTO_PRECISION"] = "fp32"
# Tests never write into the user's home cache.
os.environ["HARDNEG_CACHE"] = __import__("tempfile").mkdtemp(prefix="hardneg-test-cache-")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer, 32-d BERT sentence-transformer to ``out_dir``.

    Uses the bundled MiniLM's tokenizer and a fixed torch seed (inside ``fork_rng``, so
    the global torch RNG is left as it was). Nothing is downloaded.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from sentence_transformers.base.modules import Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hardneg.encode import default_model_path

    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bert = BertModel(config)
    hf_dir = out_dir / "hf"
    bert.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=64)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    st_dir = out_dir / "st"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(st_dir))
    return st_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random sentence-transformers model (32-d, max length 64)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train ~10x faster on one thread when other jobs share the 2 cores; restored after.

    Use it in a module that trains: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
