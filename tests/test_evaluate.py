"""Metrics against hand-computed values; the paired test against exact enumeration."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hardneg.data import Dataset
from hardneg.evaluate import evaluate, format_p, holm, paired_randomization_test, write_eval
from hardneg.metrics import per_query_scores
from hardneg.retrieve.base import Ranking

DOCS = ["d1", "d2", "d3", "d4"]


def ranking(rows: dict[str, list[str]]) -> Ranking:
    idx = np.array([[DOCS.index(d) for d in docs] for docs in rows.values()], dtype=np.int64)
    scores = np.tile(np.arange(idx.shape[1], 0, -1, dtype=np.float32), (len(rows), 1))
    return Ranking(list(rows), DOCS, idx, scores)


def test_metrics_match_hand_computation():
    qrels = {"q1": {"d1": 1, "d3": 1, "d4": 0}, "q2": {"d2": 1}}
    r = ranking({"q1": ["d1", "d2", "d3"], "q2": ["d1", "d3", "d2"]})
    got = per_query_scores(qrels, r, ["ndcg@10", "recall@10", "mrr@10", "map@100", "recall@2"])
    idcg_q1 = 1 + 1 / math.log2(3)
    assert got["ndcg@10"] == pytest.approx([(1 + 1 / math.log2(4)) / idcg_q1, 1 / math.log2(4)])
    assert got["recall@10"] == pytest.approx([1.0, 1.0])
    assert got["recall@2"] == pytest.approx([0.5, 0.0])
    assert got["mrr@10"] == pytest.approx([1.0, 1 / 3])
    assert got["map@100"] == pytest.approx([(1 + 2 / 3) / 2, 1 / 3])


def test_per_query_scores_keep_our_query_order_not_ranx_sorted_order():
    qrels = {"b": {"d1": 1}, "a": {"d2": 1}, "10": {"d1": 1}}
    r = ranking({"b": ["d1", "d2"], "a": ["d1", "d2"], "10": ["d3", "d4"]})
    assert per_query_scores(qrels, r, ["mrr@10"])["mrr@10"].tolist() == [1.0, 0.5, 0.0]


def test_randomization_test_matches_exact_enumeration_and_is_reproducible():
    a = np.array([0.9, 0.7, 0.8, 0.6, 0.75, 0.5, 0.95, 0.4])
    b = np.array([0.8, 0.72, 0.5, 0.6, 0.7, 0.55, 0.6, 0.35])
    d = a - b
    flips = np.array(list(itertools.product([-1, 1], repeat=d.size)))
    exact = np.mean(np.abs(flips @ d) >= abs(d.sum()) - 1e-12)
    p = paired_randomization_test(a, b, n_resamples=20000, seed=1)
    assert p == pytest.approx(exact, abs=0.01)
    assert p == paired_randomization_test(a, b, n_resamples=20000, seed=1)
    assert paired_randomization_test(a, a) == 1.0


def test_p_floor_is_printed_as_bound_not_zero():
    a, b = np.ones(200), np.zeros(200)
    p = paired_randomization_test(a, b, n_resamples=999)
    assert p == pytest.approx(1 / 1000)
    assert format_p(p, 999) == "< 0.001"


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_evaluate_writes_metrics_runs_and_report(tmp_path):
    ds = Dataset(DOCS, [""] * 4, ["a", "b", "c", "d"], {"q1": "x", "q2": "y", "t1": "z"},
                 {"train": {"t1": {"d1": 1}}, "test": {"q1": {"d1": 1}, "q2": {"d2": 1}}})
    runs = {"bm25": ranking({"q1": ["d1", "d2"], "q2": ["d1", "d2"]}),
            "dense": ranking({"q1": ["d2", "d1"], "q2": ["d2", "d1"]})}
    result = evaluate(ds, "test", runs, n_resamples=100)
    write_eval(result, tmp_path, runs)
    import json

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"bm25", "dense"}
    assert metrics["bm25"]["mrr@10"] == pytest.approx(0.75)
    assert metrics["dense"]["mrr@10"] == pytest.approx(0.75)
    assert (tmp_path / "runs" / "bm25.trec").read_text().splitlines()[0] == "q1 Q0 d1 1 2.000000 bm25"
    # d1 is a train positive: q1 leaks, q2 is clean
    assert result.clean_ids == ["q2"]
    assert json.loads((tmp_path / "metrics_clean.json").read_text())["dense"]["mrr@10"] == pytest.approx(1.0)
    assert "Holm" in (tmp_path / "report.md").read_text()


def test_evaluate_tests_the_pairs_given_with_holm_across_them():
    """``pairs``: one paired test per pair, Holm across the pairs (per metric), the difference's CI;
    ``pvalues`` keeps each system's p against the first only where that pair was tested."""
    from hardneg.evaluate import bootstrap_ci

    docs = [f"d{i}" for i in range(6)]
    qrels = {f"q{i}": {docs[i % 6]: 1} for i in range(12)}
    ds = Dataset(docs, [""] * 6, ["t"] * 6, {q: "x" for q in qrels}, {"test": qrels})
    rng = np.random.default_rng(1)
    runs = {name: Ranking(list(qrels), docs, np.stack([rng.permutation(6) for _ in qrels]),
                          np.tile(np.arange(6, 0, -1, dtype=np.float32), (12, 1))) for name in "abcd"}
    pairs = [("a", "c"), ("b", "c"), ("b", "d")]
    result = evaluate(ds, "test", runs, metrics=["ndcg@10", "mrr@10"], n_resamples=500, pairs=pairs)
    for m in ("ndcg@10", "mrr@10"):
        tested = [c for c in result.comparisons if c.metric == m]
        assert [(c.system, c.vs) for c in tested] == pairs
        raw = [paired_randomization_test(result.per_query[s][m], result.per_query[v][m], 500, 0) for s, v in pairs]
        assert [c.p_raw for c in tested] == raw and [c.p for c in tested] == pytest.approx(holm(raw))
        for c in tested:
            d = result.per_query[c.system][m] - result.per_query[c.vs][m]
            assert c.diff == pytest.approx(d.mean()) and c.ci95 == bootstrap_ci(d) and c.p >= c.p_raw
    assert result.pvalues["c"]["ndcg@10"] == result.comparison("a", "c").p and "b" not in result.pvalues
    assert "3 pairs (a vs c; b vs c; b vs d), Holm-corrected across those pairs" in result.family()


