"""What a model's weights hash to: the fingerprint that keys the embedding cache.

The model fingerprint has one definition and two readers: :func:`model_fingerprint` reads a
loaded model, :func:`folder_fingerprint` a saved folder's files (safetensors headers and bytes,
module configs, tokenizer.json) without building the model, so a warm run never loads it and a
model fine-tuned in memory and then saved keeps its fingerprint.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from hardneg.errors import HardnegError

__all__: list[str] = []  # internal: the encoder, the cache key and the cross-encoder use it

# ONE definition, two readers: the fingerprint hashes a model's *content* (per sentence-transformers
# module: its class name, its canonical config and its tensors, module-relative names in order;
# then the tokenizer vocabulary and ``truncate_dim``). :func:`model_fingerprint` reads that
# content from a loaded model, :func:`folder_fingerprint` from a saved folder's files (modules.json,
# module configs, safetensors headers and bytes, tokenizer.json), without building the model.
# Both feed :func:`_content_digest`, so a model saved, or fine-tuned in memory and then saved, gets
# the same fingerprint from its folder as in memory, and the cache never splits between the two.
FINGERPRINT_VERSION = 2  # v1 hashed state_dict names with module prefixes: its entries are recomputed once
#: deterministic index buffers: old checkpoints store them, newer transformers do not load them
_SKIPPED_TENSORS = ("position_ids",)
#: module classes whose saved files the folder reader understands (weights in model.safetensors or none)
FILE_MODULE_TYPES = ("Transformer", "Pooling", "Normalize", "Dense")
_TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                        "sentence_camembert_config.json", "sentence_albert_config.json",
                        "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")
#: config values that mean "the default": left out, so an old folder (which omits them) and a model
#: loaded from it (whose config lists them) describe the same content
_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "Transformer": {"transformer_task": "feature-extraction", "module_output_name": "token_embeddings",
                    "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                    "do_lower_case": False, "processing_kwargs": {}, "unpad_inputs": None, "query_length": None,
                    "document_length": None, "query_expansion": None, "tokenizer_name_or_path": None,
                    "model_args": {}, "tokenizer_args": {}, "config_args": {}, "model_kwargs": {},
                    "processor_kwargs": {}, "config_kwargs": {}},
    "Pooling": {"include_prompt": True},
    "Normalize": {"module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"},
}
_CONFIG_RENAMES = {"word_embedding_dimension": "embedding_dimension",
                   "in_word_embedding_dimension": "in_embedding_dimension"}
#: sentence-transformers' legacy pooling flags, in its order
_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_TORCH_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                 "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32",
                 "uint64": "U64", "bool": "BOOL", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
                 "complex64": "C64"}
_FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".npy", ".npz", ".gguf")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a module: module-relative name, safetensors dtype code (F32, BF16, ...), shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModuleContent:
    """What the fingerprint takes from one module: class name, canonical config, tensors by name."""

    type: str
    config: dict[str, Any]
    tensors: tuple[TensorInfo, ...]


@dataclass(frozen=True)
class ModelContent:
    """Everything the fingerprint covers except the tensor bytes (cheap to build and to compare)."""

    modules: tuple[ModuleContent, ...]
    tokenizer: str  # sha256 of the vocabulary ("" without a tokenizer)
    truncate_dim: int | None

    def mismatch(self, other: "ModelContent") -> str | None:
        """Why ``other`` (e.g. a model loaded from the folder this content was read from) differs, or None.

        Float dtypes may differ (a precision setting cast the weights after loading them): the
        cache key holds the precision on its own.
        """
        if len(self.modules) != len(other.modules):
            return f"{len(self.modules)} modules vs {len(other.modules)}"
        for i, (a, b) in enumerate(zip(self.modules, other.modules)):
            if (a.type, a.config) != (b.type, b.config):
                return f"module {i}: {a.type} {a.config} vs {b.type} {b.config}"
            names_a, names_b = [t.name for t in a.tensors], [t.name for t in b.tensors]
            if names_a != names_b:
                extra = sorted(set(names_a) ^ set(names_b))[:3]
                return f"module {i}: tensor names differ (e.g. {', '.join(extra) or 'order'})"
            for ta, tb in zip(a.tensors, b.tensors):
                same_dtype = ta.dtype == tb.dtype or (ta.dtype in _FLOATS and tb.dtype in _FLOATS)
                if ta.shape != tb.shape or not same_dtype:
                    return f"module {i}: {ta.name} is {ta.dtype}{list(ta.shape)} vs {tb.dtype}{list(tb.shape)}"
        if self.tokenizer != other.tokenizer:
            return "tokenizer vocabularies differ"
        if self.truncate_dim != other.truncate_dim:
            return f"truncate_dim {self.truncate_dim} vs {other.truncate_dim}"
        return None


#: reads the bytes of module i's tensor: an iterable of buffers, little-endian, C order
TensorReader = Callable[[int, TensorInfo], Any]


def _content_digest(content: ModelContent, read: TensorReader) -> str:
    """The fingerprint: sha256 over the content, each tensor as name|dtype|shape then its raw bytes."""
    if not any(m.tensors for m in content.modules):
        raise HardnegError("cannot fingerprint a model without weights (no module holds a tensor)")
    h = hashlib.sha256(f"hardneg-model-fingerprint-v{FINGERPRINT_VERSION}\n".encode())
    for i, module in enumerate(content.modules):
        head = {"module": i, "type": module.type, "config": module.config}
        h.update(json.dumps(head, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8") + b"\n")
        for t in module.tensors:
            h.update(f"{t.name}|{t.dtype}|{','.join(map(str, t.shape))}\n".encode("utf-8"))
            for chunk in read(i, t):
                h.update(chunk)
    tail = {"tokenizer": content.tokenizer, "truncate_dim": content.truncate_dim}
    h.update(json.dumps(tail, sort_keys=True).encode("utf-8"))
    return h.hexdigest()


def canonical_config(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A module's config as the fingerprint sees it: JSON values, legacy keys renamed (pooling flags
    become ``pooling_mode``), ``max_seq_length`` left out (it is in the cache key on its own), and
    values equal to sentence-transformers' defaults left out."""
    config = json.loads(json.dumps(dict(config), sort_keys=True, default=str))
    for old, new in _CONFIG_RENAMES.items():
        if old in config and new not in config:
            config[new] = config.pop(old)
    flags = [k for k in _LEGACY_POOLING if k in config]
    if flags:
        if "pooling_mode" not in config:
            modes = [mode for key, mode in _LEGACY_POOLING.items() if config.get(key)] or ["mean"]
            config["pooling_mode"] = modes
        for key in flags:
            del config[key]
    if isinstance(config.get("pooling_mode"), list) and len(config["pooling_mode"]) == 1:
        config["pooling_mode"] = config["pooling_mode"][0]
    config.pop("max_seq_length", None)
    defaults = _CONFIG_DEFAULTS.get(kind, {})
    return {k: v for k, v in sorted(config.items()) if not (k in defaults and defaults[k] == v)}


