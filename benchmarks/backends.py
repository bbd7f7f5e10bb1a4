"""Encoder backends side by side on SciFact: passages/s and test NDCG@10 of each, in one run.

Rows (``--rows``, default all): ``torch`` (fp32, the reference), ``onnx`` (ONNX Runtime fp32),
``int8`` (ONNX Runtime, dynamic int8), and the same at fewer passage tokens (``int8@224``, ``torch@128``,
``int8@128``: the other route to speed the issue names). To keep the comparison fair on a
shared machine, the corpus is cut into ``--slices`` slices and every backend encodes each slice
in turn (rotating who goes first), so a noisy neighbour slows all of them alike. The one-off ONNX
export is timed apart. Queries are encoded at the model's max length by the same backend.

    python benchmarks/backends.py [--data ../shared/data/scifact] [--rows torch,int8]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["torch", "onnx", "int8", "int8@224", "int8@192", "torch@128", "int8@128"]


def parse_row(row: str) -> tuple[str, int | None]:
    backend, _, length = row.partition("@")
    return backend, int(length) if length else None


def main() -> int:
    from hardneg.data import load_dataset
    from hardneg.encode import Encoder, EncoderConfig
    from hardneg.evaluate import format_p, paired_randomization_test
    from hardneg.metrics import per_query_scores
    from hardneg.retrieve.base import Ranking
    from hardneg.retrieve.search import exact_topk

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    ap.add_argument("--model", default=None, help="model folder (default: the bundled MiniLM)")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--max-docs", type=int, default=None, help="encode only a sample (timing only; no NDCG)")
    args = ap.parse_args()
    rows = args.rows.split(",")
    ds = load_dataset(args.data)
    texts = ds.doc_texts()
    n = len(texts) if args.max_docs is None else min(args.max_docs, len(texts))
    qids = list(ds.positives("test"))
    queries = [ds.queries[q] for q in qids]
    tmp = Path(tempfile.mkdtemp(prefix="hardneg-backends-"))

    encoders, export_s = {}, {}
    for row in rows:
        backend, length = parse_row(row)
        t = time.perf_counter()
        enc = Encoder(EncoderConfig(model=args.model, backend=backend, passage_max_length=length), cache=tmp)
        if backend != "torch":
            enc._onnx_runner()  # export + session now, timed apart from encoding
        export_s[row] = time.perf_counter() - t
        enc.cache = None  # time the model, never a cache hit
        encoders[row] = enc
        print(f"{row}: ready in {export_s[row]:.1f}s", file=sys.stderr, flush=True)

    bounds = np.linspace(0, n, args.slices + 1).astype(int)
    parts = {row: [] for row in rows}
    secs = {row: 0.0 for row in rows}
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        order = rows[s % len(rows):] + rows[:s % len(rows)]
        for row in order:
            t = time.perf_counter()
            parts[row].append(encoders[row].encode_passages(texts[a:b]))
            secs[row] += time.perf_counter() - t
        print(f"slice {s + 1}/{args.slices}: " + ", ".join(f"{r} {(b) / secs[r]:.1f}/s" for r in rows),
              file=sys.stderr, flush=True)

    per_query = {}
    if n == len(texts):
        qrels = ds.split_qrels("test")
        for row in rows:
            corpus = np.concatenate(parts[row])
            q = encoders[row].encode_queries(queries)
            idx, sc = exact_topk(q, corpus, 100)
            per_query[row] = per_query_scores(qrels, Ranking(qids, ds.doc_ids, idx, sc), ["ndcg@10"])["ndcg@10"]
    ref = np.concatenate(parts[rows[0]])
    print(f"\nSciFact, {n} passages, {len(qids)} test queries; interleaved over {args.slices} slices\n")
    print("| backend | max tokens | passages/s | speed-up | cosine to first row (min / mean) | NDCG@10 | "
          "Δ NDCG@10 | p vs first row | export s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        backend, length = parse_row(row)
        rate = n / secs[row]
        cos = (np.concatenate(parts[row]).astype(np.float64) * ref).sum(1)
        nd = dp = p = "-"
        if per_query:
            nd = f"{per_query[row].mean():.4f}"
            dp = f"{per_query[row].mean() - per_query[rows[0]].mean():+.4f}"
            p = "-" if row == rows[0] else format_p(paired_randomization_test(per_query[row], per_query[rows[0]]))
        print(f"| {backend} | {length or encoders[row].model_max_length} | {rate:.1f} | "
              f"{secs[rows[0]] / secs[row]:.2f}x | {cos.min():.4f} / {cos.mean():.4f} | {nd} | {dp} | {p} | "
              f"{export_s[row]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
