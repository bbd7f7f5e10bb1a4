"""`hardneg mine` / `hardneg select` end to end on the repo's SciFact sample (BM25: seconds)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hardneg.cli import app

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scifact-sample"
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    out = tmp_path_factory.mktemp("mine")
    result = invoke("mine", "--data", str(SAMPLE), "--retriever", "bm25", "--depth", "100", "--out", str(out),
                    "--window", "10:100", "--percent", "0.95", "--num-negatives", "7", "--format", "st-ntuple")
    assert result.exit_code == 0, result.output
    return out


def test_mine_writes_candidates_negatives_stats(mined):
    cands = pd.read_parquet(mined / "candidates.parquet")
    assert cands.groupby("query_id").size().min() >= 100
    lines = [json.loads(x) for x in (mined / "negatives.jsonl").read_text().splitlines()]
    assert lines and all(line["neg"] for line in lines)  # FlagEmbedding cannot read an empty neg
    for line in lines:
        assert all(10 <= r <= 100 for r in line["neg_ranks"])
        assert not set(line["neg_ids"]) & set(line["pos_ids"])
    stats = json.loads((mined / "stats.json").read_text())
    assert stats["policy"]["window"] == [10, 100] and stats["policy"]["percent"] == 0.95
    train = pd.read_parquet(mined / "train.parquet")
    assert list(train.columns) == ["anchor", "positive"] + [f"negative_{i}" for i in range(1, 8)]


def test_select_rerun_is_byte_identical_and_needs_no_retrieval(mined, tmp_path):
    args = ["select", str(mined / "candidates.parquet"), "--window", "10:100", "--percent", "0.95",
            "--num-negatives", "7", "--format", "st-ntuple"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke(*args, "--out", str(a)).exit_code == 0
    assert invoke(*args, "--out", str(b)).exit_code == 0
    for name in ("negatives.jsonl", "train.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes() == (mined / name).read_bytes()


def test_seeded_sampler_is_deterministic_and_seed_matters(mined, tmp_path):
    base = ["select", str(mined / "candidates.parquet"), "--sampler", "uniform", "--window", "off"]
    outs = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert invoke(*base, "--seed", seed, "--out", str(tmp_path / name)).exit_code == 0
        outs.append((tmp_path / name / "negatives.jsonl").read_bytes())
    assert outs[0] == outs[1] != outs[2]


@pytest.mark.parametrize("option, message", [
    (["--window", "100:10"], "window min 100 is greater than max 10"),
    (["--percent", "1.5"], "--percent: must be in (0, 1]"),
    (["--num-negatives", "-1"], "--num-negatives: must be an integer >= 0"),
    (["--sampler", "best"], "sampler"),
])
def test_bad_options_fail_fast_with_a_message(mined, tmp_path, option, message):
    result = invoke("select", str(mined / "candidates.parquet"), "--out", str(tmp_path / "x"), *option)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "x").exists()


def test_unknown_retriever_fails_fast(tmp_path):
    result = invoke("mine", "--data", str(SAMPLE), "--retriever", "splade", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "--retriever: must be one of bm25, dense, hybrid, not 'splade'" in result.output


def test_the_default_policy_has_one_home(mined, tmp_path):
    """`select(cands)` from Python == `hardneg select` without options == the default recipe's policy."""
    from hardneg.candidates import CandidateSet
    from hardneg.data import load_dataset
    from hardneg.export import write_flag_jsonl
    from hardneg.recipe import load_recipe
    from hardneg.select import SelectionPolicy, select

    assert load_recipe().policy == SelectionPolicy()
    assert invoke("select", str(mined / "candidates.parquet"), "--out", str(tmp_path / "cli")).exit_code == 0
    ds = load_dataset(SAMPLE)
    write_flag_jsonl(select(CandidateSet.read(mined / "candidates.parquet")), ds.doc_text_map(), ds.queries,
                     tmp_path / "py.jsonl")
    assert (tmp_path / "py.jsonl").read_bytes() == (tmp_path / "cli" / "negatives.jsonl").read_bytes()
    # the options the `mine` fixture spelled out are the defaults: the same negatives
    assert (tmp_path / "py.jsonl").read_bytes() == (mined / "negatives.jsonl").read_bytes()


def test_baselines_take_no_default_filters_but_refuse_explicit_ones(mined, tmp_path):
    from hardneg.errors import HardnegError
    from hardneg.select import SelectionPolicy

    assert SelectionPolicy(sampler="none").window is None and SelectionPolicy(sampler="random").percent is None
    with pytest.raises(HardnegError, match="'random' does not use the candidates, so window"):
        SelectionPolicy(sampler="random", window=(5, 50))
    result = invoke("select", str(mined / "candidates.parquet"), "--sampler", "none", "--out", str(tmp_path / "n"))
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "n" / "stats.json").read_text())
    assert stats["policy"]["window"] is None and stats["policy"]["percent"] is None
