"""The false-negative audit and calibration on hand-made candidate tables with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hardneg.audit import (BUCKETS, JudgeConfig, _correct, calibrate, judge_audit, label_audit, selection_trap,
                           wilson)
from hardneg.candidates import CandidateSet
from hardneg.errors import HardnegError
from hardneg.select import SelectionPolicy


def table(n_queries: int = 4, pos_ranks=(3, 4), n_ranked: int = 120, pos_score: float = 0.8,
          neg_score: float = 0.5, single: int = 2, split: str = "train") -> CandidateSet:
    """Queries with positives at ``pos_ranks`` among ``n_ranked`` ranked candidates, plus
    ``single`` queries with one positive (at rank 1), which the label audit must ignore."""
    rows = []
    for q in range(n_queries + single):
        ranks = pos_ranks if q < n_queries else (1,)
        for r in range(1, n_ranked + 1):
            pos = r in ranks
            rows.append({"query_id": f"q{q}", "doc_id": f"q{q}d{r}", "is_positive": pos, "rank_dense": r,
                         "score_dense": pos_score if pos else neg_score})
    return CandidateSet.from_frame(pd.DataFrame(rows), scorers=["dense"], split=split)


def by_bucket(curve):
    return {b["bucket"]: b for b in curve["buckets"]}


def test_wilson_matches_the_closed_form():
    k, n, z = 1, 4, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert wilson(0, 0) is None


def test_label_audit_finds_the_planted_hidden_positives():
    # two positives at ranks 3 and 4: one is hidden per draw, whichever it is, so bucket 1-5 holds
    # ranks 1, 2, 5 (negatives) + the hidden one: rate 1/4 in every draw; deeper buckets 0
    audit = label_audit(table(), fraction=0.5, draws=3, seed=1)
    b = by_bucket(audit)
    assert audit["queries"] == 4  # the single-positive queries do not take part
    assert b["1-5"]["n"] == 4 * 4 and b["1-5"]["k"] == 4
    assert b["1-5"]["rate"] == pytest.approx(0.25)
    assert b["1-5"]["ci"] == pytest.approx(list(wilson(4, 16)))
    assert b["6-10"]["n"] == 4 * 5 and b["6-10"]["rate"] == 0
    assert b["101-200"]["n"] == 4 * 20  # ranks 101..120
    assert audit["hidden_per_draw"] == 4 and audit["hidden_ranked_per_draw"] == 4


def test_hidden_positive_in_the_bucket_it_was_ranked():
    audit = label_audit(table(pos_ranks=(1, 60)), fraction=0.5, draws=40, seed=0)
    b = by_bucket(audit)
    # half of the draws hide rank 1, half rank 60 (in expectation): both buckets see hidden positives
    assert 0 < b["1-5"]["k"] < 4 and 0 < b["51-100"]["k"] < 4
    assert b["1-5"]["k"] + b["51-100"]["k"] == pytest.approx(4)
    assert b["11-20"]["k"] == 0


def test_percent_grid_counts_what_percent_keeps():
    # the hidden positive scores 0.8 = the visible one: ratio 1.0, kept at P=1.00 only;
    # negatives (0.5 / 0.8 = 0.625) are kept at every P down to 0.80
    audit = label_audit(table(), fraction=0.5, draws=2, seed=3)
    grid = audit["percent_grid"]
    i100, i99 = grid["percents"].index(1.0), grid["percents"].index(0.99)
    assert (grid["k"][0][i100], grid["n"][0][i100]) == (4, 16)
    assert (grid["k"][0][i99], grid["n"][0][i99]) == (0, 12)


def test_selection_trap_counts_hidden_positives_among_the_selected():
    # one of the two positives (ranks 3, 4; score 0.8) is hidden per query and draw, so it is the
    # top-scoring candidate: unfiltered top-7 takes it and ranks 1, 2, 5, 6, 7, 8 (ties at 0.5 by rank)
    trap = selection_trap(table(), SelectionPolicy.unfiltered(), hide=0.5, draws=3, seed=1)
    assert trap["queries"] == 4 and trap["kept_queries"] == 4  # the single-positive queries do not take part
    assert (trap["selected"], trap["hidden"]) == (28, 4) and trap["share"] == pytest.approx(1 / 7)
    b = {x["bucket"]: x for x in trap["buckets"]}
    assert (b["1-5"]["selected"], b["1-5"]["hidden"], b["1-5"]["share"]) == (16, 4, 0.25)
    assert (b["6-10"]["selected"], b["6-10"]["share"]) == (12, 0) and b["11-20"]["share"] is None


def test_selection_trap_filters_compare_with_the_visible_positives():
    # percent 0.95 of the visible positive (0.8) drops the hidden one (0.8); so does window 10:100
    for policy in (SelectionPolicy.unfiltered(percent=0.95), SelectionPolicy.unfiltered(window=(10, 100)),
                   SelectionPolicy()):
        trap = selection_trap(table(), policy, draws=2)
        assert trap["hidden"] == 0 and trap["selected"] == 28 and trap["kept_queries"] == 4


def test_selection_trap_never_selects_an_unranked_hidden_positive():
    df = table(pos_ranks=(3,)).table
    extra = pd.DataFrame({"query_id": [f"q{q}" for q in range(4)], "doc_id": [f"u{q}" for q in range(4)],
                          "is_positive": True, "rank_dense": None, "score_dense": 0.99})
    c = CandidateSet.from_frame(pd.concat([df[["query_id", "doc_id", "is_positive", "rank_dense", "score_dense"]],
                                           extra]), scorers=["dense"], split="train")
    trap = selection_trap(c, SelectionPolicy.unfiltered(num_negatives=1), draws=20, seed=0)
    # k = 1 and the hidden positive scores 0.8 or 0.99: trapped exactly when the ranked one is hidden
    assert 0 < trap["hidden"] < 4 and trap["selected"] == 4
    assert trap["buckets"][0]["hidden"] == trap["hidden"]  # rank 3, never an unranked one
    with pytest.raises(HardnegError, match="two or more positives"):
        selection_trap(table(n_queries=0), SelectionPolicy())


def test_calibrate_prefers_a_percent_to_a_deeper_window():
    audit = {"labels": label_audit(table(), fraction=0.5, draws=2)}
    cal = calibrate(audit, target=0.05)
    assert cal.window == (1, 100) and cal.percent == 0.99 and cal.estimated_rate == 0
    assert 'window = "1:100"' in cal.recipe_toml() and "percent = 0.99" in cal.recipe_toml()


def curve(rates, n=100):
    return {"buckets": [{"bucket": f"{lo}-{hi}", "lo": lo, "hi": hi, "n": n if r is not None else 0,
                         "k": (r or 0) * n, "rate": r} for (lo, hi), r in zip(BUCKETS, rates)]}


def test_calibrate_picks_the_smallest_start_under_the_target():
    audit = {"labels": curve([0.5, 0.2, 0.04, 0.06, 0.01, 0.0])}
    assert calibrate(audit, target=0.05).window == (51, 100)  # 11-20 passes but 21-50 does not
    assert calibrate(audit, target=0.07).window == (11, 100)
    assert calibrate(audit, target=0.3).window == (6, 100)
    assert calibrate(audit, target=0.05).percent is None  # no grid: no percent
    empty = {"labels": curve([0.5, None, 0.01, 0.0, 0.0, 0.0])}
    assert calibrate(empty, target=0.05).window == (6, 100)  # the empty 6-10 passes, 1-5 does not


def test_calibrate_uses_the_judge_curve_when_present():
    audit = {"labels": curve([0.5, 0.2, 0.04, 0.0, 0.0, 0.0]), "judge": curve([0.5, 0.2, 0.2, 0.2, 0.01, 0.3])}
    cal = calibrate(audit, target=0.05)
    assert cal.curve == "judge" and cal.window == (51, 100)  # the 101-200 bucket is outside the window
    assert calibrate(audit, target=0.05, use="labels").window == (11, 100)
    with pytest.raises(HardnegError, match="no 'judge' curve"):
        calibrate({"labels": audit["labels"]}, use="judge")


def test_judge_audit_shares_per_bucket():
    cands = table(n_queries=3, single=0)
    texts = {d: f"doc {d}" for d in cands.table["doc_id"]}
    queries = {q: f"query {q}" for q in cands.table["query_id"].unique()}
    seen = []

    def judge(qids, qtexts, dtexts):  # "relevant" iff the doc is ranked in the top 10 (its id says so)
        seen.extend(qids)
        return np.array([5.0 if int(t.rsplit("d", 1)[1]) <= 10 else -5.0 for t in dtexts])

    audit = judge_audit(cands, texts, queries, judge, sample=6, seed=0)
    b = by_bucket(audit)
    assert b["1-5"]["n"] == 6 and b["1-5"]["rate"] == 1.0  # 3 negatives per query in 1-5: 9 available, 6 sampled
    assert b["1-5"]["available"] == 9
    assert b["6-10"]["rate"] == 1.0 and b["11-20"]["rate"] == 0.0
    assert audit["sampled"] == 6 * len(BUCKETS) and len(seen) == audit["sampled"] + 6  # + 6 labeled positives
    assert audit["positives"]["n"] == 6 and audit["positives"]["rate"] == 1.0  # all at ranks 3, 4: judged relevant
    again = judge_audit(cands, texts, queries, judge, sample=6, seed=0)
    assert again == audit


def test_judge_curve_is_corrected_for_the_judges_recall_and_false_alarms():
    # a judge that finds 80% of positives and calls 20% of the deepest bucket relevant: a raw
    # share of 0.5 means (0.5 - 0.2) / (0.8 - 0.2) = 0.5 truly relevant, 0.2 means none
    buckets = [{"bucket": "1-5", "lo": 1, "hi": 5, "k": 50, "n": 100, "rate": 0.5, "ci": [0.4, 0.6]},
               {"bucket": "6-100", "lo": 6, "hi": 100, "k": 23, "n": 100, "rate": 0.23, "ci": [0.15, 0.3]},
               {"bucket": "101-200", "lo": 101, "hi": 200, "k": 20, "n": 100, "rate": 0.2, "ci": [0.1, 0.3]}]
    useless = [dict(b) for b in buckets]
    _correct(buckets, {"k": 80, "n": 100})
    assert [b["corrected"]["rate"] for b in buckets] == pytest.approx([0.5, 0.05, 0.0])
    # the bootstrap interval against the delta method's normal interval, worked by hand:
    # d/dr = 1/0.6, d/ds = -0.3/0.36, d/df = -0.3/0.36; var = 2.778*.0025 + 2*0.694*.0016 = 0.00917
    lo, hi = buckets[0]["corrected"]["ci"]
    assert lo == pytest.approx(0.5 - 1.96 * 0.0957, abs=0.03) and hi == pytest.approx(0.5 + 1.96 * 0.0957, abs=0.03)
    assert buckets[2]["corrected"]["ci"] == [0.0, 0.0]
    few = [dict(b) for b in buckets]  # the same recall measured on 10 positives: a wider interval
    _correct(few, {"k": 8, "n": 10})
    assert np.diff(few[0]["corrected"]["ci"])[0] > np.diff(buckets[0]["corrected"]["ci"])[0] + 0.1
    again = [dict(b) for b in useless]
    _correct(again, {"k": 80, "n": 100})
    assert again[0]["corrected"] == buckets[0]["corrected"]  # seeded
    audit = {"judge": {"buckets": buckets}}
    assert calibrate(audit, target=0.05).window == (6, 100)  # raw 0.23 would fail; corrected 0.05 passes
    assert calibrate(audit, target=0.04).reason.startswith("no start up to rank 100 meets 0.04")
    _correct(useless, {"k": 20, "n": 100})  # recall no better than the false alarms: left uncorrected
    assert not any("corrected" in b for b in useless)


def test_audit_refuses_an_evaluation_split_and_single_positive_data():
    with pytest.raises(HardnegError, match="evaluation split"):
        label_audit(table(split="test"))
    with pytest.raises(HardnegError, match="two or more positives"):
        label_audit(table(n_queries=0, single=3))
    with pytest.raises(HardnegError, match="--hide"):
        label_audit(table(), fraction=1.0)


def test_recipe_window_auto_calibrates_each_round(tmp_path):
    import json

    from hardneg.loop.rounds import _calibrated
    from hardneg.recipe import dump_recipe, load_recipe
    from hardneg.select import SelectionPolicy

    config = load_recipe(overrides={"data": {"path": "x"}, "select": {"window": "auto"}, "audit": {"target": 0.3}})
    assert config.auto_window and config.policy.window is None and config.audit.target == 0.3
    assert 'window = "auto"' in dump_recipe(config)
    again = tmp_path / "again.toml"
    again.write_text(dump_recipe(config))
    assert load_recipe(again).auto_window
    # the hidden positive sits in 1-5 (rate 0.25 <= 0.3): the window starts at 1, no percent needed
    policy = _calibrated(table(), SelectionPolicy.unfiltered(percent=0.95), config.audit, tmp_path)
    assert policy.window == (1, 100) and policy.percent is None
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert doc["window"] == [1, 100] and doc["labels"]["buckets"][0]["rate"] == pytest.approx(0.25)
    strict = _calibrated(table(), SelectionPolicy.unfiltered(), load_recipe(overrides={"audit": {"target": 0.05}}).audit, tmp_path)
    assert strict.window == (1, 100) and strict.percent == 0.99  # percent 0.99 drops the tied hidden positive


def test_cli_audit_then_calibrate(tmp_path):
    import json

    from typer.testing import CliRunner

    from hardneg.cli import app

    table().write(tmp_path / "candidates.parquet")
    runner = CliRunner()
    res = runner.invoke(app, ["audit", str(tmp_path / "candidates.parquet"), "--out", str(tmp_path / "a"),
                              "--draws", "2"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert doc["labels"]["buckets"][0]["rate"] == pytest.approx(0.25) and doc["judge"] is None
    res = runner.invoke(app, ["calibrate", str(tmp_path / "a" / "audit.json"), "--target", "0.05",
                              "--out", str(tmp_path / "cal.toml")])
    assert res.exit_code == 0, res.output
    from hardneg.recipe import load_recipe

    config = load_recipe(tmp_path / "cal.toml")  # the keys are a valid recipe overlay
    assert config.policy.window == (1, 100) and config.policy.percent == 0.99
    res = runner.invoke(app, ["calibrate", str(tmp_path / "a" / "audit.json"), "--use", "judge"])
    assert res.exit_code == 2 and "no 'judge' curve" in res.output
    table(split="test").write(tmp_path / "test.parquet")
    res = runner.invoke(app, ["audit", str(tmp_path / "test.parquet"), "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "evaluation split" in res.output and not (tmp_path / "b").exists()


def test_judge_config_declares_audits_judge_options_and_needs_a_cross_encoder_to_judge():
    assert (JudgeConfig().judge_threshold, JudgeConfig().judge_sample) == (0.0, 100)
    assert JudgeConfig(judge_sample=5).arguments(None, None) == {}  # no --cross-encoder: the labels' audit only


def test_selection_trap_reports_the_precision_of_what_a_policy_promotes():
    """A judge scoring the positives (visible or hidden) 0.9 and one decoy per query 0.7: promote_above
    0.6 promotes each query's hidden positive (rank 3 or 4) and its decoy (rank 10): precision 1/2,
    recall 1 (the decoy is an unlabeled candidate, counted wrong: the precision is a lower bound)."""
    df = table().table
    df["score_ce"] = np.where(df["is_positive"], 0.9, np.where(df["doc_id"].str.endswith("d10"), 0.7, 0.1))
    c = CandidateSet.from_frame(df[["query_id", "doc_id", "is_positive", "rank_dense", "score_dense", "score_ce"]],
                                scorers=["dense", "ce"], split="train")
    trap = selection_trap(c, SelectionPolicy.unfiltered(promote_above=0.6), draws=3, seed=1)
    assert trap["promoted"] == {"promoted": 8.0, "hidden": 4.0, "precision": 0.5, "recall": 1.0}
    assert trap["hidden"] == 0  # a promoted hidden positive is never a negative
    assert "promoted" not in selection_trap(c, SelectionPolicy.unfiltered(), draws=1)
