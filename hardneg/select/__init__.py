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
   ``s <= percent * pos``). ``pos`` is the query's highest-scoring positive (``pos_ref="max"``,
   the default), its lowest (``"min"``: on queries with dozens of positives the lowest scores
   below almost every candidate), the ``pos_quantile`` of its positives' scores
   (``"quantile"``) or, with ``pos_ref="per-pair"``, each positive in turn: one output row per
   (query, positive), each filtered against its own positive. With one positive they agree. ``percent`` uses
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

The parts: :mod:`~hardneg.select.policy` (the policy), :mod:`~hardneg.select.samplers`,
:mod:`~hardneg.select.stages` (the stages above), :mod:`~hardneg.select.mined` (the result),
:mod:`~hardneg.select.decisions` (the decision log), :mod:`~hardneg.select.stats`. Import
from ``hardneg.select``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from hardneg.candidates import CandidateSet
from hardneg.errors import HardnegError
from hardneg.select import samplers
from hardneg.select.decisions import Decisions, _decision_log, _decisions_table, read_decisions, write_decisions
from hardneg.select.mined import MinedSet
from hardneg.select.policy import OnShort, PosRef, SelectionPolicy
from hardneg.select.samplers import Sampler
from hardneg.select.stages import (REASONS, _Arrays, _candidate_picks, _filter, _FilterTrace, _handle_short,
                                   _negatives_table,
                                   _OutputUnits, _positives_table, _random_picks, _sample)
from hardneg.select.stats import _stats

__all__ = ["Decisions", "MinedSet", "OnShort", "PosRef", "Sampler", "SelectionPolicy", "read_decisions", "select",
           "write_decisions"]


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
    units = _OutputUnits.build(arr, policy.pos_ref, policy.pos_quantile, policy.pos_top)
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
    promoted = np.flatnonzero(trace.row_code == REASONS.index("promoted")) if policy.promotes else None
    positives = _positives_table(arr, units, row_of_unit, promoted)
    negatives = _negatives_table(arr, units, picks, row_of_unit)
    mined = MinedSet(out_rows, positives, negatives, {}, meta,
                     _decisions=lambda: _decisions_table(arr, units, trace, picks),
                     _log=lambda: _decision_log(arr, units, trace, picks, row_of_unit, out_rows, negatives))
    mined.stats = _stats(arr, units, rows, mined, trace, policy)
    return mined
