"""The library functions behind the CLI commands: mine_to_folder, search_report, select_and_export,
audit_candidates, check_for_candidates and click_bias_of, on tiny data with real BM25, a tiny
random model and a tiny random cross-encoder (no mocks of the code under test)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hardneg.audit import BUCKETS, audit_candidates, judge_audit, label_audit
from hardneg.candidates import CandidateSet
from hardneg.data import load_dataset
from hardneg.errors import HardnegError
from hardneg.export import select_and_export
from hardneg.mine import MineConfig, mine_candidates, mine_to_folder, search_report
from hardneg.select import SelectionPolicy, select
from test_crossencoder import build_tiny_cross_encoder
from test_resume import Killed, stop_after, write_beir
from toybeir import write_toy_beir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# BM25 over 300 random-word documents; 40 queries with 1-3 positives, mined 9 at a time: 5 chunks
BM25 = dict(retriever="bm25", depth=60, query_chunk=9)
N_CHUNKS = 5


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """(data folder, reference candidates file, its CandidateSet) of an uninterrupted BM25 mine."""
    root = tmp_path_factory.mktemp("flow")
    data = write_beir(root / "data", 300, 40, seed=7, vocab=60, judged=False)
    reference = root / "reference.parquet"
    cands = mine_candidates(load_dataset(data), MineConfig(**BM25))
    cands.write(reference)
    return data, reference, cands


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy_beir(tmp_path_factory.mktemp("toy") / "beir")


# ---- 1. mine_to_folder -----------------------------------------------------------------------
def test_mine_to_folder_writes_the_same_bytes_and_checkpoints_while_mining(multi, tmp_path):
    data, reference, _ = multi
    out = tmp_path / "out"
    ckpt = out / ".mine-checkpoint"
    seen = []

    def progress(done: int, total: int) -> None:
        # while mining, every finished chunk is already stored in OUT/.mine-checkpoint
        stored = sorted(p.name for p in ckpt.glob("chunk_*.parquet"))
        seen.append((done, total, len(stored), (out / "candidates.parquet").exists()))

    cands = mine_to_folder(load_dataset(data), out, MineConfig(**BM25), progress=progress)
    assert seen == [(i, N_CHUNKS, i, False) for i in range(1, N_CHUNKS + 1)]
    assert (out / "candidates.parquet").read_bytes() == reference.read_bytes()
    assert not ckpt.exists()  # removed once the candidates are written
    assert cands.run["chunks"] == N_CHUNKS and cands.run["resumed_chunks"] == 0
    assert cands.meta == CandidateSet.read(out / "candidates.parquet").meta


def test_mine_to_folder_resumes_a_killed_run_to_identical_bytes(multi, tmp_path):
    data, reference, _ = multi
    out, ds = tmp_path / "out", load_dataset(data)
    ckpt = out / ".mine-checkpoint"
    with pytest.raises(Killed):
        mine_to_folder(ds, out, MineConfig(**BM25), progress=stop_after(2))
    assert sorted(p.name for p in ckpt.glob("chunk_*")) == ["chunk_00000.parquet", "chunk_00001.parquet"]
    assert not (out / "candidates.parquet").exists()

    seen = []
    cands = mine_to_folder(ds, out, MineConfig(**BM25), progress=lambda done, total: seen.append(done))
    assert cands.run["resumed_chunks"] == 2 and seen == list(range(1, N_CHUNKS + 1))
    assert (out / "candidates.parquet").read_bytes() == reference.read_bytes()
    assert not ckpt.exists()


def test_mine_to_folder_refuses_another_minings_checkpoint_unless_restart(multi, tmp_path):
    data, _, _ = multi
    out, ds = tmp_path / "out", load_dataset(data)
    ckpt = out / ".mine-checkpoint"
    with pytest.raises(Killed):
        mine_to_folder(ds, out, MineConfig(**BM25), progress=stop_after(1))
    other = MineConfig(**(BM25 | {"depth": 40}))
    with pytest.raises(HardnegError, match=r"different mining run \(changed: mine options\)"):
        mine_to_folder(ds, out, other)
    assert not (out / "candidates.parquet").exists()
    assert [p.name for p in ckpt.glob("chunk_*")] == ["chunk_00000.parquet"]  # the refusal kept it

    fresh = mine_to_folder(ds, out, other, restart=True)
    assert fresh.run["resumed_chunks"] == 0 and fresh.meta["depth"] == 40
    mine_candidates(ds, other).write(tmp_path / "depth40.parquet")
    assert (out / "candidates.parquet").read_bytes() == (tmp_path / "depth40.parquet").read_bytes()
    assert not ckpt.exists()


# ---- 2. search_report ------------------------------------------------------------------------
def test_search_report_is_empty_for_bm25_and_lists_each_dense_scorer(multi, tiny_model_dir, tmp_path):
    from hardneg.encode import EncoderConfig

    _, reference, cands = multi
    assert cands.meta["search"] == {"bm25": {"kind": "bm25s"}}
    assert search_report(cands) == {} and search_report(CandidateSet.read(reference)) == {}

    ds = write_toy_beir(tmp_path / "toy")
    dense = mine_candidates(load_dataset(ds), MineConfig(retriever="dense", teachers=["bm25"], depth=10,
                                                         search="exact"),
                            EncoderConfig(model=str(tiny_model_dir)), cache=tmp_path / "cache")
    report = search_report(dense)
    assert list(report) == ["dense"]  # the BM25 teacher has no search to report
    assert report["dense"]["kind"] == "exact" and report["dense"]["params"] == dense.meta["search"]["dense"]["params"]
    timings = dense.run["search"]["dense"]
    assert set(timings) == {"build_seconds", "recall_seconds", "search_seconds"}
    assert report["dense"] == dense.meta["search"]["dense"] | timings
    assert all(report["dense"][k] >= 0 for k in timings)
    # a candidate file read back has no run timings: only the recorded search
    dense.write(tmp_path / "dense.parquet")
    assert search_report(CandidateSet.read(tmp_path / "dense.parquet")) == {"dense": dense.meta["search"]["dense"]}


# ---- 3. select_and_export --------------------------------------------------------------------
def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_select_and_export_with_the_default_policy(multi, tmp_path):
    data, _, cands = multi
    ds = load_dataset(data)
    out = tmp_path / "sel"
    mined, report = select_and_export(cands, ds, out)
    assert sorted(p.name for p in out.iterdir()) == ["negatives.jsonl", "negatives.meta.json", "stats.json"]

    expected = select(cands, SelectionPolicy(window=(10, 100), percent=0.95))
    pd.testing.assert_frame_equal(mined.negatives, expected.negatives)
    pd.testing.assert_frame_equal(mined.rows, expected.rows)
    assert len(mined.negatives) > 0

    stats = json.loads((out / "stats.json").read_text())
    policy = stats["policy"]
    assert policy == SelectionPolicy().to_dict() and policy["window"] == [10, 100] and policy["percent"] == 0.95
    assert stats["files"] == json.loads(json.dumps(report))
    assert stats["files"]["negatives.jsonl"]["rows_written"] == len(jsonl(out / "negatives.jsonl"))
    assert stats == json.loads(json.dumps(expected.stats | {"files": report, "policy": SelectionPolicy().to_dict()}))

    lines = jsonl(out / "negatives.jsonl")
    view = expected.per_row()
    want = {r.query_id: list(r.neg_ids) for r in view.itertuples() if len(r.neg_ids)}
    assert {x["query_id"]: x["neg_ids"] for x in lines} == want
    assert all(10 <= r <= 100 for x in lines for r in x["neg_ranks"])
    assert lines[0]["neg"][0] == ds.doc_text(lines[0]["neg_ids"][0])
    assert json.loads((out / "negatives.meta.json").read_text()) == json.loads(json.dumps(report["negatives.jsonl"]))


def test_select_and_export_with_a_policy_and_a_sentence_transformers_format(multi, tmp_path):
    data, _, cands = multi
    ds = load_dataset(data)
    policy = SelectionPolicy(window=(1, 20), percent=None, num_negatives=2)
    out = tmp_path / "sel"
    mined, report = select_and_export(cands, ds, out, policy, fmt="st-triplet")
    assert {"negatives.jsonl", "negatives.meta.json", "stats.json", "train.parquet",
            "train.ids.parquet"} <= {p.name for p in out.iterdir()}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["policy"] == policy.to_dict() and stats["policy"]["window"] == [1, 20]
    assert stats["policy"]["percent"] is None and stats["policy"]["num_negatives"] == 2
    assert set(stats["files"]) == {"negatives.jsonl", "train.parquet"} == set(report)
    pd.testing.assert_frame_equal(mined.negatives, select(cands, policy).negatives)
    lines = jsonl(out / "negatives.jsonl")
    assert lines and all(len(x["neg_ids"]) <= 2 and all(1 <= r <= 20 for r in x["neg_ranks"]) for x in lines)
    triplets = pd.read_parquet(out / "train.parquet")
    assert list(triplets.columns) == ["anchor", "positive", "negative"]
    assert len(triplets) == sum(len(x["pos_ids"]) * len(x["neg_ids"]) for x in lines)


# ---- 4. audit_candidates ---------------------------------------------------------------------
def oracle_judge(ds, calls: list):
    """Scores 2.0 for a labeled (query, doc) positive of the train split, else -2.0; records its calls."""
    pos = {(q, d) for q, docs in ds.positives("train").items() for d in docs}

    def judge(query_ids, queries, docs):
        calls.append((list(query_ids), list(queries), list(docs)))
        by_text = {ds.doc_text(d): d for d in ds.doc_ids}
        return np.array([2.0 if (q, by_text[t]) in pos else -2.0 for q, t in zip(query_ids, docs)])
    return judge


def test_audit_candidates_without_a_judge_is_the_label_audit(multi):
    _, _, cands = multi
    doc = audit_candidates(cands, 0.5, 3, 1)
    assert doc == {"labels": label_audit(cands, 0.5, 3, 1), "judge": None}
    labels = doc["labels"]
    assert labels["kind"] == "labels" and labels["draws"] == 3 and labels["seed"] == 1
    assert labels["queries"] == sum(1 for q in range(40) if q % 3 > 0)  # the queries with 2 or 3 positives
    assert "labels_note" not in doc


def test_audit_candidates_with_a_judge_adds_its_curve(multi):
    data, _, cands = multi
    ds = load_dataset(data)
    texts, queries = ds.doc_text_map(), ds.queries
    calls: list = []
    judge = oracle_judge(ds, calls)
    doc = audit_candidates(cands, 0.5, 2, 0, judge=judge, texts=texts, queries=queries, threshold=0.0, sample=5)
    assert set(doc) == {"labels", "judge"}
    assert doc["labels"] == label_audit(cands, 0.5, 2, 0)
    curve = doc["judge"]
    assert curve == judge_audit(cands, texts, queries, judge, 0.0, 5, 0)
    assert curve["kind"] == "judge" and curve["per_bucket"] == 5 and curve["threshold"] == 0.0
    # the judge saw the real texts: each query id with its text
    qids, qtexts, dtexts = calls[0]
    assert qtexts == [queries[q] for q in qids]
    assert len(dtexts) == len(qids) == curve["sampled"] + curve["positives"]["n"]
    # the oracle calls every labeled positive relevant and no unlabeled candidate
    assert curve["positives"]["rate"] == 1.0 and curve["positives"]["n"] == 5
    assert all(b["n"] <= 5 and b["k"] == 0 for b in curve["buckets"])
    assert sum(b["n"] for b in curve["buckets"]) == curve["sampled"] > 0
    # the threshold is the judge's: above every score, nothing is relevant
    strict = audit_candidates(cands, 0.5, 2, 0, judge=judge, texts=texts, queries=queries, threshold=5.0, sample=5)
    assert strict["judge"]["positives"]["k"] == 0 and strict["judge"]["threshold"] == 5.0


def test_audit_candidates_on_single_positive_queries_needs_a_judge(toy):
    ds = load_dataset(toy)
    cands = mine_candidates(ds, MineConfig(retriever="bm25", depth=20))
    with pytest.raises(HardnegError, match="no query has two or more positives"):
        audit_candidates(cands)
    doc = audit_candidates(cands, judge=oracle_judge(ds, []), texts=ds.doc_text_map(), queries=ds.queries,
                           sample=4)
    assert doc["labels"] is None and "two or more positives" in doc["labels_note"]
    assert doc["judge"]["kind"] == "judge" and len(doc["judge"]["buckets"]) == len(BUCKETS)
    assert doc["judge"]["positives"] == {"n": 4, "k": 4, "rate": 1.0, "ci": doc["judge"]["positives"]["ci"]}


# ---- 5. check_for_candidates -----------------------------------------------------------------
@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory, tiny_model_dir) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("ce"), tiny_model_dir)


def test_check_for_candidates_uses_the_recorded_check(ce_dir, toy, tmp_path):
    from hardneg.crossencoder import REPORT_FILE, Reranker, RerankerCheck, check_for_candidates

    ds = load_dataset(toy)
    cands = mine_candidates(ds, MineConfig(retriever="bm25", depth=10))
    folder = tmp_path / "ce"
    shutil.copytree(ce_dir, folder)
    recorded = RerankerCheck("train", "held-out train queries", ["q3", "q7"], [0.5, 0.25], [0.75, 1.0], 32, 0.5)
    (folder / REPORT_FILE).write_text(json.dumps({"config": {}, "check": recorded.to_dict()}))
    reranker = Reranker.load(folder)
    check = check_for_candidates(reranker, ds, cands, cache=None)
    assert check == recorded and check.source == "held-out train queries"
    assert reranker.pairs_run == 0  # nothing was scored: the record was used

    # a record without a check is no check: the candidate set's queries are scored instead
    (folder / REPORT_FILE).write_text(json.dumps({"config": {}, "check": None}))
    check = check_for_candidates(Reranker.load(folder), ds, cands, max_queries=3, cache=None)
    assert check.split == "train" and check.source.startswith("'train' queries of the candidate set")
    assert len(check.query_ids) == 3


def test_check_for_candidates_prefers_the_dev_split(ce_dir, toy, tmp_path, caplog):
    from hardneg.crossencoder import Reranker, check_for_candidates, check_reranker

    data = tmp_path / "with_dev"
    shutil.copytree(toy, data)
    dev = [f"q{i}" for i in range(16, 21)]
    rows = "".join(f"{q}\td{q[1:]}\t1\n" for q in dev)  # each toy query qi's positive is di
    (data / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    ds = load_dataset(data)
    assert "dev" in ds.splits
    cands = mine_candidates(ds, MineConfig(retriever="bm25", depth=10))
    reranker = Reranker.load(ce_dir)
    with caplog.at_level("WARNING", logger="hardneg"):
        check = check_for_candidates(reranker, ds, cands, cache=None)
    assert check.split == "dev" and check.source == "the 'dev' split"
    assert check.query_ids == dev and not set(check.query_ids) & set(cands.query_ids())
    assert reranker.pairs_run == len(dev) * 32  # BM25's top 100 of the 32-document corpus, per dev query
    assert check == check_reranker(ce_dir, ds, "dev", cache=None, source="the 'dev' split")
    assert check.bm25_ndcg == pytest.approx(1.0) and not check.beats_bm25  # a random cross-encoder is worse
    assert "denoise with noise" in caplog.text


def test_check_for_candidates_falls_back_to_the_candidate_sets_queries(ce_dir, tmp_path):
    from hardneg.crossencoder import FOLDS_FILE, Reranker, check_for_candidates

    # candidates of 8 train queries; the dataset they are checked against has 16 train queries
    cands = mine_candidates(load_dataset(write_toy_beir(tmp_path / "eight", n_train=8)),
                            MineConfig(retriever="bm25", depth=10))
    ds = load_dataset(write_toy_beir(tmp_path / "sixteen"))
    assert "dev" not in ds.splits and len(ds.positives("train")) == 16
    mined_queries = sorted(cands.query_ids())
    assert mined_queries == sorted(f"q{i}" for i in range(8))

    check = check_for_candidates(Reranker.load(ce_dir), ds, cands, cache=None)
    assert check.split == "train" and sorted(check.query_ids) == mined_queries
    assert check.source == "'train' queries of the candidate set (optimistic if the cross-encoder trained on them)"
    few = check_for_candidates(Reranker.load(ce_dir), ds, cands, max_queries=3, cache=None)
    assert len(few.query_ids) == 3 and set(few.query_ids) <= set(mined_queries)

    # a cross-fit folder: each query is scored by the fold model that never saw it
    xfit = tmp_path / "xfit"
    for i in range(2):
        shutil.copytree(ce_dir, xfit / f"fold_{i}")
    (xfit / FOLDS_FILE).write_text(json.dumps({q: i % 2 for i, q in enumerate(mined_queries)}))
    folded = check_for_candidates(Reranker.load(xfit), ds, cands, max_queries=4, cache=None)
    assert folded.source == "'train' queries of the candidate set, each scored by the fold model that never saw it"


# ---- 6. click_bias_of ------------------------------------------------------------------------
def write_click_log(path: Path) -> Path:
    """4 impressions of one query. The first shows d2, d1, d0 and clicks d1 (d2 is skipped
    above it); the others show d0, d1, d2 and click d0. Each also shows an id the corpus lacks,
    at position 4. CTR by position: 3/4, 1/4, 0."""
    rows = [{"query": "the apple", "query_id": "c1", "shown": ["d2", "d1", "d0", "zz"], "clicked": ["d1"]}]
    rows += [{"query": "the apple", "query_id": "c1", "shown": ["d0", "d1", "d2", "zz"], "clicked": ["d0"]}] * 3
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_click_bias_of_reads_the_log_else_clicks_stats_else_none(toy, tmp_path):
    from hardneg.positives.clicks import ClickConfig, clicks_to_beir
    from hardneg.diagnose import click_bias_of

    ds = load_dataset(toy)
    assert click_bias_of(toy, ds) is None  # neither a log nor a clicks_stats.json

    log = write_click_log(tmp_path / "log.jsonl")
    bias = click_bias_of(toy, ds, log)  # the unknown id is skipped, not an error
    assert bias["source"] == str(log)
    assert [r["position"] for r in bias["positions"]] == [1, 2, 3]
    assert [r["ctr"] for r in bias["positions"]] == [0.75, 0.25, 0.0]
    assert [r["impressions"] for r in bias["positions"]] == [4, 4, 4]
    assert bias["ctr_first"] == 0.75 and bias["decay"] == 0.0 and bias["note"].startswith("strong position bias")

    # a folder written by `hardneg clicks`: its clicks_stats.json is read when no log is given
    clicked = tmp_path / "clicked"
    written = clicks_to_beir(log, toy / "corpus.jsonl", clicked, ClickConfig(skip_unknown=True))
    assert written.stats["skip_above_pairs"] == 1  # (c1, d2)
    cds = load_dataset(clicked)
    stats_bias = click_bias_of(clicked, cds)
    assert stats_bias["source"] == str(clicked / "clicks_stats.json")
    assert [(r["position"], r["ctr"]) for r in stats_bias["positions"]] == [(1, 0.75), (2, 0.25), (3, 0.0)]
    assert stats_bias["decay"] == 0.0 and stats_bias["note"] == bias["note"]

    # a log given explicitly wins over the folder's stats
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"query": "x", "shown": ["d0", "d1"], "clicked": ["d0", "d1"]}) + "\n"
                             for _ in range(2)))
    explicit = click_bias_of(clicked, cds, other)
    assert explicit["source"] == str(other) and [r["ctr"] for r in explicit["positions"]] == [1.0, 1.0]
    assert explicit["decay"] == 1.0 and explicit["note"].startswith("mild position bias")
