"""Can ranx's metrics be trusted under concurrent processes and cold numba caches? A stress test.

    python benchmarks/metrics_stress.py                  # runs the missing units (resumes per unit)
    python benchmarks/metrics_stress.py --table-only     # the table from the stored results

Issue 17 saw a `hardneg run` write NDCG@10 0.1533 where the truth was 0.8412, once, with exit 0.
ranx compiles its numba kernels per maximum doc-id length into an on-disk cache that numba does
not guard across processes. A unit here is one cold cache (a fresh ``NUMBA_CACHE_DIR``) shared
by two processes started at the same moment, each evaluating rankings whose doc ids have a new
length (so each compiles new signatures into the same cache), then a third process that loads
what they cached and evaluates both id lengths again. Every evaluation is compared, query by
query, with :func:`hardneg.metrics.reference_scores` (numpy, independent of ranx).

Two modes, side by side:

* ``raw``: ranx as hardneg called it before issue 17 (the user's ids, the retriever's scores,
  numba's cache shared, no lock);
* ``hardneg``: :func:`hardneg.metrics.per_query_scores` (fixed-width ids, a file lock, the
  cross-check that raises on a mismatch).

``--forced`` builds the end state the race can leave, by hand: in one cache, an index entry of one
doc-id length pointing at the machine code compiled for another (what two processes adding a
signature to the same kernel at once produce: both pick the same free data-file number, one's
index and the other's code survive; numba's ``IndexDataCacheFile.save``). It then runs ranx on
the swapped length, and hardneg on a cache whose fixed-width entry was swapped the same way.

A run is bad when it crashes or any query's value differs from the reference by more than
:data:`hardneg.metrics.TOLERANCE`. Units are stored in
``benchmarks/results/metrics_stress/<cpu>/<mode>-u<unit>.json``.
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

from train_memory import RESULTS as _MEM_RESULTS, _write, cpu_slug

RESULTS = _MEM_RESULTS.parent / "metrics_stress"
MODES = ("raw", "hardneg")
UNITS = 17  # three processes a unit: 51 runs a mode
N_QUERIES, N_DOCS, DEPTH = 300, 3000, 100


def id_lengths(unit: int) -> tuple[int, int]:
    """Two doc-id lengths no earlier unit used (each unit's cache is cold anyway)."""
    return 6 + 2 * unit, 7 + 2 * unit


def synthetic(length: int, seed: int):
    """Graded qrels (1-7 positives graded 1-2, one judged non-relevant) and a depth-100 ranking with
    distinct scores, most positives placed at random ranks."""
    from hardneg.retrieve.base import Ranking

    rng = np.random.default_rng(seed)
    doc_ids = [f"d{i:0{length - 1}d}" for i in range(N_DOCS)]
    qids = [f"q{i}" for i in range(N_QUERIES)]
    qrels, indices = {}, np.empty((N_QUERIES, DEPTH), dtype=np.int64)
    for i, q in enumerate(qids):
        judged = rng.choice(N_DOCS, size=int(rng.integers(2, 9)), replace=False)
        qrels[q] = {doc_ids[d]: int(rng.integers(1, 3)) for d in judged[1:]} | {doc_ids[judged[0]]: 0}
        row = [d for d in rng.choice(N_DOCS, size=DEPTH + 10, replace=False) if d not in judged][:DEPTH]
        for d in judged:
            if rng.random() < 0.7:
                row[int(rng.integers(DEPTH))] = d
        indices[i] = row
    scores = np.sort(rng.random((N_QUERIES, DEPTH)), axis=1)[:, ::-1] + np.arange(DEPTH, 0, -1)[None, :]
    return qrels, Ranking(qids, doc_ids, indices, scores.astype(np.float32))


def worker(mode: str, lengths: list[int], seed: int) -> None:
    """One process: evaluate a ranking per id length, compare with the reference, print JSON."""
    from hardneg.metrics import METRICS, TOLERANCE, MetricsMismatch, per_query_scores, ranked_lists, reference_scores

    out = []
    for length in lengths:
        qrels, ranking = synthetic(length, seed + length)
        start = time.perf_counter()
        try:
            got = per_query_scores(qrels, ranking) if mode == "hardneg" else _raw_ranx(qrels, ranking)
        except MetricsMismatch as e:
            out.append({"length": length, "refused": str(e)[:300], "seconds": round(time.perf_counter() - start, 1)})
            continue
        ref = reference_scores(qrels, ranking.query_ids, ranked_lists(ranking), METRICS)
        gaps = {m: float(np.abs(got[m] - ref[m]).max()) for m in METRICS}
        bad = int(sum((np.abs(got[m] - ref[m]) > TOLERANCE).sum() for m in METRICS))
        out.append({"length": length, "bad_values": bad, "max_gap": max(gaps.values()),
                    "ndcg@10": round(float(got["ndcg@10"].mean()), 6), "ndcg@10_ref": round(float(ref["ndcg@10"].mean()), 6),
                    "seconds": round(time.perf_counter() - start, 1)})
    print(json.dumps(out))


def _raw_ranx(qrels, ranking) -> dict[str, np.ndarray]:
    """ranx as hardneg called it before issue 17."""
    import warnings

    from ranx import Qrels, Run, evaluate

    from hardneg.metrics import METRICS

    run = Run(ranking.to_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate(Qrels({q: dict(qrels[q]) for q in ranking.query_ids}), run, list(METRICS), make_comparable=True)
    return {m: np.array([run.scores[m][q] for q in ranking.query_ids]) for m in METRICS}


def _spawn(mode: str, lengths: list[int], seed: int, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", mode, ",".join(map(str, lengths)), str(seed)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(role: str, proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate()
    evals = json.loads(stdout.strip().splitlines()[-1]) if proc.returncode == 0 and stdout.strip() else []
    bad = proc.returncode != 0 or any(e.get("bad_values", 0) or "refused" in e for e in evals)
    return {"role": role, "rc": proc.returncode, "bad": bool(bad), "evaluations": evals,
            "stderr_tail": stderr.strip().splitlines()[-3:] if proc.returncode else []}


def run_unit(mode: str, unit: int) -> dict:
    a, b = id_lengths(unit)
    with tempfile.TemporaryDirectory(prefix="numba-stress-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "HARDNEG_CACHE": cache, "PYTHONPATH": str(Path(__file__).parents[1])}
        start = time.perf_counter()
        first, second = _spawn(mode, [a], unit, env), _spawn(mode, [b], unit, env)  # compile side by side
        runs = [_collect("concurrent", first), _collect("concurrent", second)]
        runs.append(_collect("reader", _spawn(mode, [a, b], unit, env)))
    return {"mode": mode, "unit": unit, "id_lengths": [a, b], "runs": runs, "bad_runs": sum(r["bad"] for r in runs),
            "wall_seconds": round(time.perf_counter() - start, 1), "cpu": cpu_slug(), "commit": _commit()}


def _commit() -> str:
    """The code the unit ran (``+dirty`` with uncommitted changes): a unit run on a broken tree is
    recognisable, and deleted rather than counted."""
    root = Path(__file__).parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "hardneg"], cwd=root, capture_output=True, text=True).stdout
    return head + ("+dirty" if dirty.strip() else "")


def swap_code(cache: str, src: int, dst: int) -> int:
    """In every kernel's index, point the doc-id-length-``dst`` signature's entry at a copy of the
    length-``src`` code; returns how many data files were overwritten."""
    import pickle
    import shutil

    src_t, dst_t, swapped = f"UnicodeCharSeq({src})", f"UnicodeCharSeq({dst})", 0
    for index in Path(cache).rglob("*.nbi"):
        with open(index, "rb") as f:
            pickle.load(f)  # numba's version
            _, overloads = pickle.loads(f.read())
        pairs: dict[str, dict[str, str]] = {}
        for key, name in overloads.items():
            sig = str(key[0])
            which = src_t if src_t in sig else dst_t if dst_t in sig else None
            if which:
                pairs.setdefault(sig.replace(which, "@"), {})[which] = name
        for pair in pairs.values():
            if len(pair) == 2:
                shutil.copy(index.parent / pair[src_t], index.parent / pair[dst_t])
                swapped += 1
    return swapped


def forced() -> dict:
    """The race's end state made by hand (see the module's docstring), for ranx raw and hardneg."""
    from hardneg.metrics import _TOKEN_WIDTH

    with tempfile.TemporaryDirectory(prefix="numba-forced-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "HARDNEG_CACHE": cache, "PYTHONPATH": str(Path(__file__).parents[1])}
        for mode, lengths in (("raw", [6]), ("raw", [9]), ("hardneg", [6])):  # compile three signatures
            _collect("compile", _spawn(mode, lengths, 0, env))
        swapped = {"raw 6 -> 9": swap_code(cache, 6, 9), f"raw 6 -> hardneg {_TOKEN_WIDTH}": swap_code(cache, 6, _TOKEN_WIDTH)}
        runs = [_collect("raw after the swap", _spawn("raw", [9], 0, env)),
                _collect("hardneg after the swap", _spawn("hardneg", [6], 0, env))]
    return {"swapped_files": swapped, "runs": runs, "cpu": cpu_slug()}


def table(folder: Path) -> str:
    lines = [f"metrics stress test ({folder.name}): 3 processes a unit, cold numba cache, new id lengths", "",
             "| mode | units | runs | crashed | runs with wrong values | wrong values | refused by the cross-check | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for mode in MODES:
        units = [json.loads(p.read_text()) for p in sorted(folder.glob(f"{mode}-u*.json"))]
        runs = [r for u in units for r in u["runs"]]
        wrong = sum(e.get("bad_values", 0) for r in runs for e in r["evaluations"])
        refused = sum("refused" in e for r in runs for e in r["evaluations"])
        crashed = sum(r["rc"] != 0 for r in runs)
        wrong_runs = sum(any(e.get("bad_values", 0) for e in r["evaluations"]) for r in runs)
        lines.append(f"| {mode} | {len(units)} | {len(runs)} | {crashed} | {wrong_runs} | {wrong} | {refused} | "
                     f"{sum(u['wall_seconds'] for u in units):.0f} |")
    if (folder / "forced.json").is_file():
        f = json.loads((folder / "forced.json").read_text())
        lines += ["", f"the race's end state by hand (data files swapped: {f['swapped_files']}):"]
        for r in f["runs"]:
            for e in r["evaluations"]:
                what = (f"refused: {e['refused'][:90]}..." if "refused" in e else
                        f"NDCG@10 {e['ndcg@10']:.4f} (truth {e['ndcg@10_ref']:.4f}), {e['bad_values']} wrong values, exit {r['rc']}")
                lines.append(f"- {r['role']}: {what}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "LENGTHS", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--units", type=int, default=UNITS)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--forced", action="store_true", help="only the race's end state by hand (forced.json)")
    args = parser.parse_args()
    if args.worker:
        mode, lengths, seed = args.worker
        return worker(mode, [int(x) for x in lengths.split(",")], int(seed))
    folder = RESULTS / cpu_slug()
    folder.mkdir(parents=True, exist_ok=True)
    if args.forced:
        _write(folder / "forced.json", forced())
    elif not args.table_only:
        for unit in range(args.units):
            for mode in args.modes.split(","):
                path = folder / f"{mode}-u{unit:02d}.json"
                if path.is_file():
                    continue
                result = run_unit(mode, unit)
                _write(path, result)
                print(f"{mode} unit {unit}: {result['bad_runs']} bad of 3 runs ({result['wall_seconds']:.0f}s)", flush=True)
    print(table(folder))


if __name__ == "__main__":
    main()
