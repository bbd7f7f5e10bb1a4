"""`hardneg diagnose` with known answers: pieces per word, overlap, ranks, planted bad positives, verdicts."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.diagnose import (
    DiagnoseConfig, Outlook, _bm25_terms, dense_ranks, diagnose, near_duplicates, score_rank, suspicious_mask,
    term_overlap, verdict,
)
from hardneg.diagnose.vocab import count_pieces, fragmentation, fragmented_terms, reference_words, vocab_fit
from toybeir import WORDS, write_toy_beir

runner = CliRunner()


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from hardneg.encode import default_model_path

    return AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)


@pytest.fixture()
def hand_tokenizer():
    """A WordPiece tokenizer over a hand-made vocabulary: 'immuno' is im + ##mun + ##o."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "im", "##mun", "##o"]
    return BertTokenizer({piece: i for i, piece in enumerate(vocab)})


# ---- vocabulary fit ----------------------------------------------------------------------------
def test_pieces_match_the_tokenizer_on_a_known_word(minilm_tokenizer):
    pieces = count_pieces(minilm_tokenizer, ["immunoglobulin", "the", "protein"])
    assert minilm_tokenizer.tokenize("immunoglobulin") == ["im", "##mun", "##og", "##lo", "##bu", "##lin"]
    assert pieces.tolist() == [6, 1, 1]


def test_fragmentation_on_a_hand_made_vocabulary(hand_tokenizer):
    pieces = dict(zip(["the", "immuno", "cat"], count_pieces(hand_tokenizer, ["the", "immuno", "cat"]).tolist()))
    assert pieces == {"the": 1, "immuno": 3, "cat": 1}
    f = fragmentation({"the": 2, "immuno": 1}, pieces)
    assert f.pieces_per_word == pytest.approx(5 / 3)
    assert f.share_split == pytest.approx(1 / 3) and f.share_3plus == pytest.approx(1 / 3) and f.words == 2
    assert fragmented_terms({"the": 5, "immuno": 3, "cat": 4}, pieces, {"the": 1.0}, min_count=1) == ["immuno"]
    fit = vocab_fit(hand_tokenizer, ["The cat, the immuno-cat.", "immuno 42"], reference={"the": 9.0, "cat": 1.0})
    # corpus: the x2, cat x2, immuno x2 -> (2 + 2 + 6) / 6 pieces per word; reference: 1.0
    assert fit.corpus.pieces_per_word == pytest.approx(10 / 6) and fit.reference.pieces_per_word == 1.0
    assert fit.ratio == pytest.approx(10 / 6) and fit.out_of_reference == pytest.approx(2 / 6)
    assert [t["word"] for t in fit.terms] == []  # 'immuno' occurs twice: below the default min_count of 3


def test_the_shipped_reference_is_general_english():
    ref = reference_words()
    assert len(ref) == 5000 and max(ref, key=ref.get) == "the"
    assert all(w.isalpha() and w.islower() for w in ref)
    assert "immunoglobulin" not in ref and "house" in ref


# ---- overlap, ranks, duplicates ------------------------------------------------------------------
def test_term_overlap_on_a_hand_made_pair():
    assert term_overlap(["learn", "thunder", "storm"], ["thunder", "storm", "cloud"]) == pytest.approx(2 / 3)
    assert math.isnan(term_overlap([], ["x"]))
    q, d = _bm25_terms(["running dogs in the park", "A dog ran to the park."])
    assert q == ["run", "dog", "park"]  # as BM25 sees them: stopwords out, stemmed
    assert term_overlap(q, d) == pytest.approx(2 / 3)  # 'ran' is not stemmed to 'run'


def brute_force_ranks(q: np.ndarray, docs: np.ndarray, target: np.ndarray) -> list[float]:
    """Mean rank of ``target[i]`` for query i: one row of float64 scores per query, computed once,
    and the target compared with its own entry in that row (never rescored by another kernel,
    which could round differently and let the target beat itself)."""
    ranks = []
    for i in range(len(q)):
        row = docs.astype(np.float64) @ q[i].astype(np.float64)
        own = row[target[i]]
        ranks.append(1.0 + np.count_nonzero(row > own) + (np.count_nonzero(row == own) - 1) / 2)
    return ranks


