"""Loading and validation: every bad input gives FILE:LINE and nothing is written."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.data import leakage, load_dataset, validation_lines
from hardneg.errors import DataError
from toybeir import write_toy_beir

CORPUS = [
    {"_id": "d1", "title": "Insulin", "text": "Type 1 diabetes is autoimmune."},
    {"_id": "d2", "title": "", "text": "Type 2 diabetes relates to insulin resistance."},
    {"_id": "d3", "title": "Aspirin", "text": "Aspirin inhibits platelets."},
    {"_id": 4, "title": "Numeric id", "text": "Ids are strings even when numeric."},
]
QUERIES = [
    {"_id": "q1", "text": "What causes type 1 diabetes?"},
    {"_id": "q2", "text": "what causes  TYPE 1 diabetes?"},  # same text as q1 after normalising
    {"_id": "q3", "text": "aspirin and platelets"},
    {"_id": "q4", "text": "insulin resistance"},
]


def write_jsonl(path: Path, rows, gz: bool = False) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    if gz:
        path = path.with_suffix(".jsonl.gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_beir(root: Path, corpus=CORPUS, queries=QUERIES, train="q1\td1\t1\nq2\td2\t1\nq3\td3\t1\nq3\td2\t0\n",
              test="q4\td2\t1\n", gz=False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", corpus, gz)
    write_jsonl(root / "queries.jsonl", queries, gz)
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + train)
    if test is not None:
        (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + test)
    return root


def test_loads_beir_gz_with_string_ids_known_negatives_and_merged_queries(tmp_path):
    ds = load_dataset(make_beir(tmp_path / "b", gz=True))
    assert ds.doc_ids == ["d1", "d2", "d3", "4"]
    assert ds.doc_text("d1") == "Insulin Type 1 diabetes is autoimmune."
    assert ds.doc_text("d2") == "Type 2 diabetes relates to insulin resistance."
    # q2 has the same normalised text as q1: one query, positives are the union
    assert ds.positives("train") == {"q1": ["d1", "d2"], "q3": ["d3"]}
    assert ds.aliases["train"] == {"q2": "q1"}
    # score 0 is a known negative, never a positive
    assert ds.known_negatives("train") == {"q3": ["d2"]}
    assert ds.positives("test") == {"q4": ["d2"]}


def test_leakage_reports_shared_positives_and_texts(tmp_path):
    queries = QUERIES + [{"_id": "q5", "text": "Aspirin and platelets"}, {"_id": "q6", "text": "numeric"}]
    ds = load_dataset(make_beir(tmp_path / "b", queries=queries, test="q4\td2\t1\nq5\td3\t1\nq6\t4\t1\n"))
    leak = leakage(ds, "test")
    assert leak.same_text == [("q5", "q3")]
    assert sorted(leak.all_pos_in_train) == ["q4", "q5"]  # d2, d3 are train positives
    assert leak.clean == ["q6"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda r: r.update(corpus_raw=b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n'),
         r"corpus.jsonl:2: malformed JSON"),
        (lambda r: r.update(corpus=[{"_id": "d1", "text": "a"}, {"_id": "d2", "title": "t"}]),
         r"corpus.jsonl:2: missing field 'text'"),
        (lambda r: r.update(corpus=[{"_id": "d1", "text": "a"}, {"text": "b"}]),
         r"corpus.jsonl:2: missing field '_id'"),
        (lambda r: r.update(corpus=[{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}]),
         r"corpus.jsonl:2: duplicate document id 'd1' \(first on line 1\)"),
        (lambda r: r.update(corpus=[{"_id": "d1", "text": "a"}, {"_id": "d2", "title": " ", "text": "  "}]),
         r"corpus.jsonl:2: document 'd2' has empty title and text"),
        (lambda r: r.update(queries=[{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}]),
         r"queries.jsonl:2: duplicate query id 'q1'"),
        (lambda r: r.update(queries=[{"_id": "q1", "text": "a"}, {"_id": "q2", "text": ""}]),
         r"queries.jsonl:2: field 'text' is empty"),
        (lambda r: r.update(corpus_raw=b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "caf\xe9"}\n'),
         r"corpus.jsonl:2: not valid UTF-8"),
        (lambda r: r.update(train="q1\td1\t1\nq9\td1\t1\n"), r"train.tsv:3: unknown query id 'q9'"),
        (lambda r: r.update(train="q1\td1\t1\nq1\td9\t1\n"), r"train.tsv:3: unknown document id 'd9'"),
        (lambda r: r.update(train="q1\td1\n"), r"train.tsv:2: expected 3 tab-separated fields"),
        (lambda r: r.update(train="q1\td1\thigh\n"), r"train.tsv:2: score must be an integer"),
    ],
)
def test_bad_input_names_file_line_and_field(tmp_path, mutate, expected):
    spec = {"corpus": [{"_id": "d1", "text": "a"}, {"_id": "d2", "text": "b"}],
            "queries": [{"_id": "q1", "text": "a"}], "train": "q1\td1\t1\n"}
    mutate(spec)
    root = make_beir(tmp_path / "b", corpus=spec["corpus"], queries=spec["queries"], train=spec["train"], test=None)
    if "corpus_raw" in spec:
        (root / "corpus.jsonl").write_bytes(spec["corpus_raw"])
    with pytest.raises(DataError, match=expected):
        load_dataset(root)


def test_skip_unknown_drops_rows_with_counted_warning(tmp_path):
    root = make_beir(tmp_path / "b", train="q1\td1\t1\nq9\td1\t1\nq1\td9\t1\n", test=None)
    ds = load_dataset(root, skip_unknown=True)
    assert ds.positives("train") == {"q1": ["d1"]}
    assert any("skipped 2 qrels rows" in w for w in ds.warnings)


def test_pairs_jsonl_maps_known_texts_and_adds_new_ones(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CORPUS)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": "type 1 diabetes cause", "positive": "Type 1 diabetes is autoimmune."},
        {"query": "aspirin", "pos": ["aspirin inhibits   platelets.", "A brand-new passage."]},
    ])
    ds = load_dataset(pairs, corpus=corpus)
    pos = list(ds.positives("train").values())
    assert pos[0] == ["d1"]
    assert pos[1][0] == "d3" and pos[1][1].startswith("p") and ds.doc_text(pos[1][1]) == "A brand-new passage."
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "x", "positive": "y"}, {"query": "z"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing field 'positive'"):
        load_dataset(bad, corpus=corpus)


def test_cli_prints_one_line_exits_2_and_writes_nothing(tmp_path):
    root = make_beir(tmp_path / "b", train="q1\td1\t1\nq1\td9\t1\n", test=None)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "--data", str(root), "--split", "train", "-r", "bm25", "--out", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {root / 'qrels' / 'train.tsv'}:3: unknown document id 'd9' (use --skip-unknown to drop such rows)"]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_validation_lines_count_each_split_and_report_the_leakage(tmp_path):
    ds = load_dataset(write_toy_beir(tmp_path / "toy"))
    lines = validation_lines(ds, "test")
    assert lines[0] == f"{len(ds.doc_ids)} documents, {len(ds.queries)} queries"
    assert [line.split(":")[0] for line in lines[1:1 + len(ds.splits)]] == [f"  {s}" for s in ds.splits]
    leak = leakage(ds, "test")
    assert lines[1 + len(ds.splits):] == ([f"leakage train -> test: {leak.summary()}"] if leak else [])
