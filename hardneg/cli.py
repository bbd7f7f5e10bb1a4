"""The ``hardneg`` command line: a thin typer layer over the library's functions."""
from __future__ import annotations

import functools
import inspect
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from hardneg.errors import HardnegError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Mine, select and audit hard negatives; fine-tune and evaluate embedding retrievers.",
)
console = Console(width=None if sys.stdout.isatty() else 120)

DataOpt = typer.Option(..., "--data", help="A BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/*.tsv), "
                                           "or a pairs JSONL together with --corpus.")
CorpusOpt = typer.Option(None, "--corpus", help="Corpus JSONL when --data is a pairs file.")
SkipUnknownOpt = typer.Option(False, "--skip-unknown", help="Drop qrels rows naming unknown queries/documents "
                                                           "(counted in a warning) instead of failing.")
ModelOpt = typer.Option(None, "--model", help="Local sentence-transformers folder (default: the bundled all-MiniLM-L6-v2).")
BackendOpt = typer.Option("torch", "--backend", help="Encoder backend: torch | onnx (ONNX Runtime fp32) | "
                          "int8 (ONNX Runtime, dynamic int8: about 2x faster on CPU). Part of the cache key.")
CacheOpt = typer.Option(None, "--cache-dir", help="Embedding cache folder (default: $HARDNEG_CACHE or ~/.cache/hardneg).")
ChunkTokensOpt = typer.Option(None, "--chunk-tokens", help="Split documents longer than this many tokens of --model's "
                              "tokenizer (title included, repeated in every chunk) into chunks; default: off. "
                              "Keep it within the model's max length minus its special tokens.")
ChunkOverlapOpt = typer.Option(0, "--chunk-overlap", help="Tokens a chunk repeats from the end of the one before "
                               "(with --chunk-tokens; 10-20% of it keeps a passage cut at a boundary whole).")


def _setup_logging() -> None:
    """hardneg's own warnings (skipped rows, merged queries) go to stderr; libraries stay quiet."""
    log = logging.getLogger("hardneg")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        log.addHandler(handler)
        log.propagate = False


