"""Resumable mining: a run killed after some query chunks resumes to a byte-identical candidate set."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hardneg.checkpoint import MineCheckpoint
from hardneg.data import load_dataset
from hardneg.encode import EncoderConfig
from hardneg.errors import HardnegError
from hardneg.mine import MineConfig, mine_candidates, write_candidates

# dense (IVF: its index is saved and reused on resume) + a BM25 teacher; 48 queries in 5 chunks
CONFIG = dict(retriever="dense", teachers=["bm25"], depth=15, search="ivf", recall_sample=20, query_chunk=10)


class Killed(Exception):
    pass


def write_beir(folder: Path, n_docs: int = 400, n_queries: int = 48, *, seed: int = 0, vocab: int = 80,
               judged: bool = True) -> Path:
    """Random-word documents; query qi has 1 + i % 3 positives, and with ``judged`` every fifth
    query a judged negative (grade 0)."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(vocab)]
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.choice(words, 10))} for i in range(n_docs)]
    queries = [{"_id": f"q{i}", "text": " ".join(rng.choice(words, 4))} for i in range(n_queries)]
    rows = [f"q{q}\td{d}\t1" for q in range(n_queries) for d in rng.choice(n_docs, 1 + q % 3, replace=False)]
    rows += [f"q{q}\td{(q * 7) % n_docs}\t0" for q in range(0, n_queries, 5)] if judged else []
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("resume")
    data = write_beir(root / "data")
    encoder = EncoderConfig(model=str(tiny_model_dir))
    cache = root / "cache"
    reference = root / "uninterrupted.parquet"
    mine_candidates(load_dataset(data), MineConfig(**CONFIG), encoder, cache=cache).write(reference)
    return data, encoder, cache, reference


def stop_after(n: int):
    def progress(done: int, total: int) -> None:
        if done == n:
            raise Killed(f"stopped after chunk {done} of {total}")
    return progress


def test_interrupted_run_resumes_to_identical_bytes(setup, tmp_path):
    data, encoder, cache, reference = setup
    ds, ckpt = load_dataset(data), tmp_path / ".mine-checkpoint"
    with pytest.raises(Killed):
        mine_candidates(ds, MineConfig(**CONFIG), encoder, cache=cache, checkpoint_dir=ckpt, progress=stop_after(2))
    assert sorted(p.name for p in ckpt.glob("chunk_*")) == ["chunk_00000.parquet", "chunk_00001.parquet"]
    assert (ckpt / "index_dense.faiss").is_file()

    seen = []
    cands = mine_candidates(ds, MineConfig(**CONFIG), encoder, cache=cache, checkpoint_dir=ckpt,
                            progress=lambda done, total: seen.append((done, total)))
    assert cands.run["resumed_chunks"] == 2 and seen[-1] == (5, 5)
    cands.write(tmp_path / "resumed.parquet")
    assert (tmp_path / "resumed.parquet").read_bytes() == reference.read_bytes()
    search = cands.meta["search"]
    assert search["dense"]["kind"] == "ivf" and search["bm25"] == {"kind": "bm25s"}
    assert 0 < search["dense"]["recall_at_depth"] <= 1 and search["dense"]["recall_sample"] == 20

    # streaming straight to the file gives the same bytes, from the (complete) checkpoint too
    write_candidates(ds, tmp_path / "streamed.parquet", MineConfig(**CONFIG), encoder, cache=cache, checkpoint_dir=ckpt)
    assert (tmp_path / "streamed.parquet").read_bytes() == reference.read_bytes()


KILL_SCRIPT = """
import os, signal, sys
from hardneg.data import load_dataset
from hardneg.encode import EncoderConfig
from hardneg.mine import MineConfig, mine_candidates
data, model, cache, ckpt, config = sys.argv[1:6]
def progress(done, total):
    if done == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: as a killed job dies
mine_candidates(load_dataset(data), MineConfig(**eval(config)), EncoderConfig(model=model), cache=cache,
                checkpoint_dir=ckpt, progress=progress)
"""


def test_killed_process_resumes_to_identical_bytes(setup, tmp_path):
    data, encoder, cache, reference = setup
    ckpt = tmp_path / ".mine-checkpoint"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(data), encoder.model, str(cache), str(ckpt),
                           repr(CONFIG)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(list(ckpt.glob("chunk_*.parquet"))) == 3
    cands = mine_candidates(load_dataset(data), MineConfig(**CONFIG), encoder, cache=cache, checkpoint_dir=ckpt)
    assert cands.run["resumed_chunks"] == 3
    cands.write(tmp_path / "resumed.parquet")
    assert (tmp_path / "resumed.parquet").read_bytes() == reference.read_bytes()


