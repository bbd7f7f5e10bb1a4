"""What :func:`hardneg.select.select` returns: :class:`MinedSet`, the chosen negatives with
their provenance as flat tables."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from hardneg.errors import HardnegError

__all__: list[str] = []  # internal: import from hardneg.select


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