def _vocab_digest(vocab: Mapping[str, int]) -> str:
    """sha256 of the (token, id) pairs in token order."""
    payload = json.dumps(sorted(vocab.items()), ensure_ascii=False, default=int)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _model_modules(model: Any) -> list[Any]:
    return list(model) if hasattr(model, "__iter__") else [model]


def _module_state(module: Any) -> dict[str, Any]:
    """The module's tensors under the names its folder stores them: a Transformer module saves its
    Hugging Face model with ``save_pretrained``, so the ``model.`` (``auto_model.``) prefix goes."""
    get = getattr(module, "state_dict", None)
    state = dict(get()) if callable(get) else {}
    for attr in ("model", "auto_model"):
        prefix = f"{attr}."
        if state and all(k.startswith(prefix) for k in state):
            if callable(getattr(getattr(module, attr, None), "save_pretrained", None)):
                state = {k[len(prefix):]: v for k, v in state.items()}
            break
    return {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] not in _SKIPPED_TENSORS}


def _module_config(module: Any) -> dict[str, Any]:
    get = getattr(module, "get_config_dict", None)
    config = dict(get()) if callable(get) else {}
    if getattr(module, "do_lower_case", False) is True:  # a Transformer setting kept outside its config keys
        config["do_lower_case"] = True
    return canonical_config(type(module).__name__, config)


