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
CacheOpt = typer.Option(None, "--cache-dir", help="Embedding cache folder (default: $HARDNEG_CACHE or ~/.cache/hardneg).")


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


def _encoder_config(model, batch_size, query_max_length, passage_max_length, query_prompt, passage_prompt):
    from hardneg.encode import EncoderConfig

    return EncoderConfig(model=str(model) if model else None, batch_size=batch_size,
                         query_max_length=query_max_length, passage_max_length=passage_max_length,
                         query_prompt=query_prompt, passage_prompt=passage_prompt)


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
    query_max_length: Optional[int] = typer.Option(None, help="Max tokens per query (default: the model's)."),
    passage_max_length: Optional[int] = typer.Option(None, help="Max tokens per passage (default: the model's)."),
    query_prompt: str = typer.Option("", help="Prompt prepended to queries (e.g. 'query: ' for E5)."),
    passage_prompt: str = typer.Option("", help="Prompt prepended to passages (e.g. 'passage: ')."),
    depth: int = typer.Option(100, help="Documents retrieved per query (metrics use @10 and @100)."),
    seed: int = typer.Option(0, help="Seed of the permutation test and bootstrap intervals."),
):
    """Evaluate retrievers on a held-out split: NDCG@10, Recall@10/100, MRR@10, MAP@100 with significance."""
    from hardneg.evaluate import evaluate, format_table, write_eval
    from hardneg.retrieve import build_retrievers

    start = time.perf_counter()
    ds = _load(data, corpus, skip_unknown)
    qids = list(ds.positives(split)) if split in ds.qrels else ds.split_qrels(split)
    texts = [ds.queries[q] for q in qids]
    cfg = _encoder_config(model, batch_size, query_max_length, passage_max_length, query_prompt, passage_prompt)
    retrievers = build_retrievers(retriever, ds.doc_ids, ds.doc_texts(), cfg, cache=cache_dir)
    rankings = {}
    for name, r in retrievers.items():
        t = time.perf_counter()
        rankings[name] = r.search(qids, texts, depth)
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


# Selection policy options, shared by `mine` and `select` (one definition, added by a decorator).
# Defaults are the provisional default policy: NV-Retriever's percent 0.95 + top, window 10:100.
POLICY_OPTIONS = [
    _opt("window", "10:100", str, "MIN:MAX 1-based ranks on the ORIGINAL ranking (counted with known "
         "positives), both ends kept, applied before any other filter ('off' for none). "
         "Unlike sentence-transformers' range_min, which skips surviving candidates."),
    _opt("percent", "0.95", str, "Keep a candidate only if score <= P x positive score (NV-Retriever; "
         "'off' for none). Refused for scorers whose scores can be negative: use --margin."),
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


def policy_options(fn):
    """Add the selection options to a command; it receives ``policy`` and ``fmt``."""
    sig = inspect.signature(fn)
    names = [p.name for p in POLICY_OPTIONS]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = {n: kwargs.pop(n) for n in names}
        fmt = values.pop("format")
        return fn(*args, policy=_policy(**values), fmt=fmt, **kwargs)

    kept = [p for p in sig.parameters.values() if p.name not in ("policy", "fmt")]
    wrapper.__signature__ = sig.replace(parameters=kept + POLICY_OPTIONS)
    return wrapper


def _off(text: str | None) -> str | None:
    return None if text is None or text.strip().lower() in ("off", "none", "") else text


def _policy(window, percent, near_dup, **rest):
    from hardneg.select import SelectionPolicy

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
    docs = _DocTexts(ds)
    report = export(mined, docs, ds.queries, out, fmt)
    atomic_write_json(out / "stats.json", mined.stats | {"files": report, "policy": policy.to_dict()})
    console.print(format_stats_table(mined.stats))
    console.print(f"selected in {elapsed:.3f}s; wrote {', '.join(sorted(report))} and stats.json to {out}")


class _DocTexts:
    """Read-only mapping doc id -> text that builds texts lazily (exports touch few docs)."""

    def __init__(self, ds):
        self.ds = ds

    def __getitem__(self, doc_id: str) -> str:
        return self.ds.doc_text(doc_id)

    def __contains__(self, doc_id: object) -> bool:
        try:
            self.ds.doc_index(doc_id)
            return True
        except KeyError:
            return False

    def get(self, doc_id, default=None):
        return self[doc_id] if doc_id in self else default


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
    policy=None,
    fmt=None,
):
    """Retrieve candidates once (candidates.parquet), then select negatives with the policy options."""
    from hardneg.encode import EncoderConfig
    from hardneg.mine import MineConfig, mine_candidates

    ds = _load(data, corpus, skip_unknown)
    config = MineConfig(retriever=retriever, teachers=list(teacher), depth=depth, split=split,
                        rank_by=policy.rank_by, score_by=policy.score_by)
    encoder = EncoderConfig(model=str(model) if model else None, batch_size=batch_size)
    start = time.perf_counter()
    cands = mine_candidates(ds, config, encoder, cache=cache_dir)
    cands.write(out / "candidates.parquet")
    console.print(f"mined {len(cands.table)} candidate rows for {cands.table['query_id'].nunique()} queries "
                  f"in {time.perf_counter() - start:.1f}s -> {out / 'candidates.parquet'}")
    _select_and_write(cands, policy, fmt, out, ds)


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

    cands = CandidateSet.read(candidates)
    source = data or cands.meta.get("data")
    if not source:
        raise HardnegError(f"{candidates}: no dataset recorded; pass --data")
    _select_and_write(cands, policy, fmt, out, _load(Path(source), corpus, False))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