def _trec(path):
    """query -> [(doc, score)] of a TREC run file, in file order."""
    runs: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text().splitlines():
        q, _, d, _, s, _ = line.split()
        runs.setdefault(q, []).append((d, float(s)))
    return runs


def test_eval_fuses_every_dense_retriever_with_bm25_k_chosen_on_dev(tiny_model_dir, tmp_path):
    """`hardneg eval -r bm25 -r dense` also reports hybrid(bm25+dense): its run is the RRF (recomputed
    here by hand from the two runs written) at a k of the grid chosen on held-out train queries; with
    no train or dev queries nothing can choose k and it is 60."""
    import json

    from typer.testing import CliRunner

    from hardneg.cli import app
    from toybeir import write_toy_beir

    data = write_toy_beir(tmp_path / "toy")
    common = ["--data", str(data), "-r", "bm25", "-r", "dense", "--model", str(tiny_model_dir),
              "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", *common, "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["bm25", "dense", "hybrid(bm25+dense)"]
    note = (out / "report.md").read_text()
    k = int(note.split("hybrid(bm25+dense) k = ")[1].split(".")[0].split()[0])
    assert k in (10, 30, 60, 100) and "chosen on dev" in note and "held out" in note
    bm25, dense = _trec(out / "runs" / "bm25.trec"), _trec(out / "runs" / "dense.trec")
    fused = _trec(out / "runs" / "hybrid-bm25+dense.trec")
    for q, ranked in fused.items():
        by_hand: dict[str, float] = {}
        for run in (bm25, dense):
            for rank, (d, _) in enumerate(run[q], start=1):
                by_hand[d] = by_hand.get(d, 0.0) + 1.0 / (k + rank)
        assert [s for _, s in ranked] == pytest.approx(sorted(by_hand.values(), reverse=True)[:len(ranked)], abs=1e-6)
        assert all(by_hand[d] == pytest.approx(s, abs=1e-6) for d, s in ranked)  # TREC: 6 decimals
    (data / "qrels" / "train.tsv").unlink()
    alone = CliRunner().invoke(app, ["eval", *common, "--out", str(tmp_path / "alone")])
    assert alone.exit_code == 0, alone.output
    assert "RRF k 60 for every hybrid" in (tmp_path / "alone" / "report.md").read_text()
