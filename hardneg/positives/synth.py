"""Positives from an unlabeled corpus: no qrels, no model (so it works offline).

Use this when a team has only documents. Each method turns a document into (query, positive)
pairs and writes a BEIR folder that ``hardneg mine`` and ``hardneg train`` read directly:

* ``ict`` (inverse cloze task; Lee et al., 2019): a sentence is the query, its passage without
  that sentence the positive. As in the paper the sentence stays in the passage with
  probability ``keep_prob`` (default 0.1), so the model also learns that word overlap matters.
* ``title``: a document's title is the query, its body the positive; untitled docs are skipped.
* ``crop`` (independent cropping; Contriever, Izacard et al., 2022): two random word spans of
  one document, one the query, the other the positive (they may overlap, as in the paper).
* ``llm`` (optional, off by default): an OpenAI-compatible endpoint (a local vLLM / Ollama
  server, ``llm_url``) writes a query for the document; the positive is the document itself.

The positive must be a corpus document, yet ICT's and crop's positive text is not the stored
document. So the output folder holds a *training corpus*: every input document under its own
id, where a document that gave pairs is stored as its positive text (ICT: the passage with its
query sentences removed, each kept with ``keep_prob``; crop: the positive span; title: the
body, titles are dropped from every document, since the query would otherwise sit verbatim in
its positive). Documents that gave no pair are stored unchanged and serve as negatives. Mining
on this corpus can never pick the untouched original of a positive as its negative, which a
corpus with both versions would. Evaluate the trained model on the original corpus and its
real test qrels (``hardneg eval --data ORIGINAL``); no qrels are used to build the pairs.

Filters (each counted in ``synth.json``): query length in words (``min_query_words`` ..
``max_query_words``), positive length (``min_positive_words`` .. ``max_positive_words``),
mostly non-alphabetic text (``min_alpha``: share of letters among non-space characters), and
boilerplate: a sentence (or title) found in ``boilerplate_min_docs`` or more documents is
never a query and is cut out before cropping. Every random choice takes ``seed``; a document's
draws depend only on the seed and its id, so the same corpus and seed give identical files.
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from hardneg.checks import ids_fit
from hardneg.data import find_file, join_title, normalize_text, read_corpus
from hardneg.errors import HardnegError
from hardneg.files import atomic_write_json, atomic_write_text
from hardneg.options import as_enum, option, seed_option
from hardneg.sampling import sample

__all__ = ["LLMClient", "Method", "SynthConfig", "SynthPair", "SynthResult", "synthesize", "write_synth"]

#: Upper bound of a crop positive's length when ``max_positive_words`` is not set.
CROP_MAX_POSITIVE = 128


class Method(str, Enum):
    ICT = "ict"
    TITLE = "title"
    CROP = "crop"
    LLM = "llm"


@dataclass(frozen=True)
class SynthConfig:
    """How to build pairs; see the module doc for each method and filter."""

    method: Method = option(Method.ICT, "ict (sentence -> rest of its passage) | title (title -> body) | crop "
                                        "(two random spans) | llm (queries from llm_url).")
    per_doc: int = option(1, "Queries per document (title: at most 1).")
    seed: int = seed_option(42, "Seed of every random choice.")
    keep_prob: float = option(0.1, "ict: probability the query sentence stays in its positive (the ICT paper's 0.1).")
    min_query_words: int = option(4, "Shorter queries (sentences, titles, crops) are dropped; crop: the shortest "
                                     "query span.")
    max_query_words: int = option(64, "Longer queries are dropped; crop: the longest query span.")
    min_positive_words: int = option(16, "Shorter positives are skipped; crop: the shortest positive span.")
    max_positive_words: int | None = option(None, "Longer positives are skipped (crop: the longest span; none: "
                                                  "128).")
    min_alpha: float = option(0.5, "Least share of letters among a query's non-space characters.")
    boilerplate_min_docs: int | None = option(3, "A sentence (title) found in this many documents is boilerplate "
                                                 "(none: off).")
    max_docs: int | None = option(None, "Use a seeded sample of this many documents.")
    llm_url: str | None = option(None, "llm: OpenAI-compatible base URL, e.g. http://localhost:8000/v1 (vLLM) or "
                                       "http://localhost:11434/v1 (Ollama).")
    llm_model: str | None = option(None, "llm: model name; none: the server's first.")
    llm_timeout: float = option(30.0, "llm: seconds per request.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", as_enum(Method, self.method, "method"))
        if self.per_doc < 1:
            raise HardnegError(f"--per-doc must be >= 1, got {self.per_doc}")
        if not 0 <= self.keep_prob <= 1:
            raise HardnegError(f"--keep-prob is a probability in [0, 1], got {self.keep_prob}")
        if not 1 <= self.min_query_words <= self.max_query_words:
            raise HardnegError(f"need 1 <= --min-query-words <= --max-query-words, got "
                               f"{self.min_query_words} and {self.max_query_words}")
        if self.min_positive_words < 1 or (self.max_positive_words is not None
                                           and self.max_positive_words < self.min_positive_words):
            raise HardnegError(f"need 1 <= --min-positive-words <= --max-positive-words, got "
                               f"{self.min_positive_words} and {self.max_positive_words}")
        if not 0 <= self.min_alpha <= 1:
            raise HardnegError(f"--min-alpha is a share in [0, 1], got {self.min_alpha}")
        if self.boilerplate_min_docs is not None and self.boilerplate_min_docs < 2:
            raise HardnegError(f"--boilerplate-min-docs must be >= 2 (or off), got {self.boilerplate_min_docs}")
        if self.max_docs is not None and self.max_docs < 1:
            raise HardnegError(f"--max-docs must be >= 1, got {self.max_docs}")
        if self.method is Method.LLM and not self.llm_url:
            raise HardnegError("--method llm needs --llm-url (an OpenAI-compatible server, "
                               "e.g. http://localhost:8000/v1)")
        if self.llm_url and self.method is not Method.LLM:
            raise HardnegError(f"--llm-url is only used by --method llm (got --method {self.method.value})")


@dataclass(frozen=True)
class SynthPair:
    """One synthetic pair: the query and the id of its positive, with how it was made."""

    query_id: str
    query: str
    doc_id: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class SynthResult:
    """Pairs, the training corpus (``doc_ids``, ``titles``, ``texts``) and filter counts."""

    pairs: list[SynthPair]
    doc_ids: list[str]
    titles: list[str]
    texts: list[str]
    counts: dict[str, int]
    config: SynthConfig

    def summary(self, out: str | Path) -> list[str]:
        """What `hardneg synth` prints: pairs and documents used, the drops, the files in ``out``."""
        c = self.counts
        dropped = ", ".join(f"{k} {v:,}" for k, v in c.items()
                            if k not in ("pairs", "queries", "docs_used", "docs_considered") and v)
        return [f"{self.config.method.value}: {c['pairs']:,} pairs ({c['queries']:,} queries) from "
                f"{c.get('docs_used', 0):,} of {c['docs_considered']:,} documents" + (f"; {dropped}" if dropped else ""),
                f"wrote {out} (corpus.jsonl, queries.jsonl, qrels/train.tsv, pairs.jsonl, synth.json)"]


# ---- text helpers ----------------------------------------------------------------------------------
_ABBREV = {"e.g", "i.e", "al", "fig", "figs", "vs", "approx", "ca", "cf", "dr", "mr", "mrs", "ms", "no", "vol",
           "etc", "resp", "eq", "ref", "refs", "st", "prof", "inc", "ltd", "co", "jr", "sr", "u.s", "p"}
_BOUNDARY = re.compile(r"[.!?][\"'\u201d)\]]*\s+(?=[\"'\u201c(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split at ``.``/``!``/``?`` + space + a capital or digit, not after common abbreviations
    (``e.g.``, ``et al.``, ``Fig.``) or single-letter initials. Deterministic, no model."""
    out, start = [], 0
    for m in _BOUNDARY.finditer(text):
        before = text[start:m.start()].split()
        last = before[-1].lower().rstrip(".") if before else ""
        if last in _ABBREV or (len(last) == 1 and last.isalpha()):
            continue
        piece = text[start:m.end()].strip()
        if piece:
            out.append(piece)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def _alpha_share(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


def boilerplate_sentences(sentences_per_doc: list[list[str]], min_docs: int | None) -> set[str]:
    """Normalised sentences found in ``min_docs`` or more documents (copyright lines, headers)."""
    if min_docs is None:
        return set()
    df = Counter(s for sents in sentences_per_doc for s in {normalize_text(x) for x in sents})
    return {s for s, n in df.items() if n >= min_docs}


def _query_problem(text: str, cfg: SynthConfig, boiler: set[str]) -> str | None:
    """Why ``text`` cannot be a query (a count key), or None."""
    n = len(text.split())
    if n < cfg.min_query_words:
        return "query_too_short"
    if n > cfg.max_query_words:
        return "query_too_long"
    if _alpha_share(text) < cfg.min_alpha:
        return "query_non_alphabetic"
    if normalize_text(text) in boiler:
        return "query_boilerplate"
    return None


def _positive_problem(text: str, cfg: SynthConfig) -> str | None:
    n = len(text.split())
    if n < cfg.min_positive_words:
        return "positive_too_short"
    if cfg.max_positive_words is not None and n > cfg.max_positive_words:
        return "positive_too_long"
    return None


def _doc_rng(seed: int, doc_id: str) -> np.random.Generator:
    """A generator that depends only on the seed and the document id (order-independent)."""
    return np.random.default_rng([int(seed), zlib.crc32(doc_id.encode("utf-8"))])


# ---- the methods: one document -> its pairs and its stored text --------------------------------------
# Each returns (queries with details, stored title, stored text); no queries = leave the doc as is.
_DocOut = tuple[list[tuple[str, dict]], str, str]


def _ict(title: str, text: str, sents: list[str], rng: np.random.Generator, cfg: SynthConfig,
         boiler: set[str], counts: Counter) -> _DocOut | None:
    if len(sents) < 2:
        counts["doc_single_sentence"] += 1
        return None
    ok = []
    for i, s in enumerate(sents):
        problem = _query_problem(s, cfg, boiler)
        if problem:
            counts[problem] += 1
        else:
            ok.append(i)
    if not ok:
        counts["doc_no_query_sentence"] += 1
        return None
    chosen = [ok[i] for i in rng.choice(len(ok), size=min(cfg.per_doc, len(ok)), replace=False)]
    keep = rng.random(len(chosen)) < cfg.keep_prob
    removed = {i for i, k in zip(chosen, keep) if not k}
    body = " ".join(s for i, s in enumerate(sents) if i not in removed)
    problem = _positive_problem(body, cfg)
    if problem:
        counts[problem] += 1
        return None
    queries = [(sents[i], {"sentence": int(i), "kept": bool(k)}) for i, k in zip(chosen, keep)]
    counts["sentences_kept"] += int(keep.sum())
    return queries, title, body


def _title(title: str, text: str, boiler: set[str], cfg: SynthConfig, counts: Counter) -> _DocOut | None:
    if not title.strip():
        counts["doc_untitled"] += 1
        return None
    problem = _query_problem(title, cfg, boiler) or _positive_problem(text, cfg)
    if problem:
        counts[problem] += 1
        return None
    return [(title.strip(), {})], "", text


def _crop(title: str, sents: list[str], rng: np.random.Generator, cfg: SynthConfig,
          boiler: set[str], counts: Counter) -> _DocOut | None:
    clean = [s for s in sents if normalize_text(s) not in boiler]
    counts["boilerplate_sentences_cut"] += len(sents) - len(clean)
    words = join_title(title, " ".join(clean)).split()
    n = len(words)
    if n < max(cfg.min_positive_words, cfg.min_query_words):
        counts["positive_too_short"] += 1
        return None
    hi = cfg.max_positive_words or max(CROP_MAX_POSITIVE, cfg.min_positive_words)
    lp = int(rng.integers(cfg.min_positive_words, min(hi, n) + 1))
    sp = int(rng.integers(0, n - lp + 1))
    queries = []
    for _ in range(cfg.per_doc):
        lq = int(rng.integers(cfg.min_query_words, min(cfg.max_query_words, n) + 1))
        sq = int(rng.integers(0, n - lq + 1))
        query = " ".join(words[sq:sq + lq])
        if _alpha_share(query) < cfg.min_alpha:
            counts["query_non_alphabetic"] += 1
            continue
        queries.append((query, {"query_span": [sq, sq + lq], "positive_span": [sp, sp + lp]}))
    if not queries:
        return None
    return queries, "", " ".join(words[sp:sp + lp])


# ---- an OpenAI-compatible endpoint (optional) ---------------------------------------------------------
class LLMClient:
    """Minimal chat-completions client over the standard library (no extra dependency).

    ``url`` is the server's base URL (``http://localhost:8000/v1`` for vLLM,
    ``http://localhost:11434/v1`` for Ollama). Any network failure becomes one clear
    :class:`~hardneg.errors.HardnegError` line.
    """

    PROMPT = ("Write one short search query that a user might type to find the passage below. "
              "Reply with the query only.\n\nPassage: {passage}")

    def __init__(self, url: str, model: str | None = None, timeout: float = 30.0):
        self.base = url.rstrip("/")
        for suffix in ("/chat/completions", "/completions"):
            if self.base.endswith(suffix):
                self.base = self.base[: -len(suffix)]
        self.url, self.timeout = url, timeout
        self.model = model or self._first_model()

    def _request(self, path: str, payload: dict | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if data is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            text = e.read()[:200].decode("utf-8", "replace").replace("\n", " ")
            raise HardnegError(f"LLM endpoint {self.base + path} answered HTTP {e.code}: {text}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise HardnegError(f"cannot reach the LLM endpoint {self.url} ({reason}); is the server running? "
                               "--llm-url takes an OpenAI-compatible base URL such as "
                               "http://localhost:8000/v1") from None
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            raise HardnegError(f"LLM endpoint {self.base + path} did not answer JSON") from None

    def _first_model(self) -> str:
        data = self._request("/models").get("data") or []
        if not data or "id" not in data[0]:
            raise HardnegError(f"LLM endpoint {self.url} lists no model; pass --llm-model")
        return str(data[0]["id"])

    def query_for(self, passage: str, seed: int) -> str:
        """One generated query for ``passage`` (first line, quotes stripped)."""
        answer = self._request("/chat/completions", {
            "model": self.model, "temperature": 0.7, "max_tokens": 64, "seed": int(seed),
            "messages": [{"role": "user", "content": self.PROMPT.format(passage=passage[:4000])}],
        })
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise HardnegError(f"LLM endpoint {self.url}: unexpected answer (no choices[0].message.content)") from None
        lines = [x.strip() for x in str(text).strip().splitlines() if x.strip()]
        return lines[0].strip("\"'` ") if lines else ""


def _llm(title: str, text: str, doc_id: str, client: LLMClient, cfg: SynthConfig, boiler: set[str],
         counts: Counter) -> _DocOut | None:
    passage = join_title(title, text)
    problem = _positive_problem(passage, cfg)
    if problem:
        counts[problem] += 1
        return None
    queries = []
    for k in range(cfg.per_doc):
        q = client.query_for(passage, cfg.seed + k + zlib.crc32(doc_id.encode("utf-8")))
        problem = _query_problem(q, cfg, boiler) if q else "query_empty"
        if problem:
            counts[problem] += 1
            continue
        queries.append((q, {"model": client.model}))
    return (queries, title, text) if queries else None


# ---- the corpus -> pairs -------------------------------------------------------------------------------
def synthesize(doc_ids: list[str], titles: list[str], texts: list[str], config: SynthConfig = SynthConfig(),
               llm: LLMClient | None = None) -> SynthResult:
    """Build pairs and the training corpus from documents (see the module doc).

    Queries with identical normalised text become one query with several positives.
    """
    cfg = config
    counts: Counter = Counter()
    sents = [split_sentences(t) for t in texts]
    boiler = boilerplate_sentences(sents, cfg.boilerplate_min_docs)
    if cfg.method is Method.TITLE:
        boiler = boilerplate_sentences([[t] for t in titles if t.strip()], cfg.boilerplate_min_docs)
    counts["boilerplate_distinct"] = len(boiler)
    use = np.arange(len(doc_ids)) if cfg.max_docs is None else sample(len(doc_ids), cfg.max_docs, cfg.seed)
    if cfg.method is Method.LLM and llm is None:
        llm = LLMClient(cfg.llm_url, cfg.llm_model, cfg.llm_timeout)
    out_titles, out_texts = list(titles), list(texts)
    if cfg.method is Method.TITLE:
        out_titles = ["" if x.strip() else t for t, x in zip(titles, texts)]  # bodies only (title-only docs kept)
    pairs: list[SynthPair] = []
    qid_of: dict[str, str] = {}
    for i in use:
        doc_id = doc_ids[i]
        rng = _doc_rng(cfg.seed, doc_id)
        counts["docs_considered"] += 1
        made: _DocOut | None
        if cfg.method is Method.ICT:
            made = _ict(titles[i], texts[i], sents[i], rng, cfg, boiler, counts)
        elif cfg.method is Method.TITLE:
            made = _title(titles[i], texts[i], boiler, cfg, counts)
        elif cfg.method is Method.CROP:
            made = _crop(titles[i], sents[i], rng, cfg, boiler, counts)
        else:
            made = _llm(titles[i], texts[i], doc_id, llm, cfg, boiler, counts)
        if made is None:
            continue
        queries, out_titles[i], out_texts[i] = made
        counts["docs_used"] += 1
        for k, (query, detail) in enumerate(queries):
            key = normalize_text(query)
            if key in qid_of:
                counts["queries_merged"] += 1
            qid = qid_of.setdefault(key, f"{cfg.method.value}-{doc_id}-{k}")
            pairs.append(SynthPair(qid, query, doc_id, detail))
    counts["pairs"] = len(pairs)
    counts["queries"] = len(qid_of)
    return SynthResult(pairs, list(doc_ids), out_titles, out_texts, dict(sorted(counts.items())), cfg)


def write_synth(corpus: str | Path, out: str | Path, config: SynthConfig = SynthConfig(),
                llm: LLMClient | None = None) -> SynthResult:
    """Read ``corpus`` (a corpus JSONL or a BEIR folder), synthesize, write a BEIR folder:
    ``corpus.jsonl`` (the training corpus), ``queries.jsonl``, ``qrels/train.tsv``,
    ``pairs.jsonl`` (one line per pair with how it was made; loadable by
    :func:`hardneg.data.load_pairs` with the corpus) and ``synth.json`` (config and counts).
    Nothing is written when reading or generation fails, or no pair survives the filters."""
    corpus_path = find_file(Path(corpus), "corpus") if Path(corpus).is_dir() else Path(corpus)
    ids, titles, texts = read_corpus(corpus_path)
    result = synthesize(ids, titles, texts, config, llm)
    if not result.pairs:
        detail = ", ".join(f"{k}={v}" for k, v in result.counts.items())
        raise HardnegError(f"{corpus_path}: no pair survives the filters ({detail})")
    ids_fit([i for p in result.pairs for i in (p.doc_id, p.query_id)], "qrels TSV", f"{corpus_path}: _id")
    out = Path(out)
    docs = "".join(json.dumps({"_id": d, "title": t, "text": x}, ensure_ascii=False) + "\n"
                   for d, t, x in zip(result.doc_ids, result.titles, result.texts))
    first: dict[str, str] = {}
    for p in result.pairs:
        first.setdefault(p.query_id, p.query)
    atomic_write_text(out / "corpus.jsonl", docs)
    (out / "corpus.jsonl.gz").unlink(missing_ok=True)  # would shadow nothing, but confuses readers
    atomic_write_text(out / "queries.jsonl", "".join(
        json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n" for q, t in first.items()))
    seen: set[tuple[str, str]] = set()
    rows = []
    for p in result.pairs:
        if (p.query_id, p.doc_id) not in seen:
            seen.add((p.query_id, p.doc_id))
            rows.append(f"{p.query_id}\t{p.doc_id}\t1\n")
    atomic_write_text(out / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\n" + "".join(rows))
    for stale in ("dev", "test"):  # a synthetic folder has train pairs only
        (out / "qrels" / f"{stale}.tsv").unlink(missing_ok=True)
    atomic_write_text(out / "pairs.jsonl", "".join(
        json.dumps({"query_id": p.query_id, "query": p.query, "positive_id": p.doc_id,
                    "method": config.method.value, **p.detail}, ensure_ascii=False) + "\n" for p in result.pairs))
    atomic_write_json(out / "synth.json", {"corpus": str(corpus_path), "config": _config_json(config),
                                           "counts": result.counts})
    return result


def _config_json(cfg: SynthConfig) -> dict:
    out = asdict(cfg)
    out["method"] = cfg.method.value
    return out