def friendly(fn):
    """Show user errors as one line (``FILE:LINE: what is wrong``) and exit 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _setup_logging()
        try:
            return fn(*args, **kwargs)
        except HardnegError as e:
            print(f"error: {e}", file=sys.stderr)  # one line, never wrapped
            raise typer.Exit(2) from None

    return wrapper


def _load(data: Path, corpus: Optional[Path], skip_unknown: bool):
    from hardneg.data import load_dataset

    return load_dataset(data, corpus=corpus, skip_unknown=skip_unknown)


def _chunk(ds, tokens: int | None, overlap: int, model, max_length: int | None = None):
    """``ds`` chunked (:mod:`hardneg.chunking`), or as it is without ``--chunk-tokens``."""
    from hardneg.chunking import chunk_config, chunk_dataset

    config = chunk_config(tokens, overlap, str(model) if model else None)
    if config is None:
        return ds
    chunked = chunk_dataset(ds, config, max_length=max_length)
    info = chunked.chunking
    console.print(f"chunked {info['documents_split']} of {info['documents']} documents longer than {tokens} tokens "
                  f"(overlap {overlap}): {info['chunks']} chunks")
    return chunked


def _encoder_config(model, batch_size, query_max_length, passage_max_length, query_prompt, passage_prompt,
                    backend="torch"):
    from hardneg.encode import EncoderConfig

    return EncoderConfig(model=str(model) if model else None, batch_size=batch_size,
                         query_max_length=query_max_length, passage_max_length=passage_max_length,
                         query_prompt=query_prompt, passage_prompt=passage_prompt, backend=backend)


@app.command()
@friendly
def validate(
    data: Path = DataOpt,
    corpus: Optional[Path] = CorpusOpt,
    skip_unknown: bool = SkipUnknownOpt,
    eval_split: str = typer.Option("test", "--eval-split", help="Split checked for leakage against train."),
):
    """Check a dataset fully (ids, qrels, texts, encoding) and report train/eval leakage."""
    from hardneg.data import leakage

    ds = _load(data, corpus, skip_unknown)
    console.print(f"{len(ds.doc_ids)} documents, {len(ds.queries)} queries")
    for split in ds.splits:
        pos = ds.positives(split)
        console.print(f"  {split}: {len(pos)} queries, {sum(map(len, pos.values()))} positives, "
                      f"{sum(map(len, ds.known_negatives(split).values()))} judged negatives")
    leak = leakage(ds, eval_split)
    if leak is not None:
        console.print(f"leakage train -> {eval_split}: {leak.summary()}")


@app.command("eval")
@friendly
def eval_cmd(
    data: Path = DataOpt,
    split: str = typer.Option("test", "--split", help="Split to evaluate on (held out from training)."),
    retriever: List[str] = typer.Option(
        ["bm25", "dense"], "--retriever", "-r",
        help="KIND[:NAME][=MODEL], repeatable; KIND is bm25, dense or hybrid (RRF of bm25 + dense). "
             "The first is the reference of the significance tests.",
    ),
    model: Optional[Path] = ModelOpt,
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json, runs/*.trec, per_query.tsv, report.md."),
    corpus: Optional[Path] = CorpusOpt,
    skip_unknown: bool = SkipUnknownOpt,
    cache_dir: Optional[Path] = CacheOpt,
    batch_size: int = typer.Option(64, help="Encoding batch size."),
    backend: str = BackendOpt,
    query_max_length: Optional[int] = typer.Option(None, help="Max tokens per query (default: the model's)."),
    passage_max_length: Optional[int] = typer.Option(None, help="Max tokens per passage (default: the model's)."),
    query_prompt: str = typer.Option("", help="Prompt prepended to queries (e.g. 'query: ' for E5)."),
    passage_prompt: str = typer.Option("", help="Prompt prepended to passages (e.g. 'passage: ')."),
    depth: int = typer.Option(100, help="Documents retrieved per query (metrics use @10 and @100)."),
    seed: int = typer.Option(0, help="Seed of the permutation test and bootstrap intervals."),
    chunk_tokens: Optional[int] = ChunkTokensOpt,
    chunk_overlap: int = ChunkOverlapOpt,
):
    """Evaluate retrievers on a held-out split: NDCG@10, Recall@10/100, MRR@10, MAP@100 with significance.

    With --chunk-tokens the retrievers rank chunks and a document scores its best chunk: the
    metrics stay at document level.
    """
    from hardneg.chunking import search_documents
    from hardneg.evaluate import evaluate, format_table, write_eval
    from hardneg.retrieve import build_retrievers

    start = time.perf_counter()
    ds = _load(data, corpus, skip_unknown)
    qids = list(ds.positives(split)) if split in ds.qrels else ds.split_qrels(split)
    texts = [ds.queries[q] for q in qids]
    cfg = _encoder_config(model, batch_size, query_max_length, passage_max_length, query_prompt, passage_prompt,
                          backend)
    chunks = _chunk(ds, chunk_tokens, chunk_overlap, model, passage_max_length)
    retrievers = build_retrievers(retriever, chunks.doc_ids, chunks.doc_texts(), cfg, cache=cache_dir)
    rankings = {}
    for name, r in retrievers.items():
        t = time.perf_counter()
        rankings[name] = (r.search(qids, texts, depth) if chunks is ds
                          else search_documents(r, chunks, qids, texts, depth))
        console.print(f"[dim]{name}: retrieved in {time.perf_counter() - t:.1f}s[/dim]")
    result = evaluate(ds, split, rankings, seed=seed)
    write_eval(result, out, rankings)
    console.print(format_table(result))
    if result.clean_ids:
        _print_clean(result)
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"wrote {out}/metrics.json, report.md, runs/ ({time.perf_counter() - start:.1f}s)")


def _print_clean(result) -> None:
    from rich.table import Table

    table = Table(title=f"queries whose positives were never train positives ({len(result.clean_ids)})")
    table.add_column("system")
    for m in result.metrics:
        table.add_column(m, justify="right")
    for s, ms in result.means(result.clean_ids).items():
        table.add_row(s, *[f"{ms[m]:.4f}" for m in result.metrics])
    console.print(table)


# ---- mining ------------------------------------------------------------------------------------
def _opt(name: str, default, annotation, help: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, "--" + name.replace("_", "-"), help=help))


DEFAULT_WINDOW, DEFAULT_PERCENT = "10:100", "0.95"

# Selection policy options, shared by `mine` and `select` (one definition, added by a decorator).
# Defaults are the provisional default policy: NV-Retriever's percent 0.95 + top, window 10:100.
POLICY_OPTIONS = [
    _opt("window", None, Optional[str], "MIN:MAX 1-based ranks on the ORIGINAL ranking (counted with known "
         "positives), both ends kept, applied before any other filter ('off' for none). "
         "Unlike sentence-transformers' range_min, which skips surviving candidates. "
         f"Default {DEFAULT_WINDOW} (not for the random/none baselines)."),
    _opt("percent", None, Optional[str], "Keep a candidate only if score <= P x positive score (NV-Retriever; "
         f"'off' for none; default {DEFAULT_PERCENT}, not for the random/none baselines). "
         "Refused for scorers whose scores can be negative: use --margin."),
    _opt("margin", None, Optional[float], "Keep only if score <= positive score - M."),
    _opt("max_score", None, Optional[float], "Keep only if score <= X (TopK-Abs)."),
    _opt("pos_ref", "min", str, "Positive score the filters compare with: 'min' (the query's lowest) or "
         "'per-pair' (one output row per (query, positive))."),
    _opt("near_dup", None, Optional[float], "Drop candidates whose embedding cosine to a positive exceeds this."),
    _opt("denoise_above", None, Optional[float], "Drop candidates the cross-encoder (ce) scores above this."),
    _opt("rank_by", None, Optional[str], "Scorer whose ranks the window uses (default: the retriever)."),
    _opt("score_by", None, Optional[str], "Scorer whose scores the filters use (default: the retriever; "
         "never an RRF value)."),
    _opt("sampler", "top", str, "top | uniform | simans | softmax (from the survivors), random (whole corpus), "
         "none (in-batch negatives only)."),
    _opt("num_negatives", 7, int, "Negatives per output row (k)."),
    _opt("on_short", "keep", str, "When fewer than k survive: drop | keep | pad-random."),
    _opt("seed", 42, int, "Seed of every random choice."),
    _opt("simans_a", 1.0, float, "SimANS sharpness a (on per-query standardised scores)."),
    _opt("simans_b", 0.0, float, "SimANS offset b."),
    _opt("temperature", 1.0, float, "Softmax sampler temperature."),
    _opt("format", None, Optional[str], "Also write sentence-transformers data: st-triplet | st-ntuple | st-labeled."),
]


def option_group(options: list, build):
    """Decorator adding ``options`` to a command; ``build(**their values)`` returns the keyword
    arguments the command receives instead (e.g. ``{"config": TrainConfig(...)}``)."""

    def decorate(fn):
        sig = inspect.signature(fn)
        names = [p.name for p in options]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            built = build(**{n: kwargs.pop(n) for n in names})
            return fn(*args, **built, **kwargs)

        kept = [p for p in sig.parameters.values() if p.name not in ("policy", "fmt", "config")]
        wrapper.__signature__ = sig.replace(parameters=kept + options)
        return wrapper

    return decorate


def _policy_kwargs(format=None, **values):  # noqa: A002 (the option is --format)
    return {"policy": _policy(**values), "fmt": format}


def policy_options(fn):
    """Add the selection options to a command; it receives ``policy`` and ``fmt``."""
    return option_group(POLICY_OPTIONS, _policy_kwargs)(fn)


def _off(text: str | None) -> str | None:
    return None if text is None or text.strip().lower() in ("off", "none", "") else text


def _policy(window, percent, near_dup, **rest):
    from hardneg.select import SelectionPolicy

    if rest["sampler"] not in ("random", "none"):  # the baselines use no candidates, so no filters
        window = DEFAULT_WINDOW if window is None else window
        percent = DEFAULT_PERCENT if percent is None else percent

    try:
        pct = None if _off(percent) is None else float(percent)
    except ValueError:
        raise HardnegError(f"--percent must be a number in (0, 1] or 'off', got {percent!r}") from None
    return SelectionPolicy(window=_off(window), percent=pct, near_dup_cosine=near_dup, **rest)


def _select_and_write(cands, policy, fmt, out: Path, ds) -> None:
    from hardneg.export import export
    from hardneg.io import atomic_write_json
    from hardneg.select import format_stats_table, select

    start = time.perf_counter()
    mined = select(cands, policy, corpus_doc_ids=ds.doc_ids)
    elapsed = time.perf_counter() - start
    docs = ds.doc_text_map()
    report = export(mined, docs, ds.queries, out, fmt)
    atomic_write_json(out / "stats.json", mined.stats | {"files": report, "policy": policy.to_dict()})
    console.print(format_stats_table(mined.stats))
    console.print(f"selected in {elapsed:.3f}s; wrote {', '.join(sorted(report))} and stats.json to {out}")


@app.command()
@friendly
@policy_options
def mine(
    data: Path = DataOpt,
    split: str = typer.Option("train", "--split", help="Split whose queries get negatives."),
    retriever: str = typer.Option("dense", "--retriever", help="dense | bm25 | hybrid (RRF ranks; scores stay "
                                  "the scorers' own), as KIND[:NAME][=MODEL]."),
    teacher: List[str] = typer.Option([], "--teacher", help="Extra scorer adding rank/score columns, "
                                      "e.g. bm25 or dense:e5=PATH; repeatable."),
    depth: int = typer.Option(200, help="Candidates retrieved per query and scorer."),
    model: Optional[Path] = ModelOpt,
    out: Path = typer.Option(..., "--out", help="Output folder: candidates.parquet, negatives.jsonl, stats.json."),
    corpus: Optional[Path] = CorpusOpt,
    skip_unknown: bool = SkipUnknownOpt,
    cache_dir: Optional[Path] = CacheOpt,
    batch_size: int = typer.Option(64, help="Encoding batch size."),
    search: str = typer.Option("auto", "--search", help="Dense search: exact | faiss | ivf | hnsw | ivf-sq8 | "
                               "auto (exact below 200k passages, else ivf). ANN recall@depth is measured against "
                               "exact search on a query sample and stored in the candidates' metadata."),
    nlist: Optional[int] = typer.Option(None, "--nlist", help="IVF lists (default ~4 sqrt(corpus size))."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="IVF lists searched (default: tuned to "
                                         "--target-recall on a query sample)."),
    ef_search: Optional[int] = typer.Option(None, "--ef-search", help="HNSW efSearch (default: tuned)."),
    recall_sample: int = typer.Option(200, "--recall-sample", help="Queries sampled (seeded) to measure ANN "
                                      "recall; as many again tune nprobe/efSearch."),
    target_recall: float = typer.Option(0.95, "--target-recall", help="Recall@depth that tuning aims for."),
    query_chunk: int = typer.Option(4096, "--query-chunk", help="Queries mined per chunk: the unit of memory "
                                    "and of checkpoints (OUT/.mine-checkpoint; a rerun resumes)."),
    float16: bool = typer.Option(False, "--float16", help="Store passage embeddings as float16 (half the "
                                 "disk and page cache; part of the cache key)."),
    backend: str = BackendOpt,
    passage_max_length: Optional[int] = typer.Option(None, "--passage-max-length", help="Max tokens per passage "
                                                     "(default: the model's; fewer is faster)."),
    restart: bool = typer.Option(False, "--restart", help="Discard a checkpoint left in OUT by an earlier, "
                                 "different mining run instead of refusing it."),
    engine: str = typer.Option("local", "--engine", help="Where encoding and search run: local | ray (a Ray "
                               "Data job embeds corpus shards, Ray tasks search them exactly, top-k merged: the "
                               "local engine's exact candidates; needs pip install 'hardneg[ray]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster of --engine ray "
                                              "(default: $RAY_ADDRESS, a `ray start` cluster here, else a new "
                                              "local Ray)."),
    ray_shards: Optional[int] = typer.Option(None, "--ray-shards", help="Corpus shards of --engine ray "
                                             "(default: one per CPU of the cluster)."),
    ray_actors: Optional[int] = typer.Option(None, "--ray-actors", help="Encoding actors (model copies) of "
                                             "--engine ray (default: one per GPU, else one per CPU)."),
    chunk_tokens: Optional[int] = ChunkTokensOpt,
    chunk_overlap: int = ChunkOverlapOpt,
    policy=None,
    fmt=None,
):
    """Retrieve candidates once (candidates.parquet), then select negatives with the policy options.

    With --chunk-tokens candidates and negatives are chunks of long documents; a positive
    document's best-scoring chunk is its positive and its other chunks are never negatives.
    """
    from hardneg.encode import EncoderConfig
    from hardneg.mine import MineConfig

    ds = _load(data, corpus, skip_unknown)
    config = MineConfig(retriever=retriever, teachers=list(teacher), depth=depth, split=split,
                        rank_by=policy.rank_by, score_by=policy.score_by, search=search, nlist=nlist,
                        nprobe=nprobe, ef_search=ef_search, recall_sample=recall_sample,
                        target_recall=target_recall, query_chunk=query_chunk, chunk_tokens=chunk_tokens,
                        chunk_overlap=chunk_overlap, engine=engine, ray_address=ray_address,
                        ray_shards=ray_shards, ray_actors=ray_actors)
    encoder = EncoderConfig(model=str(model) if model else None, batch_size=batch_size, float16=float16,
                            backend=backend, passage_max_length=passage_max_length)
    ds = _chunk(ds, chunk_tokens, chunk_overlap, model, passage_max_length)
    start = time.perf_counter()
    cands = _mine_resumable(ds, config, encoder, cache_dir, out, restart)
    _report_search(cands, out)
    console.print(f"mined {len(cands.table)} candidate rows for {cands.table['query_id'].nunique()} queries "
                  f"in {time.perf_counter() - start:.1f}s -> {out / 'candidates.parquet'}")
    _select_and_write(cands, policy, fmt, out, ds)


def _mine_resumable(ds, config, encoder, cache_dir, out: Path, restart: bool):
    """Mine to OUT/candidates.parquet with a checkpoint in OUT/.mine-checkpoint (resumed if there,
    deleted once the candidates are written)."""
    import shutil

    from hardneg.checkpoint import CHECKPOINT_DIRNAME
    from hardneg.mine import mine_candidates

    ckpt = out / CHECKPOINT_DIRNAME

    def progress(done: int, total: int) -> None:
        if total > 1:
            console.print(f"query chunk {done}/{total} mined (checkpoint: {ckpt})")

    cands = mine_candidates(ds, config, encoder, cache=cache_dir, checkpoint_dir=ckpt, restart=restart,
                            progress=progress)
    if cands.run.get("resumed_chunks"):
        console.print(f"resumed {cands.run['resumed_chunks']} of {cands.run['chunks']} query chunks from {ckpt}")
    cands.write(out / "candidates.parquet")
    shutil.rmtree(ckpt, ignore_errors=True)
    return cands


def _report_search(cands, out: Path) -> None:
    """Print each dense scorer's search (kind, params, measured recall, seconds); write OUT/search.json."""
    from hardneg.io import atomic_write_json

    searches = {n: s | cands.run.get("search", {}).get(n, {}) for n, s in cands.meta.get("search", {}).items()
                if s.get("kind") != "bm25s"}
    for name, s in searches.items():
        recall = (f", recall@{s['depth']} {s['recall_at_depth']:.3f} on {s['recall_sample']} sampled queries"
                  if s.get("recall_at_depth") is not None else "")
        params = ", ".join(f"{k}={v}" for k, v in s.get("params", {}).items())
        built = (f"build {s.get('build_seconds', 0):.1f}s, recall check {s.get('recall_seconds', 0):.1f}s, "
                 if s["kind"] not in ("exact", "auto") else "")
        console.print(f"search {name}: {s['kind']}{f' ({params})' if params else ''}{recall}; "
                      f"{built}search {s.get('search_seconds', 0):.1f}s")
    if searches:
        atomic_write_json(out / "search.json", searches)


