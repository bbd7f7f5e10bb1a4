"""hardneg.metrics: the definitions by hand, ranx and the numpy reference agreeing on awkward
rankings, a disagreement refused, one compiled signature whatever the ids, and the lock."""
from __future__ import annotations

import fcntl
import math

import numpy as np
import pytest

from hardneg import metrics
from hardneg.metrics import METRICS, MetricsMismatch, per_query_scores, ranked_lists, reference_scores
from hardneg.retrieve.base import Ranking


def ranking(rows: dict[str, list[str]], scores: list[list[float]] | None = None) -> Ranking:
    doc_ids = sorted({d for row in rows.values() for d in row})
    pos = {d: i for i, d in enumerate(doc_ids)}
    indices = np.array([[pos[d] for d in row] for row in rows.values()], dtype=np.int64)
    k = indices.shape[1]
    values = np.array(scores if scores is not None else [list(range(k, 0, -1))] * len(rows), dtype=np.float32)
    return Ranking(list(rows), doc_ids, indices, values)


def test_the_definitions_by_hand():
    qrels = {"q": {"a": 2, "b": 1, "c": 0, "z": 1}}  # z is never retrieved, c is judged non-relevant
    r = ranking({"q": ["c", "a", "x", "b"]})
    expected = {
        "ndcg@10": (2 / math.log2(3) + 1 / math.log2(5)) / (2 + 1 / math.log2(3) + 1 / math.log2(4)),
        "recall@10": 2 / 3, "recall@100": 2 / 3, "mrr@10": 1 / 2, "map@100": (1 / 2 + 2 / 4) / 3,
    }
    ref = reference_scores(qrels, r.query_ids, ranked_lists(r))
    got = per_query_scores(qrels, r)
    for m, value in expected.items():
        assert ref[m][0] == pytest.approx(value, abs=1e-12), m
        assert got[m][0] == pytest.approx(value, abs=1e-12), m


def test_cutoffs_count():
    qrels = {"q": {"d3": 1}}
    r = ranking({"q": [f"d{i}" for i in range(12)]})  # the relevant one at rank 4
    got = per_query_scores(qrels, r, ["ndcg@3", "recall@3", "mrr@3", "mrr@10", "map@4"])
    assert got["ndcg@3"][0] == 0 and got["recall@3"][0] == 0 and got["mrr@3"][0] == 0
    assert got["mrr@10"][0] == pytest.approx(1 / 4) and got["map@4"][0] == pytest.approx(1 / 4)


def test_ties_keep_the_ranking_order_in_both_computations():
    """Equal scores: the order is the ranking's (as in the TREC files), not ranx's own re-sort."""
    qrels = {"q1": {"a": 1}, "q2": {"a": 1}}
    r = ranking({"q1": ["b", "a", "c"], "q2": ["a", "b", "c"]}, scores=[[1.0, 1.0, 1.0]] * 2)
    got = per_query_scores(qrels, r, ["mrr@10"])
    assert got["mrr@10"].tolist() == [0.5, 1.0]


def test_ranx_and_the_reference_agree_on_awkward_rankings():
    """Graded qrels, queries with nothing relevant, a document ranked twice (its first rank counts),
    ids of every length with spaces and non-ASCII letters, ties."""
    rng = np.random.default_rng(3)
    doc_ids = [("x" * int(rng.integers(0, 40))) + f"é {i}" for i in range(300)]
    qids = [f"q {i}" for i in range(60)]
    qrels = {q: {doc_ids[d]: int(rng.integers(0, 4)) for d in rng.choice(300, size=int(rng.integers(1, 12)), replace=False)}
             for q in qids}
    indices = rng.integers(0, 300, size=(60, 100))
    for i, q in enumerate(qids[:40]):  # most queries see some of their judged documents
        judged = [doc_ids.index(d) for d in qrels[q]]
        indices[i, rng.integers(0, 100, size=len(judged))] = judged
    scores = np.round(np.sort(rng.random((60, 100)), axis=1)[:, ::-1], 1).astype(np.float32)  # many ties
    r = Ranking(qids, doc_ids, indices, scores)
    assert any(len(set(row)) < 100 for row in indices.tolist())
    got = per_query_scores(qrels, r)  # raises if ranx and the reference differ
    ref = reference_scores(qrels, qids, ranked_lists(r))
    for m in METRICS:
        np.testing.assert_allclose(got[m], ref[m], rtol=0, atol=metrics.TOLERANCE)
    assert 0 < got["ndcg@10"].mean() < 1 and (got["recall@100"] == 0).any()


def test_a_disagreement_is_an_error_naming_the_metric_and_query(monkeypatch):
    real = metrics._ranx_scores

    def corrupted(*args):  # a kernel gone wrong, as a racing cache could leave it
        out = real(*args)
        out["ndcg@10"][1] += 0.25
        return out

    monkeypatch.setattr(metrics, "_ranx_scores", corrupted)
    r = ranking({"q1": ["a", "b"], "q2": ["b", "a"]})
    with pytest.raises(MetricsMismatch, match=r"ndcg@10 of query 'q2': ranx 1.25.* numpy reference 1.00.*\(1 of 2 queries"):
        per_query_scores({"q1": {"a": 1}, "q2": {"b": 1}}, r)


def test_unknown_metrics_and_unjudged_queries_are_refused():
    r = ranking({"q": ["a"]})
    with pytest.raises(ValueError, match="unsupported metric 'precision@5'"):
        per_query_scores({"q": {"a": 1}}, r, ["precision@5"])
    with pytest.raises(ValueError, match="have no qrels"):
        per_query_scores({}, r)


def test_new_id_lengths_compile_no_new_signature():
    """ranx compiles per maximum id length; hardneg's fixed-width tokens give it one signature."""
    from ranx.data_structures.common import add_and_sort

    per_query_scores({"q": {"a": 1}}, ranking({"q": ["a", "b"]}))
    before = len(add_and_sort.signatures)
    for length in (3, 17, 61):
        ids = [c * length for c in "abc"]
        per_query_scores({"q": {ids[0]: 1}}, ranking({"q": ids}))
    assert len(add_and_sort.signatures) == before


def test_the_ranx_lock_is_exclusive(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    with metrics.ranx_lock():
        with open(tmp_path / "ranx.lock", "a+b") as other:  # another open file: as another process would hold
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / "ranx.lock", "a+b") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


def test_the_private_numba_cache_keeps_a_user_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("HARDNEG_CACHE", str(tmp_path))
    metrics.private_numba_cache()
    import os

    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "numba")
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/elsewhere")
    metrics.private_numba_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == "/elsewhere"
