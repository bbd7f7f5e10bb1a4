"""`hardneg train` on the toy BEIR folder with the tiny model: mined negatives, in-batch only, options."""
from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.train import TrainConfig
from toybeir import write_toy_beir

runner = CliRunner()
FAST = ["--batch-size", "4", "--lr", "1e-3", "--warmup-ratio", "0", "--max-seq-length", "32", "--max-steps", "2",
        "--logging-steps", "1", "--no-progress", "--eval-corpus", "16"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_beir(tmp_path_factory.mktemp("toy") / "beir")


def mine(toy, out, *policy):
    result = runner.invoke(app, ["mine", "--data", str(toy), "--retriever", "bm25", "--depth", "10", "--out", str(out),
                                 *policy])
    assert result.exit_code == 0, result.output
    return out / "negatives.jsonl"


def test_every_train_config_field_is_an_option():
    params = {p.name for p in get_command(app).commands["train"].params}
    assert {f.name for f in fields(TrainConfig)} <= params


def test_train_on_mined_negatives_with_options(toy, tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    negatives = mine(toy, tmp_path / "mined", "--window", "off", "--percent", "off", "--num-negatives", "2")
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--data", str(toy), "--negatives", str(negatives), "--model",
                                 str(tiny_model_dir), "--out", str(out), *FAST, "--num-negatives", "2",
                                 "--holdout-fraction", "0.25", "--student-range", "-1:1", "--eval-steps", "1",
                                 "--seed", "7", "--allow-duplicates"])
    assert result.exit_code == 0, result.output
    log = json.loads((out / "hardneg_train.json").read_text())
    cfg = log["config"]
    assert (cfg["lr"], cfg["batch_size"], cfg["max_steps"], cfg["num_negatives"], cfg["seed"]) == (1e-3, 4, 2, 2, 7)
    assert cfg["student_range"] == [-1.0, 1.0] and cfg["eval_steps"] == 1 and cfg["no_duplicates"] is False
    assert log["data"]["num_negatives"] == 2 and log["data"]["excluded_queries"] == 4  # 0.25 of 16 held out
    assert [e["step"] for e in log["evals"]] == [0, 1, 2] and len(log["losses"]) == 2
    assert "12 training rows from 12 queries, 2 negatives each" in result.output
    vecs = SentenceTransformer(str(out), device="cpu", local_files_only=True).encode(["the apple", "a river"])
    assert vecs.shape == (2, 32) and np.isfinite(vecs).all()


def test_in_batch_only_negatives_file_trains_on_pairs(toy, tiny_model_dir, tmp_path):
    """--sampler none exports no rows (FlagEmbedding cannot read an empty neg): training uses the pairs."""
    negatives = mine(toy, tmp_path / "none", "--sampler", "none", "--window", "off", "--percent", "off")
    assert negatives.read_text() == ""
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--data", str(toy), "--negatives", str(negatives), "--model",
                                 str(tiny_model_dir), "--out", str(out), *FAST, "--holdout-fraction", "0"])
    assert result.exit_code == 0, result.output
    log = json.loads((out / "hardneg_train.json").read_text())
    assert log["data"]["num_negatives"] == 0 and log["data"]["n_rows"] == 16  # every (query, positive) pair
    assert log["negatives_meta"]["strategy"] == "in-batch negatives only"
    assert log["negatives_meta"]["rows_dropped_no_negatives"] == 16
    assert "in-batch negatives only" in result.output  # the warning says what happened
    assert "Negatives strategy" in (out / "README.md").read_text()


def test_train_without_negatives_and_a_bad_option(toy, tiny_model_dir, tmp_path):
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--data", str(toy), "--model", str(tiny_model_dir), "--out", str(out),
                                 *FAST, "--max-steps", "1", "--holdout-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "hardneg_train.json").read_text())["data"]["n_rows"] == 16
    bad = runner.invoke(app, ["train", "--data", str(toy), "--out", str(tmp_path / "x"), "--loss", "triplet"])
    assert bad.exit_code == 2 and "--loss: must be one of" in bad.output and not (tmp_path / "x").exists()
    bad = runner.invoke(app, ["train", "--data", str(toy), "--out", str(tmp_path / "x"), "--student-range", "1"])
    assert bad.exit_code == 2 and "--student-range expects a list of 2 numbers or 'LOW:HIGH'" in bad.output
