"""Re-verify the metrics in the committed benchmark results with hardneg's numpy reference.

    python benchmarks/verify_results.py          # one line per result file; exit 1 on any mismatch

Issue 17: a metric is trusted only when an independent computation agrees with it. Per file:

* a unit that stored its top-10 ranking (``top10``) is re-scored with
  :func:`hardneg.metrics.reference_scores` against the dataset's qrels, query by query;
* a unit that stored only per-query NDCG@10 (bf16_quality before issue 17) is checked for what can
  be checked without the model: every value must be an NDCG@10 attainable with that query's number
  of positives (binary gains: some set of hit ranks within 10), and the stored mean must be the
  mean of the stored values;
* `hardneg compare`'s progression units were written after the cross-check landed: every value in
  them passed it when it was computed;
* train_memory, collapse and run_resume units hold no retrieval metric and are listed as such.
"""
from __future__ import annotations

import itertools
import json
import math
import sys

import numpy as np

from train_memory import DATA, RESULTS as _MEM_RESULTS

ROOT = _MEM_RESULTS.parent
TOL = 1e-6  # the units round per-query values to 6 decimals


def attainable_ndcg10(n_positives: int) -> np.ndarray:
    """Every NDCG@10 value binary gains can give a query with ``n_positives`` positives."""
    discounts = [1 / math.log2(r + 1) for r in range(1, 11)]
    ideal = sum(discounts[: min(n_positives, 10)])
    values = {sum(discounts[r] for r in hits) / ideal
              for size in range(min(n_positives, 10) + 1) for hits in itertools.combinations(range(10), size)}
    return np.array(sorted(values))


def check_bf16_unit(unit: dict, train_positives: dict) -> list[str]:
    from hardneg.metrics import reference_scores

    problems, stored = [], np.array(unit["ndcg@10"])
    if len(stored) != len(unit["query_ids"]):
        problems.append(f"{len(stored)} values for {len(unit['query_ids'])} queries")
    if abs(stored.mean() - unit["mean_ndcg@10"]) > TOL:
        problems.append(f"mean_ndcg@10 {unit['mean_ndcg@10']} but the values' mean is {stored.mean():.6f}")
    if "top10" in unit:
        qrels = {q: {d: 1 for d in train_positives[q]} for q in unit["query_ids"]}
        ref = reference_scores(qrels, unit["query_ids"], unit["top10"], ["ndcg@10"])["ndcg@10"]
        bad = np.flatnonzero(np.abs(ref - stored) > TOL)
        problems += [f"query {unit['query_ids'][i]}: stored {stored[i]} but the reference gives {ref[i]:.6f}" for i in bad[:3]]
        return problems
    for q, value in zip(unit["query_ids"], stored):
        grid = attainable_ndcg10(len(train_positives[q]))
        if np.abs(grid - value).min() > TOL:
            problems.append(f"query {q}: NDCG@10 {value} is not attainable with {len(train_positives[q])} positives")
    return problems


def main() -> int:
    from hardneg.data import load_dataset

    train_positives = load_dataset(DATA).positives("train")
    failures = 0
    for path in sorted(ROOT.rglob("*.json")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "bf16_quality":
            unit = json.loads(path.read_text())
            problems = check_bf16_unit(unit, train_positives)
            how = "re-scored from its top-10" if "top10" in unit else "values attainable, mean consistent"
            print(f"{rel}: {'OK' if not problems else 'MISMATCH'} ({len(unit['query_ids'])} queries, {how})")
            for p in problems:
                print(f"  {p}")
            failures += bool(problems)
        elif rel.parts[0] == "metrics_stress":
            continue  # the stress test's units are themselves comparisons with the reference
        elif rel.parts[0] == "progression" and rel.parts[-2] == "units":
            print(f"{rel}: written by hardneg compare through the cross-checked per_query_scores (issue 17)")
        else:
            print(f"{rel}: no retrieval metric")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
