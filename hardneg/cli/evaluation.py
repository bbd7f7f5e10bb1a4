"""Commands on evaluation (docs/evaluation.md): ``eval``, ``report`` (HTML) and ``diagnose``."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from hardneg.checks import trec_ready
from hardneg.cli.common import CACHE, DATA, ENCODER, Opts, _chunk, _say, _working, friendly, show, with_options
from hardneg.diagnose import DiagnoseConfig
from hardneg.diagnose.report import diagnose_to_folder
from hardneg.evaluate import evaluate, format_eval, write_eval
from hardneg.loop.hybrid import EvalConfig, with_eval_hybrids
from hardneg.mine import MineConfig
from hardneg.options import SEED_MAX
from hardneg.report import write_report

__all__: list[str] = []  # the commands: registered on the app by hardneg.cli


@friendly
@with_options(data=DATA, encoder=ENCODER, cache=CACHE, evaluation=Opts(EvalConfig, "eval"),
              chunks=Opts(MineConfig, "mine", only=("chunk_tokens", "chunk_overlap")))
def eval_cmd(
    split: str = typer.Option("test", "--split", help="Split to evaluate on (held out from training)."),
    retriever: List[str] = typer.Option(["bm25", "dense"], "--retriever", "-r", help="KIND[:NAME][=MODEL], repeatable; "
                                        "KIND: bm25, dense or hybrid (RRF of the two); the first is the tests' reference."),
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json, runs/*.trec, per_query.tsv, report.md."),
    data: Any = None, encoder: Any = None, cache: Any = None, evaluation: Any = None, chunks: Any = None,
):
    """Evaluate retrievers on a held-out split: NDCG@10, Recall@10/100, MRR@10, MAP@100 with significance
    (--chunk-tokens: a document scores its best chunk); each dense one also fused with BM25 (RRF k from dev)."""
    start = time.perf_counter()
    ds = trec_ready(data.load(), split)
    ds, rankings, notes = with_eval_hybrids(ds, split, retriever, data, evaluation, encoder,
                                            _chunk(ds, chunks, encoder), cache.cache_dir, _working, _say)
    result = evaluate(ds, split, rankings, seed=evaluation.seed, n_resamples=evaluation.n_resamples, notes=notes)
    write_eval(result, out, rankings)
    show(*format_eval(result), f"wrote {out}/metrics.json, report.md, runs/ ({time.perf_counter() - start:.1f}s)")


@friendly
def report_cmd(
    run_dir: Path = typer.Argument(..., help="Output folder of `hardneg run` (holds metrics.json)."),
    progression: Optional[Path] = typer.Option(None, "--progression", help="A Markdown progression table "
                                               "(hardneg compare's table.md); default RUN_DIR/progression.md."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="An audit.json (`hardneg audit`); default "
                                         "RUN_DIR/audit.json, RUN_DIR/audit/audit.json or the tuned round's own."),
    sample: int = typer.Option(20, "--sample", help="Train queries in the per-query view (seeded)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed of the per-query sample."),
):
    """Write RUN_DIR/report.html (self-contained: images embedded, no network) and RUN_DIR/plots/*.png."""
    print(write_report(run_dir, progression=progression, audit=audit, sample=sample, seed=seed))


@friendly
@with_options(data=DATA, encoder=ENCODER, cache=CACHE, config=Opts(DiagnoseConfig))
def diagnose_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder: diagnosis.md/.html/.json/.png, "
                             "suspicious_positives.tsv, positive_pairs.tsv."),
    clicks: Optional[Path] = typer.Option(None, "--clicks", help="A click log (as `hardneg clicks` reads): adds "
                                          "its click-through rate by position. A folder written by `hardneg "
                                          "clicks` is picked up without it (its clicks_stats.json)."),
    data: Any = None, encoder: Any = None, cache: Any = None, config: Any = None,
):
    """Before spending money: BM25 vs the untuned model, vocabulary fit, overlap, suspicious positives, a verdict."""
    start = time.perf_counter()
    diag = diagnose_to_folder(data.load(), encoder, config, out, cache_dir=cache.cache_dir, data_path=data.path,
                              clicks=clicks)
    show(*diag.summary(out, time.perf_counter() - start))
