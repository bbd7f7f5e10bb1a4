"""Which float precision a model runs in, resolved from what the machine can do.

``auto`` is the default of training (``TrainConfig.mixed_precision``) and encoding
(``EncoderConfig.precision``). It picks bfloat16 *autocast* (weights stay float32, matrix
products run in bf16) on CPUs with AMX-BF16 tiles, where a bf16 matmul runs about 6x faster
than float32 and a MiniLM training step 2-3.6x faster, and float32 elsewhere: AVX-512-BF16
without AMX, and AVX2-only CPUs, gain little or lose (see ``benchmarks/bf16_speed.py``).
Training on CUDA keeps bf16 where the GPU supports it, else fp16.

Results are byte-identical per CPU class and resolved precision, not across them. Set
``HARDNEG_AUTO_PRECISION=fp32`` (or ``bf16``) to make ``auto`` resolve the same way on every
machine (the test suite does); an explicit precision is never overridden.
"""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

from hardneg.errors import HardnegError

__all__: list[str] = []  # internal: the encoder's and the trainer's precision choice

AUTO_ENV = "HARDNEG_AUTO_PRECISION"
#: encoding: fp32; bf16 autocast (fp32 weights, bf16 matmuls); weights cast to bf16 / fp16
ENCODE_PRECISIONS = ("auto", "fp32", "autocast-bf16", "bf16-weights", "fp16-weights")
#: training (the trainer's mixed precision): none, bf16 autocast, fp16 autocast (CUDA only)
TRAIN_PRECISIONS = ("auto", "no", "bf16", "fp16")


@lru_cache(maxsize=1)
def machine_info() -> dict[str, Any]:
    """The CPU's model name and bf16 capability, and the GPU if any: recorded beside every figure."""
    import torch

    amx = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()) and "amx_bf16" in _cpu_flags()
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "amx_bf16": amx,
        "avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "cuda": cuda,
    }


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpu_field(name: str) -> str:
    """The first ``name`` line of /proc/cpuinfo (``flags``, ``model name``), "" when absent."""
    line = next((ln for ln in _cpuinfo().splitlines() if ln.startswith(name)), "")
    return line.partition(":")[2].strip()


def _cpu_flags() -> set[str]:
    return set(_cpu_field("flags").split())


def _cpu_name() -> str:
    return _cpu_field("model name") or platform.processor() or platform.machine()


def _auto_override() -> str | None:
    value = os.environ.get(AUTO_ENV, "").strip().lower()
    if value and value not in ("fp32", "bf16"):
        raise HardnegError(f"{AUTO_ENV} must be fp32 or bf16, not {value!r}")
    return value or None


def _bf16_pays() -> bool:
    override = _auto_override()
    return override == "bf16" if override else bool(machine_info()["amx_bf16"])


def resolve_train(mode: str, cuda: bool) -> str:
    """``mode`` (one of :data:`TRAIN_PRECISIONS`) as the trainer runs it: no, bf16 or fp16.

    fp16 on a CPU is refused: there is no fp16 autocast for CPU training in the trainer.
    """
    if mode not in TRAIN_PRECISIONS:
        raise HardnegError(f"mixed_precision must be one of {', '.join(TRAIN_PRECISIONS)}, not {mode!r}")
    if mode == "fp16" and not cuda:
        raise HardnegError("mixed_precision fp16 needs a CUDA GPU; on a CPU use bf16 (fast with AMX) or no")
    if mode != "auto":
        return mode
    if cuda:
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if _bf16_pays() else "no"


def resolved(encoder: Any, train: Any) -> dict[str, str]:
    """The precisions a run encodes and trains in on this machine (``encoder``: an EncoderConfig,
    ``train``: a TrainConfig), as :func:`resolve_encode` and :func:`resolve_train` resolve them."""
    return {"encode": resolve_encode(encoder.precision, encoder.backend),
            "train": resolve_train(train.mixed_precision, machine_info()["cuda"] is not None)}


def train_label(resolved_train: str) -> str:
    """A resolved training precision as a table shows it: ``no`` (no mixed precision) is ``fp32``."""
    return "fp32" if resolved_train == "no" else resolved_train


def resolve_encode(mode: str, backend: str = "torch") -> str:
    """``mode`` (one of :data:`ENCODE_PRECISIONS`) as the encoder runs it; ``auto`` is fp32 on GPUs
    and on CPUs without AMX, and for the ONNX backends (which have their own kernels)."""
    if mode not in ENCODE_PRECISIONS:
        raise HardnegError(f"precision must be one of {', '.join(ENCODE_PRECISIONS)}, not {mode!r}")
    if mode != "auto":
        return mode
    if backend != "torch":
        return "fp32"
    import torch

    return "autocast-bf16" if not torch.cuda.is_available() and _bf16_pays() else "fp32"
