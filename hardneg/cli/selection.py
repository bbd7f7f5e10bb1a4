"""Commands on selection (docs/selection.md): ``select``, ``audit``, ``calibrate``, ``rescore``, ``train-reranker``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from hardneg.audit import AuditConfig, JudgeConfig, audit_candidates, calibrate as calibrate_audit, format_audit, read_audit
from hardneg.candidates import CandidateSet
from hardneg.cli.common import CACHE, EXPORT, POLICY, Opts, _select_and_print, _working, friendly, show, with_options
from hardneg.crossencoder import DenoiseConfig, RescoreCheck, check_and_rescore, warn_if_worse
from hardneg.encode import EncoderConfig
from hardneg.encode.cache import EmbeddingCache
from hardneg.files import atomic_write_json, atomic_write_text
from hardneg.loop import DataConfig
from hardneg.train.reranker import RerankerConfig, RerankerRows, train_reranker, training_rows

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
    _select_and_print(cands, data.dataset_of(cands), out, policy, export)


@friendly
@with_options(judge=Opts(JudgeConfig), config=Opts(AuditConfig, "audit", only=("hide", "draws", "seed")),
              data=Opts(DataConfig, "data", only=("path", "corpus")))
def audit(
    candidates: Path = typer.Argument(..., help="candidates.parquet of a TRAIN split mine (never an eval split)."),
    out: Path = typer.Option(..., "--out", help="Output folder: audit.json."),
    cross_encoder: Optional[Path] = typer.Option(None, "--cross-encoder", help="A CrossEncoder folder (or a "
                                                 "cross-fitted one from `hardneg train-reranker --folds`) "
                                                 "to judge a sample of unlabeled candidates per bucket."),
    judge: Any = None, config: Any = None, data: Any = None,
):
    """The false-negative curve: per original-rank bucket, how often an unlabeled candidate is relevant
    (hidden labels; the judged share with --cross-encoder). `hardneg calibrate` turns it into a window."""
    cands = CandidateSet.read(candidates)
    judged = judge.arguments(cross_encoder, data.dataset_of(cands) if cross_encoder is not None else None)
    doc = {"candidates": str(candidates)} | audit_candidates(cands, config.hide, config.draws, config.seed, **judged)
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
    """Pick the smallest window start (and a percent threshold) under the target false-negative rate: prints
    (or writes) the recipe keys `window` and `percent` (`window = "auto"` does this inside `hardneg run`)."""
    cal = calibrate_audit(read_audit(audit_file), config.target, config.window_end, use)
    text = cal.recipe_toml()
    if out is None:
        return print(text, end="")
    atomic_write_text(out, text)
    show(f"wrote {out}: window {cal.window[0]}:{cal.window[1]}, percent {cal.percent}")


@friendly
@with_options(checking=Opts(RescoreCheck), data=Opts(DataConfig, "data", only=("path", "corpus")),
              config=Opts(DenoiseConfig, "denoise", required=("cross_encoder",), defaults=(("window", "1:100"),)),
              cache=CACHE)
def rescore_cmd(
    candidates: Path = typer.Argument(..., help="A candidates.parquet written by `hardneg mine`."),
    out: Path = typer.Option(..., "--out", help="The rescored candidates file (a folder: OUT/candidates.parquet)."),
    rank_by: Optional[str] = typer.Option(None, "--rank-by", help="Scorer whose ranks the window uses."),
    checking: Any = None, data: Any = None, config: Any = None, cache: Any = None,
):
    """Add cross-encoder scores (score_ce, logits) for the candidates in a rank window and all positives,
    for `hardneg select --denoise-above T` and as teacher scores for `hardneg train --loss marginmse`."""
    cands = CandidateSet.read(candidates)
    target = out if out.suffix == ".parquet" else out / "candidates.parquet"
    rescored, report = check_and_rescore(cands, data.dataset_of(cands), config, checking, rank_by=rank_by,
                                         cache=EmbeddingCache(cache.cache_dir), say=show)
    show(f"cross-encoder: {report.summary()}")
    rescored.write(target)
    show(f"wrote {target}; e.g. `hardneg select {target} --denoise-above 0` (logits: 0 is p = 0.5)")


@friendly
@with_options(rows=Opts(RerankerRows),
              data=Opts(DataConfig, "data", only=("path", "corpus", "skip_unknown", "dev_split"), required=("path",)),
              model=Opts(EncoderConfig, only=("model",)), config=Opts(RerankerConfig))
def train_reranker_cmd(
    out: Path = typer.Option(..., "--out", help="Folder of the CrossEncoder (fold_<i>/ + folds.json with --folds)."),
    negatives: Optional[Path] = typer.Option(None, "--negatives", help="negatives.jsonl from `hardneg mine`/`select`."),
    candidates: Optional[Path] = typer.Option(None, "--candidates", help="Or a candidates.parquet: negatives drawn "
                                              "uniformly from the original ranks of --window."),
    rows: Any = None, data: Any = None, model: Any = None, config: Any = None,
):
    """Train a cross-encoder reranker on train positives (1) and mined negatives (0); check it against BM25."""
    ds = data.load()
    pairs = training_rows(ds, config, negatives=negatives, candidates=candidates, window=rows.window)
    with _working("training the cross-encoder"):
        result = train_reranker(ds, pairs, out, model.model, config, data.dev_split)
    show(*result.summary())
    if result.check is not None:
        warn_if_worse(result.check)
    show(result.written())
