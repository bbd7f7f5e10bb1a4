"""The Parquet candidate set: contract columns, metadata, deterministic atomic writes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hardneg.candidates import CandidateSet, CandidateWriter
from hardneg.errors import HardnegError


def _frame() -> pd.DataFrame:
    """q1: positive p1 at rank 2, p2 unranked (below depth); q0: positive at rank 1."""
    return pd.DataFrame({
        "query_id": ["q1", "q1", "q1", "q1", "q0", "q0"],
        "doc_id": ["p2", "d3", "p1", "d1", "p0", "d9"],
        "is_positive": [True, False, True, False, True, False],
        "rank_dense": [None, 3, 2, 1, 1, 2],
        "score_dense": [0.40, 0.70, 0.80, 0.90, 0.95, 0.50],
        "rank_bm25": [None, 1, None, 2, 1, None],
        "score_bm25": [np.nan, 12.0, np.nan, 9.5, 7.0, np.nan],
    })


def _cands() -> CandidateSet:
    return CandidateSet.from_frame(_frame(), scorers=["dense", "bm25"], depth=3, corpus_size=100)


def test_from_frame_fills_flags_and_metadata():
    c = _cands()
    assert c.table["dup_of_positive"].tolist() == [False] * 6
    assert c.table["source"].tolist() == ["dense"] * 6
    assert np.isnan(c.table["pos_cosine"]).all()
    assert c.meta["rank_by"] == "dense" and c.meta["score_by"] == "dense"
    assert c.meta["negative_scores"] == {"dense": False, "bm25": False}
    assert c.table["rank_dense"].isna().tolist() == [True, False, False, False, False, False]


def test_validate_names_missing_columns():
    c = _cands()
    broken = CandidateSet(c.table.drop(columns=["score_bm25", "is_query_text"]), c.meta)
    with pytest.raises(HardnegError) as err:
        broken.validate()
    assert "is_query_text" in str(err.value) and "score_bm25" in str(err.value)


def test_validate_rejects_unknown_rank_by():
    c = _cands()
    with pytest.raises(HardnegError, match="rank_by='ce'"):
        CandidateSet(c.table, c.meta | {"rank_by": "ce"}).validate()


def test_positive_scores_include_unranked_positives():
    c = _cands()
    pos = c.positive_scores()
    got = sorted(zip(pos["query_id"], pos["doc_id"], pos["score"].astype(float).round(2)))
    assert got == [("q0", "p0", 0.95), ("q1", "p1", 0.80), ("q1", "p2", 0.40)]
    assert c.min_positive_score().astype(float).round(2).to_dict() == {"q1": 0.40, "q0": 0.95}


def test_write_read_roundtrip_sorted_by_query_then_rank(tmp_path):
    c = _cands()
    c.write(tmp_path / "candidates.parquet")
    back = CandidateSet.read(tmp_path / "candidates.parquet")
    # queries in order of first appearance (q1 first), then rank, unranked positive last
    assert back.table["doc_id"].tolist() == ["d1", "p1", "d3", "p2", "p0", "d9"]
    assert back.table["rank_dense"].tolist()[:3] == [1, 2, 3]
    assert back.table["rank_dense"].isna().tolist() == [False, False, False, True, False, False]
    assert str(back.table["rank_dense"].dtype) == "Int32"
    assert back.table["score_bm25"].dtype == np.float32
    assert back.meta == c.meta
    assert back.query_ids() == ["q1", "q0"]


def test_write_is_byte_identical_and_independent_of_chunking(tmp_path):
    c = _cands()
    c.write(tmp_path / "a.parquet", row_group_size=4)
    shuffled = CandidateSet(c.table.iloc[[2, 0, 3, 1, 5, 4]].reset_index(drop=True), c.meta)
    shuffled.write(tmp_path / "b.parquet", row_group_size=4)
    with CandidateWriter(tmp_path / "c.parquet", c.meta, row_group_size=4) as w:
        w.append(c.table[c.table["query_id"] == "q1"])
        w.append(c.table[c.table["query_id"] == "q0"])
    a = (tmp_path / "a.parquet").read_bytes()
    assert a == (tmp_path / "b.parquet").read_bytes() == (tmp_path / "c.parquet").read_bytes()
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4, 2]


def test_failed_write_leaves_no_file(tmp_path):
    c = _cands()
    with pytest.raises(RuntimeError):
        with CandidateWriter(tmp_path / "x.parquet", c.meta) as w:
            w.append(c.table)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_read_refuses_plain_parquet(tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(HardnegError, match="not a hardneg candidate file"):
        CandidateSet.read(tmp_path / "plain.parquet")
    with pytest.raises(HardnegError, match="no such candidate file"):
        CandidateSet.read(tmp_path / "missing.parquet")
