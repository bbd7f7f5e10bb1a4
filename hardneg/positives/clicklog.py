"""A click log read and validated: :func:`read_click_log` -> :class:`ClickLog` (flat tables of
impressions and shown documents); :mod:`hardneg.positives.clicks` turns it into positives.

A log is a list of *impressions*: a query, the documents shown in order, the ones clicked (in
click order) and, optionally, a dwell time per click, a timestamp and a session. Formats,
chosen by suffix:

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
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from hardneg.data import _read_jsonl, normalize_text
from hardneg.errors import DataError

__all__ = ["ClickLog", "read_click_log"]

_FIELDS = ("query", "query_id", "shown", "clicked", "dwell", "timestamp", "session")


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


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line or row number, raw record) for each impression, whatever the format."""
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    if not path.exists():
        raise DataError(path, None, "file not found")
    if base.endswith((".jsonl", ".json", ".ndjson")):
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
