"""Click logs: parsing and validation, positives under each policy, CTR by position, skip-above
negatives and how selection treats them. Hand-made logs with hand-worked answers."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hardneg.candidates import CandidateSet, Column
from hardneg.cli import app
from hardneg.positives.clicklog import read_click_log
from hardneg.positives.clicks import (
    CLICKS_SCORER,
    SKIP_ABOVE_SOURCE,
    ClickConfig,
    ClickPolicy,
    add_skip_above,
    click_positives,
    clicks_to_beir,
    position_bias,
    read_skip_above,
    skip_above_pairs,
    split_queries,
)
from hardneg.data import Dataset, load_dataset
from hardneg.errors import DataError, HardnegError
from hardneg.select import SelectionPolicy, select

runner = CliRunner()

# Six impressions of two queries (the 2nd and 3rd repeat the 1st in other spellings / ids).
LOG = [
    {"query": "Statin side effects", "query_id": "q1", "shown": ["d1", "d2", "d3", "d4"], "clicked": ["d3"],
     "dwell": [40]},
    {"query": "statin  SIDE effects", "shown": ["d2", "d1", "d3", "d4"], "clicked": ["d1", "d3"],
     "dwell": [5, 60], "session": "s1", "timestamp": 1714550400},
    {"query": "statin side effects", "query_id": "q1b", "shown": ["d1", "d2", "d3", "d4"], "clicked": []},
    {"query": "aspirin dose", "shown": ["d5", "d6", "d1"], "clicked": ["d6"], "dwell": [12]},
    {"query": "aspirin dose", "shown": ["d5", "d6", "d1"], "clicked": ["d5"]},
    {"query": "Aspirin dose", "shown": ["d7", "d5", "d6"], "clicked": ["d6"], "dwell": {"d6": 100}},
]
DOCS = {f"d{i}": f"Document number {i} about topic {i}." for i in range(1, 10)}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_corpus(path: Path, docs: dict[str, str] = DOCS) -> Path:
    path.write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs.items()))
    return path


@pytest.fixture()
def log_path(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "log.jsonl", LOG)


def asp(log) -> str:
    return next(q for q, t in log.queries.items() if t == "aspirin dose")


# ---- reading ------------------------------------------------------------------------------------------
def test_repeated_queries_are_aggregated_by_normalised_text(log_path):
    log = read_click_log(log_path, set(DOCS))
    assert log.n_impressions == 6
    assert set(log.queries) == {"q1", asp(log)} and asp(log).startswith("q")
    assert log.aliases == {"q1b": "q1"}
    assert log.events["query_id"].tolist().count("q1") == 12
    d = log.events.set_index(["impression", "doc_id"])
    assert d.loc[(1, "d1"), "dwell"] == 5 and d.loc[(1, "d3"), "last_click"]
    assert np.isnan(d.loc[(4, "d5"), "dwell"]) and d.loc[(4, "d5"), "clicked"]


def test_csv_and_parquet_give_the_same_events(tmp_path, log_path):
    def cell(v):
        return json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else str(v))

    cols = ["query", "query_id", "shown", "clicked", "dwell", "session", "timestamp"]
    with open(tmp_path / "log.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        writer.writerows([[cell(r.get(c)) for c in cols] for r in LOG])
    frame = pd.DataFrame([{c: r.get(c) for c in cols} for r in LOG], dtype=object)
    ref = read_click_log(log_path).events
    pd.testing.assert_frame_equal(read_click_log(tmp_path / "log.csv").events, ref)
    # Parquet with list columns (dwell as JSON text: a list and an object do not share a type)
    pq = frame.assign(dwell=frame["dwell"].map(lambda v: None if v is None else json.dumps(v)),
                      timestamp=frame["timestamp"].map(lambda v: None if v is None else str(v)))
    pq.to_parquet(tmp_path / "log.parquet")
    pd.testing.assert_frame_equal(read_click_log(tmp_path / "log.parquet").events, ref)


def test_parquet_with_a_numeric_dwell_column(tmp_path):
    pd.DataFrame({"query": ["a", "b"], "shown": [["d1", "d2"], ["d2"]], "clicked": [["d2"], []],
                  "dwell": [12.5, np.nan]}).to_parquet(tmp_path / "log.parquet")
    ev = read_click_log(tmp_path / "log.parquet").events
    assert ev["dwell"].iloc[1] == 12.5 and ev["clicked"].tolist() == [False, True, False]


def test_space_separated_ids_in_csv(tmp_path):
    (tmp_path / "log.csv").write_text("query,shown,clicked,dwell\nheart attack,d1 d2 d3,d2,31.5\n")
    ev = read_click_log(tmp_path / "log.csv").events
    assert ev["doc_id"].tolist() == ["d1", "d2", "d3"] and ev["clicked"].tolist() == [False, True, False]
    assert ev["dwell"].iloc[1] == 31.5


@pytest.mark.parametrize("bad, message", [
    ({"query": "x", "shown": ["d1"], "clicked": ["d9"]}, "clicked document 'd9' is not in field 'shown'"),
    ({"query": "x", "shown": ["d1", "d42"], "clicked": []}, "unknown document id 'd42' in 'shown' (position 2"),
    ({"shown": ["d1"], "clicked": []}, "missing field 'query'"),
    ({"query": "x", "shown": ["d1", "d1"], "clicked": []}, "document 'd1' shown twice"),
    ({"query": "x", "shown": ["d1"], "clicked": ["d1"], "dwell": [1, 2]}, "field 'dwell' has 2 values for 1 clicks"),
    ({"query": "x", "shown": ["d1"], "clicked": ["d1"], "dwell": [-3]}, "seconds must be a number >= 0"),
    ({"query": "x", "shown": [], "clicked": []}, "field 'shown' is empty"),
    ({"query": "other text", "query_id": "q1", "shown": ["d1"], "clicked": []},
     "query_id 'q1' reused for a different query text (first on line 1)"),
])
def test_bad_line_is_reported_with_file_and_line(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "log.jsonl", LOG[:2] + [bad])
    with pytest.raises(DataError) as err:
        read_click_log(path, set(DOCS))
    assert str(err.value).startswith(f"{path}:3: ") and message in str(err.value)


def test_bad_csv_row_reports_its_line(tmp_path):
    (tmp_path / "log.csv").write_text("query,shown,clicked\na,d1 d2,d1\nb,d1,d7\n")
    with pytest.raises(DataError, match=r"log\.csv:3: clicked document 'd7'"):
        read_click_log(tmp_path / "log.csv")


def test_cli_bad_log_line_exits_2_and_writes_nothing(tmp_path):
    log = write_jsonl(tmp_path / "log.jsonl", LOG[:3] + [{"query": "x", "shown": ["d1"], "clicked": ["d1"],
                                                           "dwell": ["long"]}])
    out = tmp_path / "out"
    result = runner.invoke(app, ["clicks", str(log), "--corpus", str(write_corpus(tmp_path / "c.jsonl")),
                                 "--out", str(out)])
    assert result.exit_code == 2
    assert f"{log}:4: field 'dwell' holds 'long'" in result.output
    assert not out.exists()


def test_skip_unknown_drops_ids_but_keeps_positions(tmp_path):
    path = write_jsonl(tmp_path / "log.jsonl", [{"query": "x", "shown": ["zz", "d1"], "clicked": ["d1"]}])
    log = read_click_log(path, set(DOCS), skip_unknown=True)
    assert log.events[["doc_id", "position"]].values.tolist() == [["d1", 2]]
    assert "dropped 1 shown ids" in log.warnings[0]


# ---- positives ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy, q1, aspirin", [
    (ClickPolicy(), ["d1", "d3"], ["d5", "d6"]),
    (ClickPolicy(min_dwell=30), ["d3"], ["d6"]),
    (ClickPolicy(last_click_only=True), ["d3"], ["d5", "d6"]),
    (ClickPolicy(min_clicks=2), ["d3"], ["d6"]),
    (ClickPolicy(min_ctr=0.5), ["d3"], ["d6"]),
    (ClickPolicy(min_dwell=30, last_click_only=True), ["d3"], ["d6"]),
])
def test_positives_under_each_policy(log_path, policy, q1, aspirin):
    log = read_click_log(log_path)
    pos, _ = click_positives(log, policy)
    assert pos == {"q1": q1, asp(log): aspirin}


def test_filter_counts(log_path):
    log = read_click_log(log_path)
    _, c = click_positives(log, ClickPolicy(min_dwell=30))
    assert (c["clicks"], c["clicks_below_min_dwell"], c["clicks_without_dwell"], c["clicks_counted"]) == (6, 2, 1, 3)
    _, c = click_positives(log, ClickPolicy(min_ctr=0.5))
    assert c["pairs_clicked"] == 4 and c["pairs_below_min_ctr"] == 2 and c["positives"] == 2
    _, c = click_positives(log, ClickPolicy(last_click_only=True))
    assert c["clicks_not_last"] == 1
    with pytest.raises(HardnegError, match="min-ctr"):
        ClickPolicy(min_ctr=2)


def test_ctr_by_position(log_path):
    table = position_bias(read_click_log(log_path))
    assert table["position"].tolist() == [1, 2, 3, 4]
    assert table["impressions"].tolist() == [6, 6, 6, 3]
    assert table["clicks"].tolist() == [1, 2, 3, 0]
    np.testing.assert_allclose(table["ctr"], [1 / 6, 1 / 3, 1 / 2, 0])
    np.testing.assert_allclose(table["ctr_relative"], [1, 2, 3, 0])


# ---- skip-above ---------------------------------------------------------------------------------------
def test_skip_above_is_exactly_the_skipped_never_clicked_docs(log_path):
    log = read_click_log(log_path)
    skips = skip_above_pairs(log)
    # d1 (q1) and d5 (aspirin) were skipped once but clicked elsewhere: ambiguous, left out
    assert skips.values.tolist() == [["q1", "d2", 2, 1], [asp(log), "d7", 1, 1]]
    assert skip_above_pairs(log, min_skips=2).values.tolist() == [["q1", "d2", 2, 1]]
    assert skip_above_pairs(log, exclude={"q1": ["d2"]})["doc_id"].tolist() == ["d7"]


def _cands() -> CandidateSet:
    """q1: positives d1 (rank 1) and d3 (rank 5); bm25 scores 10..5 for ranks 1..6."""
    docs = ["d1", "d4", "d2", "d8", "d3", "d9"]
    df = pd.DataFrame({"query_id": "q1", "doc_id": docs, "is_positive": [d in ("d1", "d3") for d in docs],
                       "rank_bm25": np.arange(1, 7), "score_bm25": np.arange(10, 4, -1, dtype=float)})
    return CandidateSet.from_frame(df, scorers=["bm25"], split="train")


SKIPS = pd.DataFrame([["q1", "d2", 2, 1], ["q1", "d7", 3, 1], ["q1", "d1", 1, 1], ["qx", "d5", 1, 1]],
                     columns=["query_id", "doc_id", "skips", "best_position"])


def test_add_skip_above_flags_retrieved_rows_and_adds_unranked_ones():
    out = add_skip_above(_cands(), SKIPS)
    t = out.table.set_index("doc_id")
    assert out.meta["skip_above"] == {"pairs": 4, "not_mined": 1, "positives_refused": 1, "flagged_retrieved": 1,
                                      "added": 1}
    assert out.scorers == ["bm25", CLICKS_SCORER] and out.rank_by == "bm25"
    assert t.loc["d7", "source"] == SKIP_ABOVE_SOURCE and pd.isna(t.loc["d7", "rank_bm25"])
    assert np.isnan(t.loc["d7", "score_bm25"]) and not t.loc["d7", "is_positive"]
    assert t.loc["d2", "source"] == "bm25" and t.loc["d2", "rank_bm25"] == 3  # retrieved row kept as it was
    assert t[Column.IS_SKIP_ABOVE].to_dict() == {"d1": False, "d4": False, "d2": True, "d8": False, "d3": False,
                                                 "d9": False, "d7": True}
    assert t.loc["d1", "is_positive"] and pd.isna(t.loc["d1", "rank_clicks"])  # a positive is never a skip row
    assert (t.loc["d7", "rank_clicks"], t.loc["d7", "score_clicks"]) == (1, 3.0)
    with pytest.raises(HardnegError, match="added twice"):
        add_skip_above(out, SKIPS)


def test_skip_above_round_trips_through_parquet(tmp_path):
    out = add_skip_above(_cands(), SKIPS)
    out.write(tmp_path / "c.parquet")
    back = CandidateSet.read(tmp_path / "c.parquet")
    assert back.meta["skip_above"]["added"] == 1
    row = back.table.set_index("doc_id").loc["d7"]
    assert row[Column.IS_SKIP_ABOVE] and row["source"] == SKIP_ABOVE_SOURCE and row["rank_clicks"] == 1


def _negs(cands, **policy) -> list[str]:
    return select(cands, SelectionPolicy.unfiltered(**policy)).negatives["doc_id"].tolist()


def test_select_with_a_window_drops_unranked_skip_above_rows():
    cands = add_skip_above(_cands(), SKIPS)
    mined = select(cands, SelectionPolicy.unfiltered(window=(1, 100), num_negatives=10))
    assert mined.negatives["doc_id"].tolist() == ["d4", "d2", "d8", "d9"]
    fate = mined.decisions().set_index("doc_id")["decision"]
    assert fate["d7"] == "window" and fate["d1"] == "known_positive"


def test_select_without_a_window_takes_skip_above_rows_last_and_score_filters_drop_them():
    cands = add_skip_above(_cands(), SKIPS)
    assert _negs(cands, num_negatives=3) == ["d4", "d2", "d8"]
    assert _negs(cands, num_negatives=10) == ["d4", "d2", "d8", "d9", "d7"]  # NaN score: only when nothing is left
    mined = select(cands, SelectionPolicy.unfiltered(margin=0.0, num_negatives=10, pos_ref="min"))
    assert mined.negatives["doc_id"].tolist() == ["d9"]  # scores <= the weakest positive's 6
    assert mined.decisions().set_index("doc_id")["decision"]["d7"] == "margin"
    negs = select(cands, SelectionPolicy.unfiltered(num_negatives=10)).negatives.set_index("doc_id")
    assert negs.loc["d7", "source"] == SKIP_ABOVE_SOURCE and negs.loc["d2", "source"] == "bm25"


def test_opting_in_selects_only_skip_above_rows_most_skipped_first():
    cands = add_skip_above(_cands(), SKIPS)
    mined = select(cands, SelectionPolicy.unfiltered(rank_by="clicks", score_by="clicks", window=(1, 10), num_negatives=5))
    assert mined.negatives["doc_id"].tolist() == ["d7", "d2"]
    assert mined.negatives["source"].tolist() == [SKIP_ABOVE_SOURCE, "bm25"]


def test_new_rows_get_duplicate_and_query_text_flags_from_the_dataset():
    ds = Dataset(["d1", "d3", "d7", "d8"], ["", "", "", ""], ["alpha", "beta", "Alpha ", "statin"],
                 {"q1": "statin"}, {"train": {"q1": {"d1": 1, "d3": 1}}})
    skips = pd.DataFrame([["q1", "d7", 1, 1], ["q1", "d8", 1, 2]], columns=SKIPS.columns)
    cands = _cands()
    cands.table = cands.table[cands.table["doc_id"] != "d8"]
    t = add_skip_above(cands, skips, ds).table.set_index("doc_id")
    assert t.loc["d7", "dup_of_positive"] and not t.loc["d7", "is_query_text"]
    assert t.loc["d8", "is_query_text"] and not t.loc["d8", "dup_of_positive"]


def test_read_skip_above_validates(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_text("query-id\tcorpus-id\tskips\tbest-position\nq1\td2\t2\t1\nq1\td3\tx\t1\n")
    with pytest.raises(DataError, match=r"s\.tsv:3: skips and best-position must be integers"):
        read_skip_above(p)


# ---- the BEIR folder ----------------------------------------------------------------------------------
def test_split_by_query_is_seeded_and_order_free():
    ids = [f"q{i}" for i in range(10)]
    train, test = split_queries(ids, 0.3, seed=1)
    assert len(test) == 3 and set(train) | set(test) == set(ids)
    assert split_queries(list(reversed(ids)), 0.3, seed=1)[1] == [q for q in reversed(ids) if q in test]
    assert split_queries(ids, 0.3, seed=2)[1] != test or split_queries(ids, 0.3, seed=3)[1] != test


def test_clicks_to_beir_loads_with_load_dataset(tmp_path, log_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    res = clicks_to_beir(log_path, corpus, tmp_path / "out", ClickConfig(ClickPolicy(min_dwell=30)))
    ds = load_dataset(tmp_path / "out")
    aspirin = next(q for q, t in ds.queries.items() if t == "aspirin dose")
    assert ds.positives("train") == {"q1": ["d3"], aspirin: ["d6"]}
    assert ds.doc_ids == list(DOCS) and ds.splits == ["train"]
    stats = json.loads((tmp_path / "out" / "clicks_stats.json").read_text())
    assert [r["clicks"] for r in stats["position_bias"]] == [1, 2, 3, 0]
    assert stats["counts"]["clicks_counted"] == 3 and res.stats["query_aliases"] == 1
    assert "| 3 | 6 | 3 | 0.5000 | 3.000 |" in (tmp_path / "out" / "position_bias.md").read_text()
    skips = read_skip_above(tmp_path / "out" / "skip_above.tsv")
    assert skips.values.tolist() == [["q1", "d2", 2, 1], [aspirin, "d7", 1, 1]]


def test_cli_clicks_with_test_split_then_mine_skip_above_select(tmp_path, log_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "clk"
    r = runner.invoke(app, ["clicks", str(log_path), "--corpus", str(corpus), "--out", str(out),
                            "--test-fraction", "0.5", "--seed", "0"])
    assert r.exit_code == 0, r.output
    assert "click-through rate by position" in r.output and "4 positives for 2 queries" in r.output
    ds = load_dataset(out)
    assert len(ds.positives("train")) == 1 and len(ds.positives("test")) == 1
    # a split without test queries leaves no stale test.tsv behind
    r = runner.invoke(app, ["clicks", str(log_path), "--corpus", str(corpus), "--out", str(out)])
    assert r.exit_code == 0 and not (out / "qrels" / "test.tsv").exists()
    mine = tmp_path / "mine"
    r = runner.invoke(app, ["mine", "--data", str(out), "--retriever", "bm25", "--depth", "3", "--out", str(mine)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["skip-above", str(mine / "candidates.parquet"), "--skips", str(out / "skip_above.tsv"),
                            "--out", str(mine / "cands-clicks.parquet")])
    assert r.exit_code == 0, r.output
    cands = CandidateSet.read(mine / "cands-clicks.parquet")
    skip_rows = cands.table[cands.table[Column.IS_SKIP_ABOVE]]
    assert sorted(skip_rows["doc_id"]) == ["d2", "d7"]
    r = runner.invoke(app, ["select", str(mine / "cands-clicks.parquet"), "--rank-by", "clicks", "--score-by",
                            "clicks", "--window", "1:20", "--percent", "off", "--out", str(tmp_path / "sel")])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "sel" / "negatives.jsonl").read_text().splitlines()]
    assert sorted(n for line in lines for n in line["neg_ids"]) == ["d2", "d7"]


# ---- the click simulator of benchmarks/clicks_sim.py --------------------------------------------------
def _load_sim():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "clicks_sim.py"
    spec = importlib.util.spec_from_file_location("clicks_sim", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("clicks_sim", module)  # dataclasses look their module up
    spec.loader.exec_module(sys.modules["clicks_sim"])
    return sys.modules["clicks_sim"]


def test_click_simulator_follows_its_model(tmp_path):
    from toybeir import write_toy_beir

    sim = _load_sim()
    ds = load_dataset(write_toy_beir(tmp_path / "toy"))
    # everything examined, only relevant docs clicked: the clicks are exactly the qrels in the top k
    exact = sim.simulate(ds, "train", sim.ClickModel(eta=0.0, click_rel=1.0, click_nonrel=0.0, impressions=2, top_k=5))
    assert len(exact) == 32 and all(len(r["shown"]) == 5 for r in exact)
    truth = ds.positives("train")
    assert all(r["clicked"] == [d for d in r["shown"] if d in truth[r["query_id"]]] for r in exact)
    a = sim.simulate(ds, "train", sim.ClickModel(seed=3))
    assert a == sim.simulate(ds, "train", sim.ClickModel(seed=3))
    assert a != sim.simulate(ds, "train", sim.ClickModel(seed=4))
    write_jsonl(tmp_path / "log.jsonl", a)
    summary = sim.summarize(tmp_path / "log.jsonl", ds, "train", sim.ClickModel(seed=3))
    assert summary["impressions"] == 160 and summary["recall_bound"] == 1.0


def test_a_log_without_any_skip_above_pair_still_makes_a_folder(tmp_path):
    """Every impression clicks its top result: no skip-above pair (an empty table, not a crash)."""
    docs = list(DOCS)[:2]
    log = write_jsonl(tmp_path / "top.jsonl", [{"query": "x y", "shown": docs, "clicked": [docs[0]]}])
    result = clicks_to_beir(log, write_corpus(tmp_path / "c.jsonl"), tmp_path / "out")
    assert result.stats["skip_above_pairs"] == 0 and result.stats["counts"]["positives"] == 1
    assert (tmp_path / "out" / "qrels" / "train.tsv").is_file()
