"""How much memory a training run will take, and how much the machine can give it.

Use :func:`plan` before the first step: it estimates the peak resident memory of a
sentence-transformers training run from the model's shape and the longest batch the data can
make, compares it with the memory actually available (the cgroup limit or ``MemAvailable``,
never ``MemTotal``) and says which loss and GradCache chunk fit, or refuses with one line
naming what to lower. A run that would not fit is stopped before it starts, not killed by the
kernel halfway through.

The activation model is the standard one for a transformer layer (Korthikanti et al. 2022,
"Reducing activation recomputation"): per token and layer, ``34 h + 5 a L`` bytes with 16-bit
activations (``h`` hidden size, ``a`` heads, ``L`` padded length), scaled by a factor per
precision, plus a constant for the runtime; both fitted on MiniLM with
``benchmarks/train_memory.py``, whose table sets each estimate beside the measured peak RSS.
Plain MNRL keeps the activations of every text of the batch for the backward pass
(batch x (k + 2) sequences); GradCache (cached-mnrl) only those of one chunk.
"""
from __future__ import annotations

import os
import resource
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from hardneg.errors import HardnegError

__all__ = ["MemoryPlan", "TooLarge", "plan"]

GB = 1024 ** 3
#: bytes per token and layer = FACTOR[precision] x (34 h + 5 a L); with RUNTIME_BYTES, fitted to the
#: peak RSS of MiniLM on SciFact's longest rows (benchmarks/train_memory.py, 'varied': within 11%)
ACTIVATION_FACTOR = {"no": 2.1, "bf16": 1.9, "fp16": 1.9}
#: optimizer state per parameter: float32 gradient + AdamW's two moments
STATE_BYTES_PER_PARAM = 12
#: what the trainer, the allocator and the kernels hold on top of the activations and the baseline
RUNTIME_BYTES = int(1.35 * GB)
#: ``loss = "auto"`` keeps plain MNRL (2-3% faster per step than GradCache on MiniLM, measured in
#: benchmarks/train_memory.py) only while its estimate stays under this many GB, so that the
#: default recipe runs beside other work on a 16 GB laptop
AUTO_PLAIN_MAX_GB = 6.0
#: when ``mini_batch_size`` is not set, a GradCache chunk holds this many padded tokens
DEFAULT_CHUNK_TOKENS = 8192
#: share of the available memory a run may plan to use
AVAILABLE_SHARE = 0.9


@dataclass(frozen=True)
class MemoryPlan:
    """What :func:`plan` decided: the loss, the GradCache chunk, and the figures behind it (bytes).

    ``shape`` is (layers, hidden size, heads); with ``baseline``, ``longest``, the batch size,
    the chunk and the precision it is all :func:`peak_bytes` needs to recompute ``estimate``.
    """

    loss: str
    mini_batch_size: int | None
    estimate: int
    budget: int
    available: int
    baseline: int
    longest: dict[str, int]
    shape: tuple[int, int, int] = (1, 1, 1)
    batch_size: int = 0
    precision: str = "no"

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "summary": self.summary()}
        for key in ("estimate", "budget", "available", "baseline"):
            out[f"{key}_gb"] = round(out.pop(key) / GB, 3)
        return out

    def summary(self) -> str:
        chunk = f", GradCache chunks of {self.mini_batch_size} texts" if self.mini_batch_size else ""
        return (f"training memory: {self.loss}{chunk}, estimated peak {self.estimate / GB:.1f} GB "
                f"of a {self.budget / GB:.1f} GB budget ({self.available / GB:.1f} GB available)")


