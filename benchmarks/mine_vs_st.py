"""hardneg mining vs sentence-transformers' ``mine_hard_negatives``, same settings, one run.

Rows (each measured in its own subprocess, so peak RSS is that step's own):
  (a) cold: hardneg ``mine`` (dense, depth 100, select top-7, percent 0.95 per positive) vs ST
      (num_negatives=7, range_max=100, relative_margin=0.05, top, cache_folder) on SciFact train
      with the bundled MiniLM; both caches empty.
  (b) warm: the same two again on their warm caches.
  (c) a new policy (window 10:100, percent 0.9): hardneg ``select`` on the stored candidates vs
      ST re-run on its warm cache (range_min=10, relative_margin=0.1); on SciFact, then on a
      synthetic corpus of 500k precomputed 384-d vectors with 20k queries (ST gets use_faiss=True
      and its cache files written beforehand, so neither side encodes).

    python benchmarks/mine_vs_st.py [--data ../shared/data/scifact] [--synthetic-docs 500000]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
K, DEPTH = 7, 100


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- steps (each runs in a fresh process) ------------------------------------------------------
def step_hn_mine(data: Path, work: Path) -> dict:
    import sentence_transformers  # noqa: F401 (imported before the clock, as in the ST step)

    from hardneg.data import load_dataset
    from hardneg.mine import MineConfig, mine_candidates
    from hardneg.select import SelectionPolicy, select

    start = time.perf_counter()
    ds = load_dataset(data)
    cands = mine_candidates(ds, MineConfig(retriever="dense", depth=DEPTH), cache=work / "hn-cache")
    cands.write(work / "candidates.parquet")
    mined = select(cands, SelectionPolicy.unfiltered(percent=0.95, pos_ref="per-pair", num_negatives=K))
    return {"seconds": time.perf_counter() - start, "rows": len(mined.rows)}


def step_hn_select(data: Path, work: Path) -> dict:
    from hardneg.candidates import CandidateSet
    from hardneg.select import SelectionPolicy, select

    t0 = time.perf_counter()
    cands = CandidateSet.read(work / "candidates.parquet")
    t1 = time.perf_counter()
    mined = select(cands, SelectionPolicy(window=(10, 100), percent=0.9, pos_ref="per-pair", num_negatives=K))
    t2 = time.perf_counter()
    return {"seconds": t2 - t1, "read_seconds": t1 - t0, "rows": len(mined.rows)}


def _st_inputs(data: Path):
    from datasets import Dataset as HFDataset

    from hardneg.data import load_dataset

    ds = load_dataset(data)
    pos = ds.positives("train")
    pairs = HFDataset.from_dict({"anchor": [ds.queries[q] for q in pos for _ in pos[q]],
                                 "positive": [ds.doc_text(d) for q in pos for d in pos[q]]})
    return pairs, ds.doc_texts()


def _st_model():
    from sentence_transformers import SentenceTransformer

    from hardneg.encode import default_model_path

    return SentenceTransformer(default_model_path(), device="cpu")


def step_st_mine(data: Path, work: Path, new_policy: bool = False) -> dict:
    from sentence_transformers.util import mine_hard_negatives

    start = time.perf_counter()
    pairs, corpus = _st_inputs(data)
    policy = dict(range_min=10, relative_margin=0.1) if new_policy else dict(relative_margin=0.05)
    out = mine_hard_negatives(pairs, _st_model(), corpus=corpus, num_negatives=K, range_max=DEPTH,
                              sampling_strategy="top", output_format="n-tuple", cache_folder=str(work / "st-cache"),
                              verbose=False, batch_size=64, **policy)
    return {"seconds": time.perf_counter() - start, "rows": len(out)}


def step_st_new_policy(data: Path, work: Path) -> dict:
    return step_st_mine(data, work, new_policy=True)


# ---- synthetic corpus ----------------------------------------------------------------------------
def synthetic(n_docs: int, n_queries: int, dim: int = 384, seed: int = 0):
    """Clustered unit vectors; each query is a noisy copy of its one positive."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1000, dim)).astype(np.float32)
    docs = centers[rng.integers(0, 1000, n_docs)] + 0.7 * rng.standard_normal((n_docs, dim)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    pos = rng.choice(n_docs, n_queries, replace=False)
    queries = docs[pos] + 0.5 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return docs, queries, pos


def step_syn_prepare(data: Path, work: Path, n_docs: int, n_queries: int) -> dict:
    """Write both sides' inputs: hardneg's candidate set, ST's cache files (not timed as a policy)."""
    import hashlib

    import pandas as pd

    from hardneg.candidates import CandidateSet
    from hardneg.retrieve.search import faiss_flat_topk

    docs, queries, pos = synthetic(n_docs, n_queries)
    start = time.perf_counter()
    idx, scores = faiss_flat_topk(queries, docs, DEPTH)
    search_s = time.perf_counter() - start
    frame = pd.DataFrame({"query_id": np.repeat([f"q{i}" for i in range(n_queries)], DEPTH),
                          "doc_id": [f"d{j}" for j in idx.reshape(-1)],
                          "rank_dense": np.tile(np.arange(1, DEPTH + 1), n_queries),
                          "score_dense": scores.reshape(-1)})
    frame["is_positive"] = frame["doc_id"].to_numpy() == np.repeat([f"d{p}" for p in pos], DEPTH)
    missing = ~frame.groupby("query_id", sort=False)["is_positive"].any().to_numpy()
    extra = pd.DataFrame({"query_id": [f"q{i}" for i in np.flatnonzero(missing)],
                          "doc_id": [f"d{pos[i]}" for i in np.flatnonzero(missing)],
                          "score_dense": (queries[missing] * docs[pos[missing]]).sum(1), "is_positive": True})
    frame = pd.concat([frame, extra], ignore_index=True)
    CandidateSet.from_frame(frame, scorers=["dense"], corpus_size=n_docs).write(work / "syn-candidates.parquet")
    # ST's cache: the file names are hashes of (model name, prompts, texts); see mine_hard_negatives.
    model_name = _st_model().model_card_data.base_model or ""
    q_texts, c_texts = [f"q{i}" for i in range(n_queries)], [f"d{j}" for j in range(n_docs)]
    cache = work / "st-syn-cache"
    cache.mkdir(exist_ok=True)
    for kind, texts, arr in (("query", q_texts, queries), ("corpus", c_texts, docs)):
        h = hashlib.sha256(repr((model_name, None, None, texts)).encode()).hexdigest()
        np.save(cache / f"{kind}_embeddings_{h}.npy", arr)
    np.save(work / "syn-pos.npy", pos)
    return {"seconds": search_s, "rows": len(frame)}


def step_syn_hn_select(data: Path, work: Path) -> dict:
    from hardneg.candidates import CandidateSet
    from hardneg.select import SelectionPolicy, select

    t0 = time.perf_counter()
    cands = CandidateSet.read(work / "syn-candidates.parquet")
    t1 = time.perf_counter()
    mined = select(cands, SelectionPolicy(window=(10, 100), percent=0.9, pos_ref="per-pair", num_negatives=K))
    return {"seconds": time.perf_counter() - t1, "read_seconds": t1 - t0, "rows": len(mined.rows)}


def step_syn_st(data: Path, work: Path) -> dict:
    from datasets import Dataset as HFDataset
    from sentence_transformers.util import mine_hard_negatives

    pos = np.load(work / "syn-pos.npy")
    n_docs = int(json.loads((work / "syn-size.json").read_text())["n_docs"])
    model = _st_model()
    start = time.perf_counter()
    pairs = HFDataset.from_dict({"anchor": [f"q{i}" for i in range(len(pos))], "positive": [f"d{p}" for p in pos]})
    out = mine_hard_negatives(pairs, model, corpus=[f"d{j}" for j in range(n_docs)], num_negatives=K,
                              range_min=10, range_max=DEPTH, relative_margin=0.1, sampling_strategy="top",
                              output_format="n-tuple", cache_folder=str(work / "st-syn-cache"), use_faiss=True,
                              verbose=False)
    return {"seconds": time.perf_counter() - start, "rows": len(out)}


STEPS = {f.__name__[5:]: f for f in (step_hn_mine, step_hn_select, step_st_mine, step_st_new_policy,
                                     step_syn_hn_select, step_syn_st)}


def run_step(name: str, args, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--step", name, "--work", str(work), "--data", str(args.data)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"step {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--step", default=None)
    ap.add_argument("--synthetic-docs", type=int, default=500_000)
    ap.add_argument("--synthetic-queries", type=int, default=20_000)
    ap.add_argument("--scifact-only", action="store_true", help="skip the synthetic rows")
    ap.add_argument("--synthetic-only", action="store_true", help="skip the SciFact rows")
    args = ap.parse_args()
    if args.step:
        work = args.work
        if args.step == "syn_prepare":
            n = json.loads((work / "syn-size.json").read_text())
            out = step_syn_prepare(args.data, work, n["n_docs"], n["n_queries"])
        else:
            out = STEPS[args.step](args.data, work)
        print(json.dumps(out | {"peak_rss_mb": peak_rss_mb()}))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="hardneg-mine-vs-st-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "syn-size.json").write_text(json.dumps({"n_docs": args.synthetic_docs, "n_queries": args.synthetic_queries}))
    rows = []

    def record(label: str, name: str) -> dict:
        r = run_step(name, args, work)
        rows.append((label, r))
        print(f"  {label:48} {r['seconds']:9.3f}s  {r['peak_rss_mb']:8.0f} MB", file=sys.stderr, flush=True)
        return r

    hn_c = st_c = None
    if not args.synthetic_only:
        record("(a) hardneg mine, cold", "hn_mine")
        record("(a) ST mine_hard_negatives, cold", "st_mine")
        record("(b) hardneg mine, warm", "hn_mine")
        record("(b) ST mine_hard_negatives, warm", "st_mine")
        hn_c = record("(c) SciFact new policy: hardneg select", "hn_select")
        st_c = record("(c) SciFact new policy: ST re-run, warm", "st_new_policy")
    if args.scifact_only:
        return report(rows, st_c, hn_c)
    prep = record(f"    synthetic {args.synthetic_docs:,} x {args.synthetic_queries:,}: hardneg candidates (faiss flat)",
                  "syn_prepare")
    hn_s = record("(c) synthetic new policy: hardneg select", "syn_hn_select")
    st_s = record("(c) synthetic new policy: ST re-run (use_faiss), warm", "syn_st")
    return report(rows, st_c, hn_c, st_s, hn_s, prep)


def report(rows, st_c, hn_c, st_s=None, hn_s=None, prep=None) -> int:
    print(f"\n| step | wall s | peak RSS MB | rows |\n|---|---|---|---|")
    for label, r in rows:
        extra = f" (+{r['read_seconds']:.2f}s reading parquet)" if "read_seconds" in r else ""
        print(f"| {label.strip()} | {r['seconds']:.3f}{extra} | {r['peak_rss_mb']:.0f} | {r['rows']} |")
    if st_c is not None:
        print(f"\nselect speed-up vs ST warm re-run: SciFact {st_c['seconds'] / hn_c['seconds']:.0f}x")
    if st_s is None:
        return 0
    print(f"synthetic {st_s['seconds'] / hn_s['seconds']:.0f}x (with parquet read: "
          f"{st_s['seconds'] / (hn_s['seconds'] + hn_s['read_seconds']):.0f}x); "
          f"synthetic candidate build {prep['seconds']:.1f}s (once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
