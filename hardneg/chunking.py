"""Long documents: split them into overlapping chunks of the model's tokens, and back.

Use it when a corpus has documents longer than the model's max length: the model only sees
their first tokens, so a positive whose answer sits further down looks irrelevant and a
long negative is judged by its opening alone. :func:`chunk_dataset` turns a
:class:`~hardneg.data.Dataset` into a :class:`ChunkedDataset` whose documents are chunks, so
mining, selection and export run unchanged over chunks (``hardneg mine --chunk-tokens``);
:func:`search_documents` ranks chunks and collapses them to documents (a document scores
its best chunk) so evaluation stays at document level (``hardneg eval --chunk-tokens``).

The rules, all deterministic:

* Tokens are the model's own (its fast tokenizer, read from the local model folder), counted
  without special tokens. A chunk's text is an exact substring of the document's ``text``
  (cut with the tokenizer's offset mapping, never re-joined from tokens).
* Cuts fall on token boundaries, moved back to a word start when the chunk has one (a word
  longer than a whole chunk is cut inside). A chunk repeats up to ``overlap`` tokens from
  the end of the one before (moved forward to a word start: never more than ``overlap``).
* The title is not chunked: every chunk keeps its document's title, so a chunk reads
  ``title + " " + chunk`` like a document does; the title's tokens count against
  ``max_tokens``.
* Ids: a document that fits in ``max_tokens`` stays one chunk with its own id and text
  unchanged (a corpus of short documents is left as it is, and its cached embeddings are
  reused); a longer one becomes ``{doc_id}#c0``, ``{doc_id}#c1``, ... in text order.
  :attr:`ChunkedDataset.parent` maps every chunk id to its document id.
* qrels: every chunk of a judged document inherits the document's grade, so every chunk of
  a positive is a known positive in the candidate set (each gets a row and its scores).
  Selection takes, per query and positive document, the chunk scoring highest under
  ``score_by`` as the training positive (the chunk most likely to hold what the query asks;
  the first chunk is often just an introduction), and drops the document's other chunks as
  ``sibling_of_positive`` (:mod:`hardneg.select`): a sibling is never mined as a negative.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hardneg.data import Dataset
from hardneg.encode import default_model_path
from hardneg.errors import HardnegError
from hardneg.retrieve.base import Ranking, Retriever

__all__ = ["ChunkConfig", "ChunkedDataset", "chunk_dataset"]

SEP = "#c"  # chunk id = f"{doc_id}{SEP}{i}"
_BATCH = 1024  # texts tokenised per call


@dataclass(frozen=True)
class ChunkConfig:
    """How to chunk: at most ``max_tokens`` tokens per chunk (title included, special tokens
    not: keep it at or below the model's max length minus its special tokens, and minus a
    passage prompt's tokens if you use one), ``overlap`` tokens repeated between neighbours
    (10-20% of ``max_tokens`` keeps a passage cut at a boundary whole in one chunk), with the
    tokenizer of the model folder ``tokenizer`` (None: the bundled all-MiniLM-L6-v2)."""

    max_tokens: int
    overlap: int = 0
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise HardnegError(f"--chunk-tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.overlap < self.max_tokens:
            raise HardnegError(f"--chunk-overlap must be >= 0 and below --chunk-tokens ({self.max_tokens}), "
                               f"got {self.overlap}")


def chunk_config(tokens: int | None, overlap: int = 0, tokenizer: str | None = None) -> ChunkConfig | None:
    """The ChunkConfig of the ``--chunk-tokens`` / ``--chunk-overlap`` options; None when chunking
    is off (an overlap without a chunk size is refused)."""
    if tokens is None:
        if overlap:
            raise HardnegError("--chunk-overlap needs --chunk-tokens (documents are not chunked without it)")
        return None
    return ChunkConfig(tokens, overlap, tokenizer)


@dataclass
class ChunkedDataset(Dataset):
    """A :class:`Dataset` whose documents are chunks (see the module doc for the rules).

    ``parent[chunk_id]`` is the chunk's document, ``spans[chunk_id]`` its ``(start, end)``
    character span in the document's ``text``, ``chunking`` the settings and counts (stored
    in the candidates' metadata, so ``hardneg select`` rebuilds the same chunks).
    """

    parent: dict[str, str] = field(default_factory=dict)
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    chunking: dict[str, Any] = field(default_factory=dict)

    def documents(self) -> list[str]:
        """The documents' ids, in corpus order."""
        return list(dict.fromkeys(self.parent[c] for c in self.doc_ids))


# ---- the model's tokenizer ---------------------------------------------------------------------
def _model_dir(model: str | Path | None) -> Path:
    path = Path(model).expanduser() if model else Path(default_model_path())
    if not path.is_dir():
        raise HardnegError(f"model {str(path)!r} is not a local folder; chunking reads its tokenizer from there")
    modules = path / "modules.json"  # a sentence-transformers folder: the Transformer module's own folder
    if modules.exists():
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if str(module.get("type", "")).endswith("Transformer"):
                return path / module.get("path", "")
    return path


def load_tokenizer(model: str | Path | None = None):
    """The fast tokenizer of a local model folder (None: the bundled MiniLM), never the hub."""
    from transformers import AutoTokenizer

    folder = _model_dir(model)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise HardnegError(f"cannot load a tokenizer from {folder}: {e}") from None
    if not tok.is_fast:
        raise HardnegError(f"the tokenizer in {folder} is not a fast (Rust) tokenizer: chunking needs its "
                           "offset mapping to cut exact substrings")
    return tok


def model_max_length(model: str | Path | None = None, tokenizer=None) -> int | None:
    """The model's max sequence length (special tokens included), or None when it says none."""
    folder = _model_dir(model)
    for cfg in (folder / "sentence_bert_config.json", folder.parent / "sentence_bert_config.json"):
        if cfg.exists():
            value = json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length")
            if value:
                return int(value)
    value = getattr(tokenizer or load_tokenizer(model), "model_max_length", None)
    return int(value) if value and value < 1_000_000 else None  # transformers' "no limit" is ~1e30


# ---- chunking ----------------------------------------------------------------------------------
def chunk_dataset(ds: Dataset, config: ChunkConfig, *, max_length: int | None = None) -> ChunkedDataset:
    """Split every document of ``ds`` longer than ``config.max_tokens`` tokens into chunks.

    ``max_length`` is the length the model embeds passages at (None: the model's own); a
    ``max_tokens`` that would not fit in it with the special tokens is refused, since such
    chunks would still be truncated.
    """
    tok = load_tokenizer(config.tokenizer)
    specials = tok.num_special_tokens_to_add(pair=False)
    limit = max_length or model_max_length(config.tokenizer, tok)
    if limit is not None and config.max_tokens + specials > limit:
        raise HardnegError(f"--chunk-tokens {config.max_tokens} plus {specials} special tokens exceeds the model's "
                           f"max length {limit}: the chunks would still be truncated; use at most {limit - specials}")
    ids, titles, texts, parent, spans = [], [], [], {}, {}
    children: dict[str, list[str]] = {}
    n_split = 0
    for start in range(0, len(ds.doc_ids), _BATCH):
        batch = slice(start, start + _BATCH)
        title_lens = [len(x) for x in _encode(tok, [t.strip() for t in ds.titles[batch]])["input_ids"]]
        enc = _encode(tok, ds.texts[batch])
        for j, (doc, title, text) in enumerate(zip(ds.doc_ids[batch], ds.titles[batch], ds.texts[batch])):
            budget = config.max_tokens - title_lens[j]
            offsets = enc["offset_mapping"][j]
            if len(offsets) <= budget or not offsets:  # fits (or only a title): the document stays as it is
                windows = [(0, len(offsets))]
            elif budget <= config.overlap:
                raise HardnegError(f"document '{doc}': its title takes {title_lens[j]} of the {config.max_tokens} "
                                   f"chunk tokens, leaving no more than the overlap ({config.overlap}) for text; "
                                   "raise --chunk-tokens or lower --chunk-overlap")
            else:
                windows = _windows(enc.word_ids(j), budget, config.overlap)
            n_split += len(windows) > 1
            kids = children[doc] = [doc] if len(windows) == 1 else [f"{doc}{SEP}{i}" for i in range(len(windows))]
            for kid, (a, b) in zip(kids, windows):
                span = (0, len(text)) if len(windows) == 1 else (offsets[a][0], offsets[b - 1][1])
                ids.append(kid)
                titles.append(title)
                texts.append(text if len(windows) == 1 else text[span[0]:span[1]])
                parent[kid] = doc
                spans[kid] = span
    if len(parent) != len(ids):
        clash = next(i for i, n in Counter(ids).items() if n > 1)
        raise HardnegError(f"chunk id '{clash}' is also a document id of the corpus: chunk ids are "
                           f"'{{doc_id}}{SEP}{{i}}', so rename that document")
    qrels = {s: {q: {c: g for d, g in docs.items() for c in children[d]} for q, docs in split.items()}
             for s, split in ds.qrels.items()}
    info = {"max_tokens": config.max_tokens, "overlap": config.overlap, "tokenizer": str(_model_dir(config.tokenizer)),
            "documents": len(ds.doc_ids), "documents_split": n_split, "chunks": len(ids)}
    return ChunkedDataset(ids, titles, texts, dict(ds.queries), qrels, dict(ds.aliases), list(ds.warnings), ds.source,
                          parent=parent, spans=spans, chunking=info)


def _encode(tok, texts: list[str]):
    return tok(texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False,
               return_token_type_ids=False, verbose=False)


def _windows(word_ids: Sequence[int | None], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` of at most ``budget`` tokens covering all of them, cut at word
    starts where possible, each starting at most ``overlap`` tokens before the previous end."""
    n = len(word_ids)
    cut = [j == 0 or j == n or word_ids[j] is None or word_ids[j] != word_ids[j - 1] for j in range(n + 1)]
    out, s = [], 0
    while True:
        e = s + budget
        if e >= n:
            out.append((s, n))
            return out
        back = e
        while back > s and not cut[back]:
            back -= 1
        e = back if back > s else e  # one word longer than a chunk: cut inside it
        out.append((s, e))
        nxt = e - overlap
        while nxt < e and not cut[nxt]:
            nxt += 1
        s = nxt if nxt > s else e


def chunked_like(ds: Dataset, meta: Mapping[str, Any]) -> Dataset:
    """``ds`` chunked as a candidate set's ``meta["chunks"]`` records (``ds`` itself when it has
    none): the same chunk ids and texts as when the candidates were mined."""
    info = meta.get("chunks")
    if not info or isinstance(ds, ChunkedDataset):
        return ds
    chunked = chunk_dataset(ds, ChunkConfig(info["max_tokens"], info["overlap"], info["tokenizer"]),
                            max_length=1 << 30)
    if len(chunked.doc_ids) != info["chunks"]:
        raise HardnegError(f"the candidates were mined over {info['chunks']} chunks, but chunking this dataset "
                           f"gives {len(chunked.doc_ids)}: the corpus or the tokenizer changed since")
    return chunked


# ---- back to documents -------------------------------------------------------------------------
def collapse_to_docs(ranking, parent: Mapping[str, str], doc_ids: Sequence[str], k: int | None = None):
    """A ranking of chunks as a ranking of documents: each document scores its best chunk.

    Rows keep the documents in order of their best chunk. All rows get the same length (a
    :class:`~hardneg.retrieve.base.Ranking` is a dense table): ``k``, or fewer when some row
    holds fewer distinct documents; rows are cut, never padded with documents not retrieved.
    """
    position = {d: i for i, d in enumerate(doc_ids)}
    of_chunk = np.array([position[parent[c]] for c in ranking.doc_ids], dtype=np.int64)
    rows_idx, rows_score = [], []
    for idx, score in zip(of_chunk[ranking.indices], ranking.scores):
        _, first = np.unique(idx, return_index=True)  # chunks come best first: a document's first is its max
        first.sort()
        rows_idx.append(idx[first])
        rows_score.append(score[first])
    width = min([len(r) for r in rows_idx] + ([k] if k is not None else []), default=0)
    indices = np.array([r[:width] for r in rows_idx], dtype=np.int64).reshape(len(rows_idx), width)
    scores = np.array([r[:width] for r in rows_score], dtype=np.float32).reshape(len(rows_idx), width)
    return Ranking(list(ranking.query_ids), list(doc_ids), indices, scores)


def search_documents(retriever: "Retriever", chunked: ChunkedDataset, query_ids: Sequence[str],
                     query_texts: Sequence[str], k: int):
    """Top-``k`` documents per query from a retriever over ``chunked``'s chunks (max over chunks).

    Searches ``k`` times the mean number of chunks per document, doubled until every query has
    ``k`` distinct documents (or every chunk was searched).
    """
    docs = chunked.documents()
    k = min(k, len(docs))
    n_chunks = len(chunked.doc_ids)
    depth = min(n_chunks, math.ceil(k * n_chunks / max(len(docs), 1)))
    while True:
        collapsed = collapse_to_docs(retriever.search(query_ids, query_texts, depth), chunked.parent, docs, k)
        if collapsed.k >= k or depth >= n_chunks:
            return collapsed
        depth = min(n_chunks, 2 * depth)