def test_ranks_share_ties_and_match_brute_force():
    assert score_rank(np.array([3.0, 1.0, 3.0, 0.0]), 0) == 1.5
    assert score_rank(np.array([3.0, 1.0, 3.0, 0.0]), 3) == 4.0
    assert score_rank(np.zeros(4), 2) == 2.5  # a query BM25 cannot score sits mid-corpus
    # by hand: scores [1, 2, 1, 0, 1] for doc 0 -> one above, three tied at ranks 2-4 -> 3.0
    hand_docs = np.array([[1, 0], [2, 0], [1, 5], [0, 1], [1, -3]], dtype=np.float32)
    hand_q = np.array([[1, 0], [0, 1]], dtype=np.float32)
    assert dense_ranks(hand_q, hand_docs, np.array([0, 3]), query_chunk=1, corpus_chunk=2).tolist() == [3.0, 2.0]
    # small-integer vectors: every score is an exact integer in float32 and float64 alike, with
    # real ties (doc 17 copies doc 2, the target of query 0); ties share the mean of their ranks
    rng = np.random.default_rng(0)
    docs = rng.integers(-2, 3, size=(23, 4)).astype(np.float32)
    docs[17] = docs[2]
    q = rng.integers(-2, 3, size=(9, 4)).astype(np.float32)
    target = rng.integers(0, 23, size=9)
    target[0] = 2
    brute = brute_force_ranks(q, docs, target)
    assert np.count_nonzero(docs @ q[0] == docs[2] @ q[0]) >= 2  # the fixture really has ties (exact integers)
    assert any(r != int(r) for r in brute)  # and ties that straddle ranks: half-integer mean ranks
    for query_chunk, corpus_chunk in ((1, 1), (3, 5), (4, 7), (9, 23), (256, 16384)):  # uneven last chunks
        assert dense_ranks(q, docs, target, query_chunk=query_chunk, corpus_chunk=corpus_chunk).tolist() == brute
    # random float vectors: no score lies within 1e-3 of a target's, so rounding cannot move a rank
    q, docs = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(23, 5)).astype(np.float32)
    target = rng.integers(0, 23, size=7)
    full = q.astype(np.float64) @ docs.astype(np.float64).T
    gaps = np.abs(full - full[np.arange(7), target][:, None])
    gaps[np.arange(7), target] = np.inf
    assert gaps.min() > 1e-3
    assert dense_ranks(q, docs, target, query_chunk=3, corpus_chunk=5).tolist() == brute_force_ranks(q, docs, target)
    assert suspicious_mask(np.array([200, 5, 200]), np.array([150, 300, 50]), 100).tolist() == [True, False, False]


def test_a_planted_near_duplicate_is_found():
    rng = np.random.default_rng(1)
    embs = rng.normal(size=(6, 8)).astype(np.float32)
    embs[4] = embs[1] + 0.001 * rng.normal(size=8)  # doc 4 near-duplicates doc 1
    embs /= np.linalg.norm(embs, axis=1, keepdims=True)
    found = near_duplicates(embs, [1, 2], 0.98)
    assert [(a, b) for a, b, _ in found] == [(1, 4)] and found[0][2] > 0.999
    assert near_duplicates(embs, [4, 1], 0.98) == found  # each pair once, whichever side is the positive
    assert near_duplicates(embs, [0], 0.98) == []


# ---- the verdict ---------------------------------------------------------------------------------
def test_verdict_says_plainly_when_bm25_wins():
    v = verdict(0.70, 0.55, 0.72, 0.001, 300, 1.3, 0.05, 0.01)
    assert v.outlook is Outlook.LIKELY and v.headline.startswith("BM25 beats the untuned model (0.700 vs 0.550")
    assert "use BM25" in v.headline
    assert any("1.30x the pieces per word" in r and "misfit" in r for r in v.reasons)
    assert any("hybrid (no training) scores 0.720" in r for r in v.reasons)


@pytest.mark.parametrize("args, outlook", [
    ((0.50, 0.65, 0.66, 0.001, 300, 1.05, 0.1, 0.0), Outlook.UNLIKELY),  # model ahead, vocabulary fits
    ((0.50, 0.65, 0.66, 0.001, 300, 1.30, 0.1, 0.0), Outlook.POSSIBLE),  # model ahead, vocabulary misfit
    ((0.80, 0.93, 0.92, 0.001, 300, 1.30, 0.1, 0.0), Outlook.UNLIKELY),  # little headroom
    ((0.60, 0.58, 0.62, 0.400, 300, 1.05, 0.1, 0.0), Outlook.POSSIBLE),  # no significant difference
])
def test_verdict_rules(args, outlook):
    assert verdict(*args).outlook is outlook


