"""The stages of :func:`hardneg.select.select` on flat numpy arrays (no per-row Python):
exclusions, the rank window, the score filters and denoise (:func:`_filter`), the sampler
(:func:`_sample`), rows short of k (:func:`_handle_short`), and the output tables."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hardneg.candidates import CandidateSet, Column, rank_col, score_col
from hardneg.select import samplers
from hardneg.select.policy import OnShort, PosRef, SelectionPolicy
from hardneg.select.samplers import Sampler

__all__: list[str] = []  # internal: import from hardneg.select

NO_RANK = np.iinfo(np.int64).max  # sorts after every real rank; never inside a window

# Decisions a candidate can end with, in pipeline order (the first that applies wins).
REASONS = ("selected", "not_sampled", "no_positive", "known_positive", "sibling_of_positive", "dup_of_positive",
           "query_text", "promoted", "near_duplicate", "window", "max_score", "margin", "percent", "denoise")
_CODE = {r: i for i, r in enumerate(REASONS)}


# ---- stage 0: flat arrays --------------------------------------------------------------------
@dataclass(frozen=True)
class _Arrays:
    """The candidate table as numpy arrays, one element per row (no per-row Python)."""

    table: pd.DataFrame
    scorers: list[str]
    q: np.ndarray  # (n,) query code, in order of first appearance
    queries: np.ndarray  # (nq,) query ids (object)
    is_pos: np.ndarray  # (n,) bool; over chunks: the best chunk of each positive document
    rank: np.ndarray  # (n,) int64 original rank under rank_by, NO_RANK where null
    score: np.ndarray  # (n,) float64 under score_by, NaN where unscored
    sibling: np.ndarray  # (n,) bool: another chunk of a positive document (all False without chunks)
    chunked: bool = False

    @classmethod
    def build(cls, cands: CandidateSet, rank_by: str, score_by: str) -> "_Arrays":
        t = cands.table
        q, queries = pd.factorize(t[Column.QUERY_ID], sort=False)
        q = q.astype(np.int64)
        is_pos = t[Column.IS_POSITIVE].to_numpy(dtype=bool)
        rank = t[rank_col(rank_by)].to_numpy(dtype=np.int64, na_value=NO_RANK)
        score = t[score_col(score_by)].to_numpy(dtype=np.float64, na_value=np.nan)
        chunked = Column.PARENT_ID in t.columns
        sibling = np.zeros(len(t), bool)
        if chunked:
            is_pos, sibling = _best_chunks(q, t[Column.PARENT_ID].to_numpy(dtype=object), is_pos, rank, score)
        return cls(table=t, scorers=cands.scorers, q=q, queries=np.asarray(queries, dtype=object), is_pos=is_pos,
                   rank=rank, score=score, sibling=sibling, chunked=chunked)

    @property
    def positive_doc(self) -> np.ndarray:
        """Rows of a positive document: the positive itself or, over chunks, a sibling chunk."""
        return self.is_pos | self.sibling

    @property
    def nq(self) -> int:
        return len(self.queries)

    def docs(self, rows: np.ndarray) -> np.ndarray:
        """Doc ids of some rows as an object array (converting only those rows)."""
        return np.asarray(self.table[Column.DOC_ID].array.take(np.asarray(rows, np.int64)), dtype=object)

    def flag(self, column: str) -> np.ndarray:
        return self.table[column].to_numpy(dtype=bool)

    def floats(self, column: str) -> np.ndarray:
        return self.table[column].to_numpy(dtype=np.float64, na_value=np.nan)


def _best_chunks(q: np.ndarray, parent: np.ndarray, is_pos: np.ndarray, rank: np.ndarray,
                 score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (query, positive document) its best chunk under ``score`` (unscored last, then the
    better rank, then table order): the positive. The document's other rows: siblings."""
    pcode = pd.factorize(parent, sort=False)[0].astype(np.int64)
    key = q * (int(pcode.max(initial=0)) + 1) + pcode
    rows = np.flatnonzero(is_pos)
    s = np.where(np.isnan(score[rows]), -np.inf, score[rows])
    order = rows[np.lexsort((rows, rank[rows], -s, key[rows]))]
    first = np.r_[True, key[order][1:] != key[order][:-1]] if len(order) else np.zeros(0, bool)
    best = np.zeros(len(q), bool)
    best[order[first]] = True
    return best, np.isin(key, key[rows]) & ~best


