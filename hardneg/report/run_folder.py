"""What the report reads from a run folder: ``metrics.json``, the recipe's dataset and each
round's ``stats.json`` and ``decisions.parquet`` (:func:`read_run`), the audit and the progression
table it shows when they are there."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from hardneg.candidates import CandidateSet
from hardneg.chunking import chunked_like
from hardneg.data import Dataset, load_dataset
from hardneg.errors import HardnegError
from hardneg.run_state import unfinished
from hardneg.select import Decisions, SelectionPolicy, read_decisions, select
from hardneg.select.decisions import DECISIONS_FILE

__all__: list[str] = []  # internal: the report's input

log = logging.getLogger("hardneg.report")


@dataclass(eq=False)
class RoundFiles:
    """One round's folder and what the report takes from it."""

    name: str  # "r0", "r1", ...
    path: Path
    info: dict[str, Any]  # the round's entry in metrics.json
    stats: dict[str, Any] | None  # rounds/r<i>/stats.json, None when absent
    cands: "CandidateSet | None" = None
    sel: "Decisions | None" = None  # the round's selection: its decisions.parquet (or select re-run)
    ds: "Dataset | None" = None  # the run's dataset, chunked as the round's candidates were
    why_not: str = ""  # why ``sel`` is None
    _decisions: pd.DataFrame | None = field(default=None, repr=False)

    def decisions(self) -> pd.DataFrame:
        """The fate of every candidate (:meth:`hardneg.select.Decisions.decisions`), built once."""
        if self._decisions is None:
            self._decisions = self.sel.decisions()
        return self._decisions


@dataclass
class RunFolder:
    """A ``hardneg run`` output folder as the report sees it."""

    path: Path
    metrics: dict[str, Any]
    rounds: list[RoundFiles]

    @property
    def n_resamples(self) -> int:
        return int(self.metrics.get("config", {}).get("eval", {}).get("n_resamples", 10_000))

    def tuned_round(self) -> RoundFiles | None:
        """The round whose negatives trained the "tuned" model (else the last round)."""
        named = [r for r in self.rounds if r.name == self.metrics.get("tuned_from")]
        return (named or self.rounds or [None])[-1]


def read_run(run_dir: str | Path) -> RunFolder:
    """Read ``metrics.json`` and every round's ``stats.json``; fail clearly when it is no run folder
    or a run that has not finished (killed: :mod:`hardneg.run_state`)."""
    path = Path(run_dir)
    why = unfinished(path)
    if why:
        raise HardnegError(f"{path}: {why}")
    file = path / "metrics.json"
    if not file.is_file():
        raise HardnegError(f"{path}: no metrics.json: not the output folder of `hardneg run`")
    metrics = _read_json(file)
    rounds = []
    for info in metrics.get("rounds", []):
        name = f"r{info['round']}"
        stats_file = path / "rounds" / name / "stats.json"
        rounds.append(RoundFiles(name, path / "rounds" / name, info,
                                 _read_json(stats_file) if stats_file.is_file() else None))
    return RunFolder(path, metrics, rounds)


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HardnegError(f"{file}: cannot read JSON ({e})") from None


def find_audit(run: RunFolder, audit: str | Path | None = None) -> Path | None:
    """The audit to show: ``audit`` if given, else ``RUN_DIR/audit.json``, ``RUN_DIR/audit/audit.json``,
    or the tuned round's own ``audit.json`` (written by ``window = "auto"``)."""
    if audit is not None:
        if not Path(audit).is_file():
            raise HardnegError(f"{audit}: no such audit file")
        return Path(audit)
    tuned = run.tuned_round()
    places = [run.path / "audit.json", run.path / "audit" / "audit.json"]
    places += [tuned.path / "audit.json"] if tuned else []
    return next((p for p in places if p.is_file()), None)


def find_progression(run: RunFolder, progression: str | Path | None = None) -> Path | None:
    """The progression table to show: ``progression`` if given, else ``RUN_DIR/progression.md``."""
    if progression is not None:
        if not Path(progression).is_file():
            raise HardnegError(f"{progression}: no such progression file")
        return Path(progression)
    file = run.path / "progression.md"
    return file if file.is_file() else None


def _dataset(run: RunFolder, data: "Dataset | None") -> tuple["Dataset | None", str]:
    """The run's dataset for texts (the one given, else the recipe's path), or None and why not."""
    if data is not None:
        return data, ""
    cfg = run.metrics.get("config", {}).get("data", {})
    path = cfg.get("path")
    if not path:
        return None, "the run recorded no dataset path: ids only"
    try:
        return load_dataset(path, corpus=cfg.get("corpus"), skip_unknown=bool(cfg.get("skip_unknown"))), ""
    except (HardnegError, OSError, ValueError) as e:
        return None, f"the dataset {path} could not be read ({e}): ids only"


def _load_round(rnd: RoundFiles, ds: "Dataset | None") -> None:
    """Read the round's candidates and its stored selection (fills ``cands``/``sel`` or ``why_not``).

    The selection is ``decisions.parquet`` when it was made with the policy ``stats.json`` records;
    otherwise (a folder written before it existed, a policy edited since) select runs again.
    """
    file = rnd.path / "candidates.parquet"
    if rnd.stats is None or "policy" not in rnd.stats:
        rnd.why_not = f"no stats.json with the policy in {rnd.path}"
        return
    if not file.is_file():
        rnd.why_not = f"no {file}"
        return
    known = {f.name for f in fields(SelectionPolicy)}
    try:
        policy = SelectionPolicy(**{k: v for k, v in rnd.stats["policy"].items() if k in known})
        rnd.cands = CandidateSet.read(file)
        rnd.ds = chunked_like(ds, rnd.cands.meta) if ds is not None else None  # chunk ids and texts when mined so
        rnd.sel = _stored_selection(rnd.path / DECISIONS_FILE, rnd.stats["policy"])
        if rnd.sel is None:
            mined = select(rnd.cands, policy, corpus_doc_ids=rnd.ds.doc_ids if rnd.ds is not None else None)
            rnd.sel = Decisions.from_mined(mined, policy)
    except (HardnegError, OSError, ValueError, KeyError) as e:
        rnd.why_not = f"the selection could not be re-run: {e}"


def _stored_selection(file: Path, policy: Mapping[str, Any]) -> "Decisions | None":
    """The stored decisions if ``file`` holds them for ``policy``; None to re-run the selection."""
    if not file.is_file():
        return None
    try:
        stored = read_decisions(file)
    except (HardnegError, OSError, ValueError) as e:
        log.warning(f"{file}: unreadable ({e}); the selection is run again")
        return None
    same = json.dumps(stored.policy, sort_keys=True) == json.dumps(dict(policy), sort_keys=True)
    return stored if same else None
