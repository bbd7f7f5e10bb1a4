"""Resumable runs: ``OUT/.run/state.json`` records what a run is (a fingerprint of its inputs)
and each stage it finished.

Use :class:`RunState` (``hardneg.loop.run`` opens one on its output folder) so that a run killed
at any point and started again with the same command continues from its last finished stage
instead of starting over. A stage writes its outputs into the folder first and then records
itself (atomically): a recorded stage is complete on disk; an unrecorded one is redone from
scratch, its leftovers removed first. What a finished stage computed in memory and later stages
need (rankings) is stored losslessly beside the state (:func:`save_rankings`).

A folder holds one run: another recipe (or other data, base model, precision) over it is
refused, naming what changed, and so is a folder with an earlier run's files but no state;
``restart`` removes that run first. The final files (``metrics.json``, ``report.*``, ``eval/``,
``model/``) exist only once the run finished (:func:`unfinished`).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from hardneg.errors import HardnegError
from hardneg.files import atomic_path, atomic_write_text
from hardneg.retrieve.base import Ranking

__all__: list[str] = []  # internal: the state of hardneg.loop's runs

STATE_FORMAT = 1
STATE_DIR = ".run"
#: written only when the run has finished: removed while it is not
FINAL_FILES = ("metrics.json", "report.md", "report.html", "plots", "eval", "model", ".model.tmp")
#: everything a run writes into its folder (``recipe.toml`` aside: each start rewrites it)
RUN_FILES = (*FINAL_FILES, "rounds", STATE_DIR)
#: a kept model's folder holds this file (a ``model/`` without it is not the run's)
MODEL_MARK = "hardneg_train.json"

T = TypeVar("T")


class RunState:
    """The stages a run into ``out`` finished, under the fingerprint of its inputs.

    Opening it checks an existing state against ``fingerprint`` (component name -> hash) and
    raises :class:`HardnegError` on a mismatch, or on an earlier run's files without a state;
    ``restart`` removes the earlier run's files first. Either way the final files are removed:
    they come back when the run finishes. ``resumed`` lists the stages kept from before.
    """

    def __init__(self, out: str | Path, fingerprint: Mapping[str, str], restart: bool = False):
        self.out = Path(out)
        self.file = self.out / STATE_DIR / "state.json"
        self.fingerprint = dict(fingerprint) | {"format": str(STATE_FORMAT)}
        if restart:
            clear_run(self.out)
        self.stages: dict[str, dict[str, Any]] = self._previous_stages()
        self.resumed = list(self.stages)
        _remove(self.out, FINAL_FILES)
        self._write(finished=False)

    def _previous_stages(self) -> dict[str, dict[str, Any]]:
        if not self.file.is_file():
            leftovers = run_files(self.out)
            if leftovers:
                raise HardnegError(f"{self.out} holds files of an earlier run ({', '.join(leftovers)}) but no record "
                                   "of it; rerun with --restart to replace them, or use another --out")
            return {}
        old = _read_state(self.file)
        changed = sorted(k for k in set(old["fingerprint"]) | set(self.fingerprint)
                         if old["fingerprint"].get(k) != self.fingerprint.get(k))
        if changed:
            raise HardnegError(f"{self.out} holds another run (changed: {', '.join(changed)}); rerun with --restart "
                               "to discard it, or use another --out")
        return dict(old["stages"])

    def path(self, name: str) -> Path:
        """Where a stage stores what later stages need (inside the state folder)."""
        return self.out / STATE_DIR / name

    def stage(self, name: str, compute: Callable[[], T], save: Callable[[T], dict[str, Any]],
              load: Callable[[dict[str, Any]], T]) -> tuple[T, dict[str, Any]]:
        """Stage ``name``'s value and record: ``load(record)`` when it finished before, else
        ``compute()``, then ``save(value)`` (what to record; it may write files) and the record.

        The record gets ``seconds`` (the compute time, kept from the run that did it) and
        ``resumed`` (True when loaded, not recorded).
        """
        if name in self.stages:
            record = self.stages[name]
            return load(record), record | {"resumed": True}
        start = time.perf_counter()
        value = compute()
        record = save(value) | {"seconds": time.perf_counter() - start}
        self.stages[name] = record
        self._write(finished=False)
        return value, record | {"resumed": False}

    def ranking_stage(self, name: str, file: str, compute: Callable[[], dict[str, Ranking]],
                      doc_ids: Sequence[str]) -> tuple[dict[str, Ranking], dict[str, Any]]:
        """:meth:`stage` for a stage whose value is named rankings, stored losslessly in ``.run/<file>``
        (:func:`save_rankings`) and read back over ``doc_ids`` when the stage finished before."""
        path = self.path(file)
        return self.stage(name, compute, lambda rankings: (save_rankings(path, rankings), {})[1],
                          lambda _: load_rankings(path, doc_ids))

    def finish(self) -> None:
        """Record that the final files are written: the run is finished."""
        self._write(finished=True)

    def _write(self, finished: bool) -> None:
        state = {"format": STATE_FORMAT, "fingerprint": self.fingerprint, "finished": finished, "stages": self.stages}
        atomic_write_text(self.file, json.dumps(state, indent=2, ensure_ascii=False) + "\n")  # keys kept in order


def _read_state(file: Path) -> dict[str, Any]:
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(state["fingerprint"], dict) or not isinstance(state["stages"], dict):
            raise TypeError
        return state
    except (OSError, ValueError, KeyError, TypeError):
        raise HardnegError(f"{file}: unreadable run state; rerun with --restart") from None


def unfinished(out: str | Path) -> str | None:
    """Why the run in ``out`` is not finished (its state says so), or None (finished, or no state)."""
    file = Path(out) / STATE_DIR / "state.json"
    if not file.is_file():
        return None
    state = _read_state(file)
    if state.get("finished"):
        return None
    done = ", ".join(state["stages"]) or "no stage"
    return f"run not finished (done: {done}); run the same `hardneg run` command again to resume it"


def run_files(out: Path) -> list[str]:
    """The names of the run files in ``out`` (a ``model/`` only when it is a trained model's)."""
    def present(name: str) -> bool:
        path = out / name
        return (path / MODEL_MARK).is_file() if name == "model" else path.exists()

    return [name for name in RUN_FILES if present(name)]


def clear_run(out: Path) -> None:
    """Remove an earlier run's files from ``out`` (its recipe.toml aside, and nothing else)."""
    _remove(out, run_files(out))


def _remove(out: Path, names: Sequence[str]) -> None:
    for name in names:
        path = out / name
        if name == "model" and path.is_dir() and not (path / MODEL_MARK).is_file():
            continue  # not the run's
        clear_dir(path)


def clear_dir(path: Path) -> None:
    """Remove a half-finished stage's folder (or file) before the stage runs again."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# ---- rankings, stored losslessly ---------------------------------------------------------------
def save_rankings(path: Path, rankings: Mapping[str, Ranking]) -> None:
    """Store rankings (query ids, int64 indices, float32 scores: exactly) in one ``.npz``, atomically.

    Their ``doc_ids`` are not stored: :func:`load_rankings` is given them.
    """
    arrays: dict[str, np.ndarray] = {}
    for name, r in rankings.items():
        arrays |= {f"{name}.query_ids": np.array(r.query_ids, dtype=str), f"{name}.indices": r.indices,
                   f"{name}.scores": r.scores}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_rankings(path: Path, doc_ids: Sequence[str]) -> dict[str, Ranking]:
    """The rankings :func:`save_rankings` stored, over ``doc_ids``."""
    with np.load(path, allow_pickle=False) as z:
        names = [k[: -len(".indices")] for k in z.files if k.endswith(".indices")]
        return {n: Ranking(z[f"{n}.query_ids"].tolist(), doc_ids, z[f"{n}.indices"], z[f"{n}.scores"])
                for n in names}
