"""Reproduce published SciFact test NDCG@10: BM25 (bm25s 0.680 / Pyserini 0.6789) and the bundled
all-MiniLM-L6-v2 (MTEB 0.6451), through the same `hardneg eval` path users run; then the same
eval again on the warm embedding cache. Prints a table: cold vs warm wall time.

    python benchmarks/reproduce_scifact.py [--data ../shared/data/scifact] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PUBLISHED = {"bm25": 0.679, "dense": 0.645}
TOLERANCE = 0.005


def run_eval(data: Path, out: Path, cache: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hardneg.cli", "eval", "--data", str(data), "--split", "test",
                    "-r", "bm25", "-r", "dense", "--out", str(out), "--cache-dir", str(cache)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/scifact")
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder (cold)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hardneg-bench-"))
    cache = args.cache_dir or tmp / "cache"
    cold = run_eval(args.data, tmp / "cold", cache)
    warm = run_eval(args.data, tmp / "warm", cache)
    metrics = json.loads((tmp / "cold" / "metrics.json").read_text())
    ok = True
    print(f"{'system':8} {'NDCG@10':>8} {'published':>9} {'within':>7}")
    for system, ref in PUBLISHED.items():
        got = metrics[system]["ndcg@10"]
        within = abs(got - ref) <= TOLERANCE
        ok &= within
        print(f"{system:8} {got:8.4f} {ref:9.3f} {'yes' if within else 'NO':>7}")
    print(f"\nwall time of `hardneg eval` (bm25 + dense, 5,183 docs, 300 queries): "
          f"cold {cold:.1f}s, warm {warm:.1f}s ({cold / warm:.1f}x)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
