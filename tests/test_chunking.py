"""Long documents: token-aware chunks with overlap, document-level evaluation (max over chunks),
and mining over chunks that never returns a sibling chunk of a positive as a negative."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hardneg.chunking import (ChunkConfig, ChunkedDataset, chunk_dataset, chunked_like, collapse_to_docs,
                              load_tokenizer)
from hardneg.cli import app
from hardneg.data import Dataset
from hardneg.errors import HardnegError
from hardneg.metrics import per_query_scores
from hardneg.mine import MineConfig, mine_candidates
from hardneg.retrieve.base import Ranking
from hardneg.select import SelectionPolicy, select

# 24 words that are one token each in the bundled MiniLM's (BERT uncased) vocabulary
WORDS = ("apple river guitar planet copper tiger violin desert glacier pepper rocket castle "
         "forest marble thunder lantern falcon harbor meadow nickel orchid quartz saddle walnut").split()


@pytest.fixture(scope="module")
def tok():
    tok = load_tokenizer()  # the bundled MiniLM's: chunk_dataset's default
    assert all(len(tok.tokenize(w)) == 1 for w in WORDS)
    return tok


def n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def one_doc(text: str, title: str = "", doc_id: str = "long") -> Dataset:
    return Dataset([doc_id, "short"], [title, "Short"], [text, "a short one"], {"q": "guitar"},
                   {"train": {"q": {doc_id: 1}}, "test": {"q": {"short": 0}}})


# ---- chunking ------------------------------------------------------------------------------------
def test_long_text_becomes_overlapping_exact_substrings(tok):
    words = (WORDS * 3)[:50]  # 50 tokens
    text = " ".join(words)
    chunked = chunk_dataset(one_doc(text), ChunkConfig(max_tokens=20, overlap=5))
    # token windows [0, 20), [15, 35), [30, 50): 3 chunks, 5 tokens shared by neighbours
    assert chunked.doc_ids == ["long#c0", "long#c1", "long#c2", "short"]
    for cid, (a, b) in zip(chunked.doc_ids, [(0, 20), (15, 35), (30, 50)]):
        assert chunked.doc_text(cid) == " ".join(words[a:b])
        start, end = chunked.spans[cid]
        assert text[start:end] == chunked.doc_text(cid)  # an exact substring, cut by the offsets
        assert chunked.parent[cid] == "long"
    assert chunked.chunking | {"tokenizer": None} == {"max_tokens": 20, "overlap": 5, "tokenizer": None,
                                                      "documents": 2, "documents_split": 1, "chunks": 4}
    # every chunk of a judged document inherits its grade
    assert chunked.qrels["train"] == {"q": {"long#c0": 1, "long#c1": 1, "long#c2": 1}}
    assert chunk_dataset(one_doc(text), ChunkConfig(20, 5)).doc_ids == chunked.doc_ids  # deterministic


def test_short_document_stays_whole_with_its_id(tok):
    chunked = chunk_dataset(one_doc(" ".join(WORDS[:10])), ChunkConfig(max_tokens=20, overlap=5))
    assert chunked.doc_ids == ["long", "short"]  # no "#c0": a document that fits is left as it is
    assert chunked.doc_texts() == one_doc(" ".join(WORDS[:10])).doc_texts()
    assert chunked.parent == {"long": "long", "short": "short"} and chunked.chunking["documents_split"] == 0


def test_title_is_repeated_and_counted_and_words_are_not_split(tok):
    words = WORDS[:19] + ["tokenization"] + WORDS[19:] + WORDS  # "tokenization" = token ##ization, tokens 19-20
    assert tok.tokenize("tokenization") == ["token", "##ization"]
    text = " ".join(words)
    chunked = chunk_dataset(one_doc(text), ChunkConfig(max_tokens=20))
    first = chunked.doc_text("long#c0")
    assert first == " ".join(WORDS[:19])  # cut before the word, not between its two tokens
    assert chunked.doc_text("long#c1").startswith("tokenization ")
    titled = chunk_dataset(one_doc(text, title="Guitar Notes"), ChunkConfig(max_tokens=20))
    kids = [c for c in titled.doc_ids if titled.parent[c] == "long"]
    assert len(kids) == 3  # 50 text tokens in 18-token budgets (the title takes 2)
    for cid in kids:
        assert titled.doc_text(cid).startswith("Guitar Notes ")
        assert n_tokens(tok, titled.doc_text(cid)) <= 20
        start, end = titled.spans[cid]
        assert titled.texts[titled.doc_index(cid)] == text[start:end]


def test_chunks_beyond_the_model_max_length_and_bad_options_are_refused(tiny_model_dir):
    with pytest.raises(HardnegError, match=r"--chunk-tokens 63 plus 2 special tokens exceeds the model's max "
                                           r"length 64.*use at most 62"):
        chunk_dataset(one_doc("a b c"), ChunkConfig(63, tokenizer=str(tiny_model_dir)))
    with pytest.raises(HardnegError, match="--chunk-overlap must be >= 0 and below --chunk-tokens"):
        ChunkConfig(10, overlap=10)
    with pytest.raises(HardnegError, match="--chunk-overlap needs --chunk-tokens"):
        MineConfig(chunk_overlap=4)
    clash = Dataset(["a", "a#c1"], ["", ""], [" ".join(WORDS), "x"], {}, {})
    with pytest.raises(HardnegError, match="chunk id 'a#c1' is also a document id"):
        chunk_dataset(clash, ChunkConfig(10))


# ---- document-level evaluation ---------------------------------------------------------------------
def test_max_over_chunks_collapses_a_run_to_documents():
    chunks = ["a#c0", "a#c1", "b", "c#c0", "c#c1"]
    parent = {"a#c0": "a", "a#c1": "a", "b": "b", "c#c0": "c", "c#c1": "c"}
    order = {"q1": ["c#c1", "a#c0", "c#c0", "b", "a#c1"], "q2": ["b", "a#c1", "a#c0", "c#c0", "c#c1"]}
    scores = np.array([[0.9, 0.8, 0.7, 0.5, 0.4], [0.6, 0.55, 0.3, 0.2, 0.1]], dtype=np.float32)
    run = Ranking(["q1", "q2"], chunks, np.array([[chunks.index(c) for c in order[q]] for q in order]), scores)
    docs = collapse_to_docs(run, parent, ["a", "b", "c"])
    assert docs.row(0) == [("c", pytest.approx(0.9)), ("a", pytest.approx(0.8)), ("b", pytest.approx(0.5))]
    assert docs.row(1) == [("b", pytest.approx(0.6)), ("a", pytest.approx(0.55)), ("c", pytest.approx(0.2))]
    m = per_query_scores({"q1": {"a": 1}, "q2": {"c": 1}}, docs, ["ndcg@10", "mrr@10"])
    assert m["ndcg@10"] == pytest.approx([1 / np.log2(3), 1 / np.log2(4)])  # a at rank 2, c at rank 3
    assert m["mrr@10"] == pytest.approx([1 / 2, 1 / 3])
    assert collapse_to_docs(run, parent, ["a", "b", "c"], k=2).k == 2


def test_search_documents_searches_deeper_until_it_has_k_documents():
    ds = Dataset(["long", "short", "other"], ["", "", ""], [" ".join((WORDS * 3)[:50]), "a b", "c d"], {"q": "x"},
                 {"test": {"q": {"short": 1}}})
    chunked = chunk_dataset(ds, ChunkConfig(max_tokens=10))  # long#c0..c4, short, other
    assert len(chunked.doc_ids) == 7

    class Fixed:  # ranks the long document's chunks first; records how deep it was asked to search
        depths: list[int] = []

        def search(self, qids, texts, k):
            self.depths.append(k)
            idx = np.arange(k)[None, :]
            return Ranking(list(qids), chunked.doc_ids, idx, -idx.astype(np.float32))

    from hardneg.chunking import search_documents

    retriever = Fixed()
    docs = search_documents(retriever, chunked, ["q"], ["x"], 2)
    assert retriever.depths == [5, 7]  # 2 x 7/3 chunks per document: only "long"; then doubled (capped at 7)
    assert [d for d, _ in docs.row(0)] == ["long", "short"]


# ---- mining over chunks ---------------------------------------------------------------------------
def long_positive_dataset() -> Dataset:
    """Query "guitar tuning"; its positive L is long, its third stretch is about guitar tuning."""
    filler = " ".join(WORDS[3:])  # 21 tokens without "guitar"
    body = " ".join([filler, filler, "guitar tuning guitar tuning guitar tuning", filler, "guitar", filler])
    docs = {"L": body, "n1": "guitar strings and pegs", "n2": "guitar case", "n3": "tuning forks",
            "n4": "a river and a planet", "n5": "copper tiger violin"}
    return Dataset(list(docs), [""] * len(docs), list(docs.values()), {"q": "guitar tuning"},
                   {"train": {"q": {"L": 1}}})


def test_mining_over_chunks_never_returns_a_sibling_of_the_positive():
    ds = long_positive_dataset()
    config = MineConfig(retriever="bm25", depth=50, chunk_tokens=24, chunk_overlap=4)
    cands = mine_candidates(ds, config)
    table = cands.table
    kids = sorted(d for d, p in zip(table["doc_id"], table["parent_id"]) if p == "L")
    assert len(kids) >= 4 and all(k.startswith("L#c") for k in kids)
    assert table["is_positive"].sum() == len(kids)  # every chunk of the positive is a known positive
    assert table["rank_bm25"].notna().all()  # depth covers the whole chunked corpus: every chunk is ranked
    assert cands.meta["chunks"]["max_tokens"] == 24 and cands.meta["corpus_size"] == len(kids) + 5

    mined = select(cands, SelectionPolicy.unfiltered(num_negatives=10))
    assert set(mined.negatives["doc_id"]) == {"n1", "n2", "n3", "n4", "n5"}  # no chunk of L
    filters = {f["filter"]: f["removed"] for f in mined.stats["filters"]}
    assert filters["known_positive"] == 1 and filters["sibling_of_positive"] == len(kids) - 1
    # the positive is L's best chunk under BM25: the one with "guitar tuning" three times
    (pos,) = mined.positives["doc_id"]
    best = table[table["parent_id"] == "L"].sort_values("score_bm25", ascending=False)["doc_id"].iloc[0]
    assert pos == best and "guitar tuning guitar tuning" in chunked_like(ds, cands.meta).doc_text(pos)
    decisions = mined.decisions()
    assert set(decisions.loc[decisions["decision"] == "sibling_of_positive", "doc_id"]) == set(kids) - {pos}

    plain = select(mine_candidates(ds, MineConfig(retriever="bm25", depth=50)), SelectionPolicy.unfiltered(num_negatives=10))
    assert "sibling_of_positive" not in {f["filter"] for f in plain.stats["filters"]}  # absent without chunks


def test_dense_mining_over_chunks_with_the_models_own_tokenizer(tiny_model_dir):
    from hardneg.encode import EncoderConfig

    ds = long_positive_dataset()
    cands = mine_candidates(ds, MineConfig(retriever="dense", depth=50, chunk_tokens=24, chunk_overlap=4),
                            EncoderConfig(model=str(tiny_model_dir)), cache=None)
    assert cands.meta["chunks"]["tokenizer"] == str(tiny_model_dir)
    mined = select(cands, SelectionPolicy.unfiltered(num_negatives=10))
    assert set(mined.negatives["doc_id"]) == {"n1", "n2", "n3", "n4", "n5"}
    (pos,) = mined.positives["doc_id"]
    scores = cands.table.set_index("doc_id")["score_dense"]
    kids = [d for d in scores.index if d.startswith("L#c")]
    assert scores[pos] == scores[kids].max()  # the positive is the chunk the dense scorer rates best


def test_random_baseline_never_draws_a_sibling():
    ds = long_positive_dataset()
    cands = mine_candidates(ds, MineConfig(retriever="bm25", depth=50, chunk_tokens=24))
    chunked = chunked_like(ds, cands.meta)
    assert isinstance(chunked, ChunkedDataset)
    for seed in range(5):
        mined = select(cands, SelectionPolicy.unfiltered(sampler="random", num_negatives=5, seed=seed),
                       corpus_doc_ids=chunked.doc_ids)
        assert set(mined.negatives["doc_id"]) == {"n1", "n2", "n3", "n4", "n5"}


# ---- the command line --------------------------------------------------------------------------
def write_beir(folder: Path, ds: Dataset) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, t, x in zip(ds.doc_ids, ds.titles, ds.texts)))
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, t in ds.queries.items()))
    for split in ("train", "test"):
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq\tL\t1\n")
    return folder


def test_cli_mine_select_and_eval_over_chunks(tmp_path):
    data = write_beir(tmp_path / "data", long_positive_dataset())
    runner = CliRunner()
    common = ["--chunk-tokens", "24", "--chunk-overlap", "4"]
    mined = runner.invoke(app, ["mine", "--data", str(data), "--retriever", "bm25", "--depth", "50", "--window", "off",
                                "--percent", "off", "--out", str(tmp_path / "mine"), *common])
    assert mined.exit_code == 0, mined.output
    lines = [json.loads(x) for x in (tmp_path / "mine" / "negatives.jsonl").read_text().splitlines()]
    assert lines[0]["pos_ids"][0].startswith("L#c") and "guitar tuning guitar" in lines[0]["pos"][0]
    assert sorted(lines[0]["neg_ids"]) == ["n1", "n2", "n3", "n4", "n5"]
    again = runner.invoke(app, ["select", str(tmp_path / "mine" / "candidates.parquet"), "--window", "off",
                                "--percent", "off", "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output  # rebuilds the same chunks for the texts
    assert (tmp_path / "again" / "negatives.jsonl").read_bytes() == (tmp_path / "mine" / "negatives.jsonl").read_bytes()

    ev = runner.invoke(app, ["eval", "--data", str(data), "-r", "bm25", "--out", str(tmp_path / "eval"), *common])
    assert ev.exit_code == 0, ev.output
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["bm25"]["ndcg@10"] == pytest.approx(1.0)
    run = (tmp_path / "eval" / "runs" / "bm25.trec").read_text().splitlines()
    ranked = [line.split()[2] for line in run]
    assert ranked[0] == "L" and sorted(ranked) == ["L", "n1", "n2", "n3", "n4", "n5"]  # documents, once each