@app.command("select")
@friendly
@policy_options
def select_cmd(
    candidates: Path = typer.Argument(..., help="A candidates.parquet written by `hardneg mine`."),
    out: Path = typer.Option(..., "--out", help="Output folder: negatives.jsonl, stats.json, [train.parquet]."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset for the texts (default: the one mined)."),
    corpus: Optional[Path] = CorpusOpt,
    policy=None,
    fmt=None,
):
    """Select negatives again from stored candidates: no retrieval, no encoding (seconds)."""
    from hardneg.candidates import CandidateSet
    from hardneg.chunking import chunked_like

    cands = CandidateSet.read(candidates)
    source = data or cands.meta.get("data")
    if not source:
        raise HardnegError(f"{candidates}: no dataset recorded; pass --data")
    _select_and_write(cands, policy, fmt, out, chunked_like(_load(Path(source), corpus, False), cands.meta))


# ---- training, the whole loop, the demo ---------------------------------------------------------
_TRAIN_HELP = {
    "loss": "auto (mnrl while it fits in 6 GB, else cached-mnrl) | mnrl (InfoNCE, in-batch + mined negatives) | "
            "cached-mnrl (GradCache: memory bounded by one chunk) | gist (a guide model masks "
            "in-batch false negatives) | marginmse (distils cross-encoder teacher margins).",
    "epochs": "Passes over the training rows (--max-steps overrides).",
    "batch_size": "Queries per training batch.",
    "lr": "Peak learning rate.",
    "warmup_ratio": "Fraction of the steps spent warming up.",
    "max_seq_length": "Max tokens per text while training (the model is saved with its own).",
    "num_negatives": "Negatives per training row (default: as many as the richest query has).",
    "short_rows": "Queries with fewer negatives than that: drop | repeat.",
    "seed": "Training seed.",
    "mini_batch_size": "Texts per GradCache chunk (cached-mnrl; gist with several negatives); default: as many "
                       "of the longest text as fit in 8,192 tokens.",
    "guide_model": "gist's guide model folder (default: a frozen copy of the starting model).",
    "student_range": "marginmse: LOW:HIGH cosine range the teacher margins are mapped onto.",
    "max_steps": "A fixed budget of optimizer steps (overrides --epochs).",
    "eval_steps": "Evaluate on dev every N steps (integer) or fraction of the run (default: every quarter).",
    "eval_queries": "Dev queries evaluated while training (seeded sample).",
    "eval_corpus": "Documents of that evaluation: the queries' positives plus a seeded sample.",
    "holdout_fraction": "Without a dev split: fraction of the train queries held out for evaluation.",
    "no_duplicates": "No-duplicates batch sampler (no repeated text inside a batch).",
    "mixed_precision": "auto (bf16 autocast on CPUs with AMX and on CUDA, else no) | no | bf16 | fp16 (CUDA only).",
    "query_prompt": "Prompt prepended to queries while training (e.g. 'query: ').",
    "passage_prompt": "Prompt prepended to passages while training (e.g. 'passage: ').",
    "logging_steps": "Log the training loss every N steps.",
    "show_progress": "Progress bars.",
    "checkpoint_dir": "Checkpoint folder (default: inside --out, removed after training).",
    "keep_checkpoints": "Keep the checkpoints after training.",
    "gather_across_devices": "Under torchrun / accelerate launch (several processes), in-batch losses use the "
                             "other devices' texts as negatives too (the global batch).",
    "memory_gb": "Cap on the planned peak memory in GB (default: 90% of what is free); a run estimated "
                 "above it is refused before the first step.",
}
_TRAIN_FLAGS = {"no_duplicates": "--no-duplicates/--allow-duplicates", "show_progress": "--progress/--no-progress",
                "keep_checkpoints": "--keep-checkpoints/--no-keep-checkpoints",
                "gather_across_devices": "--gather-across-devices/--no-gather-across-devices"}
_TRAIN_TEXT = {"student_range": str, "eval_steps": Optional[str]}  # parsed by _train_config


def _train_option_list() -> list[inspect.Parameter]:
    """One option per TrainConfig field, defaults taken from TrainConfig itself."""
    import typing
    from dataclasses import fields

    from hardneg.train import TrainConfig

    defaults = TrainConfig()
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        default = default.value if hasattr(default, "value") else default  # enums as their text
        if f.name == "student_range":
            default = "{:g}:{:g}".format(*default)
        hint = hints[f.name]
        annotation = _TRAIN_TEXT.get(f.name) or (hint if hint in (int, float, bool) else
                                                  Optional[int] if hint == (int | None) else
                                                  Optional[float] if hint == (float | None) else
                                                  str if default is not None else Optional[str])
        decl = _TRAIN_FLAGS.get(f.name, "--" + f.name.replace("_", "-"))
        out.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                     default=typer.Option(default, decl, help=_TRAIN_HELP[f.name])))
    return out


