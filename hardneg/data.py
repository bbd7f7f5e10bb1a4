"""Load and validate retrieval data once: a corpus, queries and graded relevance (qrels).

Two input shapes are accepted:

* a BEIR folder: ``corpus.jsonl[.gz]`` (``_id``, ``title``, ``text``), ``queries.jsonl[.gz]``
  (``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id  corpus-id  score``);
* a JSONL file of pairs (``{"query": ..., "positive": ...}`` or ``{"query": ..., "pos": [...]}``)
  plus a corpus file; the pairs become the ``train`` split.

Every problem is reported as ``FILE:LINE: what is wrong`` (:class:`~hardneg.errors.DataError`)
before anything else runs. qrels rows scored 0 are kept as known negatives, never as positives.
Queries of one split whose normalised texts are identical become one query whose positives
are the union (the first id seen is kept; the others are recorded in ``aliases``).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Iterator

from hardneg.errors import DataError, HardnegError

__all__ = ["Dataset", "Leakage", "leakage", "load_dataset"]

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


def normalize_text(text: str) -> str:
    """Case- and whitespace-insensitive form used to spot identical queries and documents."""
    return " ".join(text.lower().split())


class DocTexts(Mapping):
    """Read-only ``doc id -> title + " " + text`` over a :class:`Dataset`, built lazily."""

    def __init__(self, ds: "Dataset"):
        self.ds = ds

    def __getitem__(self, doc_id: str) -> str:
        return self.ds.doc_text(doc_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ds.doc_ids)

    def __len__(self) -> int:
        return len(self.ds.doc_ids)


@dataclass
class Dataset:
    """A validated corpus, its queries and per-split qrels. Ids are strings everywhere.

    ``qrels[split][query_id][doc_id]`` is the judged grade; grade 0 means judged
    non-relevant (a known negative). Use :meth:`positives` for training and evaluation.
    """

    doc_ids: list[str]
    titles: list[str]
    texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, dict[str, int]]]
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        self._doc_index = {d: i for i, d in enumerate(self.doc_ids)}

    # ---- corpus -------------------------------------------------------------------------
    def doc_index(self, doc_id: str) -> int:
        return self._doc_index[doc_id]

    def doc_text(self, doc_id: str) -> str:
        """Document text as models see it: ``title + " " + text`` (just text without a title)."""
        i = self._doc_index[doc_id]
        return join_title(self.titles[i], self.texts[i])

    def doc_texts(self) -> list[str]:
        return [join_title(t, x) for t, x in zip(self.titles, self.texts)]

    def doc_text_map(self) -> "DocTexts":
        """doc id -> text as a read-only mapping that joins texts on demand (exports and judges
        touch few documents: no need to build all of them)."""
        return DocTexts(self)

    # ---- queries and qrels --------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        return list(self.qrels)

    def split_qrels(self, split: str) -> dict[str, dict[str, int]]:
        if split not in self.qrels:
            have = ", ".join(self.qrels) or "none"
            raise HardnegError(f"{self.source}: no '{split}' split (have: {have})")
        return self.qrels[split]

    def positives(self, split: str) -> dict[str, list[str]]:
        """``{query_id: [doc_id, ...]}`` of grade > 0, for queries with at least one positive."""
        out = {q: [d for d, g in docs.items() if g > 0] for q, docs in self.split_qrels(split).items()}
        return {q: ds for q, ds in out.items() if ds}

    def known_negatives(self, split: str) -> dict[str, list[str]]:
        """Documents judged non-relevant (grade 0) per query."""
        out = {q: [d for d, g in docs.items() if g <= 0] for q, docs in self.split_qrels(split).items()}
        return {q: ds for q, ds in out.items() if ds}

    def subset_docs(self, keep: set[str]) -> "Dataset":
        """A copy restricted to the given documents (qrels pointing elsewhere are dropped)."""
        idx = [i for i, d in enumerate(self.doc_ids) if d in keep]
        qrels = {
            s: {q: {d: g for d, g in docs.items() if d in keep} for q, docs in split.items()}
            for s, split in self.qrels.items()
        }
        qrels = {s: {q: docs for q, docs in split.items() if docs} for s, split in qrels.items()}
        return Dataset(
            [self.doc_ids[i] for i in idx], [self.titles[i] for i in idx], [self.texts[i] for i in idx],
            dict(self.queries), qrels, dict(self.aliases), list(self.warnings), self.source,
        )


def join_title(title: str, text: str) -> str:
    title, text = title.strip(), text.strip()
    return f"{title} {text}" if title else text


# ---- reading files --------------------------------------------------------------------------
def _open_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line), refusing non-UTF-8 bytes with a located error."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for n, raw in enumerate(fh, start=1):
                try:
                    yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")  # a BOM is decoded, not data
                except UnicodeDecodeError as e:
                    raise DataError(path, n, f"not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise DataError(path, None, "file not found") from None
        raise DataError(path, None, f"cannot read: {e}") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for n, line in _open_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, n, f"malformed JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise DataError(path, n, "JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise DataError(path, n, "expected a JSON object")
        yield n, obj


def _str_field(obj: dict, key: str, path: Path, n: int, *, required: bool = True, nonempty: bool = True) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise DataError(path, n, f"missing field '{key}'")
        return ""
    value = obj[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "_id":
        value = str(value)  # numeric ids are common in BEIR dumps; ids are strings here
    if not isinstance(value, str):
        raise DataError(path, n, f"field '{key}' must be a string, got {type(value).__name__}")
    if nonempty and not value.strip():
        raise DataError(path, n, f"field '{key}' is empty")
    return utf8_text(value, path, n, f"field '{key}'")


def utf8_text(value: str, path: Path, n: int | None, key: str) -> str:
    """``value`` if it can be written as UTF-8, else a located error: JSON's ``\\ud800`` escapes
    decode to lone surrogates, which pass reading and fail the first write."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(path, n, f"{key} holds a lone surrogate {value[e.start]!r} at character {e.start + 1} "
                                 "(not encodable as UTF-8)") from None
    return value


