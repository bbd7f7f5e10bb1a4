"""Multi-process training (DDP) through `hardneg train`, as a user launches it with torchrun.

Two CPU processes with the gloo backend train the tiny model on the toy BEIR folder; both ranks
must finish, the in-batch loss must gather across the two processes, and rank 0 alone must
save one normal sentence-transformers folder. Slow (two processes load torch and train): run
with ``pytest -m slow tests/test_ddp.py``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toybeir import write_toy_beir

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--batch-size", "4", "--lr", "1e-3", "--warmup-ratio", "0", "--max-seq-length", "32", "--max-steps", "2",
        "--logging-steps", "1", "--no-progress", "--eval-corpus", "16", "--holdout-fraction", "0.25",
        "--eval-steps", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_and_rank0_saves(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    toy = write_toy_beir(tmp_path / "beir")
    out, logs = tmp_path / "model", tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "--log-dir", str(logs), "--redirects", "3",
           "-m", "hardneg.cli", "train", "--data", str(toy), "--model", str(tiny_model_dir), "--out", str(out), *FAST]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    rank_logs = {p.parent.name: p.read_text() for p in logs.rglob("stdout.log")}
    errors = {p.parent.name: p.read_text()[-3000:] for p in logs.rglob("stderr.log")}
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{errors}"

    assert sorted(rank_logs) == ["0", "1"]  # both ranks ran `hardneg train` to its last line
    assert all("trained in" in text for text in rank_logs.values()), rank_logs
    log = json.loads((out / "hardneg_train.json").read_text())
    assert log["world_size"] == 2 and log["config"]["gather_across_devices"] is True
    assert [e["step"] for e in log["evals"]] == [0, 1, 2] and len(log["losses"]) == 2
    assert not (out / "checkpoints").exists()  # removed by rank 0, after both loaded the best one
    vecs = SentenceTransformer(str(out), device="cpu", local_files_only=True).encode(["the apple", "a river"])
    assert vecs.shape == (2, 32) and np.isfinite(vecs).all()


def test_loss_gathers_only_with_several_processes(tiny_model_dir):
    from hardneg.train import Loss, TrainConfig
    from hardneg.train.losses import build_loss, load_student

    model = load_student(str(tiny_model_dir))
    assert build_loss(model, TrainConfig(), 1, world_size=2).gather_across_devices is True
    assert build_loss(model, TrainConfig(), 1, world_size=1).gather_across_devices is False
    off = TrainConfig(loss=Loss.CACHED_MNRL, gather_across_devices=False)
    assert build_loss(model, off, 1, world_size=2).gather_across_devices is False
