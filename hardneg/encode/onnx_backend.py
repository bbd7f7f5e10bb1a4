"""Encode through ONNX Runtime, in fp32 or dynamically quantised int8 (the ``onnx`` and ``int8`` backends).

Use ``EncoderConfig(backend="int8")`` when CPU encoding dominates a job (a big corpus, no GPU):
measured on SciFact it encodes about twice as fast as torch fp32 for a tiny NDCG@10 change
(``benchmarks/backends.py``). ``onnx`` is fp32 through ONNX Runtime with its fused kernels.

Written by hand on purpose: sentence-transformers' own ONNX backend needs ``optimum``, whose
current releases pin transformers below 5 and so break sentence-transformers 6. Here the
model's transformer is exported with ``torch.onnx``, optimised with ONNX Runtime's transformer
optimizer (fused attention, GELU and layer norms) and, for ``int8``, quantised with
``onnxruntime.quantization.quantize_dynamic`` (per-channel int8 weights, activations quantised
per batch at run time). Tokenisation, prompts, pooling and normalisation stay sentence-
transformers' own modules, so the embeddings differ from torch's only by the arithmetic.

The exported files live in the embedding cache under ``onnx/<model fingerprint>/``, so a model
is exported once (a few seconds for MiniLM) and a fine-tuned model never reuses stale files.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hardneg.errors import HardnegError

__all__ = ["export_onnx"]

log = logging.getLogger(__name__)
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Model families ONNX Runtime's transformer optimizer fuses as BERT (attention, GELU, layer norm).
_BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "mpnet", "distilbert"}


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - onnxruntime is a dependency
        raise HardnegError("the onnx and int8 backends need onnxruntime: pip install onnxruntime onnx") from e
    return onnxruntime


def _transformer(model: Any) -> Any:
    """The Hugging Face model inside the sentence-transformers model's first module."""
    first = model[0]
    hf = getattr(first, "auto_model", None) or getattr(first, "model", None)
    if hf is None or not hasattr(hf, "config"):
        raise HardnegError(f"the onnx/int8 backends need a Transformer first module, not {type(first).__name__}; "
                           "use backend 'torch'")
    return hf


def export_onnx(model: Any, folder: str | os.PathLike[str], quantize: bool) -> Path:
    """Export (once) and return ``folder/model.onnx`` or ``folder/model_int8.onnx``.

    Each file is written to a temporary name and renamed, so a killed export leaves nothing
    a later run would trust.
    """
    folder = Path(folder)
    target = folder / ("model_int8.onnx" if quantize else "model.onnx")
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "model.onnx"
    if not fp32.is_file():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            raw = Path(tmp) / "raw.onnx"
            _torch_export(model, raw)
            _optimize(_transformer(model).config, raw, Path(tmp) / "opt.onnx")
            os.replace(Path(tmp) / "opt.onnx", fp32)
    if quantize:
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            _quantize(fp32, Path(tmp) / "q.onnx")
            os.replace(Path(tmp) / "q.onnx", target)
    return target


class _Wrapped:
    """Positional-argument forward of the Hugging Face model, returning token embeddings."""

    def __new__(cls, hf: Any, names: Sequence[str]) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.hf = hf

            def forward(self, *args: Any) -> Any:
                return self.hf(**dict(zip(names, args)), return_dict=True).last_hidden_state

        return Wrapped()


def _torch_export(model: Any, path: Path) -> None:
    """torch.onnx (TorchScript exporter) with dynamic batch and sequence axes, eager attention
    (the pattern ONNX Runtime's optimizer recognises and fuses)."""
    import torch

    hf = _transformer(model)
    features = model.preprocess(["hardneg exports this model", "to ONNX"])
    names = [n for n in TOKEN_INPUTS if n in features]
    old = getattr(hf.config, "_attn_implementation", None)
    _set_attention(hf, "eager")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about data-dependent branches it has resolved
            torch.onnx.export(
                _Wrapped(hf, names).eval(), tuple(features[n].to(hf.device) for n in names), str(path),
                input_names=names, output_names=["token_embeddings"], opset_version=17, dynamo=False,
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "token_embeddings"]},
            )
    finally:
        if old is not None:
            _set_attention(hf, old)


def _set_attention(hf: Any, name: str) -> None:
    try:
        hf.set_attn_implementation(name)
    except Exception:  # older transformers: the private config field is the switch
        hf.config._attn_implementation = name


def _optimize(config: Any, src: Path, dst: Path) -> None:
    """Fuse attention / GELU / layer norm for BERT-like models; others get ONNX Runtime's
    generic graph optimisations at session creation only."""
    if getattr(config, "model_type", None) not in _BERT_LIKE:
        shutil.copyfile(src, dst)
        return
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(str(src), model_type="bert", num_heads=int(config.num_attention_heads),
                                   hidden_size=int(config.hidden_size), opt_level=1)
    fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    log.info("onnx optimizer fused %s", fused)
    opt.save_model_to_file(str(dst))


def _quantize(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the weight MatMuls (and fused attention), per channel.

    Per-channel weights keep MiniLM's embeddings within a cosine of about 0.99 of fp32;
    per-tensor ones fall to about 0.94 (measured in benchmarks/backends.py's development).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its "consider pre-processing" advice is for static quantisation
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.disable(previous)


class OnnxRunner:
    """Encodes texts like ``SentenceTransformer.encode`` with the transformer run by ONNX Runtime.

    ``model`` is the loaded sentence-transformers model (its tokenizer, pooling and other
    modules are reused); ``path`` an exported file from :func:`export_onnx`.
    """

    def __init__(self, model: Any, path: str | os.PathLike[str], threads: int | None = None):
        ort = _require_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.model = model
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def encode(self, texts: list[str], *, prompt: str = "", batch_size: int = 64, normalize: bool = True,
               progress: bool = False) -> np.ndarray:
        """float32 embeddings of ``texts`` in input order (longest first inside, as ST does)."""
        import torch
        from tqdm.auto import tqdm

        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.model.get_embedding_dimension()), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="encode (onnx)", disable=not progress, unit="batch"):
            idx = order[start:start + batch_size]
            features = self.model.preprocess([texts[i] for i in idx], prompt=prompt or None)
            feed = {n: features[n].cpu().numpy().astype(np.int64) for n in self.inputs}
            tokens = self.session.run(None, feed)[0]
            features["token_embeddings"] = torch.from_numpy(tokens)
            with torch.no_grad():
                for module in list(self.model.children())[1:]:
                    features = module(features)
            emb = features["sentence_embedding"].float()
            if normalize:
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            out[idx] = emb.numpy()
        return out
