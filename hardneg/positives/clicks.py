"""Positives and skip-above negatives from a click log.

Use this when a team has search logs but no relevance judgements. A log is a list of
*impressions*: a query, the documents shown in order, the ones clicked (in click order) and,
optionally, a dwell time per click, a timestamp and a session. Formats, chosen by suffix:

* JSONL (``.jsonl``, ``.json``, ``.jsonl.gz``), one impression per line::

      {"query": "statin side effects", "query_id": "q7", "shown": ["d3", "d1", "d9"],
       "clicked": ["d1"], "dwell": [42.5], "timestamp": "2024-05-01T10:00:00", "session": "s1"}

  ``dwell`` is a list aligned with ``clicked`` or an object ``{"d1": 42.5}``; ``query_id``,
  ``dwell``, ``timestamp`` and ``session`` are optional.
* CSV / TSV (``.csv``, ``.tsv``, optionally ``.gz``) with a header naming the same columns;
  a list cell is a JSON array or ids separated by spaces.
* Parquet (``.parquet``), the same columns as list or string columns.

Every problem is reported as ``FILE:LINE: what is wrong`` (for Parquet LINE is the 1-based
row) before anything is written. Queries are aggregated by normalised text (as
:func:`hardneg.data.normalize_text` does); the first ``query_id`` seen names them (else a hash
of the text, as :func:`hardneg.data.load_pairs` does).

Positives (:class:`ClickPolicy`): a click *counts* when its dwell reaches ``min_dwell``
(a click without a dwell time never passes a dwell threshold) and, with ``last_click_only``,
only when it is the impression's last click. A (query, doc) pair is a positive when its
counted clicks reach ``min_clicks`` and counted clicks / impressions showing it reach
``min_ctr``.

Skip-above negatives (Joachims, 2002): a document shown *above* the lowest clicked position
of an impression and not clicked was probably examined and passed over. They are kept apart
from retrieval candidates: :func:`add_skip_above` adds them to a candidate set as rows of
source ``clicks-skip-above`` with a ``clicks`` scorer and an ``is_skip_above`` flag, so that
selection and the audit can treat them separately (see that function for how
:func:`hardneg.select.select` treats them).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from hardneg.candidates import CandidateSet, Column, rank_col, score_col
from hardneg.data import Dataset, find_file, normalize_text, read_corpus
from hardneg.errors import DataError, HardnegError
from hardneg.files import atomic_path, atomic_write_json, atomic_write_text
from hardneg.options import option

__all__ = ["ClickConfig", "ClickLog", "ClickPolicy", "ClickResult", "add_skip_above", "clicks_to_beir",
           "read_click_log", "read_skip_above"]

SKIP_ABOVE_SOURCE = "clicks-skip-above"
CLICKS_SCORER = "clicks"

_FIELDS = ("query", "query_id", "shown", "clicked", "dwell", "timestamp", "session")


# ---- the validated log --------------------------------------------------------------------------
@dataclass
class ClickLog:
    """Validated impressions as flat tables (one row per shown document, STYLE 4).

    * ``events``: ``impression, query_id, position`` (1-based, as displayed), ``doc_id``,
      ``clicked``, ``last_click`` (the impression's final click), ``dwell`` (seconds summed over
      the doc's clicks in that impression; NaN when unknown or not clicked).
    * ``impressions``: ``impression, query_id, line, timestamp, session``.
    * ``queries``: canonical query id -> text (first seen); ``aliases``: other ids given for the
      same normalised text -> the canonical id.
    """

    events: pd.DataFrame
    impressions: pd.DataFrame
    queries: dict[str, str]
    aliases: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def n_impressions(self) -> int:
        return len(self.impressions)


def read_click_log(path: str | Path, doc_ids: set[str] | None = None, *, skip_unknown: bool = False) -> ClickLog:
    """Read and validate a click log (JSONL, CSV/TSV or Parquet; see the module doc).

    With ``doc_ids``, every shown or clicked id must be a corpus document; ``skip_unknown``
    drops unknown ones instead (the others keep their displayed positions) and counts them.
    """
    path = Path(path)
    canon_of_key: dict[str, str] = {}  # normalised text -> canonical id
    key_of_given: dict[str, tuple[str, int]] = {}  # explicit query_id -> (normalised text, line)
    queries: dict[str, str] = {}
    aliases: dict[str, str] = {}
    ev: dict[str, list] = {k: [] for k in ("impression", "query_id", "position", "doc_id", "clicked",
                                           "last_click", "dwell")}
    imp: dict[str, list] = {k: [] for k in ("impression", "query_id", "line", "timestamp", "session")}
    unknown = 0
    for n, obj in _records(path):
        rec = _parse_record(obj, path, n)
        key = normalize_text(rec["query"])
        given = rec["query_id"]
        if given is not None:
            seen = key_of_given.get(given)
            if seen is not None and seen[0] != key:
                raise DataError(path, n, f"query_id '{given}' reused for a different query text "
                                         f"(first on line {seen[1]})")
            key_of_given.setdefault(given, (key, n))
        qid = canon_of_key.get(key)
        if qid is None:
            qid = given if given is not None else "q" + hashlib.sha1(key.encode()).hexdigest()[:12]
            if qid in queries:  # a hash id or an explicit id already naming another text
                raise DataError(path, n, f"query id '{qid}' already names a different query text")
            canon_of_key[key] = qid
            queries[qid] = rec["query"]
        elif given is not None and given != qid:
            aliases[given] = qid
        shown, clicked, dwell = rec["shown"], rec["clicked"], rec["dwell"]
        if doc_ids is not None:
            bad = [d for d in shown if d not in doc_ids]
            if bad and not skip_unknown:
                raise DataError(path, n, f"unknown document id '{bad[0]}' in 'shown' "
                                         f"(position {shown.index(bad[0]) + 1}; use --skip-unknown to drop such ids)")
            unknown += len(bad)
        i = len(imp["impression"])
        last = clicked[-1] if clicked else None
        for pos, doc in enumerate(shown, start=1):
            if doc_ids is not None and doc not in doc_ids:
                continue
            ev["impression"].append(i)
            ev["query_id"].append(qid)
            ev["position"].append(pos)
            ev["doc_id"].append(doc)
            ev["clicked"].append(doc in dwell)
            ev["last_click"].append(doc == last)
            ev["dwell"].append(dwell.get(doc, math.nan))
        for k, v in (("impression", i), ("query_id", qid), ("line", n), ("timestamp", rec["timestamp"]),
                     ("session", rec["session"])):
            imp[k].append(v)
    if not imp["impression"]:
        raise DataError(path, None, "no impressions")
    events = pd.DataFrame({
        "impression": np.asarray(ev["impression"], np.int64), "query_id": pd.Series(ev["query_id"], dtype=object),
        "position": np.asarray(ev["position"], np.int64), "doc_id": pd.Series(ev["doc_id"], dtype=object),
        "clicked": np.asarray(ev["clicked"], bool), "last_click": np.asarray(ev["last_click"], bool),
        "dwell": np.asarray(ev["dwell"], np.float64),
    })
    warnings = [f"{path}: dropped {unknown} shown ids not in the corpus"] if unknown else []
    return ClickLog(events, pd.DataFrame(imp), queries, aliases, warnings, str(path))


# ---- reading records ----------------------------------------------------------------------------
def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line or row number, raw record) for each impression, whatever the format."""
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    if not path.exists():
        raise DataError(path, None, "file not found")
    if base.endswith((".jsonl", ".json", ".ndjson")):
        from hardneg.data import _read_jsonl

        yield from _read_jsonl(path)
    elif base.endswith((".csv", ".tsv")):
        yield from _read_csv(path, "\t" if base.endswith(".tsv") else ",")
    elif base.endswith((".parquet", ".pq")):
        yield from _read_parquet(path)
    else:
        raise DataError(path, None, "unknown click-log format (use .jsonl, .csv, .tsv or .parquet)")


def _read_csv(path: Path, delimiter: str) -> Iterator[tuple[int, dict]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as raw:
            data = raw.read()
    except OSError as e:
        raise DataError(path, None, f"cannot read: {e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(path, line, "not valid UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(path, None, "empty file (expected a header: query,shown,clicked,...)") from None
    except csv.Error as e:
        raise DataError(path, 1, f"malformed CSV ({e})") from None
    for need in ("query", "shown", "clicked"):
        if need not in header:
            raise DataError(path, 1, f"header lacks column '{need}' (have: {', '.join(header)})")
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(path, reader.line_num, f"malformed CSV ({e})") from None
        n = start + 1  # first physical line of this record
        start = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(path, n, f"expected {len(header)} fields, got {len(row)}")
        yield n, {h: (v if v.strip() else None) for h, v in zip(header, row)}


def _read_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - any pyarrow failure is a bad input file
        raise DataError(path, None, f"cannot read Parquet: {e}") from None
    for need in ("query", "shown", "clicked"):
        if need not in table.column_names:
            raise DataError(path, None, f"no column '{need}' (have: {', '.join(table.column_names)})")
    for n, row in enumerate(table.to_pylist(), start=1):
        yield n, row


# ---- one record ---------------------------------------------------------------------------------
def _parse_record(obj: dict, path: Path, n: int) -> dict[str, Any]:
    query = obj.get("query")
    if query is None:
        raise DataError(path, n, "missing field 'query'")
    if not isinstance(query, str):
        raise DataError(path, n, f"field 'query' must be a string, got {type(query).__name__}")
    if not query.strip():
        raise DataError(path, n, "field 'query' is empty")
    qid = obj.get("query_id")
    if qid is not None:
        if isinstance(qid, bool) or not isinstance(qid, (str, int)):
            raise DataError(path, n, f"field 'query_id' must be a string, got {type(qid).__name__}")
        qid = str(qid).strip() or None
    shown = _id_list(obj.get("shown"), "shown", path, n)
    if not shown:
        raise DataError(path, n, "field 'shown' is empty (an impression shows at least one document)")
    dup = next((d for i, d in enumerate(shown) if d in shown[:i]), None)
    if dup is not None:
        raise DataError(path, n, f"document '{dup}' shown twice in field 'shown'")
    clicked = _id_list(obj.get("clicked"), "clicked", path, n, missing_ok=True)
    not_shown = next((d for d in clicked if d not in shown), None)
    if not_shown is not None:
        raise DataError(path, n, f"clicked document '{not_shown}' is not in field 'shown'")
    return {"query": query, "query_id": qid, "shown": shown, "clicked": clicked,
            "dwell": _dwell(obj.get("dwell"), clicked, path, n),
            "timestamp": _scalar(obj.get("timestamp"), "timestamp", path, n),
            "session": _scalar(obj.get("session"), "session", path, n)}


def _id_list(value: Any, name: str, path: Path, n: int, missing_ok: bool = False) -> list[str]:
    if value is None:
        if missing_ok:
            return []
        raise DataError(path, n, f"missing field '{name}'")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(path, n, f"field '{name}' is not a valid JSON array ({e.msg})") from None
        else:
            return text.split()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DataError(path, n, f"field '{name}' must be a list of document ids, got {type(value).__name__}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or not str(item).strip():
            raise DataError(path, n, f"field '{name}' holds {item!r}, not a document id")
        out.append(str(item).strip())
    return out


def _dwell(value: Any, clicked: list[str], path: Path, n: int) -> dict[str, float]:
    """Clicked doc -> dwell seconds summed over its clicks (NaN when unknown); every clicked doc
    is a key (so ``doc in result`` means "clicked")."""
    out = {d: math.nan for d in clicked}
    if value is None:
        return out
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "{")):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(path, n, f"field 'dwell' is not valid JSON ({e.msg})") from None
        else:
            value = text.split()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # a numeric column: one click
        if math.isnan(value):
            return out
        value = [value]
    if isinstance(value, dict):
        pairs = list(value.items())
        extra = next((str(d) for d, _ in pairs if str(d) not in out), None)
        if extra is not None:
            raise DataError(path, n, f"field 'dwell' names '{extra}', which is not in field 'clicked'")
    elif isinstance(value, (list, tuple)):
        if len(value) != len(clicked):
            raise DataError(path, n, f"field 'dwell' has {len(value)} values for {len(clicked)} clicks")
        pairs = list(zip(clicked, value))
    else:
        raise DataError(path, n, f"field 'dwell' must be a list aligned with 'clicked' or an object, "
                                 f"got {type(value).__name__}")
    for doc, seconds in pairs:
        if seconds is None or (isinstance(seconds, str) and seconds.lower() in ("", "null", "nan")):
            continue
        try:
            x = float(seconds) if not isinstance(seconds, bool) else math.nan
        except (TypeError, ValueError):
            x = math.nan
        if not math.isfinite(x) or x < 0:
            raise DataError(path, n, f"field 'dwell' holds {seconds!r} for '{doc}': seconds must be a number >= 0")
        prev = out[str(doc)]
        out[str(doc)] = x if math.isnan(prev) else prev + x
    return out


def _scalar(value: Any, name: str, path: Path, n: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list, tuple)):
        raise DataError(path, n, f"field '{name}' must be a string or a number, got {type(value).__name__}")
    return str(value)


# ---- aggregation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClickPolicy:
    """When a click makes a positive. The defaults take every clicked pair.

    Raise ``min_dwell`` (e.g. 30 s) to drop quick bounces; ``last_click_only`` keeps the click
    that ended the search (the user was satisfied); ``min_clicks`` / ``min_ctr`` demand that a
    pair was clicked repeatedly / often when shown, which filters noise in head queries.
    """

    min_dwell: float | None = option(None, "A click counts only with dwell >= this many seconds (clicks without a "
                                           "dwell time then never count).")
    last_click_only: bool = option(False, "Count only the last click of each impression.",
                                   cli="--last-click/--all-clicks")
    min_clicks: int = option(1, "Counted clicks a (query, doc) pair needs.")
    min_ctr: float = option(0.0, "Counted clicks / impressions showing the pair, at least.")

    def __post_init__(self) -> None:
        if self.min_dwell is not None and not self.min_dwell >= 0:
            raise HardnegError(f"--min-dwell is in seconds and must be >= 0, got {self.min_dwell}")
        if int(self.min_clicks) != self.min_clicks or self.min_clicks < 1:
            raise HardnegError(f"--min-clicks must be an integer >= 1, got {self.min_clicks}")
        if not 0 <= self.min_ctr <= 1:
            raise HardnegError(f"--min-ctr is a click-through rate in [0, 1], got {self.min_ctr}")


def _counted(events: pd.DataFrame, policy: ClickPolicy) -> np.ndarray:
    ok = events["clicked"].to_numpy(bool).copy()
    if policy.last_click_only:
        ok &= events["last_click"].to_numpy(bool)
    if policy.min_dwell is not None:
        with np.errstate(invalid="ignore"):
            ok &= events["dwell"].to_numpy(np.float64) >= policy.min_dwell  # NaN (unknown) fails
    return ok


def _skipped(events: pd.DataFrame) -> np.ndarray:
    """Shown above the impression's lowest click and not clicked (Joachims' skip-above)."""
    clicked = events["clicked"].to_numpy(bool)
    lowest = pd.Series(np.where(clicked, events["position"].to_numpy(np.int64), 0)).groupby(
        events["impression"].to_numpy()).transform("max").to_numpy()
    return ~clicked & (events["position"].to_numpy(np.int64) < lowest)


def pair_table(log: ClickLog, policy: ClickPolicy = ClickPolicy()) -> pd.DataFrame:
    """One row per (query, doc) ever shown: ``impressions`` (times shown), ``clicks`` (raw),
    ``counted`` (clicks passing the policy), ``ctr`` (counted / impressions), ``skips``
    (skip-above count), ``best_position``, ``mean_position`` and ``positive`` (bool)."""
    ev = log.events
    frame = pd.DataFrame({"query_id": ev["query_id"], "doc_id": ev["doc_id"], "impressions": 1,
                          "clicks": ev["clicked"].astype(np.int64), "counted": _counted(ev, policy).astype(np.int64),
                          "skips": _skipped(ev).astype(np.int64), "position": ev["position"]})
    g = frame.groupby(["query_id", "doc_id"], sort=False)
    out = g[["impressions", "clicks", "counted", "skips"]].sum()
    out["best_position"] = g["position"].min()
    out["mean_position"] = g["position"].mean()
    out = out.reset_index()
    out["ctr"] = out["counted"] / out["impressions"]
    out["positive"] = (out["counted"] >= policy.min_clicks) & (out["ctr"] >= policy.min_ctr) & (out["counted"] > 0)
    return out


def click_positives(log: ClickLog, policy: ClickPolicy = ClickPolicy()) -> tuple[dict[str, list[str]], dict[str, int]]:
    """``{query_id: [doc_id, ...]}`` of the pairs passing ``policy`` (queries in log order, docs
    by best position), and the counts each rule removed (clicks, then pairs)."""
    ev = log.events
    clicked = ev["clicked"].to_numpy(bool)
    counts = {"clicks": int(clicked.sum())}
    if policy.last_click_only:
        counts["clicks_not_last"] = int((clicked & ~ev["last_click"].to_numpy(bool)).sum())
    if policy.min_dwell is not None:
        still = clicked & (ev["last_click"].to_numpy(bool) if policy.last_click_only else True)
        dwell = ev["dwell"].to_numpy(np.float64)
        counts["clicks_without_dwell"] = int((still & np.isnan(dwell)).sum())
        with np.errstate(invalid="ignore"):
            counts["clicks_below_min_dwell"] = int((still & (dwell < policy.min_dwell)).sum())
    counts["clicks_counted"] = int(_counted(ev, policy).sum())
    pairs = pair_table(log, policy)
    has = pairs["counted"] > 0
    counts["pairs_clicked"] = int(has.sum())
    below_clicks = has & (pairs["counted"] < policy.min_clicks)
    counts["pairs_below_min_clicks"] = int(below_clicks.sum())
    counts["pairs_below_min_ctr"] = int((has & ~below_clicks & (pairs["ctr"] < policy.min_ctr)).sum())
    pos = pairs[pairs["positive"]].sort_values(["best_position", "doc_id"], kind="stable")
    grouped = {q: list(d) for q, d in pos.groupby("query_id", sort=False)["doc_id"]}
    out = {q: grouped[q] for q in log.queries if q in grouped}
    counts["positives"] = int(len(pos))
    counts["queries_with_positives"] = len(out)
    return out, counts


def skip_above_pairs(log: ClickLog, min_skips: int = 1, exclude: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Skip-above negatives: ``query_id, doc_id, skips, best_position`` for docs skipped at least
    ``min_skips`` times and never clicked for that query (a doc clicked in one impression and
    skipped in another is ambiguous, so it is left out); ``exclude`` drops more pairs (e.g.
    known positives)."""
    if min_skips < 1:
        raise HardnegError(f"--min-skips must be >= 1, got {min_skips}")
    pairs = pair_table(log)
    keep = (pairs["skips"] >= min_skips) & (pairs["clicks"] == 0)
    out = pairs.loc[keep, ["query_id", "doc_id", "skips", "best_position"]]
    if exclude:
        banned = {(q, d) for q, ds_ in exclude.items() for d in ds_}
        keep = np.array([(q, d) not in banned for q, d in zip(out["query_id"], out["doc_id"])], dtype=bool)
        out = out[keep]  # a bool array: an empty list would select no columns
    return out.reset_index(drop=True)


def position_bias(log: ClickLog, policy: ClickPolicy | None = None) -> pd.DataFrame:
    """Click-through rate by displayed position: ``position, impressions, clicks, ctr,
    ctr_relative`` (to position 1), plus ``counted, counted_ctr`` under ``policy``.

    A steep fall of ``ctr`` with position while relevance falls less is position bias: clicks
    on low positions are rarer than their relevance warrants, so missing clicks there are weak
    evidence of non-relevance.
    """
    ev = log.events
    frame = pd.DataFrame({"position": ev["position"], "impressions": 1, "clicks": ev["clicked"].astype(np.int64),
                          "counted": _counted(ev, policy or ClickPolicy()).astype(np.int64)})
    out = frame.groupby("position").sum().reset_index()
    out["ctr"] = out["clicks"] / out["impressions"]
    out["counted_ctr"] = out["counted"] / out["impressions"]
    first = out["ctr"].iloc[0] if len(out) and out["position"].iloc[0] == 1 else np.nan
    out["ctr_relative"] = out["ctr"] / first if first and np.isfinite(first) else np.nan
    return out[["position", "impressions", "clicks", "ctr", "ctr_relative", "counted", "counted_ctr"]]


def format_position_bias(table: pd.DataFrame) -> str:
    """The :func:`position_bias` table as Markdown."""
    lines = ["| position | impressions | clicks | CTR | CTR / CTR@1 | counted CTR |", "|---:|---:|---:|---:|---:|---:|"]
    for r in table.itertuples(index=False):
        rel = "-" if pd.isna(r.ctr_relative) else f"{r.ctr_relative:.3f}"
        lines.append(f"| {r.position} | {r.impressions:,} | {r.clicks:,} | {r.ctr:.4f} | {rel} | {r.counted_ctr:.4f} |")
    return "\n".join(lines) + "\n"


def split_queries(query_ids: list[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split by query: ``round(n * test_fraction)`` queries go to test (order kept)."""
    if not 0 <= test_fraction < 1:
        raise HardnegError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    n_test = int(round(len(query_ids) * test_fraction))
    order = np.random.default_rng(seed).permutation(len(query_ids))
    test = set(sorted(query_ids)[i] for i in order[:n_test])  # sorted: independent of log order
    return [q for q in query_ids if q not in test], [q for q in query_ids if q in test]


# ---- click log -> BEIR folder -------------------------------------------------------------------
@dataclass(frozen=True)
class ClickConfig:
    """Everything `hardneg clicks` does: the positive policy, the held-out split and outputs."""

    policy: ClickPolicy = option(ClickPolicy(), "When a click makes a positive.", cli=False)
    test_fraction: float = option(0.0, "Fraction of queries held out as qrels/test.tsv (seeded split by query).")
    seed: int = option(42, "Seed of the train/test split.")
    min_skips: int = option(1, "Skips a skip-above negative needs.")
    skip_unknown: bool = option(False, "Drop shown ids missing from the corpus (counted) instead of failing.",
                                cli="--skip-unknown")
    link_corpus: bool = option(False, "Symlink the corpus instead of copying it.", cli="--link")


@dataclass
class ClickResult:
    """What `hardneg clicks` wrote and the numbers behind it (also in ``clicks_stats.json``)."""

    out: Path
    stats: dict[str, Any]
    position_bias: pd.DataFrame
    files: list[str]


def clicks_to_beir(log_path: str | Path, corpus: str | Path, out: str | Path,
                   config: ClickConfig | None = None) -> ClickResult:
    """Build a BEIR folder from a click log: the corpus (copied, or symlinked), ``queries.jsonl``,
    ``qrels/train.tsv`` (and ``qrels/test.tsv`` with ``test_fraction``), ``skip_above.tsv``,
    ``clicks_stats.json`` and ``position_bias.md``. Everything is read and validated first;
    nothing is written when the log or corpus has a problem or no pair passes the policy."""
    out, config = Path(out), config or ClickConfig()
    corpus_path = find_file(Path(corpus), "corpus") if Path(corpus).is_dir() else Path(corpus)
    doc_ids, _, _ = read_corpus(corpus_path)
    log = read_click_log(log_path, set(doc_ids), skip_unknown=config.skip_unknown)
    positives, counts = click_positives(log, config.policy)
    if not positives:
        detail = ", ".join(f"{k}={v}" for k, v in counts.items())
        raise HardnegError(f"{log_path}: no (query, document) pair passes the click policy ({detail})")
    train, test = split_queries(list(positives), config.test_fraction, config.seed)
    skips = skip_above_pairs(log, config.min_skips, exclude=positives)
    skips = skips[skips["query_id"].isin(set(positives))]
    bias = position_bias(log, config.policy)
    n_shown = log.events.groupby("impression").size()
    stats = {
        "log": str(log_path), "corpus": str(corpus_path), "policy": asdict(config.policy),
        "test_fraction": config.test_fraction, "seed": config.seed, "min_skips": config.min_skips,
        "impressions": log.n_impressions, "queries": len(log.queries), "query_aliases": len(log.aliases),
        "impressions_without_click": int((~log.events.groupby("impression")["clicked"].any()).sum()),
        "mean_shown": float(n_shown.mean()), "dwell_known": int(log.events["dwell"].notna().sum()),
        "counts": counts, "train_queries": len(train), "test_queries": len(test),
        "skip_above_pairs": int(len(skips)), "warnings": list(log.warnings),
        "position_bias": json.loads(bias.to_json(orient="records")),
    }
    files = _write_beir(out, corpus_path, log, positives, train, test, skips, stats, bias, config.link_corpus)
    return ClickResult(out, stats, bias, files)


def _write_beir(out: Path, corpus_path: Path, log: ClickLog, positives: dict[str, list[str]], train: list[str],
                test: list[str], skips: pd.DataFrame, stats: dict, bias: pd.DataFrame, link: bool) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    corpus_name = "corpus.jsonl.gz" if corpus_path.name.endswith(".gz") else "corpus.jsonl"
    target = out / corpus_name
    if target.resolve() != corpus_path.resolve():
        with atomic_path(target) as tmp:
            if link:
                tmp.unlink()
                os.symlink(corpus_path.resolve(), tmp)
            else:
                shutil.copyfile(corpus_path, tmp)
    other = out / ("corpus.jsonl" if corpus_name.endswith(".gz") else "corpus.jsonl.gz")
    other.unlink(missing_ok=True)  # a stale corpus of an earlier run would shadow this one
    qids = train + test
    atomic_write_text(out / "queries.jsonl", "".join(
        json.dumps({"_id": q, "text": log.queries[q]}, ensure_ascii=False) + "\n" for q in qids))
    files = [corpus_name, "queries.jsonl"]
    for split, ids in (("train", train), ("test", test)):
        path = out / "qrels" / f"{split}.tsv"
        if not ids:
            path.unlink(missing_ok=True)  # never leave an earlier run's split behind
            continue
        rows = "".join(f"{q}\t{d}\t1\n" for q in ids for d in positives[q])
        atomic_write_text(path, "query-id\tcorpus-id\tscore\n" + rows)
        files.append(f"qrels/{split}.tsv")
    (out / "qrels" / "dev.tsv").unlink(missing_ok=True)
    atomic_write_text(out / "skip_above.tsv", "query-id\tcorpus-id\tskips\tbest-position\n" + "".join(
        f"{r.query_id}\t{r.doc_id}\t{r.skips}\t{r.best_position}\n" for r in skips.itertuples(index=False)))
    atomic_write_json(out / "clicks_stats.json", stats)
    atomic_write_text(out / "position_bias.md", "# Click-through rate by position\n\n" + format_position_bias(bias))
    return files + ["skip_above.tsv", "clicks_stats.json", "position_bias.md"]


# ---- skip-above negatives in a candidate set ----------------------------------------------------
def read_skip_above(path: str | Path) -> pd.DataFrame:
    """Read ``skip_above.tsv`` (``query-id, corpus-id, skips, best-position``), FILE:LINE errors."""
    from hardneg.data import _open_lines

    path = Path(path)
    rows: list[tuple[str, str, int, int]] = []
    for n, line in _open_lines(path):
        if not line.strip() or (n == 1 and line.lower().startswith("query-id")):
            continue
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != 4:
            raise DataError(path, n, f"expected 4 tab-separated fields (query-id, corpus-id, skips, best-position), "
                                     f"got {len(parts)}")
        try:
            skips, best = int(parts[2]), int(parts[3])
        except ValueError:
            raise DataError(path, n, "skips and best-position must be integers") from None
        if not parts[0].strip() or not parts[1].strip() or skips < 1 or best < 1:
            raise DataError(path, n, "empty id, or skips / best-position below 1")
        rows.append((parts[0].strip(), parts[1].strip(), skips, best))
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "skips", "best_position"])


