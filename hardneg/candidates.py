"""The candidate set: "score once, select many".

One Parquet file, ``candidates.parquet``, holds per training query the top-``depth``
candidates of every scorer with their ORIGINAL 1-based ranks and scores, plus one row for
every known positive (also a positive ranked below ``depth``: its rank is then null, its
score is still there). Everything :func:`hardneg.select.select` needs is in this file, so
trying a new selection policy never re-encodes or re-searches.

Columns (one row per (query, candidate doc); :class:`Column` names them):

* ``query_id``, ``doc_id``, ``source`` (strings)
* ``is_positive`` (bool), ``dup_of_positive`` (bool), ``is_query_text`` (bool),
  ``is_known_negative`` (bool), ``pos_cosine`` (float32, NaN when unknown)
* per scorer ``s`` in ``meta["scorers"]``: ``rank_<s>`` (nullable int32) and
  ``score_<s>`` (float32, NaN when not scored)
* only when mined over chunks of long documents (:mod:`hardneg.chunking`): ``parent_id``
  (string), the candidate chunk's document; ``meta["chunks"]`` holds the chunking settings
* only with skip-above negatives of a click log (:func:`hardneg.positives.clicks.add_skip_above`):
  ``is_skip_above`` (bool)

The JSON metadata sits under the Parquet schema key ``b"hardneg"``; it names the scorers,
``rank_by``, ``score_by``, ``depth``, ``negative_scores`` (can that scorer's scores be
negative?), ``corpus_size`` and, from :func:`hardneg.mine.mine_candidates`, ``search``: per
scorer how it searched (``kind``, ``params``; for ANN kinds also ``recall_at_depth`` against
exact search on ``recall_sample`` queries, see :mod:`hardneg.retrieve.ann`).

Use :meth:`CandidateSet.from_frame` to build one from a DataFrame (it fills the optional
flag columns), :meth:`CandidateSet.write` / :class:`CandidateWriter` to store it and
:meth:`CandidateSet.read` to load it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hardneg.errors import HardnegError, first_line
from hardneg.files import atomic_path

__all__ = ["CandidateSet", "CandidateWriter", "Column", "rank_col", "score_col"]

META_KEY = b"hardneg"


class Column(str, Enum):
    """The candidate set's column names (see the module doc), one member per column.

    A member is its name as a ``str`` (it hashes, compares, formats and prints as the value), so
    ``table[Column.DOC_ID]`` and ``table["doc_id"]`` are the same column. The per-scorer columns
    are :func:`rank_col` and :func:`score_col`.
    """

    QUERY_ID = "query_id"
    DOC_ID = "doc_id"
    SOURCE = "source"
    IS_POSITIVE = "is_positive"
    DUP_OF_POSITIVE = "dup_of_positive"
    IS_QUERY_TEXT = "is_query_text"
    POS_COSINE = "pos_cosine"
    IS_KNOWN_NEGATIVE = "is_known_negative"
    #: optional: a chunk's document (candidates mined over chunks, :mod:`hardneg.chunking`)
    PARENT_ID = "parent_id"
    #: optional: a skip-above negative of a click log (:func:`hardneg.positives.clicks.add_skip_above`)
    IS_SKIP_ABOVE = "is_skip_above"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


STRING_COLUMNS = (Column.QUERY_ID, Column.DOC_ID, Column.SOURCE)
FLAG_COLUMNS = (Column.IS_POSITIVE, Column.DUP_OF_POSITIVE, Column.IS_QUERY_TEXT, Column.IS_KNOWN_NEGATIVE)
REQUIRED_COLUMNS = STRING_COLUMNS + FLAG_COLUMNS + (Column.POS_COSINE,)
REQUIRED_META = ("scorers", "rank_by", "score_by")

#: Rows per Parquet row group. Fixed, so the same rows always give the same bytes.
ROW_GROUP_SIZE = 65_536


def rank_col(scorer: str) -> str:
    """Column of the 1-based original rank under ``scorer`` (null beyond depth)."""
    return f"rank_{scorer}"


def score_col(scorer: str) -> str:
    """Column of the score under ``scorer`` (NaN where it did not score the doc)."""
    return f"score_{scorer}"


@dataclass
class CandidateSet:
    """Per query, the retrieved candidates and all known positives, scored once.

    ``table`` has one row per (query, doc); ``meta`` is the JSON metadata (see module doc).
    Select negatives from it with :func:`hardneg.select.select`, as many times as you like.
    """

    table: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    #: Facts about the run that built the set which vary between runs (search timings, resumed
    #: chunks). Never written: the stored file stays byte-identical for the same inputs.
    run: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        scorers: Iterable[str],
        rank_by: str | None = None,
        score_by: str | None = None,
        negative_scores: dict[str, bool] | None = None,
        **meta: Any,
    ) -> "CandidateSet":
        """Build a validated set from a frame, filling absent optional columns.

        Use this in a retriever (or a test): give ``query_id``, ``doc_id``, ``is_positive`` and
        the ``rank_<s>``/``score_<s>`` columns; flags default to False, ``pos_cosine`` to NaN,
        ``source`` to the first scorer. Missing rank/score columns become null/NaN.
        """
        scorers = list(scorers)
        if not scorers:
            raise HardnegError("a candidate set needs at least one scorer")
        df = df.copy()
        defaults = {Column.SOURCE: scorers[0], Column.DUP_OF_POSITIVE: False, Column.IS_QUERY_TEXT: False,
                    Column.IS_KNOWN_NEGATIVE: False, Column.POS_COSINE: np.nan}
        for col, value in defaults.items():
            if col not in df.columns:
                df[col] = value
            elif col != Column.POS_COSINE:  # a flag given for some rows only: the others are False
                df[col] = df[col].where(df[col].notna(), value)
        for s in scorers:
            if rank_col(s) not in df.columns:
                df[rank_col(s)] = pd.NA
            if score_col(s) not in df.columns:
                df[score_col(s)] = np.nan
        full_meta = {
            "scorers": scorers,
            "rank_by": rank_by or scorers[0],
            "score_by": score_by or rank_by or scorers[0],
            "negative_scores": {s: False for s in scorers} | dict(negative_scores or {}),
            **meta,
        }
        cands = cls(_coerce(df, scorers), full_meta)
        cands.validate()
        return cands

    # ---- properties and helpers the selector needs ----------------------------------------
    @property
    def scorers(self) -> list[str]:
        return list(self.meta.get("scorers", []))

    @property
    def rank_by(self) -> str:
        return str(self.meta["rank_by"])

    @property
    def score_by(self) -> str:
        return str(self.meta["score_by"])

    def can_be_negative(self, scorer: str) -> bool | None:
        """Whether ``scorer``'s scores can be negative (None when the metadata does not say)."""
        value = (self.meta.get("negative_scores") or {}).get(scorer)
        return None if value is None else bool(value)

    def query_ids(self) -> list[str]:
        """Query ids in order of first appearance."""
        return list(pd.unique(self.table[Column.QUERY_ID]))

    def positive_scores(self, scorer: str | None = None) -> pd.DataFrame:
        """``query_id, doc_id, score`` of every known positive under ``scorer`` (default score_by)."""
        scorer = scorer or self.score_by
        pos = self.table.loc[self.table[Column.IS_POSITIVE].to_numpy(bool),
                             [Column.QUERY_ID, Column.DOC_ID, score_col(scorer)]]
        return pos.rename(columns={score_col(scorer): "score"}).reset_index(drop=True)

    def min_positive_score(self, scorer: str | None = None) -> pd.Series:
        """Per query the lowest positive score (NaN-skipping): the default margin reference."""
        pos = self.positive_scores(scorer)
        return pos.groupby(Column.QUERY_ID, sort=False)["score"].min()

    # ---- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        """Fail with a message naming every missing column or metadata key."""
        missing_meta = [k for k in REQUIRED_META if k not in self.meta]
        if missing_meta:
            raise HardnegError(f"candidate metadata lacks {', '.join(missing_meta)}")
        scorers = self.scorers
        for key in ("rank_by", "score_by"):
            if self.meta[key] not in scorers:
                raise HardnegError(
                    f"candidate metadata {key}={self.meta[key]!r} is not one of the scorers {scorers}"
                )
        wanted = list(REQUIRED_COLUMNS) + [c for s in scorers for c in (rank_col(s), score_col(s))]
        missing = [c for c in wanted if c not in self.table.columns]
        if missing:
            raise HardnegError(f"candidate table lacks column(s): {', '.join(missing)}")
        if self.table[Column.IS_POSITIVE].isna().any():
            raise HardnegError(f"candidate column {Column.IS_POSITIVE} has nulls")

    # ---- storage ---------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path) -> "CandidateSet":
        """Load ``candidates.parquet``; ranks come back as nullable Int32."""
        path = Path(path)
        if not path.exists():
            raise HardnegError(f"{path}: no such candidate file")
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, ValueError, IsADirectoryError) as e:
            raise HardnegError(f"{path}: not a readable Parquet file ({first_line(e)})") from None
        raw = (table.schema.metadata or {}).get(META_KEY)
        if raw is None:
            raise HardnegError(f"{path}: not a hardneg candidate file (no '{META_KEY.decode()}' metadata)")
        df = table.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError):
            raise HardnegError(f"{path}: unreadable '{META_KEY.decode()}' metadata (not JSON)") from None
        cands = cls(df, meta)
        cands.validate()
        return cands

    def write(self, path: str | Path, row_group_size: int = ROW_GROUP_SIZE) -> None:
        """Write atomically and byte-deterministically, streaming in row groups.

        Rows are sorted by query (order of first appearance), then rank under ``rank_by``
        (unranked positives last), then doc id.
        """
        self.validate()
        with CandidateWriter(path, self.meta, row_group_size=row_group_size) as writer:
            writer.append(self.table)


