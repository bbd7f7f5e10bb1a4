"""Search at scale on precomputed vectors: exact vs faiss flat, IVF, HNSW and IVF-SQ8.

A synthetic corpus of N unit vectors (default 1,000,000 x 384, stored as ``.npy`` and read
memory-mapped; no encoding) and Q queries from the same distribution: each vector is a point of
a Gaussian mixture in a low-dimensional latent space (``--clusters`` centres in ``--latent``
dimensions), projected to ``--dim`` dimensions with a little isotropic noise, then normalised.
Neighbourhoods are continuous, so a query's top-100 spans several clusters and the ANN indexes
have real work to do.

Every step runs in its own subprocess (so its memory is its own) through hardneg's own code:
``exact`` is :func:`hardneg.retrieve.search.exact_topk` over the memmap; the index kinds are
:func:`hardneg.retrieve.ann.build_index` (which also measures recall@depth on a 200-query sample
and tunes nprobe / efSearch on another 200; "recall check s" is that cost) followed by a search
of all Q queries. Per row: build seconds, queries/s, recall@depth against exact search on the
first ``--recall-queries`` queries, and peak anonymous RSS (``RssAnon`` sampled every 20 ms from
``/proc/self/status``: memory-mapped corpus pages are file-backed and do not count, while an
index's own copy of the vectors does) with its ratio to the stored embedding matrix.

Exact search and faiss flat are timed on the ``--recall-queries`` queries only (they cost the
same per query); the ANN rows on all Q. Targets (issue 6): recall@100 >= 0.95 at >= 5x the
queries/s of exact search; RssAnon <= 1.5x the matrix for exact search.

    python benchmarks/scale.py                               # 1M x 384, 10k queries (long: HNSW builds single-threaded)
    python benchmarks/scale.py --docs 50000 --queries 1000   # a smoke test in about a minute
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

KINDS = ("exact", "faiss", "ivf", "hnsw", "ivf-sq8")
BLOCK = 65_536


# ---- memory sampling ---------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakRssAnon:
    """Samples RssAnon in a thread; ``peak_mb`` is the largest value seen (including the start)."""

    def __init__(self, interval: float = 0.02):
        self.interval, self._stop = interval, threading.Event()
        self.start_kb = self.peak_kb = _status_kb("RssAnon")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRssAnon":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024

    @property
    def start_mb(self) -> float:
        return self.start_kb / 1024


# ---- data ------------------------------------------------------------------------------------------
def make_vectors(path: Path, n: int, dim: int, latent: int, n_clusters: int, seed: int, dtype: str) -> None:
    """Write n clustered unit vectors to ``path`` (.npy) block by block (memory: one block)."""
    rng = np.random.default_rng(0)  # the mixture is shared by corpus and queries
    centres = rng.standard_normal((n_clusters, latent))
    proj = rng.standard_normal((latent, dim)) / np.sqrt(latent)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n, dim))
    draw = np.random.default_rng(seed)
    for s in range(0, n, BLOCK):
        m = min(BLOCK, n - s)
        z = centres[draw.integers(0, n_clusters, m)] + 0.7 * draw.standard_normal((m, latent))
        x = z @ proj + 0.25 * draw.standard_normal((m, dim))
        out[s : s + m] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)
    out.flush()
    del out


def step_prepare(args, work: Path) -> dict:
    start = time.perf_counter()
    dtype = "float16" if args.float16 else "float32"
    make_vectors(work / "corpus.npy", args.docs, args.dim, args.latent, args.clusters, seed=1, dtype=dtype)
    make_vectors(work / "queries.npy", args.queries, args.dim, args.latent, args.clusters, seed=2, dtype="float32")
    return {"seconds": time.perf_counter() - start}


# ---- steps -----------------------------------------------------------------------------------------
def _load(work: Path):
    corpus = np.load(work / "corpus.npy", mmap_mode="r")
    queries = np.load(work / "queries.npy", mmap_mode="r")
    return corpus, queries


def step_exact(args, work: Path) -> dict:
    from hardneg.retrieve.search import exact_topk

    corpus, queries = _load(work)
    q = np.ascontiguousarray(queries[: args.recall_queries])
    with PeakRssAnon() as mem:
        start = time.perf_counter()
        idx, _ = exact_topk(q, corpus, args.depth)
        seconds = time.perf_counter() - start
    np.save(work / "truth.npy", idx)
    return {"kind": "exact", "params": {}, "build_s": 0.0, "recall_check_s": 0.0, "qps": len(q) / seconds,
            "searched": len(q), "recall": 1.0, "build_recall": None, "peak_anon_mb": mem.peak_mb,
            "start_anon_mb": mem.start_mb}


def step_index(args, work: Path, kind: str) -> dict:
    from hardneg.retrieve.ann import SearchConfig, build_index, recall_at_k

    corpus, queries = _load(work)
    truth = np.load(work / "truth.npy")
    searched = queries[: args.recall_queries] if kind == "faiss" else queries
    with PeakRssAnon() as mem:
        index, info = build_index(corpus, queries, args.depth, SearchConfig(kind=kind, seed=args.seed))
        start = time.perf_counter()
        idx, _ = index.search(np.ascontiguousarray(searched), args.depth)
        seconds = time.perf_counter() - start
    return {"kind": kind, "params": info.params, "build_s": info.build_seconds, "recall_check_s": info.recall_seconds,
            "qps": len(searched) / seconds, "searched": len(searched),
            "recall": recall_at_k(idx[: len(truth)], truth), "build_recall": info.recall_at_depth,
            "peak_anon_mb": mem.peak_mb, "start_anon_mb": mem.start_mb}


def run_step(name: str, argv: list[str], work: Path, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env |= {k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    cmd = [sys.executable, __file__, *argv, "--step", name, "--work", str(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"step {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(rows: list[dict], args, matrix_mb: float) -> None:
    exact = next((r for r in rows if r["kind"] == "exact"), None)
    dtype = "float16" if args.float16 else "float32"
    print(f"\n{args.docs:,} x {args.dim} {dtype} corpus ({matrix_mb:.0f} MB memmapped .npy), {args.queries:,} "
          f"queries, depth {args.depth}; recall vs exact on {args.recall_queries:,} queries; "
          f"threads: {args.threads or os.cpu_count()}\n")
    print("| search | params | build s | recall check s | queries/s | x exact | recall@%d | at build | "
          "peak RssAnon MB (at start) | x matrix |" % args.depth)
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        speed = f"{r['qps'] / exact['qps']:.1f}" if exact else "-"
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        built = "-" if r["build_recall"] is None else f"{r['build_recall']:.3f}"
        print(f"| {r['kind']} | {params} | {r['build_s']:.1f} | {r['recall_check_s']:.1f} | {r['qps']:.0f} | {speed} | "
              f"{r['recall']:.3f} | {built} | {r['peak_anon_mb']:.0f} ({r['start_anon_mb']:.0f}) | "
              f"{r['peak_anon_mb'] / matrix_mb:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--latent", type=int, default=32, help="latent dimensions of the mixture")
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--recall-queries", type=int, default=1000, help="queries with exact ground truth")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of " + ",".join(KINDS))
    ap.add_argument("--float16", action="store_true", help="store the corpus as float16")
    ap.add_argument("--threads", type=int, default=None, help="OpenMP/BLAS threads per step (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        out = step_prepare(args, args.work) if args.step == "prepare" else (
            step_exact(args, args.work) if args.step == "exact" else step_index(args, args.work, args.step))
        print(json.dumps(out | {"vm_hwm_mb": _status_kb("VmHWM") / 1024}))
        return 0
    args.recall_queries = min(args.recall_queries, args.queries)
    work = args.work or Path(tempfile.mkdtemp(prefix="hardneg-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    argv = sys.argv[1:]  # the step's own --work, appended later, wins
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if "exact" not in kinds:
        kinds.insert(0, "exact")  # the ground truth every recall is measured against
    prep = run_step("prepare", argv, work, args.threads)
    print(f"prepared {args.docs:,} + {args.queries:,} vectors in {prep['seconds']:.1f}s under {work}", file=sys.stderr)
    matrix_mb = (work / "corpus.npy").stat().st_size / 2**20
    rows = []
    for kind in kinds:
        r = run_step(kind, argv, work, args.threads)
        rows.append(r)
        print(f"  {kind:8} build {r['build_s']:7.1f}s  {r['qps']:9.0f} q/s  recall {r['recall']:.3f}  "
              f"RssAnon {r['peak_anon_mb']:7.0f} MB", file=sys.stderr, flush=True)
    report(rows, args, matrix_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
