"""The comparison's table from its units: quality over seeds, paired tests and bootstrap intervals against
the base model and against the best row, queries kept, and each row's cost.

The best row is the one with the highest mean **dev** NDCG@10 among the rows a recipe can reproduce
(:attr:`~hardneg.compare.strategies.Strategy.recipe`); the test figures are read, never chosen on.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from hardneg.evaluate import format_p, holm, paired_randomization_test
from hardneg.precision import train_label

__all__: list[str] = []  # internal: import from hardneg.compare

BOOTSTRAP = 2000


def per_query(units: Sequence[Mapping[str, Any]], split: str = "test", metric: str = "ndcg@10") -> np.ndarray:
    """(seeds, queries) per-query values of one row (the same queries, in the same order, for every seed);
    ``split`` "hybrid" reads the row's ``hybrid(bm25+row)`` on test."""
    part = (lambda u: u["metrics"]["hybrid"]["test"]) if split == "hybrid" else (lambda u: u["metrics"][split])
    first = part(units[0])["query_ids"]
    if any(part(u)["query_ids"] != first for u in units):
        raise ValueError(f"the units of {units[0]['row']} rank different {split} queries")
    return np.array([part(u)[metric] for u in units], dtype=np.float64)


def best_row(units: Mapping[str, Sequence[Mapping[str, Any]]], candidates: Sequence[str]) -> str:
    """The row with the highest mean dev NDCG@10 among ``candidates`` (else among all rows); the first of equals."""
    pool = [r for r in units if r in set(candidates)] or list(units)
    return max(pool, key=lambda r: float(per_query(units[r], "dev").mean()))


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n: int = BOOTSTRAP, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(a) - mean(b) resampling queries (shared) and each row's seeds."""
    rng = np.random.default_rng(seed)
    q = a.shape[1]
    diffs = np.empty(n)
    for i in range(n):
        qs = rng.integers(0, q, q)
        sa, sb = rng.integers(0, a.shape[0], a.shape[0]), rng.integers(0, b.shape[0], b.shape[0])
        diffs[i] = a[np.ix_(sa, qs)].mean() - b[np.ix_(sb, qs)].mean()
    lo, hi = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def build_table(units: Mapping[str, Sequence[Mapping[str, Any]]], recipe_rows: Sequence[str],
                clean: Sequence[str] | None, *, n_resamples: int, seed: int = 0,
                drop_warning: float = 0.2, rrf_k_grid: Sequence[int] | None = None) -> dict[str, Any]:
    """Every row's figures (JSON-ready) and the best row (chosen on dev); with ``rrf_k_grid``, also each
    dense row's ``hybrid(bm25+row)`` (:func:`hybrid_columns`)."""
    best = best_row(units, recipe_rows)
    test = {r: per_query(u) for r, u in units.items()}
    qids = units[next(iter(units))][0]["metrics"]["test"]["query_ids"]
    clean_pos = None if clean is None else np.array([i for i, q in enumerate(qids) if q in set(clean)], dtype=int)
    rows = []
    for row, us in units.items():
        x = test[row]
        seed_means = x.mean(axis=1)
        entry = {"row": row, "seeds": len(us), "ndcg@10": float(seed_means.mean()),
                 "ndcg@10_sd": float(seed_means.std(ddof=1)) if len(us) > 1 else 0.0,
                 "dev ndcg@10": float(per_query(us, "dev").mean()),
                 "recall@100": float(per_query(us, "test", "recall@100").mean()),
                 "mrr@10": float(per_query(us, "test", "mrr@10").mean()),
                 "ndcg@10 no hubs": _nohub(us),
                 "ndcg@10 clean": float(x[:, clean_pos].mean()) if clean_pos is not None and clean_pos.size else None,
                 **_cost(us, drop_warning)}
        for ref, name in (("base", "vs base"), (best, "vs best")):
            if ref in test and ref != row:
                p = paired_randomization_test(x.mean(axis=0), test[ref].mean(axis=0), n_resamples, seed)
                entry[name] = {"ref": ref, "diff": float(x.mean() - test[ref].mean()), "p": p,
                               "ci": list(bootstrap_diff(x, test[ref], seed=seed))}
        rows.append(entry)
    if rrf_k_grid is not None:
        hybrid_columns(units, rows, rrf_k_grid, n_resamples, seed)
    return {"best": best, "best_dev_ndcg@10": next(r["dev ndcg@10"] for r in rows if r["row"] == best),
            "test_queries": len(qids), "clean_queries": None if clean_pos is None else int(clean_pos.size),
            "n_resamples": n_resamples, "rows": rows}


