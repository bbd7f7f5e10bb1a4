"""The statistics of a selection (``MinedSet.stats``, ``stats.json``) and their table."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hardneg.select.mined import MinedSet
from hardneg.select.policy import SelectionPolicy
from hardneg.select.stages import _Arrays, _FilterTrace, _OutputUnits

__all__: list[str] = []  # internal: import from hardneg.select


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
        "inconsistent_positives": int(arr.is_pos.sum() - len(units.pos_rows)),  # below pos_top
        "promoted_positives": int(mined.positives["promoted"].sum()),
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
            "gap": summarize(_gaps(mined, units.ref[keep])),
        },
    }


def _gaps(mined: MinedSet, ref_of_row: np.ndarray) -> np.ndarray:
    """Reference positive score (the one the filters compare with, per output row) minus score,
    per selected negative (larger = easier)."""
    neg = mined.negatives
    return ref_of_row[neg["row"].to_numpy(np.int64)] - neg["score"].to_numpy(np.float64)


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
