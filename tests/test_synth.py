"""Synthetic positives from an unlabeled corpus: ICT, title -> body, cropping, filters, the
optional LLM endpoint, and that the output folder loads as a dataset. Hand-made corpora."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.data import load_dataset, load_pairs, normalize_text
from hardneg.errors import HardnegError
from hardneg.positives.synth import (
    LLMClient,
    SynthConfig,
    boilerplate_sentences,
    split_sentences,
    synthesize,
    write_synth,
)

runner = CliRunner()
VOCAB = ("protein cell gene tumor insulin receptor mouse patient therapy dose blood brain liver kidney "
         "virus vaccine enzyme signal pathway neuron muscle bone lung heart").split()
BOILER = "This article is distributed under the terms of the Creative Commons License."


def sentence(rng: np.random.Generator, n: int = 8) -> str:
    words = [VOCAB[i] for i in rng.integers(0, len(VOCAB), n)]
    return " ".join([words[0].capitalize()] + words[1:]) + "."


def corpus(n_docs: int = 40, n_sents: int = 5, seed: int = 0, boiler_every: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"d{i}" for i in range(n_docs)]
    titles = [f"Title {VOCAB[i % len(VOCAB)]} study number {i}" if i % 4 else "" for i in range(n_docs)]
    texts = []
    for i in range(n_docs):
        sents = [sentence(rng, 6 + (j % 4)) for j in range(n_sents)]
        if boiler_every and i % boiler_every == 0:
            sents.insert(2, BOILER)
        texts.append(" ".join(sents))
    return ids, titles, texts


def write_corpus(path: Path, ids, titles, texts) -> Path:
    rows = zip(ids, titles, texts)
    path.write_text("".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, t, x in rows))
    return path


# ---- sentences and filters ----------------------------------------------------------------------------
def test_split_sentences_keeps_abbreviations_and_decimals():
    text = "Mice were treated, e.g. with 2.5 mg. Smith et al. saw it. Effects were large! Fig. 3 shows why."
    assert split_sentences(text) == ["Mice were treated, e.g. with 2.5 mg.", "Smith et al. saw it.",
                                     "Effects were large!", "Fig. 3 shows why."]


def test_boilerplate_is_a_sentence_found_in_many_documents():
    docs = [["A unique one.", BOILER], ["Another.", BOILER], [BOILER, "Third."], ["Alone."]]
    assert boilerplate_sentences(docs, 3) == {normalize_text(BOILER)}
    assert boilerplate_sentences(docs, 4) == set() and boilerplate_sentences(docs, None) == set()


def test_boilerplate_sentence_is_never_a_query_and_is_cut_from_crops():
    ids, titles, texts = corpus(30, boiler_every=3)  # in 10 documents
    ict = synthesize(ids, titles, texts, SynthConfig(method="ict", per_doc=5, min_positive_words=5))
    assert ict.pairs and all(normalize_text(p.query) != normalize_text(BOILER) for p in ict.pairs)
    assert ict.counts["query_boilerplate"] == 10
    crop = synthesize(ids, titles, texts, SynthConfig(method="crop", min_positive_words=5, max_positive_words=200))
    assert crop.counts["boilerplate_sentences_cut"] == 10
    assert all("Creative Commons" not in t for t in crop.texts) and all("Creative Commons" not in p.query
                                                                        for p in crop.pairs)
    off = synthesize(ids, titles, texts, SynthConfig(method="ict", per_doc=5, min_positive_words=5,
                                                     boilerplate_min_docs=None))
    assert any(normalize_text(p.query) == normalize_text(BOILER) for p in off.pairs)


def test_short_and_non_alphabetic_sentences_are_not_queries():
    text = "Cells grew in the dish today. Ok then. 12.4 +/- 3.1 (n = 56; p < 0.001). Proteins bound the receptor well."
    res = synthesize(["a"], [""], [text], SynthConfig(method="ict", per_doc=5, min_positive_words=3))
    assert sorted(p.query for p in res.pairs) == ["Cells grew in the dish today.", "Proteins bound the receptor well."]
    assert res.counts["query_too_short"] == 1 and res.counts["query_non_alphabetic"] == 1


# ---- ICT ------------------------------------------------------------------------------------------------
def test_ict_is_deterministic_by_seed():
    ids, titles, texts = corpus()
    a = synthesize(ids, titles, texts, SynthConfig(method="ict", seed=1, min_positive_words=5))
    b = synthesize(ids, titles, texts, SynthConfig(method="ict", seed=1, min_positive_words=5))
    c = synthesize(ids, titles, texts, SynthConfig(method="ict", seed=2, min_positive_words=5))
    assert a.pairs == b.pairs and a.texts == b.texts
    assert [p.query for p in a.pairs] != [p.query for p in c.pairs]
    # a document's draws depend on the seed and its id only, not on the other documents
    sub = synthesize(ids[5:], titles[5:], texts[5:], SynthConfig(method="ict", seed=1, min_positive_words=5))
    assert sub.pairs == [p for p in a.pairs if p.doc_id not in ids[:5]]


def test_ict_positive_never_holds_the_query_sentence_when_keep_prob_is_0():
    ids, titles, texts = corpus(60)
    res = synthesize(ids, titles, texts, SynthConfig(method="ict", per_doc=2, keep_prob=0.0, min_positive_words=5))
    text_of = dict(zip(res.doc_ids, res.texts))
    assert len(res.pairs) == 120
    for p in res.pairs:
        assert p.query in texts[ids.index(p.doc_id)] and p.query not in text_of[p.doc_id]
        assert not p.detail["kept"]


def test_ict_keep_probability_is_respected_in_aggregate():
    ids, titles, texts = corpus(2000, n_sents=4)
    res = synthesize(ids, titles, texts, SynthConfig(method="ict", keep_prob=0.1, min_positive_words=5))
    text_of = dict(zip(res.doc_ids, res.texts))
    kept = np.array([p.query in text_of[p.doc_id] for p in res.pairs])
    assert len(res.pairs) == 2000
    assert kept.tolist() == [p.detail["kept"] for p in res.pairs]
    assert abs(kept.mean() - 0.1) < 0.02  # binomial sd 0.0067
    assert res.counts["sentences_kept"] == kept.sum()
    everything = synthesize(ids[:50], titles[:50], texts[:50], SynthConfig(method="ict", keep_prob=1.0,
                                                                           min_positive_words=5))
    assert all(p.query in everything.texts[ids.index(p.doc_id)] for p in everything.pairs)


# ---- title and crop -------------------------------------------------------------------------------------
def test_title_to_body_skips_untitled_docs_and_drops_titles_from_the_corpus():
    ids, titles, texts = corpus(20)
    res = synthesize(ids, titles, texts, SynthConfig(method="title", min_query_words=2))
    untitled = [d for d, t in zip(ids, titles) if not t]
    assert res.counts["doc_untitled"] == len(untitled) == 5
    assert sorted(p.doc_id for p in res.pairs) == sorted(d for d in ids if d not in untitled)
    assert all(p.query == titles[ids.index(p.doc_id)] for p in res.pairs)
    assert res.titles == [""] * 20 and res.texts == texts


def test_crop_spans_lie_within_the_length_bounds():
    ids, titles, texts = corpus(50, n_sents=12)
    cfg = SynthConfig(method="crop", per_doc=3, min_query_words=4, max_query_words=10, min_positive_words=12,
                      max_positive_words=30)
    res = synthesize(ids, titles, texts, cfg)
    assert len(res.pairs) == 150
    for p in res.pairs:
        words = (titles[ids.index(p.doc_id)] + " " + texts[ids.index(p.doc_id)]).split()
        lo, hi = p.detail["query_span"]
        assert 4 <= hi - lo <= 10 and p.query == " ".join(words[lo:hi])
        lo, hi = p.detail["positive_span"]
        assert 12 <= hi - lo <= 30 and res.texts[ids.index(p.doc_id)] == " ".join(words[lo:hi])


def test_bad_options_are_refused():
    with pytest.raises(HardnegError, match="method must be one of ict, title, crop, llm, not 'cloze'"):
        SynthConfig(method="cloze")
    with pytest.raises(HardnegError, match="keep-prob"):
        SynthConfig(keep_prob=1.5)
    with pytest.raises(HardnegError, match="--method llm needs --llm-url"):
        SynthConfig(method="llm")


# ---- the output folder ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ict", "title", "crop"])
def test_output_loads_with_load_dataset_and_as_pairs(tmp_path, method):
    ids, titles, texts = corpus(30)
    src = write_corpus(tmp_path / "corpus.jsonl", ids, titles, texts)
    res = write_synth(src, tmp_path / "out", SynthConfig(method=method, min_query_words=2, min_positive_words=5))
    ds = load_dataset(tmp_path / "out")
    assert ds.doc_ids == ids and ds.splits == ["train"]
    expected: dict[str, set[str]] = {}
    for p in res.pairs:
        expected.setdefault(p.query_id, set()).add(p.doc_id)
    assert {q: set(d) for q, d in ds.positives("train").items()} == expected
    meta = json.loads((tmp_path / "out" / "synth.json").read_text())
    assert meta["config"]["method"] == method and meta["counts"]["pairs"] == len(res.pairs)
    pairs = load_pairs(tmp_path / "out" / "pairs.jsonl", tmp_path / "out" / "corpus.jsonl")
    assert pairs.positives("train") == ds.positives("train")


def test_cli_synth_writes_a_folder_mine_reads(tmp_path):
    ids, titles, texts = corpus(30)
    src = write_corpus(tmp_path / "corpus.jsonl", ids, titles, texts)
    out = tmp_path / "ict"
    r = runner.invoke(app, ["synth", "--corpus", str(src), "--method", "ict", "--out", str(out), "--per-doc", "2",
                            "--seed", "3", "--min-positive-words", "5"])
    assert r.exit_code == 0, r.output
    assert "ict: 60 pairs (60 queries) from 30 of 30 documents" in r.output
    r = runner.invoke(app, ["mine", "--data", str(out), "--retriever", "bm25", "--depth", "5", "--out",
                            str(tmp_path / "mine"), "--window", "off", "--percent", "off"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mine" / "negatives.jsonl").read_text().count("\n") == 60


def test_cli_no_pairs_is_a_one_line_error_and_writes_nothing(tmp_path):
    src = write_corpus(tmp_path / "corpus.jsonl", ["a"], [""], ["Too short."])
    r = runner.invoke(app, ["synth", "--corpus", str(src), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "no pair survives the filters" in r.output
    assert not (tmp_path / "out").exists()


# ---- the optional LLM endpoint ----------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_llm_endpoint_is_one_clear_line(tmp_path):
    ids, titles, texts = corpus(3)
    src = write_corpus(tmp_path / "corpus.jsonl", ids, titles, texts)
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(HardnegError, match=r"cannot reach the LLM endpoint http://127\.0\.0\.1:\d+/v1"):
        LLMClient(url, timeout=2)
    r = runner.invoke(app, ["synth", "--corpus", str(src), "--method", "llm", "--llm-url", url, "--llm-model", "m",
                            "--llm-timeout", "2", "--out", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert r.output.startswith(f"error: cannot reach the LLM endpoint {url}") and r.output.count("\n") == 1
    assert not (tmp_path / "out").exists()


class _FakeLLM(BaseHTTPRequestHandler):
    def do_GET(self):  # /v1/models
        self._reply({"data": [{"id": "tiny-llm"}]})

    def do_POST(self):  # /v1/chat/completions
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        passage = body["messages"][0]["content"].split("Passage: ", 1)[1]
        self._reply({"choices": [{"message": {"content": f'"what about {passage.split()[0].lower()} and more"\n'}}]})

    def _reply(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_llm_queries_from_an_openai_compatible_server(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _FakeLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ids, titles, texts = corpus(4)
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        res = synthesize(ids, titles, texts, SynthConfig(method="llm", llm_url=url, min_positive_words=5))
    finally:
        server.shutdown()
        server.server_close()
    assert [p.doc_id for p in res.pairs] == ids
    first = [(titles[i] + " " + texts[i]).split()[0].lower() for i in range(4)]
    assert [p.query for p in res.pairs] == [f"what about {w} and more" for w in first]
    assert res.pairs[0].detail == {"model": "tiny-llm"} and res.texts == texts
