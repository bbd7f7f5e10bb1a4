"""The decision log: every candidate and its fate (:meth:`MinedSet.decisions`,
:meth:`MinedSet.decision_log`), stored as ``decisions.parquet`` (:func:`write_decisions`) and
read back by the report (:func:`read_decisions`, :class:`Decisions`)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hardneg.candidates import score_col, write_parquet
from hardneg.errors import HardnegError
from hardneg.select.mined import MinedSet
from hardneg.select.policy import SelectionPolicy
from hardneg.select.stages import _CODE, REASONS, _Arrays, _FilterTrace, _kept_positives, _nullable_rank, _OutputUnits

if TYPE_CHECKING:
    import pyarrow as pa

__all__: list[str] = []  # internal: import from hardneg.select


def _decisions_table(arr: _Arrays, units: _OutputUnits, trace: _FilterTrace, picks: pd.DataFrame) -> pd.DataFrame:
    """What happened to every candidate: removed at stage 1-2, or per (unit, candidate) entry."""
    stage12 = np.flatnonzero(trace.row_code > 0)
    ecode = np.where(trace.entry_code == 0, _CODE["not_sampled"], trace.entry_code)
    entries = picks["entry"].to_numpy(np.int64)
    ecode[entries[entries >= 0]] = _CODE["selected"]
    rows = np.r_[stage12, trace.entry_row].astype(np.int64)
    pos = np.r_[np.full(len(stage12), -1), units.pos_row[trace.entry_unit]].astype(np.int64)
    pos_id = np.full(len(rows), None, object)
    pos_id[pos >= 0] = arr.docs(pos[pos >= 0])
    return pd.DataFrame({
        "query_id": arr.queries[arr.q[rows]] if len(rows) else np.zeros(0, object),
        "pos_id": pos_id,
        "doc_id": arr.docs(rows),
        "rank": _nullable_rank(arr.rank[rows]),
        "score": arr.score[rows].astype(np.float32),
        "decision": pd.Categorical.from_codes(np.r_[trace.row_code[stage12], ecode].astype(np.int64),
                                              categories=list(REASONS)),
    })


def _decision_log(arr: _Arrays, units: _OutputUnits, trace: _FilterTrace, picks: pd.DataFrame, row_of_unit: np.ndarray,
                  out_rows: pd.DataFrame, negatives: pd.DataFrame) -> pd.DataFrame:
    """:meth:`MinedSet.decision_log`: chosen negatives, positives of output rows, then the rest."""
    scorers = list(arr.scorers)
    # 1. the negatives, as MinedSet.negatives holds them, with their row's positive
    neg = pd.DataFrame({
        "row": negatives["row"].to_numpy(np.int64), "query_id": negatives["query_id"].to_numpy(object),
        "pos_id": out_rows["pos_id"].to_numpy(object)[negatives["row"].to_numpy(np.int64)],
        "doc_id": negatives["doc_id"].to_numpy(object), "rank": negatives["rank"].array,
        "score": negatives["score"].to_numpy(np.float32), "decision": "selected",
        "reason": negatives["reason"].to_numpy(object),
        **{score_col(s): negatives[score_col(s)].to_numpy(np.float32) for s in scorers}})
    # 2. the positives of output rows (as MinedSet.positives, in its order), with their rank
    ptrow, out_row = _kept_positives(arr, units, row_of_unit)
    pos = _log_items(arr, ptrow, out_row, np.full(len(ptrow), None, object), "known_positive")
    # 3. every other fate: stage 1-2 removals (positives not in 2.), then the entries not chosen for an output row
    stage12 = np.flatnonzero(trace.row_code > 0)
    shown = np.zeros(len(arr.q), bool)
    shown[ptrow] = True
    stage12 = stage12[~((trace.row_code[stage12] == _CODE["known_positive"]) & shown[stage12])]
    ecode = np.where(trace.entry_code == 0, _CODE["not_sampled"], trace.entry_code)
    entry, punit = picks["entry"].to_numpy(np.int64), picks["unit"].to_numpy(np.int64)
    chosen = entry[entry >= 0]
    ecode[chosen] = _CODE["selected"]
    exported = np.zeros(len(ecode), bool)
    exported[entry[(entry >= 0) & (row_of_unit[punit] >= 0)]] = True
    keep = np.flatnonzero(~exported)
    erows = trace.entry_row[keep]
    epos = units.pos_row[trace.entry_unit[keep]]
    epos_id = np.full(len(keep), None, object)
    epos_id[epos >= 0] = arr.docs(epos[epos >= 0])
    rest = pd.concat([
        _log_items(arr, stage12, None, np.full(len(stage12), None, object),
                   np.asarray(REASONS, object)[trace.row_code[stage12].astype(np.int64)]),
        _log_items(arr, erows, None, epos_id, np.asarray(REASONS, object)[ecode[keep].astype(np.int64)]),
    ], ignore_index=True)
    log = pd.concat([neg, pos, rest], ignore_index=True)
    log["row"] = pd.array(log["row"], dtype="Int64")
    log["rank"] = pd.array(log["rank"], dtype="Int32")
    return log


def _log_items(arr: _Arrays, trows: np.ndarray, out_row: np.ndarray | None, pos_id: np.ndarray,
               decision: Any) -> pd.DataFrame:
    """Decision-log lines of candidate table rows ``trows``."""
    n = len(trows)
    row = (pd.array(np.asarray(out_row, np.int64), dtype="Int64") if out_row is not None
           else pd.array([pd.NA] * n, dtype="Int64"))
    return pd.DataFrame({
        "row": row,
        "query_id": arr.queries[arr.q[trows]] if n else np.zeros(0, object),
        "pos_id": pos_id, "doc_id": arr.docs(trows), "rank": _nullable_rank(arr.rank[trows]),
        "score": arr.score[trows].astype(np.float32),
        "decision": np.broadcast_to(np.asarray(decision, object), (n,)).copy() if n else np.zeros(0, object),
        "reason": np.full(n, None, object),
        **{score_col(s): arr.floats(score_col(s))[trows].astype(np.float32) for s in arr.scorers}})



# ---- the stored decision log -------------------------------------------------------------------
DECISIONS_FILE = "decisions.parquet"
DECISIONS_FORMAT = 1
_DECISIONS_KEY = b"hardneg-decisions"
_LOG_META = ("rank_by", "score_by", "scorers", "num_negatives", "sampler", "pos_ref", "negative_scores")


@dataclass
class Decisions:
    """A selection as ``decisions.parquet`` stores it (:meth:`MinedSet.decision_log`): what the
    report shows of a round without running :func:`select` again.

    ``meta`` holds the selection's ``rank_by``, ``score_by``, ``scorers``, ... and the
    ``policy`` that made it (None when not recorded).
    """

    table: pd.DataFrame
    meta: dict[str, Any]

    @classmethod
    def from_mined(cls, mined: MinedSet, policy: SelectionPolicy | None = None) -> "Decisions":
        """The same object :func:`read_decisions` gives back for this selection, without a file."""
        table = _log_arrow(mined, policy)
        return cls(_log_frame(table), json.loads(table.schema.metadata[_DECISIONS_KEY]))

    @property
    def policy(self) -> dict[str, Any] | None:
        return self.meta.get("policy")

    @property
    def negatives(self) -> pd.DataFrame:
        """The negatives of every output row, in output order (``row, query_id, pos_id, doc_id,
        rank, score, reason, score_<s>``)."""
        t = self.table
        return t[(t["decision"] == "selected").to_numpy(bool) & t["row"].notna().to_numpy(bool)].drop(
            columns="decision").reset_index(drop=True)

    @property
    def positives(self) -> pd.DataFrame:
        """The positives of every output row (``row, query_id, doc_id, rank, score, score_<s>``)."""
        t = self.table
        return t[(t["decision"] == "known_positive").to_numpy(bool) & t["row"].notna().to_numpy(bool)].drop(
            columns=["decision", "reason", "pos_id"]).reset_index(drop=True)

    def decisions(self) -> pd.DataFrame:
        """Every item and its fate, like :meth:`MinedSet.decisions` (``decision`` categorical)."""
        t = self.table[["query_id", "pos_id", "doc_id", "rank", "score", "decision"]].copy()
        t["decision"] = pd.Categorical(t["decision"], categories=list(REASONS))
        return t


def write_decisions(mined: MinedSet, path: str | Path, policy: SelectionPolicy | None = None) -> None:
    """Write ``mined``'s decision log to ``path`` (Parquet, atomically; the same selection gives
    the same bytes), with the selection's metadata and ``policy``; read it with :func:`read_decisions`."""
    write_parquet(_log_arrow(mined, policy), path)


