"""The student and its loss: the model trained, and the sentence-transformers loss object of
:class:`~hardneg.train.config.Loss` (GradCache chunks from the memory plan)."""
from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from hardneg.encode import EncoderConfig, load_model
from hardneg.errors import HardnegError
from hardneg.memory import MemoryPlan
from hardneg.train.config import Hardness, InBatchPositives, Loss, TrainConfig
from hardneg.train.inbatch import KnownPositives, in_batch_loss

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__: list[str] = []  # internal: import from hardneg.train


def load_student(model: "str | Path | SentenceTransformer | None",
                 max_seq_length: int | None = None) -> "SentenceTransformer":
    """A local model folder (None: the bundled MiniLM) or a model you hold; optionally re-set its max length."""
    if model is None or isinstance(model, (str, Path)):
        model = load_model(EncoderConfig(model=str(model) if model else None))
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


#: where BERT-family models (MiniLM, BGE, E5, MPNet's BERT-like blocks) keep the attention-probability dropout
ATTENTION_DROPOUT = ".attention.self.dropout"


@contextmanager
def attention_dropout(model: "SentenceTransformer", p: float | None) -> Iterator[None]:
    """Inside the block the attention-probability dropout modules of ``model`` drop with ``p`` (None:
    unchanged); their own values come back after it, so the saved model is untouched.

    Hand-written because neither transformers nor sentence-transformers sets it after loading. Why
    it matters on a CPU: with dropout on the attention probabilities, scaled-dot-product attention
    leaves its fused kernel and draws a mask over every (head, query, key), which made a bf16 step of
    MiniLM at 256 tokens 3.4x slower (32 s vs 9.5 s, batch 32, k 3, Xeon with AMX)."""
    if p is None:
        yield
        return
    import torch

    found = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout)
             and f".{name}".endswith(ATTENTION_DROPOUT)]
    if not found:
        raise HardnegError(f"attention_dropout: the model has no '{ATTENTION_DROPOUT.lstrip('.')}' dropout module "
                           "(not a BERT-family encoder); leave attention_dropout unset")
    before = [m.p for m in found]
    for m in found:
        m.p = float(p)
    try:
        yield
    finally:
        for m, q in zip(found, before):
            m.p = q


def build_loss(model: "SentenceTransformer", config: TrainConfig, n_negatives: int, world_size: int = 1,
               memory: MemoryPlan | None = None, known: KnownPositives | None = None):
    """The sentence-transformers loss object for ``config.loss`` on rows with ``n_negatives`` columns.

    ``memory`` (from :func:`hardneg.memory.plan`) gives the loss ``auto`` resolved to and the
    GradCache chunk; without it, ``auto`` is plain MNRL and chunks hold ``mini_batch_size`` or 32.
    GISTEmbedLoss takes at most one negative column; with more, its GradCache twin
    CachedGISTEmbedLoss (same objective, n-tuples, chunks of ``mini_batch_size``) is used.
    With ``world_size`` > 1 (DDP) the in-batch losses gather negatives across devices
    unless ``config.gather_across_devices`` is off. ``config.inbatch_positives`` mask (mnrl,
    cached-mnrl) needs ``known`` and rows carrying their numbers (:mod:`hardneg.train.inbatch`);
    ``config.hardness`` passes sentence-transformers' ``hardness_mode`` / ``hardness_strength``.
    """
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.util import pairwise_cos_sim

    gather = {"gather_across_devices": config.gather_across_devices and world_size > 1}
    loss = Loss(memory.loss) if memory else Loss.MNRL if config.loss is Loss.AUTO else config.loss
    chunk = (memory.mini_batch_size if memory else None) or config.mini_batch_size or 32
    mask = known if config.inbatch_positives is InBatchPositives.MASK else None
    hard = {} if config.hardness is Hardness.OFF else {"hardness_mode": config.hardness.st_mode,
                                                       "hardness_strength": config.hardness_strength}
    if loss is Loss.MNRL:
        return in_batch_loss(losses.MultipleNegativesRankingLoss, model, mask, **gather, **hard)
    if loss is Loss.CACHED_MNRL:
        return in_batch_loss(losses.CachedMultipleNegativesRankingLoss, model, mask, mini_batch_size=chunk, **gather,
                             **hard)
    if loss is Loss.GIST:
        guide = _guide(model, config)
        if n_negatives <= 1:
            return losses.GISTEmbedLoss(model, guide, **gather)
        return losses.CachedGISTEmbedLoss(model, guide, mini_batch_size=chunk, **gather)
    # cosine, not the default dot product: the margins were rescaled to a cosine range
    return losses.MarginMSELoss(model, similarity_fct=pairwise_cos_sim)


def _guide(model: "SentenceTransformer", config: TrainConfig) -> "SentenceTransformer":
    """GIST's frozen guide: ``config.guide_model``, else a copy of the starting model."""
    guide = copy.deepcopy(model) if config.guide_model is None else load_student(config.guide_model)
    guide.max_seq_length = config.max_seq_length
    return guide.requires_grad_(False)