def test_verdict_flags_labels_blind_spots_and_small_samples():
    reasons = verdict(0.6, 0.6, 0.6, 1.0, 12, 1.0, 0.35, 0.08).reasons
    assert any(r.startswith("35% of eval positives share no term") and "only a dense model" in r for r in reasons)
    assert any(r.startswith("8% of positives are ranked low by every scorer") for r in reasons)
    assert any(r.startswith("only 12 eval queries") for r in reasons)


# ---- end to end --------------------------------------------------------------------------------
def planted_toy(folder: Path) -> Path:
    """The toy BEIR folder plus a wrong train label (q4 -> filler f2) and a duplicate of d5 (dup5)."""
    write_toy_beir(folder)
    with (folder / "qrels" / "train.tsv").open("a") as fh:
        fh.write("q4\tf2\t1\n")
    with (folder / "corpus.jsonl").open("a") as fh:
        w = WORDS[5]
        fh.write(json.dumps({"_id": "dup5", "title": w.title(), "text": f"The {w} article: everything about the {w}."})
                 + "\n")
    return folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from hardneg.data import load_dataset
    from hardneg.encode import Encoder, EncoderConfig

    folder = planted_toy(tmp_path_factory.mktemp("planted"))
    ds = load_dataset(folder)
    encoder = Encoder(EncoderConfig(), cache=tmp_path_factory.mktemp("cache"))  # the bundled MiniLM
    return ds, diagnose(ds, encoder, DiagnoseConfig(n_resamples=1000))


def test_a_planted_wrong_label_is_flagged(planted):
    _, diag = planted
    low = [(r["split"], r["query_id"], r["doc_id"]) for r in diag.suspicious if r["reason"] == "low_rank"]
    assert low == [("train", "q4", "f2")]
    assert diag.low_rank_cut == 3  # a tenth of a 33-document corpus
    row = next(r for r in diag.pairs if r["doc_id"] == "f2")
    assert row["bm25_rank"] > 3 and row["dense_rank"] > 3 and row["term_overlap"] == 0.0


def test_a_planted_duplicate_positive_is_flagged(planted):
    _, diag = planted
    dups = [r for r in diag.suspicious if r["reason"] == "near_duplicate"]
    assert [(r["query_id"], r["doc_id"], r["other_doc_id"], r["same_text"], r["other"]) for r in dups] == [
        ("q5", "d5", "dup5", True, "other_unlabelled")]
    assert diag.near_dup_summary["pairs"] == 1 and diag.near_dup_summary["other_unlabelled"] == 1


def test_overlap_and_gap_numbers_on_the_toy(planted):
    _, diag = planted
    # "where can I learn about the W" -> where, can, learn, about, W; the positive holds 'about' and W
    assert diag.overlap["test"]["mean_term_overlap"] == pytest.approx(2 / 5)
    assert diag.overlap["test"]["no_shared_term"] == 0.0 and diag.overlap["test"]["bm25_top10"] == 1.0
    assert diag.gap["means"]["bm25"]["ndcg@10"] == 1.0 and diag.gap["n_queries"] == 8
    assert diag.vocab["corpus"]["pieces_per_word"] >= 1.0


BOILER = ("This page belongs to a large general collection of short notes that were written by many "
          "different people over a long period of time, and every note in the collection starts with this same "
          "long paragraph so that readers know where they are, what the collection is for, and how the notes "
          "are organised, before the part that is specific to the note itself finally begins.")


