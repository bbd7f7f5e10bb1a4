"""Fine-tune a sentence-transformers retriever on mined hard negatives.

Use :func:`train` after mining: it reads ``negatives.jsonl`` (one line per query:
``query_id, query, pos_ids, pos, neg_ids, neg, neg_ranks, neg_scores, pos_scores``; ``neg``
may be empty for "in-batch only"), turns it into the columns the chosen loss expects
(:func:`build_train_dataset`), trains with sentence-transformers' trainer and a
no-duplicates batch sampler, evaluates NDCG@10 on a cheap dev subset while training, keeps
the best checkpoint and saves a normal sentence-transformers folder with a model card.

Losses (:class:`Loss`):

* ``auto`` (default): ``mnrl`` while its estimated peak memory stays small, else
  ``cached-mnrl``; see :mod:`hardneg.memory`, which also refuses, before the first step, a run
  that would not fit in the memory available.
* ``mnrl``: InfoNCE over in-batch + mined negatives. Keeps every text's activations for the
  backward pass: at batch 32, k 7 and 256 tokens that is about 20 GB.
* ``cached-mnrl``: the same objective with GradCache: memory bounded by one chunk of
  ``mini_batch_size`` texts (default: as many as fit in 8,192 tokens), 2-3% slower per step
  on MiniLM (``benchmarks/train_memory.py``).
* ``gist``: a frozen guide model (default: the starting model) masks in-batch negatives
  it scores above the positive, i.e. likely false negatives.
* ``marginmse``: distils a teacher's score margins. The teacher must be stronger than the
  student (a cross-encoder): the scorer named in ``negatives.meta.json`` is checked, and the
  student's own cosines are refused. Margins are rescaled to the student's cosine range
  (:func:`rescale_margins`).

The parts: :mod:`~hardneg.train.config` (what a run is told), :mod:`~hardneg.train.dataset`
(the rows and the dev subset), :mod:`~hardneg.train.losses` (the student and its loss),
:mod:`~hardneg.train.trainer` (the run), :mod:`~hardneg.train.result` (what it produced, the
model card); :mod:`hardneg.train.reranker` trains a cross-encoder the same way. Import from
``hardneg.train``.
"""
from __future__ import annotations

from hardneg.train.config import Loss, ShortRows, TrainConfig, config_from_dict
from hardneg.train.dataset import (BuildReport, EvalSet, build_eval_set, build_train_dataset, check_teacher,
                                   in_batch_only, pair_rows, read_negatives, rescale_margins, score_range,
                                   sidecar_path)
from hardneg.train.result import TrainResult
from hardneg.train.trainer import train

__all__ = [
    "BuildReport",
    "EvalSet",
    "Loss",
    "ShortRows",
    "TrainConfig",
    "TrainResult",
    "build_eval_set",
    "build_train_dataset",
    "check_teacher",
    "config_from_dict",
    "in_batch_only",
    "pair_rows",
    "read_negatives",
    "rescale_margins",
    "score_range",
    "sidecar_path",
    "train",
]
