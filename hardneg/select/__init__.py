"""Select negatives from a candidate set with a policy: cheap, seeded and re-runnable.

Stages, in this order (each one's removals are counted in ``MinedSet.stats``):

1. exclusions: every known positive of the query (however many), exact duplicates of a
   positive (``dup_of_positive``), the query's own text (``is_query_text``), optionally
   near-duplicates (``pos_cosine > near_dup_cosine``). Known negatives (qrels grade 0) stay:
   they are safe negatives. Candidates mined over chunks of long documents (a ``parent_id``
   column, :mod:`hardneg.chunking`): per query and positive document, the chunk scoring
   highest under ``score_by`` is the positive (ties: the better-ranked row); every other
   chunk of that document is dropped as ``sibling_of_positive``, never a negative.
2. rank window on ORIGINAL ranks under ``rank_by``: ``window=(10, 100)`` keeps candidates
   ranked 10..100 inclusive in the retriever's list, positives counted in that list, before
   any other filtering. (sentence-transformers' ``range_min`` instead skips the first
   surviving candidates, so its window moves with the filters.)
3. positive-aware score filters under ``score_by`` (NV-Retriever): ``max_score`` (TopK-Abs:
   keep ``s <= max_score``), ``margin`` (keep ``s <= pos - margin``), ``percent`` (keep
   ``s <= percent * pos``). ``pos`` is the query's lowest-scoring positive (``pos_ref="min"``)
   or, with ``pos_ref="per-pair"``, each positive in turn: one output row per
   (query, positive), each filtered against its own positive. ``percent`` uses
   ``pos - |pos| * (1 - percent)``, equal to ``percent * pos`` for the non-negative scores it
   is allowed on, and still below the positive should a cosine come out negative (counted
   in ``stats["percent_negative_reference"]``).
4. denoise: drop candidates whose cross-encoder score (``denoise_by``, default ``ce``, added by
   :func:`hardneg.crossencoder.rescore`) exceeds ``denoise_above``; a score equal to it is kept.
5. sampler (:data:`hardneg.select.samplers.REGISTRY`) picks ``num_negatives`` of the survivors; then
   ``on_short`` decides what happens to rows with fewer: ``drop`` the row, ``keep`` it short,
   or ``pad-random`` it with random corpus documents the query never retrieved.

Baselines: ``sampler="random"`` draws k documents uniformly from the whole corpus minus the
query's positives (and their duplicates and the query text); ``sampler="none"`` selects no
negatives at all (train on in-batch negatives only).

A candidate whose score under ``score_by`` is NaN (not scored) fails every score filter:
it cannot be shown to lie below the threshold. For denoise an unscored candidate is kept.

:func:`write_decisions` stores a selection's decision log (``decisions.parquet``: the chosen
negatives, the positives, and the filter that removed every other candidate); ``hardneg run``
writes one per round and its report reads it back (:func:`read_decisions`) instead of
selecting again.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from hardneg.select import samplers
from hardneg.select.samplers import Sampler
from hardneg.candidates import CandidateSet, Column, rank_col, score_col
from hardneg.errors import HardnegError
from hardneg.options import check, option

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Decisions", "MinedSet", "OnShort", "PosRef", "Sampler", "SelectionPolicy", "read_decisions", "select",
           "write_decisions"]

NO_RANK = np.iinfo(np.int64).max  # sorts after every real rank; never inside a window


class OnShort(str, Enum):
    DROP = "drop"
    KEEP = "keep"
    PAD_RANDOM = "pad-random"


class PosRef(str, Enum):
    MIN = "min"
    PER_PAIR = "per-pair"


# Decisions a candidate can end with, in pipeline order (the first that applies wins).
REASONS = ("selected", "not_sampled", "no_positive", "known_positive", "sibling_of_positive", "dup_of_positive",
           "query_text", "near_duplicate", "window", "max_score", "margin", "percent", "denoise")
_CODE = {r: i for i, r in enumerate(REASONS)}


def parse_window(text: str) -> tuple[int, int]:
    """``"10:100"`` -> ``(10, 100)``: 1-based original ranks, both ends included."""
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise HardnegError(f"window must look like MIN:MAX (e.g. 10:100), got {text!r}") from None
    return lo, hi


@dataclass(frozen=True)
class SelectionPolicy:
    """How to turn a candidate set into negatives: the one home of the default policy.

    ``SelectionPolicy()`` is what ``hardneg mine`` / ``select`` and the default recipe use:
    the 7 top-scoring candidates per query among original ranks 10..100 whose score is at most
    0.95 x the positive's (NV-Retriever's positive-aware filter; a FlagEmbedding group of
    1 positive + 7 negatives). ``simans_a``/``simans_b`` and ``temperature`` act on per-query
    standardised scores (see :mod:`hardneg.select.samplers`).

    Samplers that do not read candidates (the ``random`` and ``none`` baselines) take no
    window or percent: left at their defaults they become None; any other filter set with
    them is refused, since it would have no effect.
    """

    window: tuple[int, int] | None = option((10, 100), "MIN:MAX 1-based ranks on the ORIGINAL ranking (counted "
                                             "with known positives), both ends kept, applied before any other "
                                             "filter; 'off': none. Unlike sentence-transformers' range_min, "
                                             "which skips surviving candidates.")
    max_score: float | None = option(None, "Keep only if score <= X (TopK-Abs).")
    margin: float | None = option(None, "Keep only if score <= positive score - M.", ge=0)
    percent: float | None = option(0.95, "Keep a candidate only if score <= P x positive score (NV-Retriever); "
                                         "'off': none. Refused for scorers whose scores can be negative: use "
                                         "margin.", gt=0, le=1)
    pos_ref: PosRef = option(PosRef.MIN, "Positive score the filters compare with: 'min' (the query's lowest) "
                                         "or 'per-pair' (one output row per (query, positive)).")
    near_dup_cosine: float | None = option(None, "Drop candidates whose embedding cosine to a positive exceeds "
                                                 "this.", ge=-1, le=1, key="near_dup")
    denoise_above: float | None = option(None, "Drop candidates the cross-encoder (denoise_by) scores above this "
                                               "(a logit; `hardneg rescore` adds the scores).")
    denoise_by: str = option("ce", "The scorer denoise_above reads.")
    rank_by: str | None = option(None, "Scorer whose ranks the window uses; none: the retriever.")
    score_by: str | None = option(None, "Scorer whose scores the filters use; none: the retriever (never an "
                                        "RRF value).")
    sampler: Sampler = option(Sampler.TOP, f"{samplers.help_text()} {' and '.join(samplers.baselines())} take no "
                                           "window or percent.")
    num_negatives: int = option(7, "Negatives per output row (k).", ge=0)
    on_short: OnShort = option(OnShort.KEEP, "When fewer than k survive: drop | keep | pad-random.")
    seed: int = option(42, "Seed of every random choice in selection.")
    simans_a: float = option(1.0, "SimANS sharpness a (on per-query standardised scores).", ge=0)
    simans_b: float = option(0.0, "SimANS offset b.")
    temperature: float = option(1.0, "Softmax sampler temperature.", gt=0)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if isinstance(self.window, str):
            set_("window", parse_window(self.window))
        check(self)
        if self.window is not None:
            lo, hi = (int(x) for x in self.window)
            if lo < 1:
                raise HardnegError(f"window ranks are 1-based: min must be >= 1, got {lo}")
            if lo > hi:
                raise HardnegError(f"window min {lo} is greater than max {hi}")
            set_("window", (lo, hi))
        if int(self.num_negatives) != self.num_negatives:
            raise HardnegError(f"num_negatives must be an integer >= 0, got {self.num_negatives}")
        if self.sampler.value in samplers.baselines():
            defaults = {f.name: f.default for f in fields(self)}
            for name in ("window", "percent"):  # the default filters are for samplers that read candidates
                if getattr(self, name) == defaults[name]:
                    set_(name, None)
            if self._filters_set():
                raise HardnegError(
                    f"sampler '{self.sampler.value}' does not use the candidates, so "
                    f"{', '.join(self._filters_set())} would have no effect; drop them"
                )

    @classmethod
    def unfiltered(cls, **fields: Any) -> "SelectionPolicy":
        """A policy without the default window and percent: every candidate the exclusions leave
        (sentence-transformers' ``mine_hard_negatives`` without ``range_min`` / ``relative_margin``).
        Use it to study one filter alone, or as the base of a policy of your own."""
        return cls(**{"window": None, "percent": None, **fields})

    def _filters_set(self) -> list[str]:
        names = ("window", "max_score", "margin", "percent", "near_dup_cosine", "denoise_above")
        return [n for n in names if getattr(self, n) is not None]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (enums as strings, window as a list)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Enum):
                out[key] = value.value
        if self.window is not None:
            out["window"] = list(self.window)
        return out

    def check(self, cands: CandidateSet) -> tuple[str, str]:
        """Validate against a candidate set's scorers; return ``(rank_by, score_by)``."""
        scorers = cands.scorers
        rank_by = self.rank_by or cands.rank_by
        score_by = self.score_by or cands.score_by
        for what, name in (("rank_by", rank_by), ("score_by", score_by)):
            if name not in scorers:
                raise HardnegError(f"unknown scorer {name!r} for {what}; this candidate set has {scorers}")
        score_only = cands.meta.get("score_only") or []
        if rank_by in score_only:
            raise HardnegError(f"scorer '{rank_by}' has no ranks (it rescored some candidates only); rank by one "
                               f"of {[s for s in scorers if s not in score_only]}")
        if self.denoise_above is not None and self.denoise_by not in scorers:
            raise HardnegError(f"denoise needs a '{self.denoise_by}' scorer (rescore first); have {scorers}")
        if self.percent is not None:
            negative = cands.can_be_negative(score_by)
            if negative is None or negative:
                why = ("its scores can be negative" if negative
                       else "the candidate metadata does not say whether its scores can be negative")
                raise HardnegError(
                    f"percent compares a score with a fraction of the positive's score, which is "
                    f"meaningless for scorer '{score_by}': {why}. Use --margin instead"
                )
        return rank_by, score_by


@dataclass
class MinedSet:
    """Selected negatives with provenance, as flat tables (one row per item, STYLE 4).

    * ``rows``: one per output row: ``row, query_id, pos_id`` (the row's positive in per-pair
      mode, else null), ``n_available`` (candidates that survived the filters),
      ``n_negatives``, ``n_padded``, ``short`` (fewer than k survived).
    * ``positives``: ``row, query_id, doc_id, score`` (under ``score_by``), ``score_<s>``.
    * ``negatives``: ``row, query_id, doc_id, rank`` (original, under ``rank_by``; null for
      corpus draws), ``score``, ``source``, ``is_known_negative``, ``score_<s>`` for every
      scorer, and ``reason``: the sampler that chose it, or ``pad-random``.
    * ``stats``: counts per filter, short rows and their fate, output sizes, score summaries.

    :meth:`per_row` gives list-per-row views, :meth:`decisions` the fate of every candidate
    (for audits); :mod:`hardneg.export` writes training files.
    """

    rows: pd.DataFrame
    positives: pd.DataFrame
    negatives: pd.DataFrame
    stats: dict[str, Any]
    meta: dict[str, Any]
    _decisions: Callable[[], pd.DataFrame] | None = field(default=None, repr=False, compare=False)
    _log: Callable[[], pd.DataFrame] | None = field(default=None, repr=False, compare=False)

    @property
    def num_negatives(self) -> int:
        """The k the policy asked for (0 for the ``none`` baseline)."""
        return int(self.meta["num_negatives"])

    def per_row(self) -> pd.DataFrame:
        """One line per output row with lists: ``pos_ids, pos_scores, neg_ids, neg_ranks``
        (None where unranked), ``neg_scores`` (None where unscored), ``neg_reasons``."""
        n, pos, neg = len(self.rows), self.positives, self.negatives
        out = self.rows[["row", "query_id", "pos_id"]].copy()
        out["pos_ids"] = _ragged(pos["doc_id"], pos["row"], n)
        out["pos_scores"] = _ragged(_nan_to_none(pos["score"]), pos["row"], n)
        out["neg_ids"] = _ragged(neg["doc_id"], neg["row"], n)
        out["neg_ranks"] = _ragged([None if pd.isna(r) else int(r) for r in neg["rank"]], neg["row"], n)
        out["neg_scores"] = _ragged(_nan_to_none(neg["score"]), neg["row"], n)
        out["neg_reasons"] = _ragged(neg["reason"], neg["row"], n)
        return out

    def decisions(self) -> pd.DataFrame:
        """Every candidate considered and its fate: ``selected``, ``not_sampled`` or the filter
        that removed it (``query_id, pos_id, doc_id, rank, score, decision``). Built on demand."""
        if self._decisions is None:
            return pd.DataFrame(columns=["query_id", "pos_id", "doc_id", "rank", "score", "decision"])
        return self._decisions()

    def decision_log(self) -> pd.DataFrame:
        """What ``decisions.parquet`` stores (:func:`write_decisions`): one line per item and its fate.

        First the negatives of every output row (``decision`` "selected", ``row`` set, ``reason``
        the sampler or ``pad-random``), in output order; then every positive of an output row
        ("known_positive", ``row`` set); then every other candidate with the filter that removed
        it, "not_sampled", or "selected" for a row later dropped as short (``row`` null). Columns:
        ``row, query_id, pos_id, doc_id, rank, score, decision, reason, score_<s>`` per scorer.
        """
        if self._log is None:
            raise HardnegError("this selection keeps no decision log")
        return self._log()


# ---- the public entry point ------------------------------------------------------------------
def select(cands: CandidateSet, policy: SelectionPolicy | None = None,
           corpus_doc_ids: Sequence[str] | None = None) -> MinedSet:
    """Apply ``policy`` to ``cands``: negatives with provenance and per-filter statistics.

    ``corpus_doc_ids`` is needed only by ``sampler="random"`` and ``on_short="pad-random"``.
    The same inputs and seed always give the same result.
    """
    policy = policy or SelectionPolicy()
    cands.validate()
    rank_by, score_by = policy.check(cands)
    needs_corpus = policy.sampler == Sampler.RANDOM or (
        policy.on_short == OnShort.PAD_RANDOM and policy.sampler != Sampler.NONE)
    if needs_corpus and not corpus_doc_ids:
        raise HardnegError(f"sampler '{policy.sampler.value}' / on_short '{policy.on_short.value}' "
                           "draws from the corpus: pass corpus_doc_ids")
    arr = _Arrays.build(cands, rank_by, score_by)
    units = _OutputUnits.build(arr, policy.pos_ref)
    rng = np.random.default_rng(policy.seed)
    k = 0 if policy.sampler == Sampler.NONE else int(policy.num_negatives)
    if not samplers.REGISTRY[policy.sampler.value].uses_candidates:
        trace = _FilterTrace.empty()
        picks = _random_picks(arr, units, k, corpus_doc_ids, rng, exclude="flagged")
        picks["reason"] = policy.sampler.value
        avail = np.full(units.n, len(corpus_doc_ids or ()), np.int64)
    else:
        trace = _filter(arr, units, policy)
        chosen = _sample(arr, units, trace, policy, k, rng)
        picks = _candidate_picks(arr, trace, chosen, policy.sampler.value)
        avail = np.bincount(trace.entry_unit[trace.entry_code == 0], minlength=units.n)
    rows, picks = _handle_short(arr, units, picks, avail, k, policy, corpus_doc_ids, rng)
    meta = {"rank_by": rank_by, "score_by": score_by, "scorers": arr.scorers, "num_negatives": k,
            "sampler": policy.sampler.value, "pos_ref": policy.pos_ref.value,
            "negative_scores": dict(cands.meta.get("negative_scores") or {})}
    return _assemble(arr, units, rows, picks, trace, policy, meta)


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
    def build(cls, arr: _Arrays, pos_ref: PosRef) -> "_OutputUnits":
        pos_rows = np.flatnonzero(arr.is_pos)
        pos_rows = pos_rows[np.argsort(arr.q[pos_rows], kind="stable")]
        n_pos = np.bincount(arr.q[pos_rows], minlength=arr.nq)
        if pos_ref == PosRef.PER_PAIR:
            per_query, unit_pos, ref = n_pos, pos_rows, arr.score[pos_rows]
        else:
            per_query = (n_pos > 0).astype(np.int64)
            unit_pos = np.full(int(per_query.sum()), -1, np.int64)
            ref = np.full(arr.nq, np.inf)
            np.fmin.at(ref, arr.q[pos_rows], arr.score[pos_rows])  # lowest positive, NaN-skipping
            ref = np.where(np.isinf(ref), np.nan, ref)[per_query > 0]
        first = np.cumsum(per_query) - per_query
        q = np.repeat(np.arange(arr.nq), per_query)
        return cls(q, unit_pos, ref, per_query, first, pos_rows, pos_ref == PosRef.PER_PAIR)


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


# ---- assembling the result -------------------------------------------------------------------
def _assemble(arr: _Arrays, units: _OutputUnits, rows: pd.DataFrame, picks: pd.DataFrame, trace: _FilterTrace,
              policy: SelectionPolicy, meta: dict[str, Any]) -> MinedSet:
    """Renumber the kept units as output rows; build the flat tables and the stats."""
    keep = rows["keep"].to_numpy(bool)
    row_of_unit = np.where(keep, np.cumsum(keep) - 1, -1)
    kept = np.flatnonzero(keep)
    pos_id = arr.docs(units.pos_row[kept]) if units.per_pair else np.full(len(kept), None, object)
    out_rows = pd.DataFrame({
        "row": np.arange(len(kept), dtype=np.int64),
        "query_id": arr.queries[units.q[kept]],
        "pos_id": pos_id,
        "n_available": rows["n_available"].to_numpy(np.int64)[kept],
        "n_negatives": (rows["n_selected"] + rows["n_padded"]).to_numpy(np.int64)[kept],
        "n_padded": rows["n_padded"].to_numpy(np.int64)[kept],
        "short": rows["short"].to_numpy(bool)[kept],
    })
    positives = _positives_table(arr, units, row_of_unit)
    negatives = _negatives_table(arr, units, picks, row_of_unit)
    mined = MinedSet(out_rows, positives, negatives, {}, meta,
                     _decisions=lambda: _decisions_table(arr, units, trace, picks),
                     _log=lambda: _decision_log(arr, units, trace, picks, row_of_unit, out_rows, negatives))
    mined.stats = _stats(arr, units, rows, mined, trace, policy)
    return mined


def _kept_positives(arr: _Arrays, units: _OutputUnits, row_of_unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(table row, output row) of every positive whose unit made an output row."""
    if units.per_pair:
        unit = np.arange(units.n)
    else:
        unit_of_query = np.full(arr.nq, -1)
        unit_of_query[units.q] = np.arange(units.n)
        unit = unit_of_query[arr.q[units.pos_rows]]
    ok = row_of_unit[unit] >= 0
    return units.pos_rows[ok], row_of_unit[unit[ok]]


def _positives_table(arr: _Arrays, units: _OutputUnits, row_of_unit: np.ndarray) -> pd.DataFrame:
    """Every positive of every kept row (per-pair: the row's own positive)."""
    trow, out_row = _kept_positives(arr, units, row_of_unit)
    table = _item_table(arr, out_row, arr.q[trow], trow, arr.docs(trow))
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


def _nullable_rank(rank: np.ndarray) -> pd.arrays.IntegerArray:
    missing = rank == NO_RANK
    return pd.arrays.IntegerArray(np.where(missing, 0, rank).astype(np.int32), missing)


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
    from hardneg.candidates import write_parquet

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


# ---- statistics ------------------------------------------------------------------------------
def _stats(arr: _Arrays, units: _OutputUnits, rows: pd.DataFrame, mined: MinedSet, trace: _FilterTrace,
           policy: SelectionPolicy) -> dict[str, Any]:
    """Counts per filter, short rows and their fate, output sizes, score summaries (JSON-ready)."""
    k = mined.num_negatives
    short, keep = rows["short"].to_numpy(bool), rows["keep"].to_numpy(bool)
    n_pos = np.bincount(arr.q[units.pos_rows], minlength=arr.nq)
    neg, n_neg = mined.negatives, mined.rows["n_negatives"].to_numpy()
    return {
        "policy": policy.to_dict(),
        "rank_by": mined.meta["rank_by"],
        "score_by": mined.meta["score_by"],
        "unit": "query-positive" if units.per_pair else "query",
        "queries": int(arr.nq),
        "queries_without_positive": int((n_pos == 0).sum()),
        "positives": int(len(units.pos_rows)),
        "candidates": int(trace.start),
        "filters": [{"filter": f, "removed": r, "remaining": left} for f, r, left in trace.removed],
        "rows_without_positive_score": int(np.isnan(units.ref).sum()),
        "percent_negative_reference": int(trace.ref_negative),
        "sampler": policy.sampler.value,
        "num_negatives": k,
        "short": {
            "action": policy.on_short.value,
            "rows": int(short.sum()),
            "queries": int(len(np.unique(units.q[short]))),
            "rows_dropped": int((short & ~keep).sum()),
            "rows_kept_short": int((n_neg < k).sum()),
            "rows_padded": int((rows["n_padded"].to_numpy() > 0).sum()),
            "negatives_padded": int(rows["n_padded"].sum()),
        },
        "output": {
            "rows": int(len(mined.rows)),
            "queries": int(mined.rows["query_id"].nunique()),
            "negatives": int(len(neg)),
            "rows_without_negatives": int((n_neg == 0).sum()),
            "known_negatives_selected": int(neg["is_known_negative"].sum()),
        },
        "scores": {
            "positive": summarize(mined.positives.drop_duplicates(["query_id", "doc_id"])["score"]),
            "negative": summarize(neg["score"]),
            "gap": summarize(_gaps(mined)),
        },
    }


def _gaps(mined: MinedSet) -> np.ndarray:
    """Reference positive score minus score, per selected negative (larger = easier)."""
    ref = mined.positives.groupby("row")["score"].min()
    neg = mined.negatives
    ref_of_neg = ref.reindex(neg["row"]).to_numpy(np.float64)
    return ref_of_neg - neg["score"].to_numpy(np.float64)


def summarize(values: Any) -> dict[str, float | int | None]:
    """Count, mean, std, min, 5/25/50/75/95% quantiles and max of the finite values."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    keys = ("mean", "std", "min", "q05", "q25", "q50", "q75", "q95", "max")
    if x.size == 0:
        return {"count": 0} | {key: None for key in keys}
    q = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])
    vals = [x.mean(), x.std(), x.min(), *q, x.max()]
    return {"count": int(x.size)} | {key: round(float(v), 6) for key, v in zip(keys, vals)}


def format_stats_table(stats: dict[str, Any]) -> "rich.table.Table":  # noqa: F821
    """The stats of :func:`select` as a rich table: filters, short rows, output, scores."""
    from rich.table import Table

    table = Table(title=f"select: sampler={stats['sampler']} k={stats['num_negatives']} "
                        f"score_by={stats['score_by']} rank_by={stats['rank_by']}")
    table.add_column("step")
    table.add_column("removed", justify="right")
    table.add_column("remaining", justify="right")
    table.add_row("candidates", "", f"{stats['candidates']:,}")
    for f in stats["filters"]:
        removed = "x positives" if f["filter"] == "per_pair" else f"{f['removed']:,}"
        table.add_row(f["filter"], removed, f"{f['remaining']:,}")
    short, out = stats["short"], stats["output"]
    table.add_section()
    table.add_row(f"rows short of k ({short['action']})", f"{short['rows']:,}",
                  f"{short['queries']:,} queries")
    if short["rows_dropped"]:
        table.add_row("  dropped", f"{short['rows_dropped']:,}", "")
    if short["rows_padded"]:
        table.add_row("  padded", f"{short['negatives_padded']:,} negs", f"{short['rows_padded']:,} rows")
    table.add_section()
    table.add_row("output rows", "", f"{out['rows']:,}")
    table.add_row("output negatives", "", f"{out['negatives']:,}")
    table.add_row("rows without negatives", "", f"{out['rows_without_negatives']:,}")
    table.add_section()
    for name, summ in stats["scores"].items():
        if summ["count"]:
            cell = f"mean {summ['mean']:.4f}  q05 {summ['q05']:.4f}  q50 {summ['q50']:.4f}  q95 {summ['q95']:.4f}"
        else:
            cell = "-"
        table.add_row(f"{name} scores", f"n={summ['count']:,}", cell)
    return table


# ---- small helpers ---------------------------------------------------------------------------
def _ragged(values: Any, rows: Any, n: int) -> list[list]:
    """Split a flat column into one list per output row (rows are sorted, 0..n-1)."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    counts = np.bincount(rows, minlength=n)
    values = list(values)
    flat = [values[i] for i in order]
    bounds = np.r_[0, np.cumsum(counts)]
    return [flat[bounds[i]:bounds[i + 1]] for i in range(n)]


def _nan_to_none(values: pd.Series) -> list[float | None]:
    """float32 scores as the shortest decimal that round-trips (0.9, not 0.8999999762), NaN -> None."""
    x = values.to_numpy(np.float32)
    return [None if np.isnan(v) else float(str(v)) for v in x]
