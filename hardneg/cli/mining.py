"""``hardneg mine`` (docs/mining.md): retrieve candidates once, then select negatives."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from hardneg.cli.common import (CACHE, DATA, ENCODER, EXPORT, POLICY, Opts, _chunk, _select_and_print, _working,
                                friendly, show, with_options)
from hardneg.mine import MineConfig, chunk_progress, mine_to_folder, mined_summary

__all__: list[str] = []  # the commands: registered on the app by hardneg.cli


@friendly
@with_options(data=DATA, config=Opts(MineConfig, "mine"), encoder=ENCODER, cache=CACHE, policy=POLICY,
              export=EXPORT)
def mine(
    out: Path = typer.Option(..., "--out", help="Output folder: candidates.parquet, negatives.jsonl, stats.json."),
    restart: bool = typer.Option(False, "--restart", help="Discard a checkpoint left in OUT by an earlier, "
                                 "different mining run instead of refusing it."),
    data: Any = None, config: Any = None, encoder: Any = None, cache: Any = None, policy: Any = None,
    export: Any = None,
):
    """Retrieve candidates once (candidates.parquet), then select negatives with the policy options
    (with --chunk-tokens: chunks of long documents; a positive's other chunks are never negatives)."""
    config = config.for_policy(policy)
    ds = _chunk(data.load(), config, encoder)
    start = time.perf_counter()
    with _working(f"mining '{config.split}' with {config.retriever}"):
        cands = mine_to_folder(ds, out, config, encoder, cache.cache_dir, restart=restart,
                               progress=chunk_progress(out, show))
    show(*mined_summary(cands, out, time.perf_counter() - start))
    _select_and_print(cands, ds, out, policy, export)
