"""Does bf16 training cost quality? fp32 vs bf16-autocast training at the default settings, 3 seeds.

    python benchmarks/bf16_quality.py                 # trains what is missing (resumes per unit)
    python benchmarks/bf16_quality.py --table-only    # the table from the stored results

Judged on HELD-OUT TRAIN QUERIES, never on test: 200 SciFact train queries (seeded draw, the
same for every unit) are left out of training and ranked against the full corpus. Every unit
trains the bundled MiniLM on the other train queries' negatives (``hardneg mine`` defaults:
dense, window 10:100, percent 0.95, top-7) with every ``hardneg train`` default (loss auto,
batch 32, k 7, 256 tokens, lr 5e-5, one epoch) except ``mixed_precision`` (``no`` or ``bf16``)
and the seed, and without in-training evaluation (the last step is kept: choosing a checkpoint
on the judged queries would bias the comparison). Evaluation always encodes in fp32, so only
the training precision differs.

A unit is one (precision, seed); its per-query NDCG@10 is stored in
``benchmarks/results/bf16_quality/<cpu>/<precision>-s<seed>.json``, so an interrupted run resumes
and the table grows across sessions. The table gives the mean per precision and the 90%
percentile bootstrap interval of fp32 minus bf16 NDCG@10 over (query, seed) pairs of the
seeds both precisions have; the claim "bf16 costs no quality" needs it inside +-0.005.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from train_memory import DATA, RESULTS as _MEM_RESULTS, _write, cpu_slug, negatives

RESULTS = _MEM_RESULTS.parent / "bf16_quality"
HELD_OUT = 200
#: bf16 first, then fp32, seed by seed: every finished pair narrows the interval
UNITS = [(p, s) for s in (0, 1, 2) for p in ("bf16", "no")]


def held_out(rows: list[dict], n: int = HELD_OUT) -> list[str]:
    qids = sorted({r["query_id"] for r in rows})
    rng = np.random.default_rng(0)
    return [qids[i] for i in sorted(rng.choice(len(qids), size=n, replace=False))]


def run_unit(precision: str, seed: int, work: Path) -> dict:
    from hardneg.data import load_dataset
    from hardneg.encode import Encoder, EncoderConfig
    from hardneg.metrics import per_query_scores
    from hardneg.retrieve.dense import DenseRetriever
    from hardneg.train import TrainConfig, read_negatives, train

    ds = load_dataset(DATA)
    rows, meta = read_negatives(negatives(work, DATA))
    judged = held_out(rows)
    skip = set(judged)
    config = TrainConfig(mixed_precision=precision, seed=seed, holdout_fraction=0.0, show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train(ds, [r for r in rows if r["query_id"] not in skip], None, Path(tmp) / "m", config, meta=meta)
        wall = time.perf_counter() - start
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(Path(tmp) / "m"), device="cpu", local_files_only=True)
    encoder = Encoder(EncoderConfig(precision="fp32"), model=model)
    ranking = DenseRetriever(encoder, ds.doc_ids, ds.doc_texts()).search(judged, [ds.queries[q] for q in judged], 100)
    train_pos = ds.positives("train")
    scores = per_query_scores({q: {d: 1 for d in train_pos[q]} for q in judged}, ranking, ["ndcg@10"])["ndcg@10"]
    return {"precision": precision, "seed": seed, "query_ids": judged, "ndcg@10": [round(float(x), 6) for x in scores],
            "mean_ndcg@10": round(float(scores.mean()), 6),
            "top10": [[ranking.doc_ids[j] for j in row[:10]] for row in ranking.indices],  # benchmarks/verify_results.py
            "train_seconds": round(result.train_seconds, 1),
            "wall_seconds": round(wall, 1), "steps": len(result.step_seconds), "memory": result.memory,
            "median_step_s": float(np.median(result.step_seconds)), "machine": result.machine,
            "training_rows": result.data.n_rows,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def table(folder: Path) -> str:
    units = {(u["precision"], u["seed"]): u for u in (json.loads(p.read_text()) for p in sorted(folder.glob("*.json")))}
    if not units:
        return "no results yet"
    machine = next(iter(units.values()))["machine"]
    lines = [f"CPU: {machine['cpu']} (AMX-BF16: {machine['amx_bf16']}); {HELD_OUT} held-out SciFact train queries",
             "", "| training precision | seeds | NDCG@10 per seed | mean | s / step (median) | train s |",
             "|---|---|---|---|---|---|"]
    for prec, label in (("no", "fp32"), ("bf16", "bf16 autocast")):
        got = sorted((s, u) for (p, s), u in units.items() if p == prec)
        if got:
            per = ", ".join(f"{u['mean_ndcg@10']:.4f}" for _, u in got)
            lines.append(f"| {label} | {len(got)} | {per} | {np.mean([u['mean_ndcg@10'] for _, u in got]):.4f} | "
                         f"{np.mean([u['median_step_s'] for _, u in got]):.1f} | "
                         f"{np.mean([u['train_seconds'] for _, u in got]):.0f} |")
    paired = sorted(s for (p, s) in units if p == "no" and ("bf16", s) in units)
    if paired:
        diff = np.concatenate([np.array(units[("no", s)]["ndcg@10"]) - np.array(units[("bf16", s)]["ndcg@10"])
                               for s in paired])
        lo, hi = _bootstrap90(diff)
        verdict = "inside" if -0.005 <= lo and hi <= 0.005 else "NOT inside"
        lines += ["", f"fp32 - bf16 NDCG@10 over {diff.size} (query, seed) pairs of seeds {paired}: "
                      f"{diff.mean():+.4f}, 90% bootstrap interval [{lo:+.4f}, {hi:+.4f}] ({verdict} +-0.005)"]
    return "\n".join(lines)


def _bootstrap90(diff: np.ndarray, n: int = 10_000) -> tuple[float, float]:
    from scipy.stats import bootstrap

    res = bootstrap((diff,), np.mean, n_resamples=n, confidence_level=0.90, method="percentile",
                    random_state=np.random.default_rng(0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hardneg-bench")
    ap.add_argument("--units", type=int, default=len(UNITS), help="stop after this many new units")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = RESULTS / cpu_slug()
    done = 0
    if not args.table_only:
        folder.mkdir(parents=True, exist_ok=True)
        for precision, seed in UNITS:
            path = folder / f"{precision}-s{seed}.json"
            if path.is_file() or done >= args.units:
                continue
            print(f"[bf16_quality] training {precision} seed {seed} ...", flush=True)
            _write(path, run_unit(precision, seed, args.work))
            done += 1
            print(table(folder), flush=True)
    print(table(folder))


if __name__ == "__main__":
    main()