def add_skip_above(cands: CandidateSet, skips: pd.DataFrame, ds: Dataset | None = None) -> CandidateSet:
    """A copy of ``cands`` with skip-above negatives as a separate, flagged candidate source.

    ``skips`` has ``query_id, doc_id, skips, best_position`` (:func:`skip_above_pairs`,
    :func:`read_skip_above`). Only queries of the candidate set are used, and never a known
    positive of the query. A skipped doc that was also retrieved keeps its row, ranks, scores
    and ``source``; one that was not gets a new row with ``source="clicks-skip-above"``, null
    ranks and NaN scores under every retriever. Both get ``is_skip_above=True`` and the
    ``clicks`` scorer: ``rank_clicks`` = best displayed position, ``score_clicks`` = skips.
    With ``ds`` the new rows also get the duplicate / query-text / known-negative flags.

    How :func:`hardneg.select.select` treats the new (unranked, unscored) rows:

    * never as positives: ``is_positive`` is False and positives are never added;
    * with a ``window`` on the retriever's ranks they are dropped by the window (a null rank
      lies outside every window);
    * without a window, a score filter (``max_score``, ``margin``, ``percent``) drops them (a
      NaN score cannot be shown to lie below a threshold); the ``top``, ``simans`` and
      ``softmax`` samplers take them only when no scored candidate is left; ``uniform``
      samples them like any other survivor;
    * opt in with ``rank_by="clicks"`` (and ``score_by="clicks"``): selection then ranks by
      displayed position and picks the most-skipped docs; retrieved candidates that were never
      skipped have no ``clicks`` rank and drop out of any window.

    ``meta["skip_above"]`` records the counts: pairs given, not mined, positives refused,
    retrieved rows flagged and rows added.
    """
    if CLICKS_SCORER in cands.scorers:
        raise HardnegError(f"the candidate set already has a '{CLICKS_SCORER}' scorer (skip-above added twice?)")
    table = cands.table.copy()
    scorers = cands.scorers + [CLICKS_SCORER]
    mined = set(table[Column.QUERY_ID])
    given = skips.drop_duplicates(["query_id", "doc_id"])
    in_set = given[given["query_id"].isin(mined)]
    key = pd.MultiIndex.from_arrays([table[Column.QUERY_ID].astype(str), table[Column.DOC_ID].astype(str)])
    row_of = pd.Series(np.arange(len(table)), index=key)
    row_of = row_of[~row_of.index.duplicated()]
    where = row_of.reindex(pd.MultiIndex.from_arrays([in_set["query_id"], in_set["doc_id"]])).to_numpy()
    existing = ~np.isnan(where)
    hit_rows = where[existing].astype(np.int64)
    is_pos = table[Column.IS_POSITIVE].to_numpy(bool)
    refused = is_pos[hit_rows]
    flag_rows = hit_rows[~refused]
    flagged = in_set[existing][~refused]
    new = in_set[~existing]

    table[Column.IS_SKIP_ABOVE] = False
    table[rank_col(CLICKS_SCORER)] = pd.array([pd.NA] * len(table), dtype="Int32")
    table[score_col(CLICKS_SCORER)] = np.full(len(table), np.nan, np.float32)
    col = table.columns.get_loc
    table.iloc[flag_rows, col(Column.IS_SKIP_ABOVE)] = True
    table.iloc[flag_rows, col(rank_col(CLICKS_SCORER))] = flagged["best_position"].to_numpy(np.int64)
    table.iloc[flag_rows, col(score_col(CLICKS_SCORER))] = flagged["skips"].to_numpy(np.float32)

    rows = pd.DataFrame({Column.QUERY_ID: new["query_id"].astype(str).to_numpy(),
                         Column.DOC_ID: new["doc_id"].astype(str).to_numpy()})
    rows[Column.SOURCE] = SKIP_ABOVE_SOURCE
    rows[Column.IS_POSITIVE] = False
    flags = _new_row_flags(rows, table, cands, ds)
    rows[Column.DUP_OF_POSITIVE], rows[Column.IS_QUERY_TEXT], rows[Column.IS_KNOWN_NEGATIVE] = flags
    rows[Column.POS_COSINE] = np.nan
    rows[Column.IS_SKIP_ABOVE] = True
    for s in cands.scorers:
        rows[rank_col(s)] = pd.NA
        rows[score_col(s)] = np.nan
    rows[rank_col(CLICKS_SCORER)] = new["best_position"].to_numpy(np.int64)
    rows[score_col(CLICKS_SCORER)] = new["skips"].to_numpy(np.float32)
    for c in table.columns.difference(rows.columns):  # any extra column of the set: left empty
        rows[c] = pd.NA
    merged = pd.concat([table, rows[table.columns]], ignore_index=True) if len(rows) else table
    meta = {k: v for k, v in cands.meta.items() if k not in ("scorers", "rank_by", "score_by", "negative_scores")}
    meta["skip_above"] = {"pairs": int(len(given)), "not_mined": int(len(given) - len(in_set)),
                          "positives_refused": int(refused.sum()), "flagged_retrieved": int(len(flag_rows)),
                          "added": int(len(rows))}
    negative = dict(cands.meta.get("negative_scores") or {}) | {CLICKS_SCORER: False}
    return CandidateSet.from_frame(merged, scorers=scorers, rank_by=cands.rank_by, score_by=cands.score_by,
                                   negative_scores=negative, **meta)


