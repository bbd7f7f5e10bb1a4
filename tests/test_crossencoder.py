"""Cross-encoder rescoring, denoising, the BM25 check and train-reranker, with tiny random models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hardneg.encode.cache import EmbeddingCache
from hardneg.candidates import CandidateSet
from hardneg.cli import app
from hardneg.data import Dataset, load_dataset
from hardneg.errors import HardnegError
from hardneg.export import export
from hardneg.crossencoder import RescoreCheck, Reranker, RerankerCheck, check_reranker, rescore, rescore_with_report, warn_if_worse
from hardneg.select import SelectionPolicy, select
from hardneg.train import build_train_dataset
from hardneg.train.reranker import RerankerConfig, RerankerRows, assign_folds, pair_dataset, tuple_dataset
from toybeir import write_toy_beir

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def build_tiny_cross_encoder(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A random 2-layer, 32-d BERT with a 1-logit head, saved as a CrossEncoder folder (seeded)."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bert = BertForSequenceClassification(config)
        with torch.no_grad():  # a wide head, so that different pairs get clearly different logits
            bert.classifier.weight.mul_(50.0)
    bert.save_pretrained(out_dir / "hf")
    tokenizer.save_pretrained(out_dir / "hf")
    CrossEncoder(str(out_dir / "hf"), max_length=64, local_files_only=True, device="cpu").save(
        str(out_dir / "ce"), create_model_card=False)
    return out_dir / "ce"


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory, tiny_model_dir) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("ce0"), tiny_model_dir, seed=0)


@pytest.fixture(scope="module")
def ce_dir_b(tmp_path_factory, tiny_model_dir) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("ce1"), tiny_model_dir, seed=1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy_beir(tmp_path_factory.mktemp("toy") / "beir")


def logits(ce_path: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(ce_path), local_files_only=True, device="cpu")
    return model.predict(pairs, activation_fn=torch.nn.Identity(), batch_size=8, show_progress_bar=False)


# ---- a hand-made candidate set over a hand-made corpus ---------------------------------------
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def hand_dataset() -> Dataset:
    """130 documents with varied texts, queries qa, qb, qc; qa has an unranked second positive."""
    ids = [f"d{i}" for i in range(1, 131)] + ["pa", "pa2", "pb"]
    texts = [f"note {i} on {WORDS[i % 12]} and {WORDS[(i * 5) % 12]} " + "x " * (i % 7) for i in range(1, 131)]
    texts += ["all about alpha", "alpha again, at length", "beta facts"]
    queries = {"qa": "what is alpha", "qb": "tell me beta", "qc": "gamma please"}
    qrels = {"train": {"qa": {"pa": 1, "pa2": 1}, "qb": {"pb": 1}, "qc": {"d3": 1}}}
    return Dataset(ids, [""] * len(ids), texts, queries, qrels, source="hand")


def hand_candidates(n_ranked: int = 110) -> CandidateSet:
    """qa: ranks 1..n with its positive pa at rank 5, pa2 unranked; qb: ranks 1..n, pb at 50;
    qc: 20 ranks, its positive d3 at rank 3."""
    rows = []
    for qid, pos_rank, pos_id, n in (("qa", 5, "pa", n_ranked), ("qb", 50, "pb", n_ranked), ("qc", 3, "d3", 20)):
        for r in range(1, n + 1):
            doc = pos_id if r == pos_rank else f"d{r}"
            rows.append({"query_id": qid, "doc_id": doc, "is_positive": r == pos_rank, "rank_dense": r,
                         "score_dense": 1.0 - r / 1000})
    rows.append({"query_id": "qa", "doc_id": "pa2", "is_positive": True, "rank_dense": None, "score_dense": 0.5})
    return CandidateSet.from_frame(pd.DataFrame(rows), scorers=["dense"], split="train", data="hand")


def _scored(c: CandidateSet, qid: str) -> pd.DataFrame:
    t = c.table[c.table["query_id"] == qid]
    return t.set_index("doc_id")


def test_rescore_scores_the_window_and_every_positive(ce_dir, tmp_path):
    ds, cands = hand_dataset(), hand_candidates()
    out = rescore(cands, ds, ce_dir, window=(10, 100), cache=None, progress=False)
    qa = out.table[out.table["query_id"] == "qa"]
    scored = qa["score_ce"].notna()
    ranks = qa["rank_dense"]
    assert not scored[ranks == 9].any() and scored[ranks == 10].all()
    assert scored[ranks == 100].all() and not scored[ranks == 101].any()
    assert set(qa.loc[scored & ranks.isna(), "doc_id"]) == {"pa2"}  # positive below the depth: scored
    assert bool(qa.loc[qa["doc_id"] == "pa", "score_ce"].notna().all())  # positive at rank 5: scored
    # exactly: ranks 10..100 of qa and qb (91 each) + pa, pa2, pb (pb at 50 is inside) + qc's 11 ranks + d3
    assert int(out.table["score_ce"].notna().sum()) == 91 + 2 + 91 + 11 + 1
    assert out.table["rank_ce"].isna().all() and out.table["score_ce"].dtype == np.float32
    # the scores are the model's raw logits
    row = qa[qa["rank_dense"] == 10].iloc[0]
    assert row["score_ce"] == pytest.approx(logits(ce_dir, [(ds.queries["qa"], ds.doc_text(row["doc_id"]))])[0],
                                            abs=1e-5)
    meta = out.meta
    assert meta["scorers"] == ["dense", "ce"] and meta["negative_scores"]["ce"] is True
    assert meta["rank_by"] == "dense" and meta["score_by"] == "dense" and meta["score_only"] == ["ce"]
    info = meta["rescoring"]["ce"]
    assert info["window"] == [10, 100] and info["pairs_scored"] == 196 and info["folds"] is None
    assert info["fingerprint"] == Reranker.load(ce_dir).fingerprints[0] and info["score"] == "logit"
    assert cands.scorers == ["dense"]  # the input is not modified
    out.write(tmp_path / "c.parquet")
    again = CandidateSet.read(tmp_path / "c.parquet")
    assert again.meta["rescoring"] == meta["rescoring"]
    key = ["query_id", "doc_id"]
    np.testing.assert_array_equal(again.table.sort_values(key)["score_ce"].to_numpy(),
                                  out.table.sort_values(key)["score_ce"].to_numpy())


def test_rescore_window_off_scores_every_row_and_bad_inputs_fail(ce_dir):
    ds, cands = hand_dataset(), hand_candidates(n_ranked=12)
    out = rescore(cands, ds, ce_dir, window="off", cache=None, progress=False)
    assert out.table["score_ce"].notna().all()
    with pytest.raises(HardnegError, match="MIN:MAX"):
        rescore(cands, ds, ce_dir, window=(5, 2), cache=None, progress=False)
    with pytest.raises(HardnegError, match="no ranks"):
        rescore(out, ds, ce_dir, rank_by="ce", cache=None, progress=False)
    with pytest.raises(HardnegError, match="not a local folder"):
        rescore(cands, ds, ce_dir.parent / "nope", cache=None, progress=False)
    other = Dataset(ds.doc_ids, ds.titles, ds.texts, {"qa": "x"}, ds.qrels, source="other")
    with pytest.raises(HardnegError, match="'qb' is not in other"):
        rescore(cands, other, ce_dir, cache=None, progress=False)
    with pytest.raises(HardnegError, match="has no ranks"):  # select cannot rank by a partial rescoring
        select(out, SelectionPolicy.unfiltered(rank_by="ce"))


def test_second_rescore_is_a_cache_hit_with_identical_bytes(ce_dir, tmp_path):
    ds, cands = hand_dataset(), hand_candidates(n_ranked=30)
    cache = EmbeddingCache(tmp_path / "cache")
    reranker = Reranker.load(ce_dir)
    first, r1 = rescore_with_report(cands, ds, reranker, window=(1, 20), cache=cache, progress=False)
    assert (r1.pairs_run, r1.cache_hits, r1.cache_misses) == (r1.pairs, 0, 1) and r1.pairs > 0
    second, r2 = rescore_with_report(cands, ds, reranker, window=(1, 20), cache=cache, progress=False)
    assert (r2.pairs_run, r2.cache_hits, r2.cache_misses) == (0, 1, 0)
    assert reranker.pairs_run == r1.pairs  # the model ran once in all
    first.write(tmp_path / "a.parquet")
    second.write(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    # a fresh load of the same weights (from another path) hits too; another window does not
    _, r3 = rescore_with_report(cands, ds, ce_dir, window=(1, 20), cache=cache, progress=False)
    assert r3.cache_hits == 1 and r3.pairs_run == 0
    _, r4 = rescore_with_report(cands, ds, reranker, window=(1, 10), cache=cache, progress=False)
    assert r4.cache_misses == 1 and r4.pairs_run == r4.pairs


def test_cross_fit_folder_scores_each_query_with_the_model_that_never_saw_it(ce_dir, ce_dir_b, tmp_path):
    import shutil

    folder = tmp_path / "xfit"
    shutil.copytree(ce_dir, folder / "fold_0")
    shutil.copytree(ce_dir_b, folder / "fold_1")
    (folder / "folds.json").write_text(json.dumps({"qa": 0, "qb": 1}))  # qc: in no fold
    ds, cands = hand_dataset(), hand_candidates(n_ranked=15)
    out = rescore(cands, ds, folder, window=(1, 15), cache=None, progress=False)
    t = out.table
    for qid, own, other in (("qa", ce_dir, ce_dir_b), ("qb", ce_dir_b, ce_dir), ("qc", ce_dir, ce_dir_b)):
        rows = t[(t["query_id"] == qid) & t["score_ce"].notna()]
        pairs = [(ds.queries[qid], ds.doc_text(d)) for d in rows["doc_id"]]
        got = rows["score_ce"].to_numpy(np.float64)
        np.testing.assert_allclose(got, logits(own, pairs), atol=1e-5)
        assert not np.allclose(got, logits(other, pairs), atol=1e-3)
    info = out.meta["rescoring"]["ce"]
    assert info["folds"] == 2 and len(info["fingerprint"]) == 2 and info["queries_outside_folds"] == 1
    assert Reranker.load(folder).model_index(["qa", "qb", "qc"]).tolist() == [0, 1, 0]


# ---- denoising and the other filters on ce ---------------------------------------------------
def _denoise_table(threshold: float) -> CandidateSet:
    """One query: positive at rank 1; candidates with ce exactly T, just above, unscored, below."""
    above = float(np.nextafter(np.float32(threshold), np.float32(np.inf)))
    ce = [3.0, threshold, above, np.nan, threshold - 1]
    rows = [{"query_id": "q", "doc_id": d, "is_positive": d == "p", "rank_dense": r, "score_dense": 0.9 - r / 10,
             "score_ce": s} for r, (d, s) in enumerate(zip(["p", "at", "above", "unscored", "below"], ce), start=1)]
    return CandidateSet.from_frame(pd.DataFrame(rows), scorers=["dense", "ce"], negative_scores={"ce": True})


@pytest.mark.parametrize("threshold", [0.3, 0.5, -1.7, 0.0])
def test_denoise_keeps_exactly_t_and_unscored_drops_t_plus_eps(threshold):
    c = _denoise_table(threshold)
    mined = select(c, SelectionPolicy.unfiltered(denoise_above=threshold, num_negatives=10))
    assert sorted(mined.negatives["doc_id"]) == ["at", "below", "unscored"]
    removed = {f["filter"]: f["removed"] for f in mined.stats["filters"]}
    assert removed["denoise"] == 1
    assert mined.decisions().set_index("doc_id").loc["above", "decision"] == "denoise"


def test_denoise_needs_a_ce_scorer_and_percent_on_ce_is_refused():
    plain = CandidateSet.from_frame(pd.DataFrame([{"query_id": "q", "doc_id": "p", "is_positive": True,
                                                   "rank_dense": 1, "score_dense": 0.9}]), scorers=["dense"])
    with pytest.raises(HardnegError, match="rescore first"):
        select(plain, SelectionPolicy.unfiltered(denoise_above=0.0))
    with pytest.raises(HardnegError, match="can be negative.*--margin"):
        select(_denoise_table(0.5), SelectionPolicy.unfiltered(percent=0.95, score_by="ce"))
    mined = select(_denoise_table(0.5), SelectionPolicy.unfiltered(margin=1.0, score_by="ce", num_negatives=10))
    assert sorted(mined.negatives["doc_id"]) == ["above", "at", "below"]  # <= 3.0 - 1.0; NaN fails a margin


# ---- export to marginmse ---------------------------------------------------------------------
def test_export_carries_ce_scores_and_marginmse_builds_rows(ce_dir, tmp_path):
    ds, cands = hand_dataset(), hand_candidates(n_ranked=40)
    rescored = rescore(cands, ds, ce_dir, window=(1, 30), cache=None, progress=False)
    mined = select(rescored, SelectionPolicy.unfiltered(window=(2, 30), num_negatives=3))
    docs = {d: ds.doc_text(d) for d in ds.doc_ids}
    report = export(mined, docs, ds.queries, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "negatives.jsonl").read_text().splitlines()]
    assert report["negatives.jsonl"]["teacher_scores"]["written"] is True
    t = rescored.table.set_index(["query_id", "doc_id"])["score_ce"]
    for line in lines:
        q = line["query_id"]
        assert line["pos_scores"] == [pytest.approx(float(t[(q, d)]), abs=1e-6) for d in line["pos_ids"]]
        assert line["neg_scores"] == [pytest.approx(float(t[(q, d)]), abs=1e-6) for d in line["neg_ids"]]
        assert "pos_scores_dense" in line  # the mining scorer's own scores under their own name
    train_ds, built = build_train_dataset(tmp_path / "negatives.jsonl", loss="marginmse")
    assert built.teacher == "ce" and len(train_ds) == sum(len(x["pos"]) * len(x["neg"]) for x in lines)
    assert train_ds.column_names == ["query", "positive", "negative", "label"]


# ---- the check against BM25 ------------------------------------------------------------------
def test_check_reranker_known_bm25_answer_and_warning(ce_dir, toy, caplog):
    ds = load_dataset(toy)
    check = check_reranker(ce_dir, ds, "train", max_queries=6, cache=None)
    assert len(check.query_ids) == 6 and check.depth == 32  # the whole toy corpus
    assert check.bm25_ndcg == pytest.approx(1.0)  # every toy query names its topic word
    assert 0 <= check.reranked_ndcg < 1.0 and not check.beats_bm25  # a random cross-encoder is worse
    with caplog.at_level("WARNING", logger="hardneg"):
        message = warn_if_worse(check)
    assert "denoise with noise" in message and "denoise with noise" in caplog.text
    better = RerankerCheck("dev", "dev", ["q"], [0.5], [0.7], 100, 0.1)
    assert better.beats_bm25 and warn_if_worse(better) is None
    assert RerankerCheck.from_dict(json.loads(json.dumps(check.to_dict()))) == check


# ---- train-reranker --------------------------------------------------------------------------
FAST = ["--max-steps", "2", "--batch-size", "4", "--max-length", "32", "--lr", "1e-3", "--no-progress"]


@pytest.fixture(scope="module")
def mined_toy(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("mined")
    result = runner.invoke(app, ["mine", "--data", str(toy), "--retriever", "bm25", "--depth", "10", "--out",
                                 str(out), "--window", "2:10", "--percent", "off", "--num-negatives", "3"])
    assert result.exit_code == 0, result.output
    return out


def test_pair_dataset_and_folds_are_exact():
    rows = [{"query_id": "a", "query": "qa", "pos": ["p1", "p2"], "neg": ["n1", "n2", "p1"]},
            {"query_id": "b", "query": "qb", "pos": ["p3"], "neg": ["n3"]}]
    data, counts = pair_dataset(rows, num_negatives=2, exclude={"b"})
    assert list(zip(data["document"], data["label"])) == [("p1", 1.0), ("p2", 1.0), ("n1", 0.0), ("n2", 0.0)]
    assert counts == {"queries": 1, "pairs": 4, "positives": 2, "negatives": 2}
    folds = assign_folds([f"q{i}" for i in range(10)], 3, seed=1)
    assert sorted(np.bincount(list(folds.values()))) == [3, 3, 4] and folds == assign_folds(list(folds), 3, seed=1)
    with pytest.raises(HardnegError, match="at least 3 queries"):
        assign_folds(["a", "b"], 3)


def test_tuple_dataset_is_exact_and_leaves_short_queries_out():
    rows = [{"query_id": "a", "query": "qa", "pos": ["p1", "p2"], "neg": ["n1", "n2", "n3"]},
            {"query_id": "b", "query": "qb", "pos": ["p3"], "neg": ["n4"]},
            {"query_id": "c", "query": "qc", "pos": ["p4"], "neg": ["n5", "n6"]}]
    data, counts = tuple_dataset(rows, num_negatives=2, exclude={"c"})
    assert data.column_names == ["query", "positive", "negative_1", "negative_2"]
    assert [tuple(r.values()) for r in data] == [("qa", "p1", "n1", "n2"), ("qa", "p2", "n1", "n2")]
    assert counts == {"queries": 1, "pairs": 6, "positives": 2, "negatives": 4, "short": 1}
    with pytest.raises(HardnegError, match="reranker loss must be one of mnrl, bce"):
        RerankerConfig(loss="hinge")


def test_train_reranker_saves_a_cross_encoder_with_its_own_check(toy, mined_toy, tiny_model_dir, tmp_path):
    from sentence_transformers import CrossEncoder

    out = tmp_path / "ce"
    result = runner.invoke(app, ["train-reranker", "--data", str(toy), "--negatives",
                                 str(mined_toy / "negatives.jsonl"), "--model", str(tiny_model_dir), "--out",
                                 str(out), *FAST])
    assert result.exit_code == 0, result.output
    log = json.loads((out / "hardneg_reranker.json").read_text())
    assert log["data"]["held_out_queries"] == 2 and log["data"]["queries"] == 14  # 0.1 of 16 held out
    assert log["data"]["positives"] == 14 and log["data"]["negatives"] == 14 * 3
    assert log["config"]["max_steps"] == 2 and len(log["losses"]) == 1 and log["losses"][0]
    assert log["config"]["loss"] == "mnrl" and log["data"]["short"] == 0
    check = log["check"]
    assert len(check["query_ids"]) == 2 and check["split"] == "train" and check["depth"] == 32
    assert "reranking BM25 top-32" in result.output
    model = CrossEncoder(str(out), local_files_only=True, device="cpu")
    scores = model.predict([("where is the apple", "The apple article"), ("a", "b")])
    assert model.num_labels == 1 and scores.shape == (2,) and np.isfinite(scores).all()


def test_train_reranker_cross_fit_then_rescore_uses_the_record(toy, mined_toy, tiny_model_dir, tmp_path):
    out = tmp_path / "xfit"
    result = runner.invoke(app, ["train-reranker", "--data", str(toy), "--candidates",
                                 str(mined_toy / "candidates.parquet"), "--window", "2:10", "--num-negatives", "2",
                                 "--model", str(tiny_model_dir), "--out", str(out), "--folds", "2", "--loss", "bce",
                                 *FAST])
    assert result.exit_code == 0, result.output
    folds = json.loads((out / "folds.json").read_text())
    assert sorted(folds) == sorted(f"q{i}" for i in range(16)) and sorted(set(folds.values())) == [0, 1]
    assert (out / "fold_0" / "config.json").is_file() and (out / "fold_1" / "config.json").is_file()
    log = json.loads((out / "hardneg_reranker.json").read_text())
    assert log["folds"]["sizes"] == [8, 8] and [c["queries"] for c in log["data"]["per_fold"]] == [8, 8]
    assert len(log["check"]["query_ids"]) == 16 and "never trained on it" in log["check"]["source"]
    rescored = tmp_path / "rescored.parquet"
    result = runner.invoke(app, ["rescore", str(mined_toy / "candidates.parquet"), "--cross-encoder", str(out),
                                 "--window", "1:5", "--out", str(rescored), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "never trained on it" in result.output  # the recorded out-of-fold check, not a new one
    c = CandidateSet.read(rescored)
    assert c.meta["rescoring"]["ce"]["folds"] == 2 and c.table["score_ce"].notna().any()


def test_rescore_cli_then_denoise_and_marginmse_training(toy, mined_toy, ce_dir, tiny_model_dir, tmp_path):
    rescored = tmp_path / "rescored"
    result = runner.invoke(app, ["rescore", str(mined_toy / "candidates.parquet"), "--cross-encoder", str(ce_dir),
                                 "--window", "1:10", "--out", str(rescored), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "denoise with noise" in result.output  # a random cross-encoder does not beat BM25 on the toy
    assert (rescored / "candidates.parquet").is_file()
    selected = tmp_path / "selected"
    result = runner.invoke(app, ["select", str(rescored / "candidates.parquet"), "--out", str(selected),
                                 "--window", "2:10", "--percent", "off", "--num-negatives", "2",
                                 "--denoise-above", "1e9"])
    assert result.exit_code == 0, result.output
    meta = json.loads((selected / "negatives.meta.json").read_text())
    assert meta["teacher_scores"]["written"] is True and meta["score_fields"]["pos_scores"]["scorer"] == "ce"
    model = tmp_path / "student"
    result = runner.invoke(app, ["train", "--data", str(toy), "--negatives", str(selected / "negatives.jsonl"),
                                 "--model", str(tiny_model_dir), "--out", str(model), "--loss", "marginmse",
                                 "--max-steps", "2", "--batch-size", "4", "--max-seq-length", "32", "--no-progress",
                                 "--holdout-fraction", "0", "--eval-corpus", "16"])
    assert result.exit_code == 0, result.output
    log = json.loads((model / "hardneg_train.json").read_text())
    assert log["data"]["teacher"] == "ce" and log["data"]["n_rows"] == 16 * 2


def test_rescore_cli_errors_are_one_line(toy, ce_dir, tmp_path):
    result = runner.invoke(app, ["rescore", str(tmp_path / "missing.parquet"), "--cross-encoder", str(ce_dir),
                                 "--out", str(tmp_path / "o.parquet")])
    assert result.exit_code == 2 and "no such candidate file" in result.output
    result = runner.invoke(app, ["rescore", str(tmp_path / "missing.parquet"), "--cross-encoder", str(tmp_path),
                                 "--out", str(tmp_path / "o.parquet")])  # checked first: before any file is read
    assert result.exit_code == 2 and "--cross-encoder: " in result.output and "not a model folder" in result.output
    result = runner.invoke(app, ["train-reranker", "--data", str(toy), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "exactly one of --negatives and --candidates" in result.output


def test_audit_with_a_cross_encoder_judge(mined_toy, toy, ce_dir, tmp_path):
    """The toy data has one positive per query: the labels cannot audit, the judge still does,
    and its per-bucket shares are exactly those of the cross-encoder's own logits."""
    import json

    from hardneg.audit import BUCKETS
    from hardneg.candidates import CandidateSet
    from hardneg.data import load_dataset

    out = tmp_path / "audit"
    result = runner.invoke(app, ["audit", str(mined_toy / "candidates.parquet"), "--data", str(toy),
                                 "--cross-encoder", str(ce_dir), "--judge-sample", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "audit.json").read_text())
    assert doc["labels"] is None and doc["judge"]["sampled"] <= 4 * len(BUCKETS)
    # recompute bucket 1-5 by hand from the same sample rule: every unlabeled candidate ranked 1..5
    cands, ds = CandidateSet.read(mined_toy / "candidates.parquet"), load_dataset(toy)
    t = cands.table
    rows = t[~t["is_positive"] & t["rank_bm25"].between(1, 5)]
    assert doc["judge"]["buckets"][0]["available"] == len(rows)
    result = runner.invoke(app, ["audit", str(mined_toy / "candidates.parquet"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "two or more positives" in result.output


def test_rescore_check_and_reranker_rows_declare_the_commands_defaults():
    assert (RescoreCheck().check, RescoreCheck().check_queries) == (True, 100)
    assert RerankerRows().window == "{}:{}".format(*SelectionPolicy().window)