def _tokenizer_digest(model: Any) -> str:
    """Hash of the first module's tokenizer vocabulary (a retokenised model embeds differently)."""
    try:
        vocab = _model_modules(model)[0].tokenizer.get_vocab()
    except (AttributeError, IndexError, KeyError, TypeError, NotImplementedError):
        return ""
    return _vocab_digest(vocab)


def _torch_dtype(tensor: Any) -> str:
    name = str(tensor.dtype).removeprefix("torch.")
    return _TORCH_DTYPES.get(name, name)


def _memory_content(model: Any) -> tuple[ModelContent, dict[tuple[int, str], Any]]:
    """The content of a loaded model and its tensors by (module, name)."""
    modules, tensors = [], {}
    for i, module in enumerate(_model_modules(model)):
        state = _module_state(module)
        infos = []
        for name in sorted(state):
            t = state[name]
            infos.append(TensorInfo(name, _torch_dtype(t), tuple(int(x) for x in t.shape)))
            tensors[(i, name)] = t
        modules.append(ModuleContent(type(module).__name__, _module_config(module), tuple(infos)))
    truncate_dim = getattr(model, "truncate_dim", None)
    return ModelContent(tuple(modules), _tokenizer_digest(model), truncate_dim), tensors


def model_content(model: Any) -> ModelContent:
    """What :func:`model_fingerprint` covers of a loaded model, without reading the weights."""
    return _memory_content(model)[0]


def model_fingerprint(model: Any) -> str:
    """sha256 of a loaded model's weights and module configuration (see :func:`folder_fingerprint`
    for the same value read from a saved folder).

    Hashes, per module in order, its class name, its canonical config (pooling mode, dimensions,
    ...: :func:`canonical_config`) and its tensors by module-relative name (name, dtype, shape,
    bytes), then the tokenizer vocabulary and ``truncate_dim``. The model's name or path is
    deliberately not part of it: a model saved under a new path keeps its fingerprint, and a
    single changed weight changes it. Costs one pass over the weights (about 0.2 s for MiniLM-L6
    on a CPU).
    """
    import torch

    content, tensors = _memory_content(model)
    if not tensors:
        raise HardnegError(f"cannot fingerprint {type(model).__name__}: it exposes no weights (state_dict is empty)")

    def read(i: int, info: TensorInfo):
        t = tensors[(i, info.name)].detach().to("cpu").contiguous()
        return [t.reshape(-1).view(torch.uint8).numpy()] if t.numel() else []

    return _content_digest(content, read)


@dataclass(frozen=True)
class FolderFingerprint:
    """:func:`model_fingerprint` of a saved sentence-transformers folder, read from its files.

    ``max_seq_length`` is the max length the folder's model loads with (None when the files do
    not say it plainly); ``content`` is what the fingerprint covers, for comparing with the model
    once it is loaded (:meth:`ModelContent.mismatch`).
    """

    path: str
    fingerprint: str
    content: ModelContent
    max_seq_length: int | None


_FOLDER_MEMO: dict[tuple, FolderFingerprint | None] = {}