def find_file(folder: Path, stem: str) -> Path:
    """``stem.jsonl`` or ``stem.jsonl.gz`` inside ``folder``."""
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).exists():
            return folder / name
    raise DataError(folder / f"{stem}.jsonl", None, "file not found (also tried .jsonl.gz)")


def read_corpus(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Read a BEIR corpus file: ids, titles, texts. A document needs a non-empty title or text."""
    ids, titles, texts, seen = [], [], [], {}
    for n, obj in _read_jsonl(path):
        doc_id = _str_field(obj, "_id", path, n)
        if doc_id in seen:
            raise DataError(path, n, f"duplicate document id '{doc_id}' (first on line {seen[doc_id]})")
        if "text" not in obj:
            raise DataError(path, n, "missing field 'text'")
        title = _str_field(obj, "title", path, n, required=False, nonempty=False)
        text = _str_field(obj, "text", path, n, nonempty=False)
        if not (title.strip() or text.strip()):
            raise DataError(path, n, f"document '{doc_id}' has empty title and text")
        seen[doc_id] = n
        ids.append(doc_id)
        titles.append(title)
        texts.append(text)
    if not ids:
        raise DataError(path, None, "no documents")
    return ids, titles, texts


def read_queries(path: Path) -> dict[str, str]:
    queries, seen = {}, {}
    for n, obj in _read_jsonl(path):
        qid = _str_field(obj, "_id", path, n)
        if qid in seen:
            raise DataError(path, n, f"duplicate query id '{qid}' (first on line {seen[qid]})")
        seen[qid] = n
        queries[qid] = _str_field(obj, "text", path, n)
    return queries


def read_qrels(path: Path) -> list[tuple[int, str, str, int]]:
    """Rows ``(line, query_id, doc_id, grade)`` of a BEIR qrels TSV (an optional header line)."""
    rows = []
    for n, line in _open_lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split("\t")
        if n == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(parts) == 4:  # TREC qrels: qid iter docid grade
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataError(path, n, f"expected 3 tab-separated fields (query-id, corpus-id, score), got {len(parts)}")
        qid, did, grade = (p.strip() for p in parts)
        if not qid or not did:
            raise DataError(path, n, "empty query-id or corpus-id")
        rows.append((n, qid, did, parse_grade(grade, path, n)))
    return rows


#: the largest |grade| a qrels row may carry: a 32-bit integer, as trec_eval reads it (graded
#: relevance is 0-3 in practice; beyond this ranx and numpy overflow)
MAX_GRADE = 2**31 - 1


def parse_grade(text: str, path: Path, n: int) -> int:
    """A qrels score as an integer: ``2`` and ``2.0`` are 2; ``0.5``, ``inf``, ``nan`` and scores beyond
    :data:`MAX_GRADE` are located errors (never truncated: 0.5 would become a judged negative)."""
    try:
        value = float(text)
    except ValueError:
        raise DataError(path, n, f"score must be an integer, got '{text}'") from None
    if not math.isfinite(value) or value != int(value):
        raise DataError(path, n, f"score must be an integer, got '{text}'")
    if abs(value) > MAX_GRADE:
        raise DataError(path, n, f"score must be an integer of magnitude at most {MAX_GRADE}, got '{text}'")
    return int(value)


def _build_split(
    path: Path, rows: list[tuple[int, str, str, int]], queries: dict[str, str], docs: set[str],
    skip_unknown: bool, warnings: list[str],
) -> dict[str, dict[str, int]]:
    split: dict[str, dict[str, int]] = {}
    skipped = 0
    for n, qid, did, grade in rows:
        problem = (
            f"unknown query id '{qid}'" if qid not in queries
            else f"unknown document id '{did}'" if did not in docs
            else None
        )
        if problem:
            if not skip_unknown:
                raise DataError(path, n, f"{problem} (use --skip-unknown to drop such rows)")
            skipped += 1
            continue
        prev = split.setdefault(qid, {}).get(did)
        split[qid][did] = grade if prev is None else max(prev, grade)
    if skipped:
        warnings.append(f"{path}: skipped {skipped} qrels rows naming unknown queries or documents")
    return split


def merge_identical_queries(
    split: dict[str, dict[str, int]], queries: dict[str, str]
) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Merge queries of one split with identical normalised text; positives become the union."""
    canonical: dict[str, str] = {}
    merged: dict[str, dict[str, int]] = {}
    aliases: dict[str, str] = {}
    for qid, docs in split.items():
        key = normalize_text(queries[qid])
        keep = canonical.setdefault(key, qid)
        if keep != qid:
            aliases[qid] = keep
        target = merged.setdefault(keep, {})
        for d, g in docs.items():
            target[d] = max(g, target.get(d, g))
    return merged, aliases


def load_beir(folder: str | Path, *, skip_unknown: bool = False, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Load a BEIR-format folder; every split found under ``qrels/`` is loaded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, None, "not a folder (expected a BEIR folder with corpus.jsonl, queries.jsonl, qrels/)")
    ids, titles, texts = read_corpus(find_file(folder, "corpus"))
    queries = read_queries(find_file(folder, "queries"))
    qrels_paths = {s: folder / "qrels" / f"{s}.tsv" for s in splits if (folder / "qrels" / f"{s}.tsv").exists()}
    if not qrels_paths:
        raise DataError(folder / "qrels", None, f"no qrels file (looked for {', '.join(s + '.tsv' for s in splits)})")
    return _assemble(ids, titles, texts, queries, {s: read_qrels(p) for s, p in qrels_paths.items()},
                     qrels_paths, skip_unknown, str(folder))


def _assemble(ids, titles, texts, queries, raw_qrels, paths, skip_unknown, source) -> Dataset:
    warnings: list[str] = []
    docs = set(ids)
    qrels, aliases = {}, {}
    for split, rows in raw_qrels.items():
        built = _build_split(Path(paths[split]), rows, queries, docs, skip_unknown, warnings)
        if not any(g > 0 for q in built.values() for g in q.values()):
            raise DataError(paths[split], None, f"split '{split}' has no positive rows (empty, header only, "
                                                "every score 0, or every row skipped)")
        qrels[split], aliases[split] = merge_identical_queries(built, queries)
        if aliases[split]:
            pairs = ", ".join(f"{a}->{c}" for a, c in aliases[split].items())
            warnings.append(f"{split}: merged queries with identical text ({pairs})")
    for w in warnings:
        log.warning(w)
    return Dataset(ids, titles, texts, queries, qrels, aliases, warnings, source)


def load_pairs(pairs_path: str | Path, corpus_path: str | Path, *, split: str = "train") -> Dataset:
    """Load ``{"query", "positive"}`` / ``{"query", "pos": [...]}`` lines plus a corpus file.

    A positive may be a corpus document id (``"positive_id"`` / ``"pos_ids"``) or a text; a text
    found in the corpus (after normalisation) maps to that document, otherwise it is added to
    the corpus with a content-hash id. Queries get ``query_id`` if given, else a hash of the text.
    """
    pairs_path, corpus_path = Path(pairs_path), Path(corpus_path)
    ids, titles, texts = read_corpus(corpus_path)
    by_text = {normalize_text(join_title(t, x)): d for d, t, x in zip(ids, titles, texts)}
    by_text.update({normalize_text(x): d for d, x in zip(ids, texts)})
    known = set(ids)
    queries: dict[str, str] = {}
    rows: list[tuple[int, str, str, int]] = []
    for n, obj in _read_jsonl(pairs_path):
        qtext = _str_field(obj, "query", pairs_path, n)
        qid = _pair_query_id(obj, pairs_path, n, qtext)
        if qid in queries and queries[qid] != qtext:
            raise DataError(pairs_path, n, f"query_id '{qid}' reused for a different query text")
        queries[qid] = qtext
        for doc_id in _pair_positives(obj, pairs_path, n, by_text, known, ids, titles, texts):
            rows.append((n, qid, doc_id, 1))
    if not rows:
        raise DataError(pairs_path, None, "no pairs")
    return _assemble(ids, titles, texts, queries, {split: rows}, {split: pairs_path}, False, str(pairs_path))


def _pair_query_id(obj: dict, path: Path, n: int, qtext: str) -> str:
    """The row's ``query_id`` (``0`` included: a number is an id), else a hash of the query text."""
    if obj.get("query_id") in (None, ""):
        return "q" + hashlib.sha1(normalize_text(qtext).encode()).hexdigest()[:12]
    if isinstance(obj["query_id"], (int, float)) and not isinstance(obj["query_id"], bool):
        return str(obj["query_id"])
    return _str_field(obj, "query_id", path, n)


def _pair_positives(obj, path, n, by_text, known, ids, titles, texts) -> list[str]:
    if "pos_ids" in obj or "positive_id" in obj:
        given = obj.get("pos_ids", [obj.get("positive_id")])
        if not isinstance(given, list) or not given:
            raise DataError(path, n, "field 'pos_ids' must be a non-empty list of document ids")
        for d in given:
            if str(d) not in known:
                raise DataError(path, n, f"unknown document id '{d}'")
        return [str(d) for d in given]
    if "pos" in obj:
        pos = obj["pos"]
        if not isinstance(pos, list) or not pos:
            raise DataError(path, n, "field 'pos' must be a non-empty list of texts")
    elif "positive" in obj:
        pos = [obj["positive"]]
    else:
        raise DataError(path, n, "missing field 'positive' (or 'pos', 'pos_ids')")
    out = []
    for text in pos:
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, n, "a positive is empty or not a string")
        utf8_text(text, path, n, "field 'positive'")
        key = normalize_text(text)
        if key not in by_text:
            new_id = "p" + hashlib.sha1(key.encode()).hexdigest()[:12]
            by_text[key] = new_id
            known.add(new_id)
            ids.append(new_id)
            titles.append("")
            texts.append(text)
        out.append(by_text[key])
    return out