def hybrid_columns(units: Mapping[str, Sequence[Mapping[str, Any]]], rows: list[dict[str, Any]],
                   grid: Sequence[int], n_resamples: int, seed: int) -> None:
    """Each dense row's ``hybrid(bm25+row)`` test NDCG@10 (RRF k chosen on dev per unit) and its paired
    difference from ``hybrid(bm25+base)`` (the free hybrid), the p-values Holm-corrected across the rows.
    A unit stored without a hybrid, or with another k grid, leaves its row's cells empty (None)."""
    fused = {r: per_query(us, "hybrid") for r, us in units.items()
             if all(u["metrics"].get("hybrid", {}).get("rrf_k_grid") == list(grid) for u in us)}
    for entry in rows:
        x = fused.get(entry["row"])
        entry["hybrid ndcg@10"] = None if x is None else float(x.mean())
        entry["hybrid rrf_k"] = None if x is None else [u["metrics"]["hybrid"]["rrf_k"] for u in units[entry["row"]]]
    ref = fused.get("base")
    tested = [e for e in rows if ref is not None and e["row"] != "base" and e["row"] in fused]
    raw = [paired_randomization_test(fused[e["row"]].mean(axis=0), ref.mean(axis=0), n_resamples, seed)
           for e in tested]
    for e, p_raw, p in zip(tested, raw, holm(raw)):
        x = fused[e["row"]]
        e["hybrid vs hybrid base"] = {"ref": "hybrid(bm25+base)", "diff": float(x.mean() - ref.mean()), "p": p,
                                      "p_raw": p_raw, "ci": list(bootstrap_diff(x, ref, seed=seed))}


def _nohub(units: Sequence[Mapping[str, Any]]) -> float | None:
    values = [v for u in units for v in u["metrics"]["test"]["nohub"]["ndcg@10"]]
    return float(np.mean(values)) if values else None


def _cost(units: Sequence[Mapping[str, Any]], drop_warning: float) -> dict[str, Any]:
    q = units[0]["queries"]
    dropped = max(u["queries"].get("dropped_share", 0.0) for u in units)
    t = [u.get("timing", {}) for u in units]
    return {"queries kept": min(u["queries"].get("kept", q["train"]) for u in units), "train queries": q["train"],
            "dropped_share": dropped, "warning": dropped > drop_warning,
            "mine s": float(np.mean([x.get("mine_seconds", 0.0) for x in t])),
            "train s": float(np.mean([x.get("train_seconds", 0.0) for x in t])),
            "encoded": int(units[0]["cost"]["encoded_mining"] + units[0]["cost"]["encoded_training"]),
            "cpu": units[0]["cpu"], "precision": train_label(units[0]["precision"]["train"])}


def format_table(table: Mapping[str, Any]) -> str:
    """The table as Markdown (``table.md``, and the report's)."""
    head = ("| row | NDCG@10 (test) | dev NDCG@10 | Recall@100 | MRR@10 | NDCG@10 no hubs | NDCG@10 clean "
            "| vs base: diff [95% CI], p | vs best: diff [95% CI], p | hybrid(bm25+row) NDCG@10 "
            "| hybrid vs hybrid(bm25+base): diff [95% CI], Holm p | queries kept | mine s | train s | encoded "
            "| CPU / precision |")
    lines = [head, "|" + "---|" * 16]
    n = table["n_resamples"]
    for r in table["rows"]:
        sd = f" ± {r['ndcg@10_sd']:.4f}" if r["seeds"] > 1 else ""
        mark = " (best on dev)" if r["row"] == table["best"] else ""
        kept = f"{r['queries kept']}/{r['train queries']}" + (f" ⚠ {r['dropped_share']:.0%} dropped"
                                                              if r["warning"] else "")
        lines.append(f"| {r['row']}{mark} | {r['ndcg@10']:.4f}{sd} ({r['seeds']} seeds) | {r['dev ndcg@10']:.4f} "
                     f"| {r['recall@100']:.4f} | {r['mrr@10']:.4f} | {_f(r['ndcg@10 no hubs'])} "
                     f"| {_f(r['ndcg@10 clean'])} | {_vs(r.get('vs base'), n)} | {_vs(r.get('vs best'), n)} "
                     f"| {_f(r.get('hybrid ndcg@10'))} | {_vs(r.get('hybrid vs hybrid base'), n)} "
                     f"| {kept} | {r['mine s']:.1f} | {r['train s']:.1f} | {r['encoded']:,} "
                     f"| {r['cpu']} / {r['precision']} |")
    clean = "n/a" if table["clean_queries"] is None else table["clean_queries"]
    lines.append(f"\n{table['test_queries']} test queries ({clean} clean: no positive was a train positive). "
                 f"Best row chosen on dev NDCG@10 among the rows a recipe reproduces: {table['best']}. p: paired "
                 f"randomization test ({n} sign flips) on per-query NDCG@10 averaged over seeds; intervals: "
                 "bootstrap over queries and seeds. hybrid(bm25+row): reciprocal rank fusion of BM25 and the row's "
                 "model, RRF k chosen on dev per unit; its p-values vs hybrid(bm25+base) are Holm-corrected across "
                 "the rows; n/a: a unit stored without it (or with another k grid).")
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _vs(v: Mapping[str, Any] | None, n: int) -> str:
    if v is None:
        return "-"
    return f"{v['diff']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}], p {format_p(v['p'], n)}"
