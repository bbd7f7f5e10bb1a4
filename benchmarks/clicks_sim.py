"""Simulate a position-biased click log from qrels over BM25 rankings (issue 7, item 5).

The log stands in for a real search log when measuring how much of the qrels-trained lift
positives from clicks recover: simulate from SciFact's *train* qrels, build positives with
`hardneg clicks`, fine-tune on them, evaluate on SciFact's untouched *test* qrels.

Click model: the position-based model (PBM; Craswell et al., 2008), in the parametrisation
Joachims, Swaminathan & Schnabel (2017, "Unbiased learning-to-rank with biased feedback") use:

    P(click on d at rank r) = P(examine r) x P(click | examined, d)
    P(examine r)            = (1 / r) ** eta                         eta        = 1.0
    P(click | examined, d)  = click_rel    if qrels grade(d) > 0     click_rel  = 0.9
                              click_nonrel otherwise (noise clicks)  click_nonrel = 0.1
    dwell | click           ~ LogNormal(median 60 s, sigma 0.5) for relevant docs,
                              LogNormal(median  8 s, sigma 0.8) for non-relevant docs

Every training query gets ``impressions`` impressions (default 10) of BM25's top ``top_k``
(default 10; bm25s, Lucene parameters, title + text): a fixed ranking, as one production
ranker would show. A relevant document BM25 ranks below ``top_k`` can never be clicked, so
click positives are bounded by BM25's recall@top_k; the summary reports that bound. Queries
keep their qrels ids (``query_id``), so a model trained on the click folder is evaluated on
the original test split directly. Deterministic for a given ``--seed``.

    python benchmarks/clicks_sim.py --data ../shared/data/scifact --out out/clicks/log.jsonl
    hardneg clicks out/clicks/log.jsonl --corpus ../shared/data/scifact --out out/clicks/beir --min-dwell 30

The summary (printed, and ``sim.json`` beside the log) gives the CTR by position and, for a
few click policies, the precision and recall of click positives against the train qrels.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hardneg.positives.clicklog import read_click_log
from hardneg.positives.clicks import ClickPolicy, click_positives, position_bias
from hardneg.data import load_dataset
from hardneg.files import atomic_write_json, atomic_write_text
from hardneg.retrieve.bm25 import BM25Retriever


@dataclass(frozen=True)
class ClickModel:
    """Parameters of the position-based click model (see the module doc)."""

    eta: float = 1.0
    click_rel: float = 0.9
    click_nonrel: float = 0.1
    dwell_rel_median: float = 60.0
    dwell_rel_sigma: float = 0.5
    dwell_nonrel_median: float = 8.0
    dwell_nonrel_sigma: float = 0.8
    impressions: int = 10
    top_k: int = 10
    seed: int = 0

    def examine(self, ranks: np.ndarray) -> np.ndarray:
        return (1.0 / ranks) ** self.eta


def simulate(ds, split: str, model: ClickModel) -> list[dict]:
    """One record per impression, in query order then impression order."""
    positives = ds.positives(split)
    qids = list(positives)
    bm25 = BM25Retriever(ds.doc_ids, ds.doc_texts())
    ranking = bm25.search(qids, [ds.queries[q] for q in qids], model.top_k)
    rng = np.random.default_rng(model.seed)
    ranks = np.arange(1, ranking.k + 1)
    p_exam = model.examine(ranks)
    records = []
    for qi, qid in enumerate(qids):
        shown = [ds.doc_ids[i] for i in ranking.indices[qi]]
        rel = np.array([d in set(positives[qid]) for d in shown])
        p_click = p_exam * np.where(rel, model.click_rel, model.click_nonrel)
        for m in range(model.impressions):
            clicked = rng.random(len(shown)) < p_click
            median = np.where(rel, model.dwell_rel_median, model.dwell_nonrel_median)
            sigma = np.where(rel, model.dwell_rel_sigma, model.dwell_nonrel_sigma)
            dwell = np.exp(np.log(median) + sigma * rng.standard_normal(len(shown)))
            order = np.flatnonzero(clicked)  # users click top-down in the PBM
            records.append({
                "query": ds.queries[qid], "query_id": qid, "shown": shown,
                "clicked": [shown[i] for i in order], "dwell": [round(float(dwell[i]), 1) for i in order],
                "session": f"s{qi}-{m}", "timestamp": 1_700_000_000 + 60 * len(records),
            })
    return records


def summarize(log_path: Path, ds, split: str, model: ClickModel) -> dict:
    """CTR by position, BM25's recall bound, precision/recall of click positives vs the qrels."""
    log = read_click_log(log_path, set(ds.doc_ids))
    truth = {(q, d) for q, docs in ds.positives(split).items() for d in docs}
    shown = set(zip(log.events["query_id"], log.events["doc_id"]))
    policies = {"all clicks": ClickPolicy(), "dwell >= 30 s": ClickPolicy(min_dwell=30),
                "last click": ClickPolicy(last_click_only=True),
                "dwell >= 30 s, >= 2 clicks": ClickPolicy(min_dwell=30, min_clicks=2)}
    rows = []
    for name, policy in policies.items():
        pos, _ = click_positives(log, policy)
        got = {(q, d) for q, docs in pos.items() for d in docs}
        hit = len(got & truth)
        rows.append({"policy": name, "positives": len(got), "precision": round(hit / max(len(got), 1), 4),
                     "recall": round(hit / len(truth), 4), "queries": len(pos)})
    bias = position_bias(log)
    return {"model": asdict(model), "split": split, "impressions": log.n_impressions, "queries": len(log.queries),
            "clicks": int(log.events["clicked"].sum()), "qrels_pairs": len(truth),
            "qrels_pairs_shown": len(truth & shown), "recall_bound": round(len(truth & shown) / len(truth), 4),
            "policies": rows, "position_bias": json.loads(bias.round(4).to_json(orient="records"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/scifact")
    ap.add_argument("--out", type=Path, required=True, help="the log (JSONL); sim.json is written beside it")
    ap.add_argument("--split", default="train", help="qrels split simulated (keep test for evaluation)")
    defaults = ClickModel()
    for name, value in asdict(defaults).items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = ap.parse_args()
    model = ClickModel(**{k: getattr(args, k) for k in asdict(defaults)})
    ds = load_dataset(args.data)
    records = simulate(ds, args.split, model)
    atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    summary = summarize(args.out, ds, args.split, model)
    atomic_write_json(args.out.with_name("sim.json"), summary)
    print(f"{summary['impressions']:,} impressions of {summary['queries']:,} queries, {summary['clicks']:,} clicks "
          f"-> {args.out}")
    print("CTR by position: " + "  ".join(f"{r['position']}:{r['ctr']:.3f}" for r in summary["position_bias"]))
    print(f"qrels pairs in BM25's top {model.top_k} (the recall bound): {summary['qrels_pairs_shown']}/"
          f"{summary['qrels_pairs']} ({summary['recall_bound']:.3f})")
    print(f"{'policy':28} {'positives':>9} {'precision':>9} {'recall':>7}")
    for r in summary["policies"]:
        print(f"{r['policy']:28} {r['positives']:9} {r['precision']:9.3f} {r['recall']:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
