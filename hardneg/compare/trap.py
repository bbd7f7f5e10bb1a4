"""The trap, measured without training: how many of a policy's negatives are positives nobody labelled?

For each selecting row, every multi-positive train query has half its positives hidden (the label
audit's seeded draws, :func:`hardneg.audit._hide`, ``[audit] hide`` / ``draws`` / ``seed``); the policy
then selects on the candidates as if the hidden ones were unlabelled, and the share of its selected
negatives that are hidden positives is counted, overall and per original-rank bucket. A policy that
takes the very top of the ranking falls into the trap; a window and a positive-aware filter avoid it.
Cheap: selection only, on the rows' stored candidates.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from hardneg.audit import BUCKETS, _hide, bucket_of
from hardneg.candidates import CandidateSet, Column
from hardneg.select import SelectionPolicy, select

__all__: list[str] = []  # internal: import from hardneg.compare


def trap_of(cands: CandidateSet, policy: SelectionPolicy, corpus_doc_ids: Sequence[str], hide: float = 0.5,
            draws: int = 5, seed: int = 0, buckets: Sequence[tuple[int, int]] = BUCKETS) -> dict[str, Any]:
    """Per-draw averages of the negatives ``policy`` selects for multi-positive queries and of those
    that are hidden positives, overall and per rank bucket (``unranked``: drawn from outside the list)."""
    table = cands.table.reset_index(drop=True)
    frame = pd.DataFrame({"q": table[Column.QUERY_ID].to_numpy(), "doc": table[Column.DOC_ID].to_numpy(),
                          "pos": table[Column.IS_POSITIVE].to_numpy(bool)})
    n_pos = frame[frame["pos"]].groupby("q").size()
    multi = set(n_pos[n_pos >= 2].index)
    if not multi:
        return {"queries": 0, "note": "no train query has two or more positives"}
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(buckets) + 1, 2))  # the last line: unranked
    for _ in range(draws):
        hidden = _hide(frame, hide, rng)
        t = table.copy()
        t[Column.IS_POSITIVE] = frame["pos"].to_numpy() & ~hidden
        negs = select(CandidateSet(t, cands.meta), policy, corpus_doc_ids=corpus_doc_ids).negatives
        negs = negs[negs["query_id"].isin(multi)]
        hidden_pairs = set(zip(frame["q"][hidden], frame["doc"][hidden]))
        is_hidden = np.array([(q, d) in hidden_pairs for q, d in zip(negs["query_id"], negs["doc_id"])], dtype=bool)
        b = bucket_of(negs["rank"].to_numpy("float64", na_value=np.nan), buckets)
        b = np.where(b < 0, len(buckets), b)
        counts[:, 0] += np.bincount(b, minlength=len(buckets) + 1)
        counts[:, 1] += np.bincount(b[is_hidden], minlength=len(buckets) + 1)
    counts /= draws
    names = [f"{lo}-{hi}" for lo, hi in buckets] + ["unranked"]
    total = counts.sum(axis=0)
    return {"queries": len(multi), "selected": float(total[0]), "hidden": float(total[1]),
            "share": _share(total), "buckets": [{"bucket": n, "selected": float(c[0]), "hidden": float(c[1]),
                                                 "share": _share(c)} for n, c in zip(names, counts) if c[0]]}


def _share(c: np.ndarray) -> float | None:
    return round(float(c[1] / c[0]), 6) if c[0] else None


def format_trap(trap: dict[str, Any]) -> str:
    """The trap table as Markdown: share of selected negatives that are hidden positives, per row and bucket."""
    rows = trap.get("rows") or {}
    if not rows:
        return "No selecting row to measure."
    names = sorted({b["bucket"] for r in rows.values() for b in r.get("buckets", [])}, key=_bucket_order)
    lines = [f"| row | queries | negatives | hidden positives | {' | '.join(names)} |",
             "|---|---|---|---|" + "---|" * len(names)]
    for row, r in rows.items():
        if not r.get("queries"):
            lines.append(f"| {row} | 0 | - | {r.get('note', '')} |" + " |" * len(names))
            continue
        by = {b["bucket"]: b for b in r["buckets"]}
        cells = [_pct(by[n]["share"]) if n in by else "-" for n in names]
        lines.append(f"| {row} | {r['queries']} | {r['selected']:.1f} | {_pct(r['share'])} | {' | '.join(cells)} |")
    return "\n".join(lines) + (f"\n\nHalf ({trap['hide']:g}) of each multi-positive train query's positives hidden, "
                               f"{trap['draws']} seeded draws (seed {trap['seed']}), averaged; per-bucket cells: the "
                               "share of that bucket's selected negatives that are hidden positives.")


def _bucket_order(name: str) -> float:
    """Rank order of a bucket name ("1-5" before "6-10"; "unranked" last), whatever row named it first."""
    return float("inf") if name == "unranked" else int(name.split("-")[0])


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"