@dataclass(frozen=True)
class _OutputUnits:
    """Output rows before ``on_short``: one per query (min ref) or per (query, positive)."""

    q: np.ndarray  # (U,) query code of each unit
    pos_row: np.ndarray  # (U,) table row of the unit's positive; -1 in min mode
    ref: np.ndarray  # (U,) reference positive score (NaN if no positive is scored)
    per_query: np.ndarray  # (nq,) number of units of each query
    first: np.ndarray  # (nq,) first unit of each query
    pos_rows: np.ndarray  # (P,) table rows of all positives, grouped by query
    per_pair: bool

    @property
    def n(self) -> int:
        return len(self.q)

    @classmethod
    def build(cls, arr: _Arrays, pos_ref: PosRef, quantile: float = 0.5, pos_top: int | None = None) -> "_OutputUnits":
        """One unit per query (``max`` / ``min``: the highest / lowest positive score; ``quantile``:
        that quantile of them) or per (query, positive) (``per-pair``: the positive's own score).
        ``pos_top``: only the positives ranked in the top ``pos_top`` (positive consistency) count;
        the others stay known positives (never negatives) but give no row and set no reference."""
        quantile = {PosRef.MIN: 0.0, PosRef.MAX: 1.0}.get(pos_ref, quantile)
        pos_rows = np.flatnonzero(arr.is_pos & (arr.rank <= pos_top) if pos_top is not None else arr.is_pos)
        pos_rows = pos_rows[np.argsort(arr.q[pos_rows], kind="stable")]
        n_pos = np.bincount(arr.q[pos_rows], minlength=arr.nq)
        if pos_ref == PosRef.PER_PAIR:
            per_query, unit_pos, ref = n_pos, pos_rows, arr.score[pos_rows]
        else:
            per_query = (n_pos > 0).astype(np.int64)
            unit_pos = np.full(int(per_query.sum()), -1, np.int64)
            ref = _positive_quantile(arr, pos_rows, quantile)[per_query > 0]
        first = np.cumsum(per_query) - per_query
        q = np.repeat(np.arange(arr.nq), per_query)
        return cls(q, unit_pos, ref, per_query, first, pos_rows, pos_ref == PosRef.PER_PAIR)


def _positive_quantile(arr: _Arrays, pos_rows: np.ndarray, quantile: float) -> np.ndarray:
    """(nq,) the ``quantile`` of each query's scored positives (numpy's linear interpolation;
    0 is the lowest), NaN for a query without a scored positive."""
    s, qc = arr.score[pos_rows], arr.q[pos_rows]
    ok = ~np.isnan(s)
    s, qc = s[ok], qc[ok]
    order = np.lexsort((s, qc))
    s, qc = s[order], qc[order]
    n = np.bincount(qc, minlength=arr.nq)
    has = n > 0
    at = quantile * np.maximum(n - 1, 0)
    lo = np.floor(at).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    start = np.cumsum(n) - n
    ref = np.full(arr.nq, np.nan)
    a, b = s[(start + lo)[has]], s[(start + hi)[has]]
    ref[has] = a + (b - a) * (at - lo)[has]
    return ref


