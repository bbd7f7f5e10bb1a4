"""Commands on data (docs/data.md): ``validate``; positives from clicks (``clicks``, ``skip-above``) or ``synth``."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from hardneg.candidates import CandidateSet
from hardneg.cli.common import DATA, Opts, friendly, show, with_options
from hardneg.data import validation_lines
from hardneg.loop import DataConfig
from hardneg.positives.clicks import (ClickConfig, ClickPolicy, add_skip_above, clicks_to_beir, read_skip_above,
                                      skip_above_summary)
from hardneg.positives.synth import SynthConfig, write_synth

__all__: list[str] = []  # the commands: registered on the app by hardneg.cli


@friendly
@with_options(data=DATA)
def validate(
    eval_split: str = typer.Option("test", "--eval-split", help="Split checked for leakage against train."),
    data: Any = None,
):
    """Check a dataset fully (ids, qrels, texts, encoding) and report train/eval leakage."""
    show(*validation_lines(data.load(), eval_split))


@friendly
@with_options(policy=Opts(ClickPolicy), config=Opts(ClickConfig))
def clicks_cmd(
    log: Path = typer.Argument(..., help="Click log: JSONL, CSV/TSV or Parquet; one impression per line with query, "
                               "shown (ids in displayed order), clicked, optional query_id, dwell, timestamp, session."),
    corpus: Path = typer.Option(..., "--corpus", help="Corpus JSONL[.gz] (or a BEIR folder holding one)."),
    out: Path = typer.Option(..., "--out", help="Output BEIR folder: corpus, queries.jsonl, qrels/train.tsv "
                             "[qrels/test.tsv], skip_above.tsv, clicks_stats.json, position_bias.md."),
    policy: Any = None, config: Any = None,
):
    """Positives from a click log (and skip-above negatives): a BEIR folder `mine` and `train` read."""
    show(*clicks_to_beir(log, corpus, out, replace(config, policy=policy)).summary())


@friendly
@with_options(data=Opts(DataConfig, "data", only=("path", "corpus")))
def skip_above_cmd(
    candidates: Path = typer.Argument(..., help="A candidates.parquet written by `hardneg mine` on a "
                                      "`hardneg clicks` folder."),
    skips: Path = typer.Option(..., "--skips", help="skip_above.tsv written by `hardneg clicks`."),
    out: Path = typer.Option(..., "--out", help="The new candidates.parquet (with rows of source clicks-skip-above)."),
    data: Any = None,
):
    """Add skip-above negatives to a candidate set as a separate, flagged source (no retriever rank: select them
    with `hardneg select ... --rank-by clicks --score-by clicks --window 1:20 --percent off`)."""
    cands = CandidateSet.read(candidates)
    result = add_skip_above(cands, read_skip_above(skips),
                            data.dataset_of(cands) if data.path or cands.meta.get("data") else None)
    result.write(out)
    show(skip_above_summary(result, out))


@friendly
@with_options(config=Opts(SynthConfig))
def synth_cmd(
    corpus: Path = typer.Option(..., "--corpus", help="Corpus JSONL[.gz] (or a BEIR folder holding one)."),
    out: Path = typer.Option(..., "--out", help="Output BEIR folder: corpus.jsonl (the training corpus), "
                             "queries.jsonl, qrels/train.tsv, pairs.jsonl, synth.json."),
    config: Any = None,
):
    """Positives from an unlabeled corpus (no qrels, no model): a BEIR folder `mine` and `train` read."""
    show(*write_synth(corpus, out, config).summary(out))