TRAIN_OPTIONS = _train_option_list()


def _train_config(**values):
    from hardneg.train import config_from_dict

    low, sep, high = str(values["student_range"]).partition(":")
    try:
        values["student_range"] = (float(low), float(high))
    except ValueError:
        raise HardnegError(f"--student-range must look like LOW:HIGH (e.g. 0:1), got {values['student_range']!r}") from None
    steps = _off(values["eval_steps"])
    try:
        values["eval_steps"] = None if steps is None else (int(steps) if steps.strip().isdigit() else float(steps))
    except ValueError:
        raise HardnegError(f"--eval-steps must be an integer, a fraction or 'none', got {steps!r}") from None
    return config_from_dict(values)


def train_options(fn):
    """Add one option per TrainConfig field to a command; it receives ``config``."""
    return option_group(TRAIN_OPTIONS, lambda **values: {"config": _train_config(**values)})(fn)


@app.command("train")
@friendly
@train_options
def train_cmd(
    data: Path = DataOpt,
    negatives: Optional[Path] = typer.Option(
        None, "--negatives", help="negatives.jsonl from `hardneg mine`/`select`. Left out, or empty because the "
        "policy was the in-batch-only baseline (--sampler none): train on the (query, positive) pairs of --split."),
    model: Optional[Path] = ModelOpt,
    out: Path = typer.Option(..., "--out", help="Model folder to write (a normal sentence-transformers model)."),
    corpus: Optional[Path] = CorpusOpt,
    skip_unknown: bool = SkipUnknownOpt,
    dev_split: Optional[str] = typer.Option(None, "--dev-split", help="Split evaluated while training (default: "
                                            "dev if present, else --holdout-fraction of the train queries)."),
    split: str = typer.Option("train", "--split", help="Split whose pairs train when there are no negatives."),
    config=None,
):
    """Fine-tune a sentence-transformers model on mined negatives; keeps the best dev checkpoint."""
    from hardneg.train import train

    ds = _load(data, corpus, skip_unknown)
    result = train(ds, negatives, str(model) if model else None, out, config, dev_split, pairs_split=split)
    console.print(result.data.summary())
    console.print(f"{result.memory['summary']}; precision {result.precision} "
                  f"on {result.machine['cpu']} (AMX-BF16: {'yes' if result.machine['amx_bf16'] else 'no'})")
    if result.evals:
        start, best = result.before, result.best or result.evals[-1]
        console.print(f"dev NDCG@10 ({result.eval_set}): start {start['ndcg@10']:.4f} -> kept step "
                      f"{best['step']} {best['ndcg@10']:.4f}")
    if result.losses:
        console.print(f"loss {result.losses[0][1]:.4f} (step {result.losses[0][0]}) -> {result.losses[-1][1]:.4f} "
                      f"(step {result.losses[-1][0]})")
    console.print(f"trained in {result.train_seconds:.1f}s; wrote {out} (model card README.md, hardneg_train.json)")