# ---- what the machine has -----------------------------------------------------------------------
def rss_bytes() -> int:
    """This process's resident memory now."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_bytes() -> int:
    """Memory this process could still take: ``MemAvailable``, lowered to the cgroup's headroom
    (limit minus usage, cgroup v2 or v1) when the process runs in a limited cgroup."""
    values = [_meminfo("MemAvailable")]
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            values.append(max(0, limit - usage))
    known = [v for v in values if v is not None]
    return min(known) if known else 0


def _meminfo(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None  # absent, or "max" (no limit)


# ---- what the run needs -------------------------------------------------------------------------
def _shape(model: Any) -> tuple[int, int, int]:
    """(layers, hidden size, attention heads) of a sentence-transformers model."""
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    hidden = getattr(config, "hidden_size", None)
    heads = getattr(config, "num_attention_heads", None)
    if not (layers and hidden and heads):  # not a transformer we know: one layer as wide as the output
        layers, hidden, heads = 1, int(model.get_embedding_dimension()), 1
    return int(layers), int(hidden), int(heads)


def activation_bytes(shape: tuple[int, int, int], sequences: int, length: int, precision: str) -> int:
    """Activations kept for the backward pass of ``sequences`` texts padded to ``length`` tokens,
    by a model of ``shape`` (layers, hidden size, heads)."""
    layers, hidden, heads = shape
    per_token = ACTIVATION_FACTOR[precision] * (34 * hidden + 5 * heads * length)
    return int(sequences * length * layers * per_token)


def peak_bytes(shape: tuple[int, int, int], baseline: int, longest: Mapping[str, int], batch_size: int,
               chunk: int | None, precision: str) -> int:
    """The estimated peak resident memory: ``baseline`` (the process before training, plus gradients
    and optimizer state) + the activations of the largest forward pass kept for backward +
    :data:`RUNTIME_BYTES`. ``chunk`` None is the plain path (every column of the batch at once,
    each padded to its longest text); else GradCache chunks of ``chunk`` texts of the longest."""
    if chunk is None:
        act = sum(activation_bytes(shape, batch_size, n, precision) for n in longest.values())
    else:
        act = activation_bytes(shape, chunk, max(longest.values(), default=1), precision)
    return int(baseline + act + RUNTIME_BYTES)


class TooLarge(HardnegError):
    """A run :func:`plan` refuses: it would not fit. ``plan`` holds the figures."""

    def __init__(self, message: str, plan: MemoryPlan):
        super().__init__(message)
        self.plan = plan


def longest_tokens(model: Any, columns: Mapping[str, Sequence[str]], max_length: int) -> dict[str, int]:
    """Per text column, the longest text in model tokens (special tokens included, at most ``max_length``)."""
    tokenizer = model.tokenizer
    out = {}
    for name, texts in columns.items():
        unique = sorted(set(texts))
        longest = 0
        for start in range(0, len(unique), 4096):
            ids = tokenizer(unique[start:start + 4096], truncation=True, max_length=max_length)["input_ids"]
            longest = max(longest, max((len(x) for x in ids), default=0))
        out[name] = longest
    return out


def plan(model: Any, columns: Mapping[str, Sequence[str]], *, loss: str, batch_size: int, max_length: int,
         precision: str, mini_batch_size: int | None, memory_gb: float | None, guide: bool = False) -> MemoryPlan:
    """Choose the loss (``auto``: plain ``mnrl`` while it fits under :data:`AUTO_PLAIN_MAX_GB`, else
    ``cached-mnrl``) and the GradCache chunk, and refuse when even that would not fit.

    ``columns`` are the training dataset's text columns; ``precision`` the resolved trainer
    precision (no, bf16, fp16); ``guide`` adds GIST's frozen guide model.
    """
    longest = longest_tokens(model, {c: v for c, v in columns.items() if c != "label"}, max_length)
    width = max(longest.values(), default=1) or 1
    shape, params = _shape(model), sum(p.numel() for p in model.parameters())
    rss, available = rss_bytes(), available_bytes()
    baseline = rss + params * (STATE_BYTES_PER_PARAM + (4 if guide else 0))
    budget = rss + int(AVAILABLE_SHARE * available)
    if memory_gb is not None:
        budget = min(budget, int(memory_gb * GB))

    def peak(chunk: int | None) -> int:
        return peak_bytes(shape, baseline, longest, batch_size, chunk, precision)

    chunk = mini_batch_size or max(1, DEFAULT_CHUNK_TOKENS // width)
    chosen = loss
    if loss == "auto":
        chosen = "mnrl" if peak(None) <= min(budget, int(AUTO_PLAIN_MAX_GB * GB)) else "cached-mnrl"
    cached = chosen == "cached-mnrl" or (chosen == "gist" and len(longest) > 3)
    result = MemoryPlan(chosen, chunk if cached else None, peak(chunk if cached else None), budget, available,
                        baseline, longest, shape, batch_size, precision)
    if result.estimate > budget:
        raise TooLarge(_refusal(result, chosen, batch_size, width, chunk, cached), result)
    return result


def _refusal(p: MemoryPlan, loss: str, batch_size: int, width: int, chunk: int, cached: bool) -> str:
    what = (f"--mini-batch-size (now {chunk})" if cached else
            f"--batch-size (now {batch_size}), --num-negatives, --max-seq-length (longest text {width} tokens), "
            "or use --loss cached-mnrl")
    return (f"training would need about {p.estimate / GB:.1f} GB but {p.budget / GB:.1f} GB is available "
            f"({loss}, {p.available / GB:.1f} GB free to this process): lower {what}")

