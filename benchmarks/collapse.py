"""Queries with many positives: which positive-aware rule keeps them, and at what trap cost?

    python benchmarks/collapse.py                 # measures what is missing (resumes per unit)
    python benchmarks/collapse.py --table-only    # the table from the stored results

Issue 18: on NFCorpus (about 43 positives per train query) the default policy, percent 0.95
against the query's LOWEST positive, leaves almost every query without a negative. Each
dataset is mined once with ``hardneg mine`` defaults (dense MiniLM, depth 200) into ``--work``;
a unit is one (dataset, rule), measured without training:

* kept: the share of train queries, and of (query, positive) training rows, whose row has at
  least k = 7 (the default) and k = 3 surviving candidates (per-pair rows count one positive
  each; a per-query row counts all the query's positives);
* trap: :func:`hardneg.audit.selection_trap` (half of every multi-positive query's positives
  hidden, 5 seeded draws; the filters see the visible positives only): the share of selected
  negatives that are hidden positives, overall and per original-rank bucket;
* trap on the queries ``max-0.95`` keeps: the same measurement on one set of queries for every
  rule (a rule that keeps other queries changes the pooled share by its choice of queries too);
* changed: selected (query, doc) negatives the rule ``min-0.95`` (the default before issue 18)
  does not select, and its negatives this rule drops (SciFact must stay nearly unchanged).

Each dataset also gets the labels' curve (``<dataset>-labels.json``): the share of all unlabeled
candidates per rank bucket that are hidden positives.

Results: ``benchmarks/results/collapse/<cpu>/<dataset>-<rule>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from metrics_stress import _commit
from train_memory import RESULTS as _MEM_RESULTS, _write, cpu_slug

RESULTS = _MEM_RESULTS.parent / "collapse"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = ("nfcorpus", "scifact")
OFF = {"window": None, "percent": None}
#: rule name -> SelectionPolicy keywords (window 10:100 and top-7 unless they say otherwise)
RULES = {
    "min-0.95": {"pos_ref": "min"},  # the default before issue 18
    "per-pair-0.95": {"pos_ref": "per-pair"},
    "q0.25-0.95": {"pos_ref": "quantile", "pos_quantile": 0.25},
    "median-0.95": {"pos_ref": "quantile", "pos_quantile": 0.5},
    "median-0.90": {"pos_ref": "quantile", "pos_quantile": 0.5, "percent": 0.9},
    "q0.75-0.95": {"pos_ref": "quantile", "pos_quantile": 0.75},
    "q0.9-0.95": {"pos_ref": "quantile", "pos_quantile": 0.9},
    "max-0.95": {"pos_ref": "max"},  # the default since issue 18 (= quantile 1.0)
    "max-0.90": {"pos_ref": "quantile", "pos_quantile": 1.0, "percent": 0.9},
    "max-0.85": {"pos_ref": "quantile", "pos_quantile": 1.0, "percent": 0.85},
    "max-margin0.05": {"pos_ref": "quantile", "pos_quantile": 1.0, "percent": None, "margin": 0.05},
    "dense-top": {"percent": None},  # window 10:100, no positive-aware filter
    "rank-20-100": {"window": (20, 100), "percent": None},
    "rank-30-100": {"window": (30, 100), "percent": None},
    "rank-50-100": {"window": (50, 100), "percent": None},
    "unfiltered": OFF,  # the top 7 of everything: the trap at its worst
}
BASE = "min-0.95"
#: the trap is also measured on the queries this rule keeps (>= 7 negatives), so that rules that
#: keep different queries are compared on the same ones
PAIRED = "max-0.95"
KS = (7, 3)
TRAP = {"hide": 0.5, "draws": 5, "seed": 0}


def candidates(work: Path, dataset: str):
    """The dataset's train candidates, mined once (the embedding cache makes a rerun cheap)."""
    from hardneg.candidates import CandidateSet

    out = work / f"mine-{dataset}"
    path = out / "candidates.parquet"
    if not path.is_file():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hardneg.cli", "mine", "--data", str(DATA / dataset), "--out", str(out)],
                       check=True)
        (out / "mine_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return CandidateSet.read(path)


def policy_of(rule: str):
    from hardneg.select import SelectionPolicy

    return SelectionPolicy(**RULES[rule])


def kept(cands, mined) -> dict:
    """Queries and (query, positive) rows whose row has at least k surviving candidates, per k."""
    t = cands.table
    n_pos = t.groupby("query_id")["is_positive"].sum()
    per_pair = mined.meta["pos_ref"] == "per-pair"
    rows = mined.rows
    weight = np.ones(len(rows)) if per_pair else n_pos.reindex(rows["query_id"]).to_numpy(float)
    out = {"queries": int((n_pos > 0).sum()), "rows": int(n_pos.sum())}
    for k in KS:
        ok = rows["n_available"].to_numpy() >= k
        out[f"queries>={k}"] = int(rows.loc[ok, "query_id"].nunique())
        out[f"rows>={k}"] = int(weight[ok].sum())
    return out


def _kept_by(cands, policy) -> set:
    from hardneg.select import select

    rows = select(cands, policy).rows
    return set(rows.loc[rows["n_available"] >= KS[0], "query_id"])


def _queries(cands, keep: set):
    from dataclasses import replace

    t = cands.table
    return replace(cands, table=t[t["query_id"].isin(keep)].reset_index(drop=True))


def negative_set(mined) -> set:
    return set(zip(mined.negatives["query_id"], mined.negatives["doc_id"]))


def run_unit(work: Path, dataset: str, rule: str) -> dict:
    from hardneg.audit import selection_trap
    from hardneg.select import SelectionPolicy, select

    cands = candidates(work, dataset)
    start = time.perf_counter()
    policy = policy_of(rule)
    mined = select(cands, policy)
    base = negative_set(select(cands, SelectionPolicy(**RULES[BASE])))
    mine = negative_set(mined)
    select_s = time.perf_counter() - start
    trap = selection_trap(cands, policy, **TRAP)
    paired = selection_trap(_queries(cands, _kept_by(cands, policy_of(PAIRED))), policy, **TRAP)
    return {"dataset": dataset, "rule": rule, "policy": policy.to_dict(), "kept": kept(cands, mined),
            "negatives": len(mined.negatives),
            "changed": {"base": BASE, "added": len(mine - base), "dropped": len(base - mine),
                        "base_negatives": len(base)},
            "trap": trap, "trap_on_paired_queries": {"rule": PAIRED, **paired}, "select_seconds": round(select_s, 2),
            "trap_seconds": round(time.perf_counter() - start - select_s, 2), "cpu": cpu_slug(), "commit": _commit()}


def labels_unit(work: Path, dataset: str) -> dict:
    """The labels' false-negative curve (:func:`hardneg.audit.label_audit`, the trap's hiding):
    the share of ALL unlabeled candidates per rank bucket that are hidden positives, the rate a
    rule that picks blindly within a bucket would see."""
    from hardneg.audit import label_audit

    audit = label_audit(candidates(work, dataset), TRAP["hide"], TRAP["draws"], TRAP["seed"])
    audit.pop("percent_grid")
    return {"dataset": dataset, "rule": "labels", "audit": audit, "cpu": cpu_slug(), "commit": _commit()}


def _curve(unit: dict) -> str:
    return ", ".join(f"{b['bucket']} {_fmt(b['rate'])}" for b in unit["audit"]["buckets"])


def _share(trap: dict, lo: int, hi: int) -> str:
    got = [b for b in trap["buckets"] if lo <= b["lo"] and b["hi"] <= hi]
    sel, hid = sum(b["selected"] for b in got), sum(b["hidden"] for b in got)
    return f"{hid / sel:.3f}" if sel else "-"


def _fmt(share: float | None) -> str:
    return "-" if share is None else f"{share:.3f}"


def table(folder: Path) -> str:
    units = {(u["dataset"], u["rule"]): u for u in (json.loads(p.read_text()) for p in sorted(folder.glob("*.json")))}
    if not units:
        return "no results yet"
    lines = [f"CPU class: {folder.name}; trap: hide {TRAP['hide']}, {TRAP['draws']} draws, multi-positive queries only"]
    for ds in DATASETS:
        got = [units[(ds, r)] for r in RULES if (ds, r) in units]
        if not got:
            continue
        curve = [f"hidden positives among all unlabeled candidates: {_curve(units[(ds, 'labels')])}"
                 ] if (ds, "labels") in units else []
        k0 = got[0]["kept"]
        lines += ["", f"{ds}: {k0['queries']:,} train queries, {k0['rows']:,} (query, positive) rows; trap over "
                      f"{got[0]['trap']['queries']:,} multi-positive queries", *curve, "",
                  "| rule | queries >=7 | rows >=7 | queries >=3 | rows >=3 | trap all | ranks 1-10 | 11-100 | "
                  f"trap on {PAIRED}'s q | trap kept q | negatives | vs {BASE} +/- |", "|---" * 12 + "|"]
        for u in got:
            k, t, c = u["kept"], u["trap"], u["changed"]
            pct = lambda key, tot: f"{k[key] / tot:.1%}"  # noqa: E731
            lines.append(f"| {u['rule']} | {pct('queries>=7', k['queries'])} | {pct('rows>=7', k['rows'])} | "
                         f"{pct('queries>=3', k['queries'])} | {pct('rows>=3', k['rows'])} | "
                         f"{_fmt(t['share'])} | {_share(t, 1, 10)} | {_share(t, 11, 100)} | "
                         f"{_fmt(u['trap_on_paired_queries']['share'])} | {t['kept_queries']:.0f} | "
                         f"{u['negatives']:,} | +{c['added']:,} / -{c['dropped']:,} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hardneg-bench" / "collapse")
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--rules", nargs="*", default=list(RULES), choices=list(RULES))
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = RESULTS / cpu_slug()
    if not args.table_only:
        folder.mkdir(parents=True, exist_ok=True)
        for ds in args.datasets:
            if not (folder / f"{ds}-labels.json").is_file():
                _write(folder / f"{ds}-labels.json", labels_unit(args.work, ds))
            for rule in args.rules:
                path = folder / f"{ds}-{rule}.json"
                if not path.is_file():
                    print(f"[collapse] {ds} {rule} ...", flush=True)
                    _write(path, run_unit(args.work, ds, rule))
    print(table(folder))


if __name__ == "__main__":
    main()
