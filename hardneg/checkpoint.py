"""Resumable mining: one Parquet file per finished query chunk, under a manifest of the inputs.

Use :class:`MineCheckpoint` (``hardneg mine`` puts it in ``OUT/.mine-checkpoint``) so a mining
run killed at hour three resumes from its last complete chunk instead of starting over. The
folder holds ``manifest.json`` (a fingerprint of everything that decides the candidates:
corpus, queries, labels, mining and encoder options, model weights), ``chunk_00012.parquet``
per finished chunk (each written atomically, so a file that exists is complete) and any saved
ANN index. A checkpoint whose fingerprint differs from the current run's is refused, naming
what changed: it would silently mix candidates of two different runs.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hardneg.candidates import write_parquet
from hardneg.errors import HardnegError, first_line
from hardneg.files import atomic_write_json

__all__: list[str] = []  # internal: the checkpoints of hardneg.mine

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIRNAME = ".mine-checkpoint"


def digest(obj: Any) -> str:
    """sha256 of a JSON-serialisable object (keys sorted), for fingerprint components."""
    payload = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class MineCheckpoint:
    """A checkpoint folder for one mining run of ``n_chunks`` query chunks.

    Opening it creates the folder and manifest, or checks an existing manifest against
    ``fingerprint`` (component name -> hash): a mismatch raises :class:`HardnegError` unless
    ``restart`` is set, which discards the old checkpoint first.
    """

    def __init__(self, folder: str | Path, fingerprint: Mapping[str, str], n_chunks: int, restart: bool = False):
        self.folder = Path(folder)
        self.fingerprint = dict(fingerprint) | {"format": str(CHECKPOINT_FORMAT), "n_chunks": str(n_chunks)}
        self.n_chunks = n_chunks
        manifest = self.folder / "manifest.json"
        if manifest.is_file() and restart:
            self.clear()
        if manifest.is_file():
            self._check(manifest)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(manifest, {"fingerprint": self.fingerprint})
        self.resumed = sum(self.has(i) for i in range(n_chunks))
        for i in range(n_chunks):  # a corrupt chunk is refused now, not after hours of the others
            if self.has(i):
                self._readable(i, pq.read_metadata)

    def _check(self, manifest: Path) -> None:
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            raise HardnegError(f"{manifest}: unreadable checkpoint manifest; delete {self.folder} "
                               "or rerun with --restart") from None
        changed = sorted(k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k))
        if changed:
            raise HardnegError(f"{self.folder} holds a checkpoint of a different mining run (changed: "
                               f"{', '.join(changed)}); rerun with --restart to discard it, or use another --out")

    def chunk_path(self, i: int) -> Path:
        return self.folder / f"chunk_{i:05d}.parquet"

    def index_path(self, name: str) -> Path:
        """Where the ANN index of scorer ``name`` is saved (reused on resume)."""
        return self.folder / f"index_{name}.faiss"

    def has(self, i: int) -> bool:
        return self.chunk_path(i).is_file()

    def save(self, i: int, frame: pd.DataFrame) -> None:
        """Store chunk ``i`` atomically (lossless: Int32 ranks, float32 scores, strings, bools)."""
        write_parquet(pa.Table.from_pandas(frame, preserve_index=False), self.chunk_path(i))

    def load(self, i: int) -> pd.DataFrame:
        """Chunk ``i`` as saved; a chunk that is no Parquet file (truncated, overwritten) is refused."""
        table = self._readable(i, pq.read_table)
        return table.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)

    def _readable(self, i: int, read):
        try:
            return read(self.chunk_path(i))
        except (pa.ArrowException, ValueError) as e:
            raise HardnegError(f"{self.chunk_path(i)}: corrupt checkpoint chunk ({first_line(e)}); rerun with "
                               "--restart to discard the checkpoint") from None

    def clear(self) -> None:
        """Delete the checkpoint folder (after the candidate set is safely written)."""
        shutil.rmtree(self.folder, ignore_errors=True)
