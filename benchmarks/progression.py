"""The progression of negative-mining strategies, each trained with the same budget, on SciFact.

Every trained row starts from the same model (the bundled MiniLM by default) and gets the
same number of optimizer steps, batch size, negatives per query (k) and training max length;
only the negatives differ. Every model is evaluated on the full SciFact test split at the
model's own max length (256 for MiniLM). Rows:

  base            the untuned model                      bm25          BM25 itself
  in-batch        MNRL with in-batch negatives only      random        k uniform from the corpus
  bm25-top        BM25 top-k (naive)                     dense-top     dense top-k (naive)
  default         hardneg's default policy: dense window 10:100 + percent 0.95, top-k
  hybrid-percent  RRF(BM25, dense) ranks, percent 0.95 on the dense score, top-k
  auto            window (and percent) calibrated by the label audit (``window = "auto"``), top-k
  default+round   ``default`` re-mined once with its own trained model, trained again from base
  st-default      sentence-transformers' ``mine_hard_negatives`` defaults (top-k, n-tuple)
  st-margin       the same with ``relative_margin=0.05`` (its documented positive-aware recipe)

Rows with the ``default`` policy but other positives or a denoiser (issues 5 and 7):

  ict             positives from the inverse cloze task on the corpus (``hardneg synth``): no qrels
  clicks          positives from a click log simulated from the train qrels (benchmarks/clicks_sim.py,
                  position-based model over BM25's top 10; ``hardneg clicks --min-dwell 30``)
  ce-denoise      default + cross-encoder denoising: ``--reranker`` (a cross-fitted
                  ``hardneg train-reranker --folds`` folder) scores window ranks ``--ce-window`` and
                  candidates it scores above ``--denoise-above`` are dropped (RocketQA)
  auto-judge      the window ``hardneg calibrate --use judge`` picks from ``--audit`` (an audit.json
                  with a judge curve, from ``hardneg audit --cross-encoder``), top-k
  default-pad     default, but queries left with fewer than k negatives are padded with random corpus
                  documents (``on_short = "pad-random"``) instead of leaving training
  default-gist    default trained with GISTEmbedLoss (a frozen copy of the base model masks the
                  in-batch and mined negatives it scores above the positive)

Columns: NDCG@10 (mean and spread over seeds), Recall@100, MRR@10, NDCG@10 on the test
queries whose positives were never train positives, paired randomization p-values (per-query
NDCG@10 averaged over seeds) vs base and vs the better sentence-transformers row, train time.
Results are stored per (row, seed) under ``--work``, so an interrupted run resumes.

    python benchmarks/progression.py                       # the full table (GPU: minutes; CPU: a day)
    python benchmarks/progression.py --reduced --train-max-length 128 --seeds 1   # the CPU table
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
ALL_ROWS = ["base", "bm25", "in-batch", "random", "bm25-top", "dense-top", "default", "hybrid-percent", "auto",
            "default+round", "st-default", "st-margin"]
# run on request (--rows): other positives, a trained reranker, other ways to treat short rows, another loss
EXTRA_ROWS = ["ict", "clicks", "ce-denoise", "auto-judge", "default-pad", "default-gist"]
REDUCED_ROWS = ["base", "bm25", "st-default", "default", "st-margin", "hybrid-percent"]
UNTRAINED = {"base", "bm25"}
ST_ROWS = ("st-default", "st-margin")
METRICS = ["ndcg@10", "recall@100", "mrr@10"]

# hardneg policies of the rows (k is set by --k). DEFAULT: window and percent as in the default recipe.
DEFAULT = dict(window=(10, 100), percent=0.95)
POLICIES = {
    "random": dict(sampler="random"),
    "bm25-top": dict(),
    "dense-top": dict(),
    "default": DEFAULT,
    "default+round": DEFAULT,
    "hybrid-percent": dict(percent=0.95, score_by="dense"),
    "ict": DEFAULT,
    "clicks": DEFAULT,
    "ce-denoise": DEFAULT,
    "default-pad": {**DEFAULT, "on_short": "pad-random"},
    "default-gist": DEFAULT,
}
LOSS = {"default-gist": "gist"}  # rows trained with another loss than MNRL (same steps, batch, k, length)
RETRIEVER = {"bm25-top": "bm25", "hybrid-percent": "hybrid", "random": "dense"}


class Bench:
    """Shared state: the dataset, the cache, the base rankings, where results go."""

    def __init__(self, args):
        from hardneg.data import load_dataset
        from hardneg.encode import default_model_path

        self.args = args
        self.ds = load_dataset(args.data)
        self.work = args.work
        self.cache = args.work / "emb-cache"
        self.model = str(args.model or default_model_path())
        self.test_ids = list(self.ds.positives("test"))
        self.n_pairs = sum(len(v) for v in self.ds.positives("train").values())
        self.steps = args.max_steps or math.ceil(self.n_pairs / args.batch_size)

    # ---- rankings -----------------------------------------------------------------------------
    def dense_ranking(self, model_dir: str):
        from hardneg.encode import Encoder, EncoderConfig
        from hardneg.retrieve.dense import DenseRetriever

        enc = Encoder(EncoderConfig(model=model_dir), cache=self.cache)
        retriever = DenseRetriever(enc, self.ds.doc_ids, self.ds.doc_texts())
        return retriever.search(self.test_ids, [self.ds.queries[q] for q in self.test_ids], 100)

    def bm25_ranking(self):
        from hardneg.retrieve.bm25 import BM25Retriever

        r = BM25Retriever(self.ds.doc_ids, self.ds.doc_texts())
        return r.search(self.test_ids, [self.ds.queries[q] for q in self.test_ids], 100)

    def per_query(self, ranking) -> dict[str, list[float]]:
        from hardneg.metrics import per_query_scores

        scores = per_query_scores(self.ds.split_qrels("test"), ranking.subset(self.test_ids), METRICS)
        return {m: [float(x) for x in v] for m, v in scores.items()}

    # ---- positives ----------------------------------------------------------------------------
    def train_data(self, row: str):
        """The dataset a row trains on: SciFact's train qrels, or positives built without them."""
        from hardneg.data import load_dataset

        if row == "ict":
            folder = self.work / "ict"
            if not (folder / "synth.json").is_file():
                from hardneg.positives.synth import Method, SynthConfig, write_synth

                write_synth(self.args.data, folder, SynthConfig(method=Method.ICT, seed=0))
            return load_dataset(folder)
        if row == "clicks":
            folder = self.work / "clicks"
            if not (folder / "clicks_stats.json").is_file():
                sys.path.insert(0, str(Path(__file__).parent))
                from clicks_sim import ClickModel, simulate, summarize

                from hardneg.positives.clicks import ClickConfig, ClickPolicy, clicks_to_beir
                from hardneg.files import atomic_write_json, atomic_write_text

                log = self.work / "clicks-log" / "log.jsonl"
                atomic_write_text(log, "".join(json.dumps(r) + "\n" for r in simulate(self.ds, "train", ClickModel())))
                atomic_write_json(log.with_name("sim.json"), summarize(log, self.ds, "train", ClickModel()))
                clicks_to_beir(log, self.args.data, folder, ClickConfig(ClickPolicy(min_dwell=30.0)))
            return load_dataset(folder)
        return self.ds

    # ---- negatives ----------------------------------------------------------------------------
    def hardneg_negatives(self, row: str, seed: int, model_dir: str | None = None, ds=None) -> Path | None:
        """Mine with hardneg (candidates cached per retriever/model), select, export negatives.jsonl."""
        from hardneg.candidates import CandidateSet
        from hardneg.encode import EncoderConfig
        from hardneg.export import write_flag_jsonl
        from hardneg.mine import MineConfig, mine_candidates
        from hardneg.select import SelectionPolicy, select

        if row == "in-batch":
            return None
        ds = ds or self.ds
        retriever = RETRIEVER.get(row, "dense")
        tag = f"{retriever}-{'base' if model_dir is None else Path(model_dir).name}"
        if row in ("ict", "clicks"):
            tag += f"-{row}"
        cand_file = self.work / "candidates" / f"{tag}.parquet"
        if cand_file.is_file():
            cands = CandidateSet.read(cand_file)
        else:
            cands = mine_candidates(ds, MineConfig(retriever=retriever, depth=200),
                                    EncoderConfig(model=model_dir or self.model), cache=self.cache)
            cand_file.parent.mkdir(parents=True, exist_ok=True)
            cands.write(cand_file)
        policy = SelectionPolicy.unfiltered(num_negatives=self.args.k, seed=seed, **POLICIES.get(row, {}))  # on_short: keep
        if row == "auto":
            from hardneg.audit import auto_window

            cal, _ = auto_window(cands)
            print(f"  auto: window {cal.window}, percent {cal.percent} ({cal.reason})", file=sys.stderr)
            policy = replace(policy, window=cal.window, percent=cal.percent)
        if row == "auto-judge":
            from hardneg.audit import calibrate

            if not self.args.audit:
                raise SystemExit("the auto-judge row needs --audit (an audit.json with a judge curve)")
            cal = calibrate(json.loads(Path(self.args.audit).read_text()), use="judge")
            print(f"  auto-judge: window {cal.window}, percent {cal.percent} ({cal.reason})", file=sys.stderr)
            policy = replace(policy, window=cal.window, percent=cal.percent)
        if row == "ce-denoise":
            cands = self.ce_scores(cands)
            policy = replace(policy, denoise_above=self.args.denoise_above)
        mined = select(cands, policy, corpus_doc_ids=ds.doc_ids)
        drops = ", ".join(f"{f['filter']} -{f['removed']:,}" for f in mined.stats["filters"] if f.get("removed"))
        print(f"  {row}: {drops}; output {mined.stats['output']}", file=sys.stderr, flush=True)
        out = self.work / "negatives" / f"{row}-s{seed}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_flag_jsonl(mined, ds.doc_text_map(), ds.queries, out, teacher=None)
        return out

    def ce_scores(self, cands):
        """The dense candidates with ``score_ce`` from the cross-fitted reranker (cached file)."""
        from hardneg.candidates import CandidateSet
        from hardneg.crossencoder import rescore_with_report

        if not self.args.reranker:
            raise SystemExit("the ce-denoise row needs --reranker (a `hardneg train-reranker --folds` folder)")
        lo, hi = self.args.ce_window
        file = self.work / "candidates" / f"dense-base-ce-{lo}-{hi}.parquet"
        if file.is_file():
            return CandidateSet.read(file)
        scored, report = rescore_with_report(cands, self.ds, self.args.reranker, window=(lo, hi), cache=self.cache,
                                             batch_size=64)
        print(f"  ce-denoise: {report.summary()}", file=sys.stderr, flush=True)
        scored.write(file)
        return scored

    def st_negatives(self, row: str) -> list[dict]:
        """sentence-transformers' mine_hard_negatives on the same pairs, corpus and model."""
        from datasets import Dataset as HFDataset
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.util import mine_hard_negatives

        pos = self.ds.positives("train")
        pairs = HFDataset.from_dict({"anchor": [self.ds.queries[q] for q in pos for _ in pos[q]],
                                     "positive": [self.ds.doc_text(d) for q in pos for d in pos[q]]})
        extra = dict(relative_margin=0.05) if row == "st-margin" else {}
        out = mine_hard_negatives(pairs, SentenceTransformer(self.model, device=self.args.device),
                                  corpus=self.ds.doc_texts(), num_negatives=self.args.k, sampling_strategy="top",
                                  output_format="n-tuple", cache_folder=str(self.work / "st-cache"),
                                  batch_size=64, verbose=False, **extra)
        negs = [c for c in out.column_names if c.startswith("negative")]
        return [{"query_id": f"st{i}", "query": r["anchor"], "pos": [r["positive"]], "neg": [r[c] for c in negs]}
                for i, r in enumerate(out)]

    # ---- one trained row ----------------------------------------------------------------------
    def train_row(self, row: str, seed: int) -> dict:
        from hardneg.train import TrainConfig, train

        start_model = self.model
        mine_start = time.perf_counter()
        data = self.train_data(row)
        if row in ST_ROWS:
            negatives = self.st_negatives(row)
        elif row == "default+round":
            first = self.work / "models" / f"default-s{seed}"
            if not first.is_dir():
                raise RuntimeError("default+round needs the 'default' row of the same seed first")
            negatives = self.hardneg_negatives(row, seed, model_dir=str(first))
        else:
            negatives = self.hardneg_negatives(row, seed, ds=data)
        mine_s = time.perf_counter() - mine_start
        k = 0 if row == "in-batch" else self.args.k
        config = TrainConfig(max_seq_length=self.args.train_max_length, num_negatives=k,
                             short_rows="drop", batch_size=self.args.batch_size, max_steps=self.steps, seed=seed,
                             lr=self.args.lr, holdout_fraction=0.0, show_progress=False, loss=LOSS.get(row, "mnrl"),
                             logging_steps=max(1, self.steps // 5))
        out_dir = self.work / "models" / f"{row}-s{seed}"
        t0 = time.perf_counter()
        result = train(data, negatives, start_model, out_dir, config)
        train_s = time.perf_counter() - t0
        return {"train_seconds": train_s, "mine_seconds": mine_s, "model": str(out_dir),
                "train_rows": result.data.n_rows, "data": result.data.summary(),
                "losses": [list(x) for x in result.losses]}

    def run_row(self, row: str, seed: int) -> dict:
        """Per-query test scores of one (row, seed), computed once and stored."""
        file = self.work / "results" / f"{row}-s{seed}.json"
        if file.is_file():
            return json.loads(file.read_text())
        if row == "bm25":
            info, ranking = {}, self.bm25_ranking()
        elif row == "base":
            info, ranking = {}, self.dense_ranking(self.model)
        else:
            info = self.train_row(row, seed)
            ranking = self.dense_ranking(info["model"])
        res = {"row": row, "seed": seed, **info, "per_query": self.per_query(ranking)}
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(res))
        return res


# ---- the table ---------------------------------------------------------------------------------
def table(bench: Bench, results: dict[str, list[dict]]) -> str:
    from hardneg.data import leakage
    from hardneg.evaluate import format_p, paired_randomization_test

    leak = leakage(bench.ds, "test", "train")
    clean = np.array([bench.test_ids.index(q) for q in leak.clean]) if leak is not None else None
    mean_pq = {r: np.mean([np.array(x["per_query"]["ndcg@10"]) for x in v], axis=0) for r, v in results.items()}
    st = [r for r in ST_ROWS if r in mean_pq]
    best_st = max(st, key=lambda r: mean_pq[r].mean()) if st else None
    head = ("| row | NDCG@10 | Recall@100 | MRR@10 | NDCG@10 clean | p vs base | p vs best ST | seeds | train s |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for row, runs in results.items():
        nd = [np.mean(x["per_query"]["ndcg@10"]) for x in runs]
        m = {k: np.mean([np.mean(x["per_query"][k]) for x in runs]) for k in METRICS}
        spread = f" ± {np.std(nd):.4f}" if len(nd) > 1 else ""
        cl = f"{mean_pq[row][clean].mean():.4f}" if clean is not None and len(clean) else "-"
        p_base = "-" if row == "base" else format_p(paired_randomization_test(mean_pq[row], mean_pq["base"]))
        p_st = "-" if best_st in (None, row) else format_p(paired_randomization_test(mean_pq[row], mean_pq[best_st]))
        secs = [x.get("train_seconds") for x in runs if x.get("train_seconds")]
        ts = f"{np.mean(secs):.0f}" if secs else "-"
        lines.append(f"| {row} | {m['ndcg@10']:.4f}{spread} | {m['recall@100']:.4f} | {m['mrr@10']:.4f} | {cl} "
                     f"| {p_base} | {p_st} | {len(runs)} | {ts} |")
    n_clean = len(leak.clean) if leak is not None else 0
    lines.append(f"\n{len(bench.test_ids)} test queries ({n_clean} clean: no positive was a train positive); "
                 f"best ST row: {best_st}; p: paired randomization test on per-query NDCG@10 (mean over seeds)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/hardneg-progression"))
    ap.add_argument("--model", default=None, help="starting model folder (default: the bundled MiniLM)")
    ap.add_argument("--rows", default=None, help="comma-separated rows (default: all, or the reduced set)")
    ap.add_argument("--reduced", action="store_true", help="only " + ", ".join(REDUCED_ROWS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--k", type=int, default=3, help="negatives per query for every row")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-max-length", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=None, help="default: one epoch of the train pairs")
    ap.add_argument("--table-only", action="store_true",
                    help="train nothing: the table of the stored results of --rows, every seed found under --work")
    ap.add_argument("--lr", type=float, default=2e-5, help="learning rate of every trained row (ST's recipe: 2e-5)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--reranker", default=None, help="ce-denoise: a cross-fitted `hardneg train-reranker` folder")
    ap.add_argument("--audit", default=None, help="auto-judge: an audit.json with a judge curve")
    ap.add_argument("--ce-window", default="10:25", help="ce-denoise: original ranks the cross-encoder scores")
    ap.add_argument("--denoise-above", type=float, default=0.0, help="ce-denoise: drop candidates scored above "
                    "this (a logit of 0 is p = 0.5)")
    args = ap.parse_args()
    args.ce_window = tuple(int(x) for x in args.ce_window.split(":"))
    rows = args.rows.split(",") if args.rows else (REDUCED_ROWS if args.reduced else ALL_ROWS)
    unknown = set(rows) - set(ALL_ROWS) - set(EXTRA_ROWS)
    if unknown:
        ap.error(f"unknown rows {sorted(unknown)}; choose from {ALL_ROWS + EXTRA_ROWS}")
    if "base" not in rows:
        rows = ["base", *rows]  # every p-value is against it (cached after the first run)
    args.work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    results: dict[str, list[dict]] = {}
    if args.table_only:
        for row in rows:
            files = sorted((args.work / "results").glob(f"{row}-s*.json"),
                           key=lambda f: int(f.stem.rsplit("-s", 1)[1]))  # seed order: s2 before s10
            if files:
                results[row] = [json.loads(f.read_text()) for f in files]
        print(table(bench, results))
        return 0
    print(f"same budget for every trained row: {bench.steps} steps x batch {args.batch_size}, k={args.k}, "
          f"lr {args.lr}, train max length {args.train_max_length}, eval at the model's own max length",
          file=sys.stderr)
    for row in rows:
        seeds = [0] if row in UNTRAINED else list(range(args.seeds))
        for seed in seeds:
            r = bench.run_row(row, seed)
            results.setdefault(row, []).append(r)
            print(f"  {row:16} seed {seed}: NDCG@10 {np.mean(r['per_query']['ndcg@10']):.4f}"
                  f"  train {r.get('train_seconds', 0):.0f}s", file=sys.stderr, flush=True)
        (args.work / "table.md").write_text(table(bench, results) + "\n")
    print(table(bench, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