def folder_fingerprint(path: str | os.PathLike[str]) -> FolderFingerprint | None:
    """The fingerprint of the model saved in ``path`` without loading it, or None when its files
    cannot say it: no ``modules.json``, weights in ``pytorch_model.bin`` (or another format than
    safetensors), a module class the reader does not know (:data:`FILE_MODULE_TYPES`), or no
    weights at all. Then load the model and use :func:`model_fingerprint`.

    Reads the safetensors headers and hashes the tensor bytes straight from the files (one pass
    over them, no torch); memoised per process while the files keep their size and mtime.
    """
    root = Path(path).expanduser().resolve()
    try:
        stamp = _folder_stamp(root)
    except OSError:
        return None
    if stamp in _FOLDER_MEMO:
        return _FOLDER_MEMO[stamp]
    try:
        result = _read_folder(root)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        result = None  # unreadable or unexpected files: the caller loads the model instead
    if len(_FOLDER_MEMO) > 64:
        _FOLDER_MEMO.clear()
    _FOLDER_MEMO[stamp] = result
    return result


def _folder_stamp(root: Path) -> tuple:
    """(path, (name, size, mtime) of every file in the folder and its subfolders, one level down)."""
    entries = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for f in sorted(folder.iterdir()):
            if f.is_file():
                st = f.stat()
                entries.append((str(f.relative_to(root)), st.st_size, st.st_mtime_ns))
    return str(root), tuple(entries)


def _read_folder(root: Path) -> FolderFingerprint | None:
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return None  # sentence-transformers would build a default model around a plain HF folder
    listed = sorted(json.loads(modules_file.read_text(encoding="utf-8")), key=lambda m: int(m["idx"]))
    modules, sources = [], {}
    for i, entry in enumerate(listed):
        kind = str(entry["type"]).rsplit(".", 1)[-1]
        folder = root / str(entry.get("path") or "")
        if kind not in FILE_MODULE_TYPES or not folder.resolve().is_relative_to(root):
            return None
        tensors = _safetensors_tensors(folder) if folder.is_dir() else {}
        if tensors is None:
            return None
        config = _file_module_config(kind, folder)
        infos = []
        for name in sorted(tensors):
            info, source = tensors[name]
            infos.append(info)
            sources[(i, name)] = source
        modules.append(ModuleContent(kind, config, tuple(infos)))
    if not sources:
        return None  # no weights in any file: loading the model says what is wrong
    first = root / str(listed[0].get("path") or "") if listed else root
    content = ModelContent(tuple(modules), _file_tokenizer_digest(first), None)
    with _open_files() as chunks:
        fingerprint = _content_digest(content, lambda i, info: chunks(*sources[(i, info.name)]))
    max_len = _file_max_seq_length(first) if modules and modules[0].type == "Transformer" else None
    return FolderFingerprint(str(root), fingerprint, content, max_len)


def _file_module_config(kind: str, folder: Path) -> dict[str, Any]:
    names = _TRANSFORMER_CONFIGS if kind == "Transformer" else ("config.json",)
    for name in names:
        file = folder / name
        if file.is_file():
            return canonical_config(kind, json.loads(file.read_text(encoding="utf-8")))
    return canonical_config(kind, {})


def _safetensors_tensors(folder: Path) -> dict[str, tuple[TensorInfo, tuple[Path, int, int]]] | None:
    """Tensors of a module folder: name -> (info, (file, first byte, end byte)); {} for a module
    without weights; None when its weights are in another format than (sharded) safetensors."""
    index = folder / "model.safetensors.index.json"
    single = folder / "model.safetensors"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    elif single.is_file():
        files = ["model.safetensors"]
    else:
        files = []
    if (folder / "adapter_config.json").is_file():
        return None  # a PEFT adapter: the loaded weights are not the files' tensors
    others = [f.name for f in folder.iterdir() if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES)
              and f.name not in files]
    if others and not files:
        return None  # pytorch_model.bin and the like: load the model to fingerprint it
    out: dict[str, tuple[TensorInfo, tuple[Path, int, int]]] = {}
    for name in files:
        file = folder / name
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        base = 8 + n
        for key, spec in header.items():
            if key == "__metadata__" or key.rsplit(".", 1)[-1] in _SKIPPED_TENSORS:
                continue
            begin, end = (int(x) for x in spec["data_offsets"])
            out[key] = (TensorInfo(key, str(spec["dtype"]), tuple(int(x) for x in spec["shape"])),
                        (file, base + begin, base + end))
    return out