def bm25_wins_toy(folder: Path) -> Path:
    """24 test queries whose topic word comes after 64+ tokens of shared boilerplate: BM25 finds it,
    a model truncating at 64 tokens (the tiny one) never sees it and ties every document."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": f"{BOILER} The {w} article."}) + "\n"
        for i, w in enumerate(WORDS)))
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": f"q{i}", "text": f"where can I learn about the {w}"}) + "\n" for i, w in enumerate(WORDS)))
    (folder / "qrels" / "test.tsv").write_text("".join(f"q{i}\td{i}\t1\n" for i in range(len(WORDS))))
    return folder


def test_cli_writes_the_files_and_says_when_bm25_wins(tmp_path, tiny_model_dir):
    data, out = bm25_wins_toy(tmp_path / "toy"), tmp_path / "diag"
    result = runner.invoke(app, ["diagnose", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(out),
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "diagnosis.json").read_text())
    assert doc["verdict"]["outlook"] == "likely to pay"
    assert doc["gap"]["means"]["bm25"]["ndcg@10"] > doc["gap"]["means"]["dense"]["ndcg@10"]
    md = (out / "diagnosis.md").read_text()
    assert "## Verdict: tuning is likely to pay" in md and "BM25 beats the untuned model" in md
    html = (out / "diagnosis.html").read_text()
    assert "BM25 beats the untuned model" in html and "data:image/png;base64," in html
    assert "http://" not in html.replace("http-equiv", "") and "<script" not in html
    assert (out / "suspicious_positives.tsv").read_text().startswith("reason\tsplit\tquery_id\tdoc_id")
    assert len((out / "positive_pairs.tsv").read_text().splitlines()) == 1 + 24
    # BM25 finds every positive first; the model scores all 24 documents alike, so it ranks a query's
    # positive first only by the tie-break: q0's d0 where the 24 vectors are bit-equal (ties ordered by
    # index; 23 / 0 / 1), else wherever rounding puts the positive among the near-ties
    per_query = doc["gap"]["per_query_ndcg@10"]
    assert per_query["dense_better"] == 0 and per_query["bm25_better"] + per_query["ties"] == 24
    assert per_query["bm25_better"] >= 20
    cached = [np.load(f) for f in (tmp_path / "cache").rglob("*.npy")]
    if any(len(v) == 24 and (v == v[0]).all() for v in cached):  # the corpus vectors are bit-equal
        assert per_query == {"bm25_better": 23, "dense_better": 0, "ties": 1}
    assert "verdict: tuning is likely to pay" in result.output


def test_cli_bad_data_folder_exits_2_with_one_line(tmp_path):
    data = write_toy_beir(tmp_path / "toy")
    (data / "queries.jsonl").write_text('{"_id": "q0", "text": "ok"}\n{"_id": "q1", "text": \n')
    out = tmp_path / "diag"
    result = runner.invoke(app, ["diagnose", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {data / 'queries.jsonl'}:2: malformed JSON")
    assert not out.exists()
    missing = runner.invoke(app, ["diagnose", "--data", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 2 and missing.output.strip().startswith("error: ") and not out.exists()
    nosplit = runner.invoke(app, ["diagnose", "--data", str(write_toy_beir(tmp_path / "t2")), "--split", "dev",
                                  "--out", str(out)])
    assert nosplit.exit_code == 2 and "no 'dev' split (have: train, test)" in nosplit.output and not out.exists()


def test_click_bias_decay_and_note():
    from hardneg.diagnose import click_bias

    rows = [{"position": p, "impressions": 100, "clicks": c, "ctr": c / 100} for p, c in [(2, 25), (1, 50), (3, 10)]]
    bias = click_bias(rows, "log.jsonl")
    assert [r["position"] for r in bias["positions"]] == [1, 2, 3]
    assert bias["decay"] == pytest.approx(0.2) and bias["note"].startswith("strong position bias")
    flat = click_bias([{"position": 1, "ctr": 0.3}, {"position": 2, "ctr": 0.25}], "x")
    assert flat["note"].startswith("mild position bias")


def test_cli_reports_the_position_bias_of_a_click_log(tmp_path, tiny_model_dir):
    data, out = bm25_wins_toy(tmp_path / "toy"), tmp_path / "diag"
    # 4 impressions of d0..d2: position 1 clicked in all, position 2 in one, position 3 never
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"query": "q", "shown": ["d0", "d1", "d2"],
                                       "clicked": ["d0", "d1"] if i == 0 else ["d0"]}) + "\n" for i in range(4)))
    result = runner.invoke(app, ["diagnose", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(out),
                                 "--cache-dir", str(tmp_path / "cache"), "--clicks", str(log)])
    assert result.exit_code == 0, result.output
    clicks = json.loads((out / "diagnosis.json").read_text())["clicks"]
    assert [r["ctr"] for r in clicks["positions"]] == [1.0, 0.25, 0.0]
    assert clicks["decay"] == 0.0 and "strong position bias" in result.output
    assert "## Click log: position bias" in (out / "diagnosis.md").read_text()