def _run_and_print(config, out: Path, title: str) -> None:
    from hardneg.io import atomic_write_text
    from hardneg.loop import format_run_table, run
    from hardneg.recipe import dump_recipe

    atomic_write_text(out / "recipe.toml", dump_recipe(config))
    result = run(config, out, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    console.print(format_run_table(result, title=f"{title}: {result.metrics['split']}, "
                                                 f"{result.metrics['n_queries']} queries"))
    if not result.metrics["tuned_kept_on_dev"]:
        console.print("note: no round beat the base model on dev; 'tuned' is round r0, shown for the record")
    for note in result.metrics["notes"]:
        console.print(f"note: {note}")
    console.print(f"wrote {out}/report.html, report.md, metrics.json, recipe.toml, eval/, rounds/"
                  f"{', model/' if result.metrics['tuned_kept_on_dev'] else ''} ({result.seconds:.0f}s)")


SetOpt = typer.Option([], "--set", help="Override a recipe key: SECTION.KEY=VALUE (TOML value), repeatable.")


def _overrides(sets: List[str], **loop) -> dict:
    from hardneg.recipe import merge_overrides, parse_override

    loop_keys = {k: v for k, v in loop.items() if v is not None}
    return merge_overrides(*(parse_override(s) for s in sets), {"loop": loop_keys} if loop_keys else {})


@app.command("run")
@friendly
def run_cmd(
    recipe: Path = typer.Argument(..., help="A TOML recipe (`hardneg recipe` prints the commented default)."),
    out: Path = typer.Option(..., "--out", help="Output folder: report.md, metrics.json, model/, eval/, rounds/."),
    set_: List[str] = SetOpt,
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Re-mining rounds after the first fine-tune ([loop] rounds)."),
    round_init: Optional[str] = typer.Option(None, "--round-init", help="base | previous ([loop] round_init)."),
    round_gate: Optional[str] = typer.Option(None, "--round-gate", help="gain | significant ([loop] round_gate)."),
):
    """Run a recipe: baselines -> mine -> select -> train -> rounds -> test evaluation with lift and p-values."""
    from hardneg.recipe import load_recipe

    overrides = _overrides(set_, rounds=rounds, round_init=round_init, round_gate=round_gate)
    config = load_recipe(recipe, overrides, override_source="command line")
    _run_and_print(config, out, f"hardneg run {recipe.name}")


@app.command()
@friendly
def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset (default: the repo's examples/scifact-sample)."),
    set_: List[str] = SetOpt,
):
    """The default recipe, scaled down, on the SciFact sample: under 5 minutes on 2 CPU cores."""
    from hardneg.recipe import demo_data_path, demo_overrides, load_recipe, merge_overrides, parse_override

    start = time.perf_counter()
    path = data or demo_data_path()
    if not path.exists():
        raise HardnegError(f"{path}: not found; the demo reads the repository's examples/ folder: run it from a "
                           "source checkout or pass --data")
    overrides = merge_overrides(demo_overrides(path), *(parse_override(s) for s in set_))
    config = load_recipe(None, overrides, override_source="demo settings")
    console.print(f"demo: the default recipe on {path} with smaller settings "
                  f"(passage max length {config.encoder.passage_max_length}, {config.train.max_steps} training "
                  f"steps of {config.train.batch_size}, {config.loop.rounds} re-mining round); "
                  f"full settings: `hardneg recipe`")
    _run_and_print(config, out, "demo")
    console.print(f"demo wall time {time.perf_counter() - start:.0f}s")


@app.command("recipe")
@friendly
def recipe_cmd(
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of printing."),
):
    """Print the commented default recipe (every key, full-quality defaults) to start your own."""
    from hardneg.io import atomic_write_text
    from hardneg.recipe import default_recipe_text

    text = default_recipe_text()
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out}")


@app.command()
@friendly
def audit(
    candidates: Path = typer.Argument(..., help="candidates.parquet of a TRAIN split mine (never an eval split)."),
    data: Optional[Path] = typer.Option(None, "--data", help="The dataset (texts for the judge); needed with "
                                        "--cross-encoder."),
    out: Path = typer.Option(..., "--out", help="Output folder: audit.json."),
    hide: float = typer.Option(0.5, help="Fraction of the positives hidden, per query with two or more."),
    draws: int = typer.Option(5, help="Seeded hiding draws, averaged."),
    seed: int = typer.Option(0, help="Seed of the hiding draws and of the judge's sample."),
    cross_encoder: Optional[Path] = typer.Option(None, "--cross-encoder", help="A CrossEncoder folder (or a "
                                                 "cross-fitted one from `hardneg train-reranker --folds`) "
                                                 "to judge a sample of unlabeled candidates per bucket."),
    judge_threshold: float = typer.Option(0.0, help="Judged relevant when the cross-encoder score is above this "
                                          "(a logit of 0 is p = 0.5)."),
    judge_sample: int = typer.Option(100, help="Unlabeled candidates judged per rank bucket."),
    corpus: Optional[Path] = CorpusOpt,
):
    """The false-negative curve: per original-rank bucket, how often an unlabeled candidate is relevant.

    With labels: hide a fraction of the positives of queries that have several and count the
    hidden ones per bucket (Wilson 95% intervals). With --cross-encoder: the share of a
    sample of unlabeled candidates per bucket the judge calls relevant. Writes OUT/audit.json;
    `hardneg calibrate OUT/audit.json` turns it into a window.
    """
    from hardneg.audit import judge_audit, label_audit
    from hardneg.candidates import CandidateSet
    from hardneg.io import atomic_write_json

    cands = CandidateSet.read(candidates)
    doc: dict = {"candidates": str(candidates), "labels": None, "judge": None}
    try:
        doc["labels"] = label_audit(cands, hide, draws, seed)
    except HardnegError as e:
        if cross_encoder is None:
            raise
        console.print(f"labels: {e}")
    if cross_encoder is not None:
        if data is None:
            raise HardnegError("--cross-encoder needs --data (the texts it judges)")
        from hardneg.rerank import load_judge

        ds = _load(data, corpus, False)
        doc["judge"] = judge_audit(cands, ds.doc_text_map(), ds.queries, load_judge(cross_encoder),
                                   judge_threshold, judge_sample, seed)
    atomic_write_json(out / "audit.json", doc)
    _print_audit(doc)
    console.print(f"wrote {out / 'audit.json'}")


def _print_audit(doc: dict) -> None:
    from rich.table import Table

    table = Table(title="false-negative curve (share of unlabeled candidates that are relevant)")
    table.add_column("ranks")
    kinds = [k for k in ("labels", "judge") if doc.get(k)]
    for kind in kinds:
        table.add_column(f"{kind}: rate [95% CI]", justify="right")
        table.add_column("n", justify="right")
    for i, b in enumerate(doc[kinds[0]]["buckets"]):
        cells = [b["bucket"]]
        for kind in kinds:
            c = doc[kind]["buckets"][i]
            ci = f" [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]" if c["ci"] else ""
            cells += ["-" if c["rate"] is None else f"{c['rate']:.3f}{ci}", f"{c['n']:.0f}"]
        table.add_row(*cells)
    console.print(table)
    pos = (doc.get("judge") or {}).get("positives") or {}
    if pos.get("n"):
        console.print(f"the judge calls {pos['rate']:.1%} of {pos['n']} sampled labeled positives relevant "
                      f"[{pos['ci'][0]:.3f}, {pos['ci'][1]:.3f}]: its recall at this threshold")
    fixed = [b.get("corrected") for b in (doc.get("judge") or {}).get("buckets", [])]
    if fixed and all(fixed):
        console.print(f"judge corrected for recall {fixed[0]['recall']:.3f} and false alarms "
                      f"{fixed[0]['false_alarm']:.3f} (its deepest bucket): "
                      + ", ".join(f"{b['bucket']} {c['rate']:.3f}" for b, c in zip(doc["judge"]["buckets"], fixed)))