def load_dataset(path: str | Path, *, corpus: str | Path | None = None, skip_unknown: bool = False) -> Dataset:
    """Load a BEIR folder, or a pairs JSONL when ``corpus`` names the corpus file."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "no such file or folder")
    if path.is_dir():
        return load_beir(path, skip_unknown=skip_unknown)
    if corpus is None:
        raise DataError(path, None, "a pairs file needs --corpus (or pass a BEIR folder)")
    return load_pairs(path, corpus)


# ---- leakage --------------------------------------------------------------------------------
@dataclass
class Leakage:
    """Overlap between a training split and an evaluation split."""

    same_text: list[tuple[str, str]]  # (eval query id, train query id) with identical normalised text
    all_pos_in_train: list[str]  # eval queries whose positives are all train positives
    some_pos_in_train: list[str]  # eval queries with at least one positive among train positives
    clean: list[str]  # eval queries none of whose positives is a train positive
    n_eval: int

    @property
    def any(self) -> bool:
        return bool(self.same_text or self.some_pos_in_train)

    def summary(self) -> str:
        return (
            f"{len(self.same_text)} eval queries repeat a train query's text; "
            f"{len(self.all_pos_in_train)}/{self.n_eval} have all positives among train positives, "
            f"{len(self.some_pos_in_train)}/{self.n_eval} at least one; {len(self.clean)} are clean"
        )


def leakage(ds: Dataset, eval_split: str = "test", train_split: str = "train") -> Leakage | None:
    """Report train/eval overlap, or None when either split is missing."""
    if eval_split not in ds.qrels or train_split not in ds.qrels or eval_split == train_split:
        return None
    train_pos = {d for docs in ds.positives(train_split).values() for d in docs}
    train_text = {normalize_text(ds.queries[q]): q for q in ds.qrels[train_split]}
    for alias, canon in ds.aliases.get(train_split, {}).items():
        train_text.setdefault(normalize_text(ds.queries[alias]), canon)
    same, all_in, some_in, clean = [], [], [], []
    eval_pos = ds.positives(eval_split)
    for q, docs in eval_pos.items():
        t = train_text.get(normalize_text(ds.queries[q]))
        if t is not None:
            same.append((q, t))
        hits = sum(d in train_pos for d in docs)
        (clean if hits == 0 else some_in).append(q)
        if hits == len(docs):
            all_in.append(q)
    return Leakage(same, all_in, some_in, clean, len(eval_pos))


def validation_lines(ds: Dataset, eval_split: str = "test") -> list[str]:
    """What ``hardneg validate`` prints: the sizes, each split's queries, positives and judged negatives, and the
    train/eval leakage (:func:`leakage`)."""
    lines = [f"{len(ds.doc_ids)} documents, {len(ds.queries)} queries"]
    for split in ds.splits:
        pos = ds.positives(split)
        lines.append(f"  {split}: {len(pos)} queries, {sum(map(len, pos.values()))} positives, "
                     f"{sum(map(len, ds.known_negatives(split).values()))} judged negatives")
    leak = leakage(ds, eval_split)
    return lines + ([f"leakage train -> {eval_split}: {leak.summary()}"] if leak is not None else [])
