"""``hardneg mine`` (docs/mining.md): retrieve candidates once, then select negatives."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from hardneg.checkpoint import CHECKPOINT_DIRNAME
from hardneg.cli.common import (CACHE, DATA, ENCODER, EXPORT, POLICY, Opts, _chunk, _load, _select_and_print, _working,
                                friendly, show, with_options)
from hardneg.files import atomic_write_json
from hardneg.mine import MineConfig, format_search, mine_to_folder, search_report

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
    config = replace(config, rank_by=policy.rank_by, score_by=policy.score_by)
    ds = _chunk(_load(data), config, encoder)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if total > 1:
            show(f"query chunk {done}/{total} mined (checkpoint: {out / CHECKPOINT_DIRNAME})")

    with _working(f"mining '{config.split}' with {config.retriever}"):
        cands = mine_to_folder(ds, out, config, encoder, cache.cache_dir, restart=restart, progress=progress)
    if cands.run.get("resumed_chunks"):
        show(f"resumed {cands.run['resumed_chunks']} of {cands.run['chunks']} query chunks")
    searches = search_report(cands)
    show(*format_search(searches))
    if searches:
        atomic_write_json(out / "search.json", searches)
    show(f"mined {len(cands.table)} candidate rows for {cands.table['query_id'].nunique()} queries "
         f"in {time.perf_counter() - start:.1f}s -> {out / 'candidates.parquet'}")
    _select_and_print(cands, ds, out, policy, export)
