"""Weight-keyed embedding cache: one ``.npy`` plus a ``.json`` sidecar per entry, no pickle.

Use it so that re-running a stage (mining, evaluation) does not re-encode a corpus that
the same model already encoded. The key covers everything that changes the vectors: a
fingerprint of the model's *weights* (never its name or path, so a fine-tuned model can
never reuse its base model's vectors), the prompt, the max length, normalisation, the
backend, the precision, the storage dtype (float32 or float16) and the texts in order.

The model fingerprint is :mod:`hardneg.encode.fingerprint`'s.
"""
from __future__ import annotations

import hashlib
import json
import operator
import os
import struct
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from hardneg.files import atomic_path, atomic_write_json
from hardneg.options import option

__all__ = ["CacheConfig", "EmbeddingCache", "default_cache_dir"]

CACHE_FORMAT = 1  # bump when the key or the file layout changes


def default_cache_dir() -> Path:
    """``$HARDNEG_CACHE`` if set, else ``~/.cache/hardneg``."""
    env = os.environ.get("HARDNEG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hardneg"


def texts_hash(texts: Sequence[str]) -> str:
    """sha256 over the texts in order; each text is length-prefixed so joins cannot collide.

    Inside :func:`memoised_texts_hashes`, a list of the very same string objects as one hashed
    before (a corpus passed to every encoder of a run) is not hashed again.
    """
    memo = _TEXTS_MEMO.get()
    key = None
    if memo is not None and len(texts) >= MEMO_MIN_TEXTS:
        key = (len(texts), id(texts[0]), id(texts[-1]))
        hit = memo.get(key)
        if hit is not None and all(map(operator.is_, hit[0], texts)):
            return hit[1]
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
    digest = h.hexdigest()
    if key is not None:
        memo[key] = (tuple(texts), digest)  # strings are immutable: the same objects, the same hash
    return digest


MEMO_MIN_TEXTS = 256  # shorter lists are hashed every time (cheap)
_TEXTS_MEMO: ContextVar[dict | None] = ContextVar("hardneg_texts_memo", default=None)


@contextmanager
def memoised_texts_hashes() -> Iterator[None]:
    """Within this block, :func:`texts_hash` remembers the lists it hashed (by the identity of
    their strings), so a corpus shared by many encoders is hashed once. ``hardneg run`` wraps
    the whole run in it; the memo (references to the strings) is dropped at the end."""
    if _TEXTS_MEMO.get() is not None:
        yield
        return
    token = _TEXTS_MEMO.set({})
    try:
        yield
    finally:
        _TEXTS_MEMO.reset(token)


@dataclass(frozen=True)
class CacheKey:
    """Everything that determines a block of embeddings. ``digest`` names the cache entry."""

    model: str  # model_fingerprint(...)
    prompt: str
    max_length: int
    normalize: bool
    backend: str
    precision: str
    texts: str  # texts_hash(...)
    storage: str = "float32"  # dtype of the stored vectors: float32 or float16

    @property
    def digest(self) -> str:
        fields = asdict(self)
        if fields["storage"] == "float32":  # left out, so entries written before the field keep their digest
            del fields["storage"]
        payload = json.dumps({"format": CACHE_FORMAT, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheConfig:
    """Where embeddings are cached (a second run over the same texts and weights never re-encodes)."""

    cache_dir: str | None = option(None, "Embedding cache folder; none: $HARDNEG_CACHE or ~/.cache/hardneg.",
                                   path="cache")

    @property
    def folder(self) -> Path:
        """The cache folder: ``cache_dir``, else the default (:func:`default_cache_dir`)."""
        return Path(self.cache_dir).expanduser() if self.cache_dir is not None else default_cache_dir()


class EmbeddingCache:
    """A folder of ``<digest>.npy`` + ``<digest>.json`` entries, written atomically.

    Use one per machine (the default folder) or pass ``root`` for an experiment-local cache.
    ``hits`` and ``misses`` count lookups, so callers and tests can see whether encoding ran.
    Cached arrays are returned memory-mapped and read-only.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def paths(self, key: CacheKey) -> tuple[Path, Path]:
        """(array file, sidecar file) of an entry; entries are sharded by the digest's first 2 chars."""
        digest = key.digest
        folder = self.root / digest[:2]
        return folder / f"{digest}.npy", folder / f"{digest}.json"

    def get(self, key: CacheKey) -> np.ndarray | None:
        """The cached array (memory-mapped, read-only), or None; counts a hit or a miss."""
        array = self._load(key)
        if array is None:
            self.misses += 1
        else:
            self.hits += 1
        return array

    def put(self, key: CacheKey, array: np.ndarray, extra: dict[str, Any] | None = None) -> None:
        """Store ``array``: the ``.npy`` first, then the sidecar, which marks the entry complete."""
        array = np.ascontiguousarray(array)
        npy_path, json_path = self.paths(key)
        with atomic_path(npy_path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)
        meta = {
            "format": CACHE_FORMAT,
            "digest": key.digest,
            "key": asdict(key),
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            **(extra or {}),
        }
        atomic_write_json(json_path, meta)

    def get_or_compute(
        self, key: CacheKey, compute: Callable[[], np.ndarray], extra: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Return the cached array, or run ``compute``, store its result and return it.

        Either way the result is the stored file, memory-mapped: the computed array is freed,
        and the first run sees the very same (read-only) array as later cache hits.
        """
        cached = self.get(key)
        if cached is not None:
            return cached
        array = compute()
        self.put(key, array, extra)
        stored = self._load(key)
        return stored if stored is not None else array

    def peek(self, key: CacheKey) -> bool:
        """Whether a complete entry for ``key`` is there (counts neither a hit nor a miss)."""
        return self._load(key) is not None

    def get_or_compute_blocks(self, key: CacheKey,
                              blocks: "Sequence[tuple[CacheKey, Callable[[], np.ndarray]]] | Callable[[], Sequence]",
                              extra: dict[str, Any] | None = None) -> np.ndarray:
        """:meth:`get_or_compute` for a long job cut into blocks (rows in order), so it resumes.

        Each block is cached as soon as it is computed; a run killed part-way and started again
        recomputes only the blocks that are missing. The blocks are then copied into the entry
        of ``key`` through a memory map (never all in memory at once) and removed. ``blocks``
        may be a function giving them: then the block keys (hashes of their texts) are only
        made on a miss.
        """
        cached = self.get(key)
        if cached is not None:
            return cached
        if callable(blocks):
            blocks = blocks()
        parts = [self.get_or_compute(block_key, compute) for block_key, compute in blocks]
        n = sum(p.shape[0] for p in parts)
        dtype = parts[0].dtype if parts else np.dtype("float32")
        shape = (n, *parts[0].shape[1:]) if parts else (0, 0)
        npy_path, json_path = self.paths(key)
        with atomic_path(npy_path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            start = 0
            for part in parts:
                out[start:start + part.shape[0]] = part
                start += part.shape[0]
            out.flush()
            del out
        atomic_write_json(json_path, {"format": CACHE_FORMAT, "digest": key.digest, "key": asdict(key),
                                      "shape": list(shape), "dtype": str(dtype), **(extra or {})})
        del parts
        for block_key, _ in blocks:
            for path in self.paths(block_key):
                path.unlink(missing_ok=True)
        return self._load(key)

    def _load(self, key: CacheKey) -> np.ndarray | None:
        """Read an entry if it is complete and consistent with its sidecar; otherwise None."""
        npy_path, json_path = self.paths(key)
        if not (npy_path.is_file() and json_path.is_file()):
            return None
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
            array = np.load(npy_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged entry is a miss; it is overwritten on the next put
        if meta.get("digest") != key.digest or list(array.shape) != meta.get("shape"):
            return None
        return array
