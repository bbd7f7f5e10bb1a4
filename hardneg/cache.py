"""Weight-keyed embedding cache: one ``.npy`` plus a ``.json`` sidecar per entry, no pickle.

Use it so that re-running a stage (mining, evaluation) does not re-encode a corpus that
the same model already encoded. The key covers everything that changes the vectors: a
fingerprint of the model's *weights* (never its name or path, so a fine-tuned model can
never reuse its base model's vectors), the prompt, the max length, normalisation, the
backend, the precision, the storage dtype (float32 or float16) and the texts in order.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hardneg.io import atomic_path, atomic_write_json

__all__ = ["CacheKey", "EmbeddingCache", "default_cache_dir", "model_fingerprint", "texts_hash"]

CACHE_FORMAT = 1  # bump when the key or the file layout changes


def default_cache_dir() -> Path:
    """``$HARDNEG_CACHE`` if set, else ``~/.cache/hardneg``."""
    env = os.environ.get("HARDNEG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hardneg"


def texts_hash(texts: Sequence[str]) -> str:
    """sha256 over the texts in order; each text is length-prefixed so joins cannot collide."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
    return h.hexdigest()


def _update_with_tensor(h: Any, name: str, tensor: Any) -> None:
    """Feed a tensor's name, dtype, shape and raw bytes (any dtype, bf16 included) to ``h``."""
    import torch

    t = tensor.detach().to("cpu").contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())


def _module_configs(model: Any) -> list[dict[str, Any]]:
    """The saved configuration of each module (pooling mode, dimensions, ...), max length excluded.

    The max length is left out on purpose: it is part of the cache key on its own, and the
    encoder changes it temporarily while encoding queries and passages.
    """
    configs: list[dict[str, Any]] = []
    modules = list(model) if hasattr(model, "__iter__") else [model]
    for module in modules:
        get = getattr(module, "get_config_dict", None)
        config = dict(get()) if callable(get) else {}
        config.pop("max_seq_length", None)
        configs.append({"class": f"{type(module).__module__}.{type(module).__qualname__}", "config": config})
    return configs


def _tokenizer_digest(model: Any) -> str:
    """Hash of the first module's tokenizer vocabulary (a retokenised model embeds differently)."""
    try:
        tokenizer = model[0].tokenizer
        vocab = tokenizer.get_vocab()
    except (AttributeError, IndexError, KeyError, TypeError, NotImplementedError):
        return ""
    payload = json.dumps([type(tokenizer).__name__, sorted(vocab.items())], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def model_fingerprint(model: Any) -> str:
    """sha256 of a loaded model's weights and module configuration.

    Hashes every parameter and buffer of ``model.state_dict()`` (in name order: name, dtype,
    shape, bytes), each module's config (e.g. pooling mode), the tokenizer vocabulary and
    ``truncate_dim``. The model's name or path is deliberately not part of it: a model
    saved under a new path keeps its fingerprint, and a single changed weight changes it.
    Costs one pass over the weights (about 0.25 s for MiniLM-L6 on a CPU).
    """
    state = model.state_dict()
    if not state:
        from hardneg.errors import HardnegError

        raise HardnegError(f"cannot fingerprint {type(model).__name__}: it exposes no weights (state_dict is empty)")
    h = hashlib.sha256(b"hardneg-model-fingerprint-v1\n")
    for name in sorted(state):
        _update_with_tensor(h, name, state[name])
    meta = {
        "modules": _module_configs(model),
        "tokenizer": _tokenizer_digest(model),
        "truncate_dim": getattr(model, "truncate_dim", None),
    }
    h.update(json.dumps(meta, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


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

    def get_or_compute_blocks(self, key: CacheKey, blocks: Sequence[tuple[CacheKey, Callable[[], np.ndarray]]],
                              extra: dict[str, Any] | None = None) -> np.ndarray:
        """:meth:`get_or_compute` for a long job cut into blocks (rows in order), so it resumes.

        Each block is cached as soon as it is computed; a run killed part-way and started again
        recomputes only the blocks that are missing. The blocks are then copied into the entry
        of ``key`` through a memory map (never all in memory at once) and removed.
        """
        cached = self.get(key)
        if cached is not None:
            return cached
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