def _new_row_flags(rows: pd.DataFrame, table: pd.DataFrame, cands: CandidateSet,
                   ds: Dataset | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(rows)
    if ds is None or n == 0:
        return np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    pos = table.loc[table[Column.IS_POSITIVE].to_numpy(bool), [Column.QUERY_ID, Column.DOC_ID]]
    pos_norm: dict[str, set[str]] = {}
    for q, d in zip(pos[Column.QUERY_ID], pos[Column.DOC_ID]):
        if d in ds._doc_index:
            pos_norm.setdefault(q, set()).add(normalize_text(ds.doc_text(d)))
    split = cands.meta.get("split", "train")
    known = {(q, d) for q, docs in (ds.known_negatives(split) if split in ds.qrels else {}).items() for d in docs}
    dup, qtext, kneg = [], [], []
    for q, d in zip(rows[Column.QUERY_ID], rows[Column.DOC_ID]):
        text = normalize_text(ds.doc_text(d)) if d in ds._doc_index else None
        dup.append(text is not None and text in pos_norm.get(q, ()))
        qtext.append(text is not None and q in ds.queries and text == normalize_text(ds.queries[q]))
        kneg.append((q, d) in known)
    return np.asarray(dup, bool), np.asarray(qtext, bool), np.asarray(kneg, bool)
