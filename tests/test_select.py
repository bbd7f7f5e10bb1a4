"""Selection on tiny hand-made candidate tables where the right answer is known."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from hardneg.candidates import CandidateSet
from hardneg.errors import HardnegError
from hardneg.select import SelectionPolicy, select
from hardneg.select.policy import parse_window
from hardneg.select.stats import format_stats_table


def ranking(qid: str, scores: list[float], positives: dict[int, str] = {}, unranked: dict[str, float] = {},
            flags: dict[int, dict] = {}, prefix: str = "d") -> list[dict]:
    """Rows of one query: ``scores[i]`` is the score at rank i+1; ``positives`` maps rank -> doc id."""
    rows = []
    for r, s in enumerate(scores, start=1):
        doc = positives.get(r, f"{prefix}{r}")
        rows.append({"query_id": qid, "doc_id": doc, "is_positive": r in positives,
                     "rank_dense": r, "score_dense": s, **flags.get(r, {})})
    for doc, s in unranked.items():
        rows.append({"query_id": qid, "doc_id": doc, "is_positive": True, "rank_dense": None, "score_dense": s})
    return rows


def cands(rows: list[dict], scorers=("dense",), **kw) -> CandidateSet:
    return CandidateSet.from_frame(pd.DataFrame(rows), scorers=list(scorers), **kw)


def negs(mined, row: int = 0) -> list[str]:
    return mined.negatives.loc[mined.negatives["row"] == row, "doc_id"].tolist()


def removed(mined) -> dict[str, int]:
    return {f["filter"]: f["removed"] for f in mined.stats["filters"]}


# ---- window ----------------------------------------------------------------------------------
def test_window_keeps_original_ranks_inclusive_at_both_ends():
    c = cands(ranking("q", list(np.linspace(0.9, 0.1, 120)), positives={1: "p"}))
    m = select(c, SelectionPolicy.unfiltered(window=(10, 100), num_negatives=200))
    ranks = set(m.negatives["rank"].tolist())
    assert {10, 100} <= ranks and not ({9, 101} & ranks)
    assert ranks == set(range(10, 101))
    assert removed(m)["window"] == 119 - 91  # 120 ranked minus the positive, 91 kept


def test_window_counts_positives_in_the_ranking():
    # positive at rank 1: window 1:2 keeps only rank 2 (ST's range_min would shift to rank 3)
    c = cands(ranking("q", [0.9, 0.8, 0.7, 0.6], positives={1: "p"}))
    m = select(c, SelectionPolicy.unfiltered(window=(1, 2)))
    assert negs(m) == ["d2"]


# ---- positive-aware filters -----------------------------------------------------------------
def _two_positive_query() -> CandidateSet:
    # positives: p1 (0.9, rank 1) and p2 (0.6, unranked); candidates d2..d6
    return cands(ranking("q", [0.9, 0.85, 0.7, 0.55, 0.5, 0.3], positives={1: "p1"}, unranked={"p2": 0.6}))


def test_max_score_keeps_scores_at_most_the_cap():
    m = select(_two_positive_query(), SelectionPolicy.unfiltered(max_score=0.6))
    assert negs(m) == ["d4", "d5", "d6"]
    assert removed(m)["max_score"] == 2


def test_margin_against_the_lowest_positive():
    m = select(_two_positive_query(), SelectionPolicy.unfiltered(margin=0.08, pos_ref="min"))  # s <= 0.6 - 0.08
    assert negs(m) == ["d5", "d6"]


def test_percent_against_the_lowest_positive():
    m = select(_two_positive_query(), SelectionPolicy.unfiltered(percent=0.95, pos_ref="min"))  # keep s <= 0.57
    assert negs(m) == ["d4", "d5", "d6"]
    assert removed(m)["percent"] == 2


def test_by_default_the_filters_compare_with_the_highest_positive():
    m = select(_two_positive_query(), SelectionPolicy.unfiltered(percent=0.95))  # p1 0.9: keep s <= 0.855
    assert SelectionPolicy().pos_ref.value == "max"
    assert negs(m) == ["d2", "d3", "d4", "d5", "d6"] and removed(m)["percent"] == 0
    margin = select(_two_positive_query(), SelectionPolicy.unfiltered(margin=0.08))  # keep s <= 0.82
    assert negs(margin) == ["d3", "d4", "d5", "d6"]


def test_per_pair_filters_against_each_positive():
    m = select(_two_positive_query(), SelectionPolicy.unfiltered(percent=0.95, pos_ref="per-pair"))
    assert m.rows["pos_id"].tolist() == ["p1", "p2"]
    assert negs(m, 0) == ["d2", "d3", "d4", "d5", "d6"]  # p1: keep s <= 0.855
    assert negs(m, 1) == ["d4", "d5", "d6"]  # p2: keep s <= 0.57
    assert m.positives.groupby("row")["doc_id"].apply(list).tolist() == [["p1"], ["p2"]]
    assert removed(m)["percent"] == 2  # counted per (query, positive, candidate)
    m2 = select(_two_positive_query(), SelectionPolicy.unfiltered(margin=0.1, pos_ref="per-pair"))
    assert negs(m2, 0) == ["d3", "d4", "d5", "d6"] and negs(m2, 1) == ["d5", "d6"]


def test_pos_top_trains_only_on_positives_the_ranker_finds():
    """Positive consistency: p1 (rank 1) and p3 (rank 4) are in the top 5, p2 is unranked. With pos_top 5
    the rows keep p1 and p3, never p2; p2 is still no negative; a query whose positives all fall below
    gives no row; the reference of the filters is the consistent positives' (per pair: each one's)."""
    rows = ranking("q", [0.9, 0.85, 0.7, 0.65, 0.5, 0.3], positives={1: "p1", 4: "p3"}, unranked={"p2": 0.6})
    rows += ranking("r", [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], positives={7: "r1"}, prefix="e")
    c = cands(rows)
    every = select(c, SelectionPolicy.unfiltered(pos_ref="per-pair"))
    assert every.rows["pos_id"].tolist() == ["p1", "p3", "p2", "r1"]
    top = select(c, SelectionPolicy.unfiltered(pos_ref="per-pair", pos_top=5))
    assert top.rows["pos_id"].tolist() == ["p1", "p3"] and top.rows["query_id"].tolist() == ["q", "q"]
    assert "p2" not in set(top.negatives["doc_id"]) and "p3" not in set(top.negatives["doc_id"])
    assert top.stats["inconsistent_positives"] == 2 and top.stats["queries_without_positive"] == 1
    one = select(c, SelectionPolicy.unfiltered(pos_top=5, percent=0.8, pos_ref="min"))  # ref: p3 0.65, not p2
    assert one.positives["doc_id"].tolist() == ["p1", "p3"]
    assert negs(one) == ["d5", "d6"]  # s <= 0.8 x 0.65 = 0.52
    with pytest.raises(HardnegError, match="pos_top"):
        SelectionPolicy(pos_top=0)


def test_promotion_turns_judged_positives_and_near_duplicates_into_positives():
    """promote_above: d2 (ce 3.0) and d4 (ce 2.5) are judged positive: they join p1 as the row's
    positives and are never negatives; promote_near_dup promotes d3 (cosine 0.97 to a positive)."""
    rows = ranking("q", [0.9, 0.85, 0.8, 0.7, 0.6, 0.5], positives={1: "p1"},
                   flags={2: {"score_ce": 3.0}, 3: {"pos_cosine": 0.97}, 4: {"score_ce": 2.5}, 5: {"score_ce": -1.0}})
    c = cands(rows, scorers=("dense", "ce"))
    m = select(c, SelectionPolicy.unfiltered(promote_above=0.0))
    assert m.positives["doc_id"].tolist() == ["p1", "d2", "d4"]
    assert m.positives["promoted"].tolist() == [False, True, True]
    assert negs(m) == ["d3", "d5", "d6"] and m.stats["promoted_positives"] == 2
    assert m.per_row()["pos_ids"][0] == ["p1", "d2", "d4"]
    dup = select(c, SelectionPolicy.unfiltered(promote_near_dup=0.95))
    assert dup.positives["doc_id"].tolist() == ["p1", "d3"] and "d3" not in negs(dup)
    assert select(c, SelectionPolicy.unfiltered()).positives["promoted"].sum() == 0
    with pytest.raises(HardnegError, match="not per-pair"):
        SelectionPolicy(promote_above=0.0, pos_ref="per-pair")
    with pytest.raises(HardnegError, match="promote_above needs a 'ce' scorer"):
        select(cands(ranking("q", [0.9, 0.5], positives={1: "p"})), SelectionPolicy(promote_above=0.0))


def test_pos_quantile_without_pos_ref_quantile_is_refused():
    with pytest.raises(HardnegError, match="pos_quantile is read only with pos_ref 'quantile'"):
        SelectionPolicy(pos_quantile=0.9)
    assert SelectionPolicy(pos_ref="quantile", pos_quantile=0.9).pos_quantile == 0.9


def test_the_gap_is_taken_from_the_positive_the_filters_compare_with():
    for pos_ref, ref in (("max", 0.9), ("min", 0.6)):
        m = select(_two_positive_query(), SelectionPolicy.unfiltered(pos_ref=pos_ref))
        assert m.stats["scores"]["gap"]["max"] == pytest.approx(ref - 0.3)  # d6, the easiest negative


def test_quantile_filters_against_a_quantile_of_the_positives():
    # positives 0.9 (rank 1), 0.6, 0.3 (unranked); candidates d2..d6 score 0.85 0.7 0.55 0.5 0.2
    c = cands(ranking("q", [0.9, 0.85, 0.7, 0.55, 0.5, 0.2], positives={1: "p1"}, unranked={"p2": 0.6, "p3": 0.3}))
    keep = lambda q: negs(select(c, SelectionPolicy.unfiltered(percent=0.95, pos_ref="quantile",  # noqa: E731
                                                               pos_quantile=q)))
    assert keep(0.5) == ["d4", "d5", "d6"]  # the median 0.6: keep s <= 0.57
    assert keep(0.0) == negs(select(c, SelectionPolicy.unfiltered(percent=0.95, pos_ref="min"))) == ["d6"]  # 0.285
    assert keep(0.75) == ["d3", "d4", "d5", "d6"]  # 0.6 + 0.5 x 0.3 = 0.75: keep s <= 0.7125
    assert keep(1.0) == negs(select(c, SelectionPolicy.unfiltered(percent=0.95))) == ["d2", "d3", "d4", "d5", "d6"]
    one = cands(ranking("q", [0.9, 0.85, 0.7, 0.5], positives={1: "p1"}))  # one positive: every quantile is it
    assert {tuple(negs(select(one, SelectionPolicy.unfiltered(percent=0.95, pos_ref="quantile", pos_quantile=q))))
            for q in (0.0, 0.5, 1.0)} == {("d2", "d3", "d4")}


def test_percent_is_refused_for_a_scorer_with_negative_scores():
    rows = ranking("q", [0.9, 0.8, 0.7], positives={1: "p"})
    for r in rows:
        r["score_ce"] = r["score_dense"] * 10 - 5
    c = cands(rows, scorers=("dense", "ce"), negative_scores={"ce": True})
    with pytest.raises(HardnegError, match="--margin"):
        select(c, SelectionPolicy.unfiltered(percent=0.95, score_by="ce"))
    assert negs(select(c, SelectionPolicy.unfiltered(margin=1.5, score_by="ce"))) == ["d3"]  # ce 4, 3, 2: keep <= 2.5
    c.meta["negative_scores"].pop("ce")
    with pytest.raises(HardnegError, match="does not say"):
        select(c, SelectionPolicy.unfiltered(percent=0.95, score_by="ce"))


def test_denoise_drops_candidates_the_cross_encoder_calls_relevant():
    rows = ranking("q", [0.9, 0.8, 0.7, 0.6], positives={1: "p"})
    for r, ce in zip(rows, [9.0, 5.0, -1.0, np.nan]):
        r["score_ce"] = ce
    c = cands(rows, scorers=("dense", "ce"), negative_scores={"ce": True})
    m = select(c, SelectionPolicy.unfiltered(denoise_above=2.0))
    assert negs(m) == ["d3", "d4"]  # d2 (ce 5) dropped; unscored d4 kept
    assert removed(m)["denoise"] == 1


# ---- exclusions ------------------------------------------------------------------------------
def test_all_positives_excluded_for_queries_with_one_and_with_five():
    one = ranking("q1", [0.9, 0.8, 0.7, 0.6], positives={2: "a1"})
    five = ranking("q5", [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65], positives={1: "b1", 2: "b2", 4: "b4", 6: "b6"},
                   unranked={"b9": 0.1}, prefix="e")
    m = select(cands(one + five), SelectionPolicy.unfiltered(num_negatives=3))
    assert negs(m, 0) == ["d1", "d3", "d4"]
    assert negs(m, 1) == ["e3", "e5", "e7"]
    assert [len(p) for p in m.per_row()["pos_ids"]] == [1, 5]
    assert sorted(m.per_row()["pos_ids"][1]) == ["b1", "b2", "b4", "b6", "b9"]
    assert not set(m.negatives["doc_id"]) & {"a1", "b1", "b2", "b4", "b6", "b9"}
    assert removed(m)["known_positive"] == 5  # ranked positives; b9 was never a candidate
    assert m.stats["candidates"] == 11


def test_duplicates_of_a_positive_and_the_query_text_are_excluded_known_negatives_kept():
    rows = ranking("q", [0.9, 0.8, 0.7, 0.6, 0.5], positives={1: "p"},
                   flags={2: {"dup_of_positive": True}, 3: {"is_query_text": True},
                          4: {"is_known_negative": True}, 5: {"pos_cosine": 0.99}})
    m = select(cands(rows), SelectionPolicy.unfiltered())
    assert negs(m) == ["d4", "d5"]
    assert m.negatives["is_known_negative"].tolist() == [True, False]
    assert removed(m) == {"known_positive": 1, "dup_of_positive": 1, "query_text": 1}
    m2 = select(cands(rows), SelectionPolicy.unfiltered(near_dup_cosine=0.95))
    assert negs(m2) == ["d4"] and removed(m2)["near_duplicate"] == 1


def test_query_without_positive_is_counted_and_skipped():
    rows = ranking("q", [0.9, 0.8], positives={1: "p"}) + ranking("lonely", [0.7, 0.6])
    m = select(cands(rows), SelectionPolicy.unfiltered())
    assert m.rows["query_id"].tolist() == ["q"]
    assert m.stats["queries_without_positive"] == 1
    assert removed(m)["no_positive"] == 2


# ---- sampling and short rows ---------------------------------------------------------------
def _short_table() -> CandidateSet:
    # qa keeps 4 candidates under max_score 0.5, qb only 1
    qa = ranking("qa", [0.9, 0.5, 0.45, 0.4, 0.35], positives={1: "pa"}, prefix="a")
    qb = ranking("qb", [0.9, 0.8, 0.7, 0.3], positives={1: "pb"}, prefix="b")
    return cands(qa + qb)


def test_on_short_drop_keep_and_pad_random():
    corpus = [f"a{i}" for i in range(1, 6)] + [f"b{i}" for i in range(1, 5)] + [f"x{i}" for i in range(20)]
    base = dict(max_score=0.5, num_negatives=3)
    drop = select(_short_table(), SelectionPolicy.unfiltered(on_short="drop", **base))
    assert drop.rows["query_id"].tolist() == ["qa"]
    assert drop.stats["short"] | {} == {"action": "drop", "rows": 1, "queries": 1, "rows_dropped": 1,
                                        "rows_kept_short": 0, "rows_padded": 0, "negatives_padded": 0}
    keep = select(_short_table(), SelectionPolicy.unfiltered(on_short="keep", **base))
    assert keep.rows["n_negatives"].tolist() == [3, 1] and keep.stats["short"]["rows_kept_short"] == 1
    pad = select(_short_table(), SelectionPolicy.unfiltered(on_short="pad-random", **base), corpus_doc_ids=corpus)
    b = pad.negatives[pad.negatives["row"] == 1]
    assert b["reason"].tolist() == ["top", "pad-random", "pad-random"]
    assert b["doc_id"].iloc[0] == "b4"
    pads = b["doc_id"].iloc[1:].tolist()
    assert len(set(pads)) == 2 and not set(pads) & {"pb", "b2", "b3", "b4"}  # never a retrieved doc
    assert b["rank"].isna().tolist() == [False, True, True]
    assert pad.stats["short"]["negatives_padded"] == 2 and pad.stats["short"]["rows_padded"] == 1
    with pytest.raises(HardnegError, match="corpus_doc_ids"):
        select(_short_table(), SelectionPolicy.unfiltered(on_short="pad-random", **base))


def test_random_baseline_draws_from_corpus_minus_positives_and_none_selects_nothing():
    c = cands(ranking("q", [0.9, 0.8, 0.7], positives={1: "p"}))
    corpus = ["p", "d2", "d3", "z1", "z2"]
    m = select(c, SelectionPolicy.unfiltered(sampler="random", num_negatives=4), corpus_doc_ids=corpus)
    assert sorted(negs(m)) == ["d2", "d3", "z1", "z2"]
    assert m.negatives.set_index("doc_id").loc["d2", "rank"] == 2  # provenance kept when retrieved
    again = select(c, SelectionPolicy.unfiltered(sampler="random", num_negatives=4), corpus_doc_ids=corpus)
    assert negs(m) == negs(again)
    none = select(c, SelectionPolicy.unfiltered(sampler="none"))
    assert len(none.negatives) == 0 and none.rows["n_negatives"].tolist() == [0]
    with pytest.raises(HardnegError, match="no effect"):
        SelectionPolicy.unfiltered(sampler="random", window=(1, 5))


def test_simans_through_select_is_seeded():
    rows = sum((ranking(f"q{i}", list(np.linspace(0.95, 0.2, 40)), positives={1: f"p{i}"}, prefix=f"d{i}_")
                for i in range(5)), [])
    c = cands(rows)
    a = select(c, SelectionPolicy.unfiltered(sampler="simans", num_negatives=5, seed=1))
    b = select(c, SelectionPolicy.unfiltered(sampler="simans", num_negatives=5, seed=1))
    other = select(c, SelectionPolicy.unfiltered(sampler="simans", num_negatives=5, seed=2))
    assert a.negatives.equals(b.negatives)
    assert negs(a) != negs(other) or negs(a, 1) != negs(other, 1)
    assert (a.rows["n_negatives"] == 5).all()


def test_stats_counts_and_table():
    rows = ranking("q", [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], positives={1: "p"}, flags={2: {"dup_of_positive": True}})
    m = select(cands(rows), SelectionPolicy.unfiltered(window=(2, 5), max_score=0.65, num_negatives=1))
    assert m.stats["candidates"] == 6
    assert m.stats["filters"] == [
        {"filter": "known_positive", "removed": 1, "remaining": 5},
        {"filter": "dup_of_positive", "removed": 1, "remaining": 4},
        {"filter": "query_text", "removed": 0, "remaining": 4},
        {"filter": "window", "removed": 1, "remaining": 3},  # rank 6
        {"filter": "max_score", "removed": 1, "remaining": 2},  # rank 3 (0.7)
    ]
    assert m.stats["output"] | {} == {"rows": 1, "queries": 1, "negatives": 1, "rows_without_negatives": 0,
                                      "known_negatives_selected": 0}
    assert negs(m) == ["d4"]
    assert m.stats["scores"]["positive"]["mean"] == pytest.approx(0.9)
    assert m.stats["scores"]["negative"]["mean"] == pytest.approx(0.6)
    assert m.stats["scores"]["gap"]["q50"] == pytest.approx(0.3)
    json.dumps(m.stats)  # JSON-ready
    decisions = m.decisions().set_index("doc_id")["decision"].astype(str).to_dict()
    assert decisions == {"p": "known_positive", "d2": "dup_of_positive", "d6": "window",
                         "d3": "max_score", "d4": "selected", "d5": "not_sampled"}
    console = Console(record=True, width=120)
    console.print(format_stats_table(m.stats))
    text = console.export_text()
    assert "max_score" in text and "window" in text


@pytest.mark.parametrize("kwargs, message", [
    ({"window": (100, 10)}, "greater than max"),
    ({"window": (0, 10)}, ">= 1"),
    ({"window": "a:b"}, "MIN:MAX"),
    ({"percent": 1.5}, r"\(0, 1\]"),
    ({"percent": 0.0}, r"\(0, 1\]"),
    ({"num_negatives": -1}, ">= 0"),
    ({"sampler": "hardest"}, "sampler must be one of top"),
    ({"on_short": "fill"}, "on_short must be one of drop"),
    ({"margin": -0.1}, "margin"),
])
def test_bad_options_fail_fast(kwargs, message):
    with pytest.raises(HardnegError, match=message):
        SelectionPolicy.unfiltered(**kwargs)


def test_unknown_scorer_fails_with_the_known_ones():
    c = cands(ranking("q", [0.9, 0.8], positives={1: "p"}))
    with pytest.raises(HardnegError, match=r"unknown scorer 'ce'.*\['dense'\]"):
        select(c, SelectionPolicy.unfiltered(score_by="ce"))
    assert parse_window("10:100") == (10, 100)


def test_select_handles_a_scifact_sized_set():
    """Its speed is measured in benchmarks/mine_vs_st.py, not here: a timed test flakes under load."""
    rng = np.random.default_rng(0)
    nq, depth = 809, 200
    scores = -np.sort(-rng.random((nq, depth)), axis=1)
    df = pd.DataFrame({
        "query_id": np.repeat([f"q{i}" for i in range(nq)], depth),
        "doc_id": [f"d{j}" for j in rng.integers(0, 10**6, nq * depth)],
        "is_positive": np.tile(np.arange(depth) == 3, nq),
        "rank_dense": np.tile(np.arange(1, depth + 1), nq),
        "score_dense": scores.ravel(),
    })
    c = CandidateSet.from_frame(df, scorers=["dense"])
    policy = SelectionPolicy.unfiltered(window=(10, 100), percent=0.95, num_negatives=7)
    m = select(c, policy)
    assert len(m.negatives) == nq * 7
    assert select(c, policy).negatives.equals(m.negatives)


# ---- the stored decision log (decisions.parquet) ----------------------------------------------
def _logged_selections():
    corpus = [f"a{i}" for i in range(1, 6)] + [f"b{i}" for i in range(1, 5)] + [f"x{i}" for i in range(20)]
    short = dict(max_score=0.5, num_negatives=3)
    yield select(_short_table(), SelectionPolicy.unfiltered(on_short="drop", **short)), SelectionPolicy.unfiltered(on_short="drop", **short)
    pad = SelectionPolicy.unfiltered(on_short="pad-random", **short)
    yield select(_short_table(), pad, corpus_doc_ids=corpus), pad
    per_pair = SelectionPolicy.unfiltered(pos_ref="per-pair", margin=0.05, num_negatives=2)
    yield select(_two_positive_query(), per_pair), per_pair
    rand = SelectionPolicy.unfiltered(sampler="random", num_negatives=4)
    yield select(cands(ranking("q", [0.9, 0.8, 0.7], positives={1: "p"})), rand,
                 corpus_doc_ids=["p", "d2", "d3", "z1", "z2"]), rand


@pytest.mark.parametrize("case", range(4))
def test_decision_log_round_trips_what_the_report_needs(case, tmp_path):
    """decisions.parquet gives back the selection's negatives (in output order, with their row's
    positive), the positives of output rows and every other candidate's fate, byte-identically."""
    from hardneg.select import Decisions, read_decisions, write_decisions

    mined, policy = list(_logged_selections())[case]
    write_decisions(mined, tmp_path / "a.parquet", policy)
    write_decisions(mined, tmp_path / "b.parquet", policy)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    stored = read_decisions(tmp_path / "a.parquet")
    assert stored.policy == json.loads(json.dumps(policy.to_dict()))
    assert {k: stored.meta[k] for k in ("rank_by", "score_by", "scorers")} == {
        k: mined.meta[k] for k in ("rank_by", "score_by", "scorers")}
    pd.testing.assert_frame_equal(stored.table, Decisions.from_mined(mined, policy).table)
    expected = mined.negatives.merge(mined.rows[["row", "pos_id"]], on="row")
    got = stored.negatives
    assert got["row"].tolist() == expected["row"].tolist() and got["doc_id"].tolist() == expected["doc_id"].tolist()
    assert got["reason"].tolist() == expected["reason"].tolist()
    assert got["pos_id"].tolist() == expected["pos_id"].tolist()
    np.testing.assert_array_equal(got["score"].to_numpy(np.float32), expected["score"].to_numpy(np.float32))
    assert got["rank"].astype("Float64").fillna(-1).tolist() == expected["rank"].astype("Float64").fillna(-1).tolist()
    pos = stored.positives
    assert list(zip(pos["row"], pos["query_id"], pos["doc_id"])) == list(
        zip(mined.positives["row"], mined.positives["query_id"], mined.positives["doc_id"]))
    np.testing.assert_array_equal(pos["score"].to_numpy(np.float32), mined.positives["score"].to_numpy(np.float32))
    hidden = ("selected", "known_positive")
    mine, theirs = stored.decisions(), mined.decisions()
    mine = mine[~mine["decision"].isin(hidden)].reset_index(drop=True)
    theirs = theirs[~theirs["decision"].isin(hidden)].reset_index(drop=True)
    assert mine[["query_id", "doc_id"]].values.tolist() == theirs[["query_id", "doc_id"]].values.tolist()
    assert mine["decision"].astype(str).tolist() == theirs["decision"].astype(str).tolist()
    not_sampled = [(d.decisions()["decision"] == "not_sampled").sum() for d in (mined, stored)]
    assert not_sampled[0] == not_sampled[1]