def test_a_different_command_refuses_the_stale_checkpoint(setup, tmp_path):
    data, encoder, cache, reference = setup
    ds, ckpt = load_dataset(data), tmp_path / ".mine-checkpoint"
    with pytest.raises(Killed):
        mine_candidates(ds, MineConfig(**CONFIG), encoder, cache=cache, checkpoint_dir=ckpt, progress=stop_after(1))
    other = MineConfig(**(CONFIG | {"depth": 12}))
    with pytest.raises(HardnegError, match=r"different mining run \(changed: mine options\).*--restart"):
        mine_candidates(ds, other, encoder, cache=cache, checkpoint_dir=ckpt)
    ds.texts[5] = ds.texts[5] + " edited"
    with pytest.raises(HardnegError, match="changed: corpus, mine options"):
        mine_candidates(ds, other, encoder, cache=cache, checkpoint_dir=ckpt)
    fresh = mine_candidates(ds, other, encoder, cache=cache, checkpoint_dir=ckpt, restart=True)
    assert fresh.run["resumed_chunks"] == 0 and fresh.meta["depth"] == 12


def test_checkpoint_manifest_and_unreadable_manifest(tmp_path):
    ckpt = MineCheckpoint(tmp_path / "c", {"corpus": "a"}, n_chunks=3)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert ckpt.resumed == 0 and manifest["fingerprint"]["corpus"] == "a"
    with pytest.raises(HardnegError, match="changed: n_chunks"):
        MineCheckpoint(tmp_path / "c", {"corpus": "a"}, n_chunks=4)
    (tmp_path / "c" / "manifest.json").write_text("{not json")
    with pytest.raises(HardnegError, match="unreadable checkpoint manifest"):
        MineCheckpoint(tmp_path / "c", {"corpus": "a"}, n_chunks=3)


def test_cli_mine_reports_the_search_and_cleans_its_checkpoint(setup, tmp_path):
    from typer.testing import CliRunner

    from hardneg.cli import app

    data, encoder, cache, _ = setup
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "mine", "--data", str(data), "--model", encoder.model, "--cache-dir", str(cache), "--out", str(out),
        "--depth", "15", "--search", "hnsw", "--recall-sample", "20", "--query-chunk", "16", "--float16",
        "--window", "1:15", "--percent", "off", "--num-negatives", "3"])
    assert result.exit_code == 0, result.output
    assert "hnsw" in result.output and "recall@15" in result.output
    assert not (out / ".mine-checkpoint").exists()
    from hardneg.candidates import CandidateSet

    meta = CandidateSet.read(out / "candidates.parquet").meta
    assert meta["search"]["dense"]["kind"] == "hnsw" and meta["search"]["dense"]["recall_sample"] == 20
    run = json.loads((out / "search.json").read_text())
    assert run["dense"]["build_seconds"] >= 0
    assert run["dense"]["recall_at_depth"] == meta["search"]["dense"]["recall_at_depth"]


def test_corpus_encoding_resumes_block_by_block(tiny_model_dir, tmp_path):
    """A long encode is cached in blocks: a crash in block 3 costs only block 3 on the rerun."""
    from hardneg.encode import Encoder

    texts = [f"passage number {i} about topic {i % 3}" for i in range(10)]
    reference = Encoder(EncoderConfig(model=str(tiny_model_dir)), cache=None).encode_passages(texts)
    enc = Encoder(EncoderConfig(model=str(tiny_model_dir)), cache=tmp_path / "cache")
    enc.block_size = 4  # blocks of 4, 4, 2 texts
    calls, real = [], enc._run_model

    def crash_on_third(part, prompt, max_length):
        calls.append(len(part))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(part, prompt, max_length)

    enc._run_model = crash_on_third
    with pytest.raises(KeyboardInterrupt):
        enc.encode_passages(texts)
    assert calls == [4, 4, 2]
    calls.clear()
    enc._run_model = lambda part, prompt, max_length: (calls.append(len(part)), real(part, prompt, max_length))[1]
    got = enc.encode_passages(texts)
    assert calls == [2]  # only the block that never finished
    np.testing.assert_array_equal(got, reference)
    assert isinstance(got, np.memmap) or isinstance(got.base, np.memmap)
    entries = sorted(p.name for p in (tmp_path / "cache").rglob("*.npy"))
    assert len(entries) == 1  # the blocks were folded into one entry and removed
    calls.clear()
    np.testing.assert_array_equal(enc.encode_passages(texts), reference)
    assert calls == []  # now a plain cache hit