@app.command()
@friendly
def calibrate(
    audit_file: Path = typer.Argument(..., help="audit.json from `hardneg audit`."),
    target: float = typer.Option(0.05, help="The false-negative rate the selected negatives must stay under."),
    window_end: int = typer.Option(100, help="The window's end; the calibration chooses its start."),
    use: str = typer.Option("auto", help="Curve: auto (the judge's when present, else the labels'), judge, labels."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the recipe keys to this TOML file."),
):
    """Pick the smallest window start (and a percent threshold) under the target false-negative rate.

    Prints (or writes) recipe keys: `[select] window = "S:END"` and `percent`. In a recipe,
    `window = "auto"` does this inside `hardneg run` for every round.
    """
    import json

    from hardneg.audit import calibrate as calibrate_audit
    from hardneg.io import atomic_write_text

    try:
        doc = json.loads(audit_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HardnegError(f"{audit_file}: cannot read the audit ({e})") from None
    cal = calibrate_audit(doc, target, window_end, use)
    text = cal.recipe_toml()
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out}: window {cal.window[0]}:{cal.window[1]}, percent {cal.percent}")


# ---- cross-encoder: rescore, train-reranker ------------------------------------------------------
CrossEncoderOpt = typer.Option(..., "--cross-encoder", help="A CrossEncoder folder, or a cross-fit folder from "
                               "`hardneg train-reranker --folds K` (each query scored by the model that never saw it).")
CheckOpt = typer.Option(True, "--check/--no-check", help="Check that the cross-encoder reranks BM25's top 100 "
                        "better than BM25 (its train-reranker record, else dev, else the candidates' queries).")
CheckQueriesOpt = typer.Option(100, "--check-queries", help="Queries of that check (seeded sample).")


def _check_cross_encoder(reranker, ds, cands, queries: int, batch_size: int, cache) -> None:
    """Print how the cross-encoder reranks BM25's top 100 (its recorded check, else the dev split,
    else the candidate set's queries); warn when it does not beat BM25."""
    from hardneg.rerank import check_reranker, recorded_check, warn_if_worse

    check = recorded_check(reranker)
    if check is None:
        split = "dev" if "dev" in ds.splits else str(cands.meta.get("split", "train"))
        qids = None if split == "dev" else cands.query_ids()
        source = f"the '{split}' split" if split == "dev" else (
            f"'{split}' queries of the candidate set" + (", each scored by the fold model that never saw it"
                                                         if reranker.folds else
                                                         " (optimistic if the cross-encoder trained on them)"))
        check = check_reranker(reranker, ds, split, query_ids=qids, max_queries=queries, batch_size=batch_size,
                               cache=cache, source=source)
    console.print(check.summary(), soft_wrap=True)
    warn_if_worse(check)


def _rescore(cands, ds, cross_encoder: Path, window: str, *, rank_by=None, batch_size: int = 32, cache_dir=None,
             check: bool = True, check_queries: int = 100):
    """Check the cross-encoder (unless told not to), then rescore; prints both."""
    from hardneg.cache import EmbeddingCache
    from hardneg.rerank import Reranker, rescore_with_report

    reranker = Reranker.load(cross_encoder)
    cache = EmbeddingCache(cache_dir)
    if check:
        _check_cross_encoder(reranker, ds, cands, check_queries, batch_size, cache)
    out, report = rescore_with_report(cands, ds, reranker, window=window, rank_by=rank_by, batch_size=batch_size,
                                      cache=cache)
    console.print(f"cross-encoder: {report.summary()}")
    return out


@app.command("rescore")
@friendly
def rescore_cmd(
    candidates: Path = typer.Argument(..., help="A candidates.parquet written by `hardneg mine`."),
    cross_encoder: Path = CrossEncoderOpt,
    out: Path = typer.Option(..., "--out", help="The rescored candidates file (a folder: OUT/candidates.parquet)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset for the texts (default: the one mined)."),
    corpus: Optional[Path] = CorpusOpt,
    window: str = typer.Option("1:100", "--window", help="MIN:MAX original ranks scored (both ends kept; 'off': "
                               "all), plus every known positive."),
    rank_by: Optional[str] = typer.Option(None, "--rank-by", help="Scorer whose ranks the window uses."),
    batch_size: int = typer.Option(32, "--batch-size", help="Cross-encoder batch size."),
    cache_dir: Optional[Path] = CacheOpt,
    check: bool = CheckOpt,
    check_queries: int = CheckQueriesOpt,
):
    """Add cross-encoder scores (score_ce, logits) for the candidates in a rank window and all positives.

    Then `hardneg select OUT --denoise-above T` drops candidates it scores above T (unscored
    ones are kept), and the export carries its scores as teacher pos_scores/neg_scores for
    `hardneg train --loss marginmse`.
    """
    from hardneg.candidates import CandidateSet
    from hardneg.chunking import chunked_like

    cands = CandidateSet.read(candidates)
    source = data or cands.meta.get("data")
    if not source:
        raise HardnegError(f"{candidates}: no dataset recorded; pass --data")
    ds = chunked_like(_load(Path(source), corpus, False), cands.meta)
    target = out if out.suffix == ".parquet" else out / "candidates.parquet"
    rescored = _rescore(cands, ds, cross_encoder, window, rank_by=rank_by, batch_size=batch_size,
                        cache_dir=cache_dir, check=check, check_queries=check_queries)
    rescored.write(target)
    console.print(f"wrote {target}; e.g. `hardneg select {target} --denoise-above 0` (logits: 0 is p = 0.5)")


@app.command("train-reranker")
@friendly
def train_reranker_cmd(
    data: Path = DataOpt,
    out: Path = typer.Option(..., "--out", help="Folder of the CrossEncoder (fold_<i>/ + folds.json with --folds)."),
    negatives: Optional[Path] = typer.Option(None, "--negatives", help="negatives.jsonl from `hardneg mine`/`select`."),
    candidates: Optional[Path] = typer.Option(None, "--candidates", help="Or a candidates.parquet: negatives drawn "
                                              "uniformly from original ranks --window."),
    window: str = typer.Option("10:100", "--window", help="With --candidates: MIN:MAX ranks negatives come from."),
    model: Optional[Path] = typer.Option(None, "--model", help="Starting model folder (default: the bundled "
                                         "all-MiniLM-L6-v2; a sentence-transformers folder gets a new head)."),
    corpus: Optional[Path] = CorpusOpt,
    skip_unknown: bool = SkipUnknownOpt,
    dev_split: Optional[str] = typer.Option(None, "--dev-split", help="Split of its evaluation (default: dev if "
                                            "present, else --holdout-fraction of the train queries)."),
    folds: int = typer.Option(1, "--folds", help="K >= 2: cross-fit K models, each never trained on its fold's "
                              "queries (for judging training queries); evaluated out of fold."),
    loss: str = typer.Option("mnrl", "--loss", help="mnrl: listwise softmax over the positive, mined and in-batch "
                             "negatives (learns within tens of steps); bce: binary labels per pair."),
    in_batch_negatives: int = typer.Option(4, "--in-batch-negatives", help="mnrl: other queries' documents added "
                                           "to each softmax."),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the data (--max-steps overrides)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Queries (mnrl) or pairs (bce) per training batch."),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate."),
    max_length: int = typer.Option(256, "--max-length", help="Max tokens of a (query, document) pair."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="A fixed budget of optimizer steps."),
    seed: int = typer.Option(42, "--seed", help="Seed of training, folds, held-out queries and sampling."),
    num_negatives: Optional[int] = typer.Option(None, "--num-negatives", help="Mined negatives per query (default: "
                                                "3 with mnrl; with bce all of --negatives, 7 from --candidates)."),
    holdout_fraction: float = typer.Option(0.1, "--holdout-fraction", help="Without a dev split (and --folds 1): "
                                           "train queries held out for the evaluation."),
    eval_queries: int = typer.Option(200, "--eval-queries", help="Queries of the evaluation (seeded sample)."),
    eval_depth: int = typer.Option(100, "--eval-depth", help="The evaluation reranks BM25's top this many."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
):
    """Train a cross-encoder reranker on train positives (1) and mined negatives (0); check it against BM25."""
    from hardneg.rerank import warn_if_worse
    from hardneg.train_reranker import MNRL_NEGATIVES, RerankerConfig, rows_from_candidates, train_reranker

    if (negatives is None) == (candidates is None):
        raise HardnegError("give exactly one of --negatives and --candidates")
    config = RerankerConfig(loss=loss, in_batch_negatives=in_batch_negatives, epochs=epochs, batch_size=batch_size,
                            lr=lr, max_length=max_length, max_steps=max_steps,
                            seed=seed, folds=folds, num_negatives=num_negatives, holdout_fraction=holdout_fraction,
                            eval_queries=eval_queries, eval_depth=eval_depth, show_progress=progress)
    ds = _load(data, corpus, skip_unknown)
    rows = negatives
    if candidates is not None:
        from hardneg.candidates import CandidateSet
        from hardneg.select import parse_window

        default_negatives = MNRL_NEGATIVES if config.loss == "mnrl" else 7
        rows = rows_from_candidates(CandidateSet.read(candidates), ds, num_negatives=num_negatives or default_negatives,
                                    window=parse_window(window), seed=seed)
    result = train_reranker(ds, rows, out, str(model) if model else None, config, dev_split)
    d = result.data
    console.print(f"trained on {d['pairs']:,} pairs ({d['positives']:,} positive, {d['negatives']:,} negative) "
                  f"of {d['queries']:,} queries" + (f" in {folds} folds" if result.folds else "")
                  + f" in {result.train_seconds:.1f}s")
    if result.check is not None:
        console.print(result.check.summary(), soft_wrap=True)
        warn_if_worse(result.check)
    console.print(f"wrote {out} ({'fold_<i>/, folds.json, ' if result.folds else ''}hardneg_reranker.json)")


# ---- the HTML report ----------------------------------------------------------------------------
@app.command("report")
@friendly
def report_cmd(
    run_dir: Path = typer.Argument(..., help="Output folder of `hardneg run` (holds metrics.json)."),
    progression: Optional[Path] = typer.Option(None, "--progression", help="A Markdown progression table "
                                               "(benchmarks/progression.py's table.md); default RUN_DIR/progression.md."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="An audit.json (`hardneg audit`); default "
                                         "RUN_DIR/audit.json, RUN_DIR/audit/audit.json or the tuned round's own."),
    sample: int = typer.Option(20, "--sample", help="Train queries in the per-query view (seeded)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-query sample."),
):
    """Write RUN_DIR/report.html (self-contained: images embedded, no network) and RUN_DIR/plots/*.png."""
    from hardneg.report import write_report

    print(write_report(run_dir, progression=progression, audit=audit, sample=sample, seed=seed))


# ---- positives from click logs and from an unlabeled corpus -------------------------------------
@app.command("clicks")
@friendly
def clicks_cmd(
    log: Path = typer.Argument(..., help="Click log: JSONL, CSV/TSV or Parquet; one impression per line with query, "
                               "shown (ids in displayed order), clicked, optional query_id, dwell, timestamp, session."),
    corpus: Path = typer.Option(..., "--corpus", help="Corpus JSONL[.gz] (or a BEIR folder holding one)."),
    out: Path = typer.Option(..., "--out", help="Output BEIR folder: corpus, queries.jsonl, qrels/train.tsv "
                             "[qrels/test.tsv], skip_above.tsv, clicks_stats.json, position_bias.md."),
    min_dwell: Optional[float] = typer.Option(None, "--min-dwell", help="A click counts only with dwell >= this "
                                              "many seconds (clicks without a dwell time then never count)."),
    last_click: bool = typer.Option(False, "--last-click/--all-clicks", help="Count only the last click of "
                                    "each impression."),
    min_clicks: int = typer.Option(1, "--min-clicks", help="Counted clicks a (query, doc) pair needs."),
    min_ctr: float = typer.Option(0.0, "--min-ctr", help="Counted clicks / impressions showing the pair, at least."),
    test_fraction: float = typer.Option(0.0, "--test-fraction", help="Fraction of queries held out as "
                                        "qrels/test.tsv (seeded split by query)."),
    seed: int = typer.Option(42, "--seed", help="Seed of the train/test split."),
    min_skips: int = typer.Option(1, "--min-skips", help="Skips a skip-above negative needs."),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="Drop shown ids missing from the corpus "
                                      "(counted) instead of failing."),
    link: bool = typer.Option(False, "--link", help="Symlink the corpus instead of copying it."),
):
    """Positives from a click log (and skip-above negatives): a BEIR folder `mine` and `train` read."""
    from rich.table import Table

    from hardneg.clicks import ClickConfig, ClickPolicy, clicks_to_beir

    config = ClickConfig(ClickPolicy(min_dwell, last_click, min_clicks, min_ctr), test_fraction, seed,
                         min_skips, skip_unknown, link)
    result = clicks_to_beir(log, corpus, out, config)
    s, c = result.stats, result.stats["counts"]
    table = Table(title="click-through rate by position")
    for name in ("position", "impressions", "clicks", "CTR", "CTR / CTR@1", "counted CTR"):
        table.add_column(name, justify="right")
    for r in result.position_bias.itertuples(index=False):
        rel = "-" if r.ctr_relative != r.ctr_relative else f"{r.ctr_relative:.3f}"
        table.add_row(str(r.position), f"{r.impressions:,}", f"{r.clicks:,}", f"{r.ctr:.4f}", rel, f"{r.counted_ctr:.4f}")
    console.print(table)
    console.print(f"{s['impressions']:,} impressions of {s['queries']:,} queries; {c['clicks']:,} clicks, "
                  f"{c['clicks_counted']:,} counted -> {c['positives']:,} positives for "
                  f"{c['queries_with_positives']:,} queries ({s['train_queries']:,} train, {s['test_queries']:,} test); "
                  f"{s['skip_above_pairs']:,} skip-above pairs", soft_wrap=True)
    console.print(f"wrote {out} ({', '.join(result.files)})", soft_wrap=True)