def read_decisions(path: str | Path) -> Decisions:
    """A decision log written by :func:`write_decisions`."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(_DECISIONS_KEY)
    if raw is None:
        raise HardnegError(f"{path}: not a hardneg decisions file (no '{_DECISIONS_KEY.decode()}' metadata)")
    meta = json.loads(raw)
    if meta.get("format") != DECISIONS_FORMAT:
        raise HardnegError(f"{path}: decisions format {meta.get('format')}, this hardneg reads {DECISIONS_FORMAT}")
    return Decisions(_log_frame(table), meta)


def _log_arrow(mined: MinedSet, policy: SelectionPolicy | None) -> "pa.Table":
    import pyarrow as pa

    log = mined.decision_log()
    types = {"row": pa.int64(), "rank": pa.int32(), "score": pa.float32()}
    columns = [pa.array(log[c].to_numpy(object) if c not in types else log[c], type=types.get(c, pa.string()),
                        from_pandas=True) for c in log.columns[:8]]
    columns += [pa.array(log[c].to_numpy(np.float32), type=pa.float32()) for c in log.columns[8:]]
    meta = {"format": DECISIONS_FORMAT, **{k: mined.meta.get(k) for k in _LOG_META},
            "policy": policy.to_dict() if policy is not None else None}
    blob = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return pa.table(columns, names=list(log.columns), metadata={_DECISIONS_KEY: blob})


def _log_frame(table: "pa.Table") -> pd.DataFrame:
    import pyarrow as pa

    frame = table.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}.get)
    for c in ("query_id", "pos_id", "doc_id", "decision", "reason"):
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    return frame