# ---- stages 1-4: exclusions, window, score filters, denoise -----------------------------------
@dataclass(frozen=True)
class _FilterTrace:
    """Stage 1-2 decisions per table row; stage 3-5 decisions per (unit, candidate) entry."""

    row_code: np.ndarray  # (n,) reason code; 0 = survived stages 1-2; -1 = not a candidate
    entry_row: np.ndarray  # (E,) table row of each entry
    entry_unit: np.ndarray  # (E,) unit of each entry
    entry_code: np.ndarray  # (E,) reason code; 0 = survived every filter
    removed: list[tuple[str, int, int]]  # (filter, removed, remaining) in pipeline order
    start: int  # candidates entering the pipeline
    ref_negative: int = 0  # units whose reference score is < 0 while percent is used

    @classmethod
    def empty(cls) -> "_FilterTrace":
        z = np.zeros(0, np.int64)
        return cls(z.astype(np.int8), z, z, z.astype(np.int8), [], 0)


def _filter(arr: _Arrays, units: _OutputUnits, policy: SelectionPolicy) -> _FilterTrace:
    """Stages 1-4 as boolean masks; each filter counts only what was still alive."""
    code = np.zeros(len(arr.q), np.int8)
    code[arr.positive_doc & (arr.rank == NO_RANK)] = -1  # unranked positives: reference rows only
    start = int((code == 0).sum())
    removed: list[tuple[str, int, int]] = []

    def drop(mask: np.ndarray, codes: np.ndarray, reason: str, always: bool = True) -> None:
        hit = mask & (codes == 0)
        codes[hit] = _CODE[reason]
        if always or hit.any():
            removed.append((reason, int(hit.sum()), int((codes == 0).sum())))

    drop(units.per_query[arr.q] == 0, code, "no_positive", always=False)
    drop(arr.is_pos, code, "known_positive")
    drop(arr.sibling, code, "sibling_of_positive", always=arr.chunked)
    drop(arr.flag(Column.DUP_OF_POSITIVE), code, "dup_of_positive")
    drop(arr.flag(Column.IS_QUERY_TEXT), code, "query_text")
    with np.errstate(invalid="ignore"):
        if policy.promotes:
            drop(_promoted(arr, policy), code, "promoted")
        if policy.near_dup_cosine is not None:
            drop(arr.floats(Column.POS_COSINE) > policy.near_dup_cosine, code, "near_duplicate")
        if policy.window is not None:
            lo, hi = policy.window
            drop((arr.rank < lo) | (arr.rank > hi), code, "window")
        entry_row, entry_unit = _expand(arr, units, np.flatnonzero(code == 0))
        ecode = np.zeros(len(entry_row), np.int8)
        if units.per_pair:  # from here on, counts are per (query, positive, candidate)
            removed.append(("per_pair", 0, len(entry_row)))
        s, ref = arr.score[entry_row], units.ref[entry_unit]
        if policy.max_score is not None:
            drop(~(s <= policy.max_score), ecode, "max_score")
        if policy.margin is not None:
            drop(~(s <= ref - policy.margin), ecode, "margin")
        if policy.percent is not None:  # = percent * pos when pos >= 0; stays below pos if not
            drop(~(s <= ref - np.abs(ref) * (1 - policy.percent)), ecode, "percent")
        if policy.denoise_above is not None:
            ce = arr.floats(score_col(policy.denoise_by))[entry_row]
            # at the stored precision: a score shown as exactly T (float32) is kept; NaN (unscored) is kept
            drop(ce > np.float32(policy.denoise_above), ecode, "denoise")
    ref_negative = int((units.ref < 0).sum()) if policy.percent is not None else 0
    return _FilterTrace(code, entry_row, entry_unit, ecode, removed, start, ref_negative)


def _promoted(arr: _Arrays, policy: SelectionPolicy) -> np.ndarray:
    """(n,) rows that become extra positives: judged positive (``denoise_by`` above ``promote_above``,
    at the stored float32 precision) or near-duplicates of a positive (``promote_near_dup``)."""
    hit = np.zeros(len(arr.q), bool)
    if policy.promote_above is not None:
        hit |= arr.floats(score_col(policy.denoise_by)) > np.float32(policy.promote_above)
    if policy.promote_near_dup is not None:
        hit |= arr.floats(Column.POS_COSINE) > policy.promote_near_dup
    return hit