@contextmanager
def _open_files() -> Iterator[Callable[[Path, int, int], Iterator[memoryview]]]:
    """``chunks(file, start, end)``: a byte range of a weight file in 16 MiB pieces, each file
    opened once, through one reused buffer (constant memory, no torch)."""
    handles: dict[Path, Any] = {}
    buffer = memoryview(bytearray(1 << 24))

    def chunks(file: Path, start: int, end: int) -> Iterator[memoryview]:
        if file not in handles:
            handles[file] = open(file, "rb")
        f = handles[file]
        f.seek(start)
        left = end - start
        while left > 0:
            n = f.readinto(buffer[:min(left, len(buffer))])
            if not n:
                raise ValueError(f"{file}: ends inside a tensor")
            yield buffer[:n]
            left -= n

    try:
        yield chunks
    finally:
        for f in handles.values():
            f.close()


def _file_tokenizer_digest(folder: Path) -> str:
    """The vocabulary digest from ``tokenizer.json`` (model vocabulary plus added tokens, as a
    fast tokenizer's ``get_vocab()`` gives it); without one, a digest of the raw tokenizer files
    (a distinct value: such a folder then never shares a fingerprint with a loaded model)."""
    file = folder / "tokenizer.json"
    if file.is_file():
        data = json.loads(file.read_text(encoding="utf-8"))
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            out = dict(vocab)  # JSON: str tokens, int ids
        elif isinstance(vocab, list):  # Unigram: [piece, score] in id order
            out = {str(item[0]): i for i, item in enumerate(vocab)}
        else:
            out = None
        if out is not None:
            for token in data.get("added_tokens") or []:
                out[str(token["content"])] = int(token["id"])
            return _vocab_digest(out)
    names = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
             "tokenizer.model", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json")
    h = hashlib.sha256(b"raw tokenizer files\n")
    found = False
    for name in names:
        if (folder / name).is_file():
            found = True
            h.update(name.encode() + b"\n" + (folder / name).read_bytes())
    return f"raw:{h.hexdigest()}" if found else ""


def _file_max_seq_length(folder: Path) -> int | None:
    """The max length sentence-transformers loads a Transformer folder with: the module config's
    ``max_seq_length``, else the tokenizer's ``model_max_length`` capped at the model's
    ``max_position_embeddings``; None when the files do not say."""
    config = next((json.loads((folder / n).read_text(encoding="utf-8")) for n in _TRANSFORMER_CONFIGS
                   if (folder / n).is_file()), {})
    if config.get("max_seq_length") is not None:
        return int(config["max_seq_length"])
    kwargs = config.get("processor_kwargs") or config.get("tokenizer_args") or {}
    if kwargs.get("model_max_length") is not None:
        return int(kwargs["model_max_length"])
    tok_file = folder / "tokenizer_config.json"
    if not tok_file.is_file():
        return None
    length = json.loads(tok_file.read_text(encoding="utf-8")).get("model_max_length")
    hf_file = folder / "config.json"
    hf_config = json.loads(hf_file.read_text(encoding="utf-8")) if hf_file.is_file() else {}
    limit = hf_config.get("max_position_embeddings")
    if length is None or length >= 1e29:  # transformers' "no limit" sentinel
        return int(limit) if isinstance(limit, int) and limit != -1 else None
    if isinstance(limit, int) and limit != -1:
        return int(min(length, limit))
    return int(length)
