"""Exports: FlagEmbedding JSONL and sentence-transformers Parquet from small mined sets."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, load_dataset

from hardneg.candidates import CandidateSet
from hardneg.errors import HardnegError
from hardneg.export import export, write_flag_jsonl, write_sentence_transformers
from hardneg.select import SelectionPolicy, select


def _rows(qid: str, scores: list[float], positives: dict[int, str], ce: list[float] | None = None) -> list[dict]:
    rows = []
    for r, s in enumerate(scores, start=1):
        row = {"query_id": qid, "doc_id": positives.get(r, f"{qid}-d{r}"), "is_positive": r in positives,
               "rank_dense": r, "score_dense": s}
        if ce is not None:
            row["score_ce"] = ce[r - 1]
        rows.append(row)
    return rows


def _cands(with_ce: bool = False, ce_gap: bool = False) -> CandidateSet:
    """qa: 1 positive, 4 negatives; qb: 2 positives, 3 negatives; qc: 1 positive, 1 negative."""
    ce_a = [5.0, 1.0, 0.5, -0.5, -1.0]
    ce_b = [6.0, 4.0, np.nan if ce_gap else 0.2, 0.1, -2.0]
    ce_c = [3.0, -3.0]
    rows = (_rows("qa", [0.9, 0.7, 0.6, 0.5, 0.4], {1: "pa"}, ce_a if with_ce else None)
            + _rows("qb", [0.95, 0.9, 0.6, 0.5, 0.45], {1: "pb1", 2: "pb2"}, ce_b if with_ce else None)
            + _rows("qc", [0.8, 0.3], {1: "pc"}, ce_c if with_ce else None))
    scorers = ["dense", "ce"] if with_ce else ["dense"]
    return CandidateSet.from_frame(pd.DataFrame(rows), scorers=scorers, negative_scores={"ce": True})


def _texts(c: CandidateSet):
    docs = {d: f"text of {d}" for d in c.table["doc_id"]}
    queries = {q: f"question {q}" for q in c.table["query_id"]}
    return docs, queries


def _lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


# ---- FlagEmbedding JSONL ---------------------------------------------------------------------
def test_flag_jsonl_rows_never_have_empty_neg(tmp_path):
    c = _cands()
    m = select(c, SelectionPolicy.unfiltered(window=(3, 4), num_negatives=3))  # qc has no rank 3-4: empty row
    assert m.rows["n_negatives"].tolist() == [2, 2, 0]
    report = write_flag_jsonl(m, *_texts(c), tmp_path / "negatives.jsonl")
    lines = _lines(tmp_path / "negatives.jsonl")
    assert [x["query_id"] for x in lines] == ["qa", "qb"]
    assert all(len(x["neg"]) > 0 for x in lines)
    assert report["rows_dropped_no_negatives"] == 1 and report["rows_written"] == 2
    sidecar = json.loads((tmp_path / "negatives.meta.json").read_text())
    assert sidecar["rows_dropped_no_negatives"] == 1


def test_flag_jsonl_content_and_bi_encoder_scores_are_not_teacher_scores(tmp_path):
    c = _cands()
    m = select(c, SelectionPolicy.unfiltered(num_negatives=2))
    write_flag_jsonl(m, *_texts(c), tmp_path / "negatives.jsonl")
    qb = _lines(tmp_path / "negatives.jsonl")[1]
    assert qb["query"] == "question qb"
    assert qb["pos_ids"] == ["pb1", "pb2"] and qb["pos"] == ["text of pb1", "text of pb2"]
    assert qb["neg_ids"] == ["qb-d3", "qb-d4"] and qb["neg_ranks"] == [3, 4]
    assert "pos_scores" not in qb and "neg_scores" not in qb  # FlagEmbedding would distil from these
    assert qb["pos_scores_dense"] == [0.95, 0.9] and qb["neg_scores_dense"] == [0.6, 0.5]
    sidecar = json.loads((tmp_path / "negatives.meta.json").read_text())
    assert sidecar["teacher_scores"]["written"] is False
    assert sidecar["score_fields"]["neg_scores_dense"]["teacher"] is False


def test_flag_jsonl_writes_cross_encoder_scores_as_teacher_scores(tmp_path):
    c = _cands(with_ce=True)
    m = select(c, SelectionPolicy.unfiltered(num_negatives=2))
    write_flag_jsonl(m, *_texts(c), tmp_path / "negatives.jsonl")
    qa = _lines(tmp_path / "negatives.jsonl")[0]
    assert qa["pos_scores"] == [5.0] and qa["neg_scores"] == [1.0, 0.5]
    assert qa["neg_scores_dense"] == [0.7, 0.6]
    sidecar = json.loads((tmp_path / "negatives.meta.json").read_text())
    assert sidecar["teacher_scores"]["written"] is True
    assert sidecar["score_fields"]["pos_scores"]["scorer"] == "ce"


def test_flag_jsonl_omits_teacher_scores_when_any_is_missing(tmp_path):
    c = _cands(with_ce=True, ce_gap=True)
    m = select(c, SelectionPolicy.unfiltered(num_negatives=2))
    write_flag_jsonl(m, *_texts(c), tmp_path / "negatives.jsonl")
    assert all("neg_scores" not in x for x in _lines(tmp_path / "negatives.jsonl"))
    sidecar = json.loads((tmp_path / "negatives.meta.json").read_text())
    assert "1 exported" in sidecar["teacher_scores"]["why"]


def test_flag_jsonl_per_pair_has_one_line_per_positive(tmp_path):
    c = _cands()
    m = select(c, SelectionPolicy.unfiltered(pos_ref="per-pair", num_negatives=2))
    write_flag_jsonl(m, *_texts(c), tmp_path / "negatives.jsonl")
    lines = _lines(tmp_path / "negatives.jsonl")
    assert [(x["query_id"], x["pos_ids"]) for x in lines] == [
        ("qa", ["pa"]), ("qb", ["pb1"]), ("qb", ["pb2"]), ("qc", ["pc"])]


# ---- sentence-transformers -------------------------------------------------------------------
def test_triplet_rows_are_positive_times_negative(tmp_path):
    c = _cands()
    m = select(c, SelectionPolicy.unfiltered(num_negatives=2))
    report = write_sentence_transformers(m, *_texts(c), tmp_path, "st-triplet")
    # qa 1x2, qb 2x2, qc 1x1
    assert report["rows"] == 2 + 4 + 1
    ds = Dataset.from_parquet(str(tmp_path / "train.parquet"))
    assert ds.column_names == ["anchor", "positive", "negative"]
    assert ds[2] == {"anchor": "question qb", "positive": "text of pb1", "negative": "text of qb-d3"}
    ids = pq.read_table(tmp_path / "train.ids.parquet").to_pandas()
    assert len(ids) == 7 and ids["neg_rank"].tolist()[:2] == [2, 3]
    assert ids["pos_id"].tolist() == ["pa", "pa", "pb1", "pb1", "pb2", "pb2", "pc"]


def test_ntuple_has_exactly_k_negative_columns_and_drops_short_rows(tmp_path):
    c = _cands()
    m = select(c, SelectionPolicy.unfiltered(num_negatives=2))
    report = write_sentence_transformers(m, *_texts(c), tmp_path, "st-ntuple")
    ds = load_dataset("parquet", data_files=str(tmp_path / "train.parquet"), split="train")
    assert ds.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert ds["positive"] == ["text of pa", "text of pb1", "text of pb2"]  # qc had 1 negative only
    assert report["rows_dropped_short"] == 1 and report["pairs_dropped_short"] == 1
    assert ds[0]["negative_1"] == "text of qa-d2" and ds[0]["negative_2"] == "text of qa-d3"
    ids = pq.read_table(tmp_path / "train.ids.parquet").to_pylist()
    assert ids[1]["neg_ids"] == ["qb-d3", "qb-d4"] and ids[1]["neg_ranks"] == [3, 4]


def test_ntuple_with_no_negatives_is_anchor_positive_pairs(tmp_path):
    c = _cands()
    m = select(c, SelectionPolicy.unfiltered(sampler="none"))
    write_sentence_transformers(m, *_texts(c), tmp_path, "st-ntuple")
    ds = Dataset.from_parquet(str(tmp_path / "train.parquet"))
    assert ds.column_names == ["anchor", "positive"] and len(ds) == 4


def test_labeled_pairs_and_teacher_score_column(tmp_path):
    c = _cands(with_ce=True)
    m = select(c, SelectionPolicy.unfiltered(num_negatives=2))
    write_sentence_transformers(m, *_texts(c), tmp_path, "st-labeled")
    ds = Dataset.from_parquet(str(tmp_path / "train.parquet"))
    assert ds.column_names == ["sentence1", "sentence2", "label"]
    assert sum(ds["label"]) == 4 and len(ds) == 4 + 5  # 4 positives, 2 + 2 + 1 negatives
    assert ds[0] == {"sentence1": "question qa", "sentence2": "text of pa", "label": 1}
    out = tmp_path / "scored"
    write_sentence_transformers(m, *_texts(c), out, "st-labeled", label_scorer="ce")
    scored = Dataset.from_parquet(str(out / "train.parquet"))
    assert scored.column_names == ["sentence1", "sentence2", "score"]  # one label column only
    assert scored["score"][:3] == [5.0, 1.0, 0.5]


def test_exports_are_byte_identical_for_the_same_seed(tmp_path):
    c = _cands(with_ce=True)
    policy = SelectionPolicy.unfiltered(sampler="simans", num_negatives=2, seed=11, on_short="pad-random")
    corpus = sorted(set(c.table["doc_id"])) + [f"z{i}" for i in range(50)]
    docs, queries = _texts(c)
    docs |= {f"z{i}": f"random text {i}" for i in range(50)}
    for run in ("a", "b"):
        m = select(c, policy, corpus_doc_ids=corpus)
        export(m, docs, queries, tmp_path / run, "st-ntuple")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["negatives.jsonl", "negatives.meta.json", "train.ids.parquet", "train.meta.json",
                     "train.parquet"]
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_missing_text_and_unknown_format_fail_clearly(tmp_path):
    c = _cands()
    m = select(c, SelectionPolicy.unfiltered(num_negatives=2))
    docs, queries = _texts(c)
    docs.pop("qa-d2")
    with pytest.raises(HardnegError, match="qa-d2"):
        write_flag_jsonl(m, docs, queries, tmp_path / "negatives.jsonl")
    assert not (tmp_path / "negatives.jsonl").exists()
    with pytest.raises(HardnegError, match="st-triplet"):
        write_sentence_transformers(m, *_texts(c), tmp_path, "csv")
