"""Commands on selection (docs/selection.md): ``select``, ``audit``, ``calibrate``, ``rescore``, ``train-reranker``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from hardneg.audit import AuditConfig, audit_candidates, format_audit, read_audit
from hardneg.audit import calibrate as calibrate_audit
from hardneg.candidates import CandidateSet
from hardneg.cli.common import (CACHE, EXPORT, POLICY, Opts, _dataset_of, _load, _select_and_print, _working, friendly,
                                show, with_options)
from hardneg.crossencoder import (DenoiseConfig, Reranker, check_for_candidates, load_judge, rescore_with_report,
                                  warn_if_worse)
from hardneg.encode import EncoderConfig
from hardneg.encode.cache import EmbeddingCache
from hardneg.files import atomic_write_json, atomic_write_text
from hardneg.loop import DataConfig
from hardneg.select import SelectionPolicy
from hardneg.train.reranker import RerankerConfig, train_reranker, training_rows

__all__: list[str] = []  # the commands: registered on the app by hardneg.cli


@friendly
@with_options(data=Opts(DataConfig, "data", only=("path", "corpus")), policy=POLICY, export=EXPORT)
def select_cmd(
    candidates: Path = typer.Argument(..., help="A candidates.parquet written by `hardneg mine`."),
    out: Path = typer.Option(..., "--out", help="Output folder: negatives.jsonl, stats.json, [train.parquet]."),
    data: Any = None, policy: Any = None, export: Any = None,
):
    """Select negatives again from stored candidates (--data: default the dataset mined): seconds."""
    cands = CandidateSet.read(candidates)
    _select_and_print(cands, _dataset_of(cands, data), out, policy, export)


@friendly
@with_options(config=Opts(AuditConfig, "audit", only=("hide", "draws", "seed")),
              data=Opts(DataConfig, "data", only=("path", "corpus")))
def audit(
    candidates: Path = typer.Argument(..., help="candidates.parquet of a TRAIN split mine (never an eval split)."),
    out: Path = typer.Option(..., "--out", help="Output folder: audit.json."),
    cross_encoder: Optional[Path] = typer.Option(None, "--cross-encoder", help="A CrossEncoder folder (or a "
                                                 "cross-fitted one from `hardneg train-reranker --folds`) "
                                                 "to judge a sample of unlabeled candidates per bucket."),
    judge_threshold: float = typer.Option(0.0, help="Judged relevant when the cross-encoder score is above this "
                                          "(a logit of 0 is p = 0.5)."),
    judge_sample: int = typer.Option(100, help="Unlabeled candidates judged per rank bucket."),
    config: Any = None, data: Any = None,
):
    """The false-negative curve: per original-rank bucket, how often an unlabeled candidate is relevant.

    With labels: hidden positives found per bucket (Wilson 95% intervals); with --cross-encoder:
    the judged share of a sample. `hardneg calibrate OUT/audit.json` turns it into a window.
    """
    cands = CandidateSet.read(candidates)
    judge = {}
    if cross_encoder is not None:
        ds = _dataset_of(cands, data)
        judge = dict(judge=load_judge(cross_encoder), texts=ds.doc_text_map(), queries=ds.queries,
                     threshold=judge_threshold, sample=judge_sample)
    doc = {"candidates": str(candidates)} | audit_candidates(cands, config.hide, config.draws, config.seed, **judge)
    atomic_write_json(out / "audit.json", doc)
    show(*format_audit(doc), f"wrote {out / 'audit.json'}")


@friendly
@with_options(config=Opts(AuditConfig, "audit", only=("target", "window_end")))
def calibrate(
    audit_file: Path = typer.Argument(..., help="audit.json from `hardneg audit`."),
    use: str = typer.Option("auto", help="Curve: auto (the judge's when present, else the labels'), judge, labels."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the recipe keys to this TOML file."),
    config: Any = None,
):
    """Pick the smallest window start (and a percent threshold) under the target false-negative rate.

    Prints (or writes) recipe keys: `[select] window = "S:END"` and `percent`. In a recipe,
    `window = "auto"` does this inside `hardneg run` for every round.
    """
    cal = calibrate_audit(read_audit(audit_file), config.target, config.window_end, use)
    text = cal.recipe_toml()
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        show(f"wrote {out}: window {cal.window[0]}:{cal.window[1]}, percent {cal.percent}")


@friendly
@with_options(data=Opts(DataConfig, "data", only=("path", "corpus")),
              config=Opts(DenoiseConfig, "denoise", required=("cross_encoder",), defaults=(("window", "1:100"),)),
              cache=CACHE)
def rescore_cmd(
    candidates: Path = typer.Argument(..., help="A candidates.parquet written by `hardneg mine`."),
    out: Path = typer.Option(..., "--out", help="The rescored candidates file (a folder: OUT/candidates.parquet)."),
    rank_by: Optional[str] = typer.Option(None, "--rank-by", help="Scorer whose ranks the window uses."),
    check: bool = typer.Option(True, "--check/--no-check", help="Check that the cross-encoder reranks BM25's top "
                               "100 better than BM25 (its train-reranker record, else dev, else the candidates' "
                               "queries)."),
    check_queries: int = typer.Option(100, "--check-queries", help="Queries of that check (seeded sample)."),
    data: Any = None, config: Any = None, cache: Any = None,
):
    """Add cross-encoder scores (score_ce, logits) for the candidates in a rank window and all positives.

    Then `hardneg select OUT --denoise-above T` drops candidates scored above T, and the export
    carries the scores as teacher scores for `hardneg train --loss marginmse`.
    """
    cands = CandidateSet.read(candidates)
    ds = _dataset_of(cands, data)
    target = out if out.suffix == ".parquet" else out / "candidates.parquet"
    reranker, store = Reranker.load(config.cross_encoder), EmbeddingCache(cache.cache_dir)
    if check:
        show(check_for_candidates(reranker, ds, cands, max_queries=check_queries, batch_size=config.batch_size,
                                  cache=store).summary())
    rescored, report = rescore_with_report(cands, ds, reranker, window=config.window, rank_by=rank_by,
                                           batch_size=config.batch_size, cache=store)
    show(f"cross-encoder: {report.summary()}")
    rescored.write(target)
    show(f"wrote {target}; e.g. `hardneg select {target} --denoise-above 0` (logits: 0 is p = 0.5)")


@friendly
@with_options(data=Opts(DataConfig, "data", only=("path", "corpus", "skip_unknown", "dev_split"), required=("path",)),
              model=Opts(EncoderConfig, only=("model",)), config=Opts(RerankerConfig))
def train_reranker_cmd(
    out: Path = typer.Option(..., "--out", help="Folder of the CrossEncoder (fold_<i>/ + folds.json with --folds)."),
    negatives: Optional[Path] = typer.Option(None, "--negatives", help="negatives.jsonl from `hardneg mine`/`select`."),
    candidates: Optional[Path] = typer.Option(None, "--candidates", help="Or a candidates.parquet: negatives drawn "
                                              "uniformly from the original ranks of --window."),
    window: str = typer.Option("{}:{}".format(*SelectionPolicy().window), "--window",
                               help="With --candidates: MIN:MAX ranks negatives come from (the default policy's)."),
    data: Any = None, model: Any = None, config: Any = None,
):
    """Train a cross-encoder reranker on train positives (1) and mined negatives (0); check it against BM25."""
    ds = _load(data)
    rows = training_rows(ds, config, negatives=negatives, candidates=candidates, window=window)
    with _working("training the cross-encoder"):
        result = train_reranker(ds, rows, out, model.model, config, data.dev_split)
    show(*result.summary())
    if result.check is not None:
        warn_if_worse(result.check)
    show(result.written())