class CandidateWriter:
    """Stream a candidate set to Parquet, one batch of whole queries at a time.

    Use it in a retriever that produces candidates batch by batch: every query's rows must
    arrive in one :meth:`append` call. Row groups hold exactly ``row_group_size`` rows (the
    last one fewer), so the bytes do not depend on how the batches were cut. The file only
    appears, atomically, when the ``with`` block ends without an error.
    """

    def __init__(self, path: str | Path, meta: dict[str, Any], row_group_size: int = ROW_GROUP_SIZE):
        self.path, self.meta, self.row_group_size = Path(path), dict(meta), int(row_group_size)
        self._buffer: list[pd.DataFrame] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._ctx = None

    def __enter__(self) -> "CandidateWriter":
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        error = exc
        if error is None:
            try:
                self._flush(final=True)
                if self._writer is None:  # nothing appended: an empty file with the contract columns
                    self._write_chunk(_coerce(_empty_frame(self.meta["scorers"]), self.meta["scorers"]))
            except BaseException as err:  # noqa: BLE001 - re-raised below after cleanup
                error = err
        if self._writer is not None:
            self._writer.close()
        if error is None:
            self._ctx.__exit__(None, None, None)  # renames the finished file into place
            return False
        self._ctx.__exit__(type(error), error, error.__traceback__)  # removes the temporary file
        if exc is None:
            raise error
        return False

    def append(self, df: pd.DataFrame) -> None:
        """Add rows of whole queries; they are sorted (query, rank, doc id) before writing."""
        scorers = list(self.meta["scorers"])
        df = _sorted(_coerce(df, scorers), rank_col(self.meta["rank_by"]))
        self._buffer.append(df)
        self._buffered += len(df)
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._buffer:
            return
        data = pd.concat(self._buffer, ignore_index=True) if len(self._buffer) > 1 else self._buffer[0]
        n = len(data)
        full = n - n % self.row_group_size
        cut = n if final else full
        for start in range(0, cut, self.row_group_size):
            self._write_chunk(data.iloc[start : min(start + self.row_group_size, cut)])
        rest = data.iloc[cut:]
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)

    def _write_chunk(self, chunk: pd.DataFrame) -> None:
        if self._schema is None:
            self._schema = _arrow_schema(chunk, self.meta)
            self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
        table = pa.Table.from_pandas(chunk, schema=self._schema, preserve_index=False)
        self._writer.write_table(table.replace_schema_metadata(self._schema.metadata),
                                 row_group_size=self.row_group_size)


