"""``hardneg train`` (docs/training.md): fine-tune a retriever on mined negatives."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from hardneg.cli.common import Opts, _working, friendly, show, with_options
from hardneg.encode import EncoderConfig
from hardneg.loop import DataConfig
from hardneg.mine import MineConfig
from hardneg.train import TrainConfig, train

__all__: list[str] = []  # the commands: registered on the app by hardneg.cli


@friendly
@with_options(data=Opts(DataConfig, "data", only=("path", "corpus", "skip_unknown", "dev_split"), required=("path",)),
              model=Opts(EncoderConfig, "model", only=("model",)), pairs=Opts(MineConfig, "mine", only=("split",)),
              config=Opts(TrainConfig, "train"))
def train_cmd(
    negatives: Optional[Path] = typer.Option(
        None, "--negatives", help="negatives.jsonl from `hardneg mine`/`select`. Left out, or empty because the "
        "policy was the in-batch-only baseline (--sampler none): train on the (query, positive) pairs of --split."),
    out: Path = typer.Option(..., "--out", help="Model folder to write (a normal sentence-transformers model)."),
    data: Any = None, model: Any = None, pairs: Any = None, config: Any = None,
):
    """Fine-tune a sentence-transformers model on mined negatives; keeps the best dev checkpoint."""
    with _working("training"):
        result = train(data.load(), negatives, model.model, out, config, data.dev_split, pairs_split=pairs.split)
    show(*result.summary(out))