@app.command("skip-above")
@friendly
def skip_above_cmd(
    candidates: Path = typer.Argument(..., help="A candidates.parquet written by `hardneg mine` on a "
                                      "`hardneg clicks` folder."),
    skips: Path = typer.Option(..., "--skips", help="skip_above.tsv written by `hardneg clicks`."),
    out: Path = typer.Option(..., "--out", help="The new candidates.parquet (with rows of source clicks-skip-above)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset for the duplicate/query-text flags "
                                        "(default: the one mined)."),
    corpus: Optional[Path] = CorpusOpt,
):
    """Add skip-above negatives to a candidate set as a separate, flagged source.

    They have no retriever rank: a --window drops them. Select them on purpose with
    `hardneg select ... --rank-by clicks --score-by clicks --window 1:20 --percent off`
    (the window is then on displayed positions; most-skipped first).
    """
    from hardneg.candidates import CandidateSet
    from hardneg.clicks import add_skip_above, read_skip_above

    cands = CandidateSet.read(candidates)
    source = data or cands.meta.get("data")
    ds = _load(Path(source), corpus, False) if source else None
    result = add_skip_above(cands, read_skip_above(skips), ds)
    result.write(out)
    n = result.meta["skip_above"]
    console.print(f"{n['pairs']:,} skip-above pairs: {n['added']:,} rows added, {n['flagged_retrieved']:,} "
                  f"retrieved rows flagged, {n['not_mined']:,} for queries not in the set, "
                  f"{n['positives_refused']:,} known positives refused -> {out}", soft_wrap=True)