def write_parquet(table: pa.Table, path: str | Path, row_group_size: int = ROW_GROUP_SIZE) -> None:
    """Write an Arrow table atomically with fixed settings (same table -> same bytes)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")


# ---- private helpers -----------------------------------------------------------------------
def _coerce(df: pd.DataFrame, scorers: list[str]) -> pd.DataFrame:
    """Cast the contract columns to their dtypes (strings, bools, Int32 ranks, float32)."""
    out = df.copy()
    if any(isinstance(c, Column) for c in out.columns):  # labels stay plain str (pandas < 3 keeps members)
        out.columns = [c.value if isinstance(c, Column) else c for c in out.columns]
    for c in STRING_COLUMNS + (Column.PARENT_ID,):
        if c in out.columns:
            out[c] = out[c].astype(str)
    for c in FLAG_COLUMNS:
        if c in out.columns:
            out[c] = out[c].astype(bool)
    float_cols = [Column.POS_COSINE] + [score_col(s) for s in scorers]
    for c in float_cols:
        if c in out.columns:
            out[c] = pd.to_numeric(out[c], errors="coerce").astype(np.float32)
    for s in scorers:
        if rank_col(s) in out.columns:
            out[rank_col(s)] = pd.array(out[rank_col(s)], dtype="Int32")
    return out


def _empty_frame(scorers: list[str]) -> pd.DataFrame:
    cols = list(REQUIRED_COLUMNS) + [c for s in scorers for c in (rank_col(s), score_col(s))]
    return pd.DataFrame({c: [] for c in cols})


def _sorted(df: pd.DataFrame, rank_column: str) -> pd.DataFrame:
    """Rows by query (first appearance), then rank (nulls last), then doc id."""
    qcode = pd.factorize(df[Column.QUERY_ID], sort=False)[0]
    rank = df[rank_column].to_numpy(dtype=np.int64, na_value=np.iinfo(np.int64).max)
    doc_order = pd.factorize(df[Column.DOC_ID], sort=True)[0]
    order = np.lexsort((doc_order, rank, qcode))
    return df.iloc[order].reset_index(drop=True)


def _arrow_schema(df: pd.DataFrame, meta: dict[str, Any]) -> pa.Schema:
    """Explicit Arrow types for the contract columns; others as inferred. No pandas metadata."""
    scorers = list(meta["scorers"])
    fixed: dict[str, pa.DataType] = {c: pa.string() for c in STRING_COLUMNS + (Column.PARENT_ID,)}
    fixed |= {c: pa.bool_() for c in FLAG_COLUMNS}
    fixed[Column.POS_COSINE] = pa.float32()
    for s in scorers:
        fixed[rank_col(s)] = pa.int32()
        fixed[score_col(s)] = pa.float32()
    inferred = pa.Schema.from_pandas(df, preserve_index=False)
    fields = [pa.field(f.name, fixed.get(f.name, f.type)) for f in inferred]
    meta_json = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return pa.schema(fields, metadata={META_KEY: meta_json})