def _expand(arr: _Arrays, units: _OutputUnits, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair each surviving row with each unit of its query; entries grouped by unit."""
    rows = rows[np.argsort(arr.q[rows], kind="stable")]
    reps = units.per_query[arr.q[rows]]
    entry_row = np.repeat(rows, reps)
    offset = np.arange(len(entry_row)) - np.repeat(np.cumsum(reps) - reps, reps)
    entry_unit = units.first[arr.q[entry_row]] + offset
    if units.per_pair:  # (row, unit) pairs come interleaved: regroup by unit, keep row order
        order = np.argsort(entry_unit, kind="stable")
        entry_row, entry_unit = entry_row[order], entry_unit[order]
    return entry_row, entry_unit


# ---- stage 5: sampling -----------------------------------------------------------------------
def _sample(arr: _Arrays, units: _OutputUnits, trace: _FilterTrace, policy: SelectionPolicy, k: int,
            rng: np.random.Generator) -> np.ndarray:
    """Entry positions of the chosen negatives: up to k per unit among the surviving entries."""
    alive = np.flatnonzero(trace.entry_code == 0)
    rows, unit = trace.entry_row[alive], trace.entry_unit[alive]
    scale_of = lambda: tuple(v[arr.q[rows]] for v in _query_score_scale(arr))  # noqa: E731 (only if z is read)
    x = samplers.Survivors(arr.score[rows], unit, units.ref[unit], arr.rank[rows], scale_of)
    return alive[samplers.draw(policy.sampler.value, x, k, policy, rng)]


def _query_score_scale(arr: _Arrays) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each query's ranked non-positive scores: the scale of ``z``.

    Taken before filtering, so a tighter filter does not stretch the scale.
    """
    ok = ~arr.positive_doc & (arr.rank != NO_RANK) & np.isfinite(arr.score)
    qc, x = arr.q[ok], arr.score[ok]
    n = np.bincount(qc, minlength=arr.nq)
    mean = np.divide(np.bincount(qc, weights=x, minlength=arr.nq), n, out=np.zeros(arr.nq), where=n > 0)
    var = np.divide(np.bincount(qc, weights=(x - mean[qc]) ** 2, minlength=arr.nq), n,
                    out=np.zeros(arr.nq), where=n > 0)
    std = np.sqrt(var)
    return mean, np.where(std > 0, std, 1.0)


def _candidate_picks(arr: _Arrays, trace: _FilterTrace, chosen: np.ndarray, reason: str) -> pd.DataFrame:
    """The chosen entries, ordered by unit, then score (high first), then original rank."""
    rows, unit = trace.entry_row[chosen], trace.entry_unit[chosen]
    s = arr.score[rows]
    order = np.lexsort((arr.rank[rows], -np.where(np.isnan(s), -np.inf, s), unit))
    return _picks(unit[order], rows[order], np.full(len(order), None, object), reason, chosen[order])


def _picks(unit: np.ndarray, table_row: np.ndarray, doc_id: np.ndarray, reason: str | None,
           entry: np.ndarray) -> pd.DataFrame:
    """Chosen negatives: unit, table row (-1: not among the query's rows), doc id, reason."""
    return pd.DataFrame({"unit": np.asarray(unit, np.int64), "table_row": np.asarray(table_row, np.int64),
                         "doc_id": np.asarray(doc_id, object), "reason": reason,
                         "entry": np.asarray(entry, np.int64)})


# ---- stage 6: rows short of k ----------------------------------------------------------------
def _handle_short(arr: _Arrays, units: _OutputUnits, picks: pd.DataFrame, avail: np.ndarray, k: int,
                  policy: SelectionPolicy, corpus: Sequence[str] | None,
                  rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply ``on_short``; return the per-unit bookkeeping and the picks including pads."""
    got = np.bincount(picks["unit"].to_numpy(np.int64), minlength=units.n)
    short = got < k
    padded = np.zeros(units.n, np.int64)
    keep = np.ones(units.n, bool)
    if policy.on_short == OnShort.DROP:
        keep = ~short
    elif policy.on_short == OnShort.PAD_RANDOM and short.any() and policy.sampler != Sampler.RANDOM:
        pads = _random_picks(arr, units, np.where(short, k - got, 0), corpus, rng, exclude="retrieved")
        pads["reason"] = "pad-random"
        padded = np.bincount(pads["unit"].to_numpy(np.int64), minlength=units.n)
        picks = pd.concat([picks, pads], ignore_index=True)
        picks = picks.iloc[np.argsort(picks["unit"].to_numpy(), kind="stable")].reset_index(drop=True)
    rows = pd.DataFrame({"n_available": avail, "n_selected": got, "n_padded": padded,
                         "short": short, "keep": keep})
    return rows, picks


def _random_picks(arr: _Arrays, units: _OutputUnits, k: int | np.ndarray, corpus: Sequence[str] | None,
                  rng: np.random.Generator, exclude: str) -> pd.DataFrame:
    """Per unit, ``k`` distinct corpus docs drawn uniformly, avoiding the query's banned docs.

    ``exclude="flagged"`` bans positives, duplicates of a positive and the query text (the
    ``random`` baseline); ``"retrieved"`` bans every doc among the query's rows, so padding
    never brings back a candidate that a filter removed.
    """
    need = np.broadcast_to(np.asarray(k, np.int64), (units.n,))
    if corpus is None or not need.any():
        return _picks([], [], [], None, [])
    mask = np.ones(len(arr.q), bool) if exclude == "retrieved" else (
        arr.positive_doc | arr.flag(Column.DUP_OF_POSITIVE) | arr.flag(Column.IS_QUERY_TEXT))
    rows = np.flatnonzero(mask)
    rows = rows[np.argsort(arr.q[rows], kind="stable")]
    docs = arr.docs(rows)
    bounds = np.searchsorted(arr.q[rows], np.arange(arr.nq + 1))
    units_out, docs_out = [], []
    for u in np.flatnonzero(need):  # per row that needs draws; cheap next to k draws each
        qc = units.q[u]
        drawn = _draw_corpus(rng, corpus, int(need[u]), set(docs[bounds[qc]:bounds[qc + 1]]))
        units_out += [u] * len(drawn)
        docs_out += drawn
    unit = np.asarray(units_out, np.int64)
    doc = np.asarray(docs_out, object)
    return _picks(unit, _lookup_rows(arr, units.q[unit], doc), doc, None, np.full(len(unit), -1))


def _draw_corpus(rng: np.random.Generator, corpus: Sequence[str], n: int, banned: set) -> list[str]:
    """``n`` distinct docs outside ``banned``, uniformly (by rejection; exhaustive when the
    corpus is nearly used up). Fewer than ``n`` only when the corpus has no more."""
    out: list[str] = []
    seen = set(banned)
    for _ in range(8):
        for i in rng.integers(0, len(corpus), size=2 * (n - len(out)) + 4):
            if len(out) == n:
                return out
            doc = corpus[int(i)]
            if doc not in seen:
                seen.add(doc)
                out.append(doc)
    for i in rng.permutation(len(corpus)):
        if len(out) == n:
            break
        doc = corpus[int(i)]
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
    return out


def _lookup_rows(arr: _Arrays, qcodes: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Table row of each (query, doc), -1 where the doc is not among the query's rows."""
    if len(docs) == 0:
        return np.zeros(0, np.int64)
    left = pd.DataFrame({"q": qcodes, "doc": docs.astype(str)})
    right = pd.DataFrame({"q": arr.q, "doc": arr.table[Column.DOC_ID].astype(str).to_numpy(),
                          "row": np.arange(len(arr.q))}).drop_duplicates(["q", "doc"])
    merged = left.merge(right, on=["q", "doc"], how="left", sort=False)
    return merged["row"].fillna(-1).to_numpy(np.int64)



def _kept_positives(arr: _Arrays, units: _OutputUnits, row_of_unit: np.ndarray,
                    promoted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(table row, output row) of every positive whose unit made an output row; ``promoted`` table
    rows (one unit per query) follow their query's labeled positives."""
    if units.per_pair:
        unit = np.arange(units.n)
        rows = units.pos_rows
    else:
        unit_of_query = np.full(arr.nq, -1)
        unit_of_query[units.q] = np.arange(units.n)
        rows = units.pos_rows if promoted is None else np.concatenate([units.pos_rows, promoted])
        rows = rows[np.argsort(arr.q[rows], kind="stable")]
        unit = unit_of_query[arr.q[rows]]
    ok = (unit >= 0) & (row_of_unit[np.maximum(unit, 0)] >= 0)
    return rows[ok], row_of_unit[unit[ok]]


def _positives_table(arr: _Arrays, units: _OutputUnits, row_of_unit: np.ndarray,
                     promoted: np.ndarray | None = None) -> pd.DataFrame:
    """Every positive of every kept row (per-pair: the row's own positive), ``promoted`` ones flagged."""
    trow, out_row = _kept_positives(arr, units, row_of_unit, promoted)
    table = _item_table(arr, out_row, arr.q[trow], trow, arr.docs(trow))
    table["promoted"] = np.isin(trow, promoted) if promoted is not None else np.zeros(len(trow), bool)
    return table.drop(columns=["rank", "source", "is_known_negative"])


def _negatives_table(arr: _Arrays, units: _OutputUnits, picks: pd.DataFrame, row_of_unit: np.ndarray) -> pd.DataFrame:
    """Selected (and padded / random) negatives of every kept row, in output order."""
    unit = picks["unit"].to_numpy(np.int64)
    ok = row_of_unit[unit] >= 0
    p = picks[ok]
    trow = p["table_row"].to_numpy(np.int64)
    docs = p["doc_id"].to_numpy(object).copy()
    inside = trow >= 0
    docs[inside] = arr.docs(trow[inside])
    table = _item_table(arr, row_of_unit[unit[ok]], units.q[unit[ok]], trow, docs)
    table["reason"] = p["reason"].to_numpy(object)
    return table


def _item_table(arr: _Arrays, out_row: np.ndarray, qcode: np.ndarray, trow: np.ndarray,
                docs: np.ndarray) -> pd.DataFrame:
    """Items with their provenance; ``trow < 0`` marks docs that are not among the query's rows."""
    inside = trow >= 0
    safe = np.where(inside, trow, 0)

    def take(values: np.ndarray, default: Any) -> np.ndarray:
        return np.where(inside, values[safe], default)

    data: dict[str, Any] = {
        "row": np.asarray(out_row, np.int64),
        "query_id": arr.queries[qcode] if len(qcode) else np.zeros(0, object),
        "doc_id": np.asarray(docs, object),
        "rank": _nullable_rank(take(arr.rank, NO_RANK)),
        "score": take(arr.score, np.nan).astype(np.float32),
        "source": np.where(inside, np.asarray(arr.table[Column.SOURCE].array.take(safe), object), "corpus"),
        "is_known_negative": inside & arr.flag(Column.IS_KNOWN_NEGATIVE)[safe],
    }
    for s in arr.scorers:
        data[score_col(s)] = take(arr.floats(score_col(s)), np.nan).astype(np.float32)
    return pd.DataFrame(data)



def _nullable_rank(rank: np.ndarray) -> pd.arrays.IntegerArray:
    missing = rank == NO_RANK
    return pd.arrays.IntegerArray(np.where(missing, 0, rank).astype(np.int32), missing)