@app.command("synth")
@friendly
def synth_cmd(
    corpus: Path = typer.Option(..., "--corpus", help="Corpus JSONL[.gz] (or a BEIR folder holding one)."),
    method: str = typer.Option("ict", "--method", help="ict (sentence -> rest of its passage) | title (title -> "
                               "body) | crop (two random spans) | llm (queries from --llm-url)."),
    out: Path = typer.Option(..., "--out", help="Output BEIR folder: corpus.jsonl (the training corpus), "
                             "queries.jsonl, qrels/train.tsv, pairs.jsonl, synth.json."),
    per_doc: int = typer.Option(1, "--per-doc", help="Queries per document (title: at most 1)."),
    seed: int = typer.Option(42, "--seed", help="Seed of every random choice."),
    keep_prob: float = typer.Option(0.1, "--keep-prob", help="ict: probability the query sentence stays in its "
                                    "positive (the ICT paper's 0.1)."),
    min_query_words: int = typer.Option(4, "--min-query-words", help="Shorter queries (sentences, titles, "
                                        "crops) are dropped; crop: the shortest query span."),
    max_query_words: int = typer.Option(64, "--max-query-words", help="Longer queries are dropped; crop: the "
                                        "longest query span."),
    min_positive_words: int = typer.Option(16, "--min-positive-words", help="Shorter positives are skipped; "
                                           "crop: the shortest positive span."),
    max_positive_words: Optional[int] = typer.Option(None, "--max-positive-words", help="Longer positives are "
                                                     "skipped (crop: the longest span; default 128)."),
    min_alpha: float = typer.Option(0.5, "--min-alpha", help="Least share of letters among a query's "
                                    "non-space characters."),
    boilerplate_min_docs: int = typer.Option(3, "--boilerplate-min-docs", help="A sentence (title) found in this "
                                             "many documents is boilerplate (0: off)."),
    max_docs: Optional[int] = typer.Option(None, "--max-docs", help="Use a seeded sample of this many documents."),
    llm_url: Optional[str] = typer.Option(None, "--llm-url", help="llm: OpenAI-compatible base URL, e.g. "
                                          "http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama)."),
    llm_model: Optional[str] = typer.Option(None, "--llm-model", help="llm: model name (default: the server's first)."),
    llm_timeout: float = typer.Option(30.0, "--llm-timeout", help="llm: seconds per request."),
):
    """Positives from an unlabeled corpus (no qrels, no model): a BEIR folder `mine` and `train` read."""
    from hardneg.synth import SynthConfig, write_synth

    config = SynthConfig(method, per_doc, seed, keep_prob, min_query_words, max_query_words, min_positive_words,
                         max_positive_words, min_alpha, boilerplate_min_docs or None, max_docs, llm_url, llm_model,
                         llm_timeout)
    result = write_synth(corpus, out, config)
    c = result.counts
    dropped = ", ".join(f"{k} {v:,}" for k, v in c.items() if k not in ("pairs", "queries", "docs_used",
                                                                         "docs_considered") and v)
    console.print(f"{config.method.value}: {c['pairs']:,} pairs ({c['queries']:,} queries) from "
                  f"{c.get('docs_used', 0):,} of {c['docs_considered']:,} documents"
                  + (f"; {dropped}" if dropped else ""), soft_wrap=True)
    console.print(f"wrote {out} (corpus.jsonl, queries.jsonl, qrels/train.tsv, pairs.jsonl, synth.json)",
                  soft_wrap=True)


# ---- before tuning: diagnose -------------------------------------------------------------------
def _click_bias(log: Optional[Path], data: Path, ds) -> Optional[dict]:
    """Position bias for `diagnose`: from --clicks, else from a `hardneg clicks` folder's stats."""
    import json

    from hardneg.clicks import position_bias, read_click_log
    from hardneg.diagnose import click_bias

    if log is not None:
        table = position_bias(read_click_log(log, set(ds.doc_ids), skip_unknown=True))
        return click_bias(table.to_dict("records"), str(log))
    stats = Path(data) / "clicks_stats.json"
    if stats.is_file():
        return click_bias(json.loads(stats.read_text())["position_bias"], str(stats))
    return None


@app.command("diagnose")
@friendly
def diagnose_cmd(
    data: Path = DataOpt,
    out: Path = typer.Option(..., "--out", help="Output folder: diagnosis.md/.html/.json/.png, "
                             "suspicious_positives.tsv, positive_pairs.tsv."),
    model: Optional[Path] = ModelOpt,
    split: str = typer.Option("test", "--split", help="Held-out split the gap is measured on."),
    corpus: Optional[Path] = CorpusOpt,
    skip_unknown: bool = SkipUnknownOpt,
    cache_dir: Optional[Path] = CacheOpt,
    batch_size: int = typer.Option(64, help="Encoding batch size."),
    query_prompt: str = typer.Option("", help="Prompt prepended to queries (e.g. 'query: ' for E5)."),
    passage_prompt: str = typer.Option("", help="Prompt prepended to passages (e.g. 'passage: ')."),
    low_rank: int = typer.Option(100, "--low-rank", help="A positive both BM25 and the model rank worse than "
                                 "this is suspicious (a tenth of the corpus on corpora under 10x this)."),
    near_dup: float = typer.Option(0.98, "--near-dup", help="Cosine above which two documents are near duplicates."),
    max_pairs: int = typer.Option(5000, "--max-pairs", help="Pairs analysed for overlap and ranks (seeded sample)."),
    seed: int = typer.Option(0, help="Seed of the significance test, intervals and samples."),
    clicks: Optional[Path] = typer.Option(None, "--clicks", help="A click log (as `hardneg clicks` reads): adds "
                                          "its click-through rate by position. A folder written by `hardneg "
                                          "clicks` is picked up without it (its clicks_stats.json)."),
):
    """Before spending money: BM25 vs the untuned model, vocabulary fit, overlap, suspicious positives, a verdict."""
    from hardneg.diagnose import DiagnoseConfig, diagnose
    from hardneg.diagnose_report import write_diagnosis
    from hardneg.encode import Encoder

    start = time.perf_counter()
    config = DiagnoseConfig(split=split, low_rank=low_rank, near_dup=near_dup, max_pairs=max_pairs, seed=seed)
    ds = _load(data, corpus, skip_unknown)
    ds.split_qrels(split)  # a missing split fails before the model loads
    enc_cfg = _encoder_config(model, batch_size, None, None, query_prompt, passage_prompt)
    encoder = Encoder(enc_cfg) if cache_dir is None else Encoder(enc_cfg, cache=cache_dir)
    diag = diagnose(ds, encoder, config)
    diag.clicks = _click_bias(clicks, data, ds)
    write_diagnosis(diag, out, ds)
    m = diag.gap["means"]
    console.print(f"NDCG@10 on {split} ({diag.gap['n_queries']} queries): bm25 {m['bm25']['ndcg@10']:.4f}, "
                  f"untuned {m['dense']['ndcg@10']:.4f}, hybrid {m['hybrid']['ndcg@10']:.4f}", soft_wrap=True)
    console.print(f"verdict: tuning {diag.verdict.outlook.phrase}. {diag.verdict.headline}", soft_wrap=True,
                  markup=False)
    for reason in diag.verdict.reasons:
        console.print(f"  - {reason}", soft_wrap=True, markup=False)
    if diag.clicks:
        console.print(f"clicks: {diag.clicks['note']}", soft_wrap=True, markup=False)
    console.print(f"wrote {out}/diagnosis.md, diagnosis.html, diagnosis.json, suspicious_positives.tsv "
                  f"({time.perf_counter() - start:.1f}s)", soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
