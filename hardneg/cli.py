"""The ``hardneg`` command line: a thin typer layer over the library's functions."""
from __future__ import annotations

import functools
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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
