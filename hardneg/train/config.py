"""What one fine-tuning run is told: the loss (:class:`Loss`), short rows (:class:`ShortRows`) and
every hyper-parameter (:class:`TrainConfig`); the file names a run writes."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any, Mapping, Sequence

from hardneg.errors import HardnegError
from hardneg.options import check, option, parse, seed_option
from hardneg.precision import TRAIN_PRECISIONS

__all__: list[str] = []  # internal: import from hardneg.train

#: ``score_by`` names (or prefixes before ``:``) of scorers accepted as MarginMSE teachers.
TEACHER_SCORERS = ("ce", "cross-encoder", "cross_encoder", "crossencoder", "reranker", "teacher")
EVAL_NAME = "dev"
BEST_METRIC = f"eval_{EVAL_NAME}_cosine_ndcg@10"
RESULT_FILE = "hardneg_train.json"
TRAIN_LOG = "train.log"  # the trainer's own logs (a log, not a result: see hardneg.output.library_logs_to)
CARD_METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100")
CARD_SKIP = ("show_progress", "checkpoint_dir", "keep_checkpoints", "logging_steps")


class Loss(str, Enum):
    """Training objective; see the module docstring for when to use each."""

    AUTO = "auto"
    MNRL = "mnrl"
    CACHED_MNRL = "cached-mnrl"
    GIST = "gist"
    MARGINMSE = "marginmse"


class ShortRows(str, Enum):
    """What to do with a query that has fewer mined negatives than the k columns need.

    ``drop`` (default, as sentence-transformers' n-tuple export does) leaves the query out;
    ``repeat`` cycles its negatives to fill k columns (a repeated negative just weighs more
    in the softmax). Queries with no negative at all are dropped either way.
    """

    DROP = "drop"
    REPEAT = "repeat"


class Positives(str, Enum):
    """Training rows a query gives per pass over the data. ``each``: one per (query, positive), as
    sentence-transformers' n-tuples do (a query with 43 positives weighs 43 times one with a single
    positive, and an epoch of NFCorpus is 3,456 steps of 32). ``one``: one row per query per epoch,
    its positive a seeded draw each epoch (``hardneg compare``'s budget): an epoch costs
    queries / batch steps whatever the number of positives."""

    EACH = "each"
    ONE = "one"


class InBatchPositives(str, Enum):
    """What the in-batch losses do with a candidate that is one of the anchor's own labeled positives
    (another row's positive, a mined negative): ``keep`` it as a negative (sentence-transformers'
    way) or ``mask`` it out of the softmax (:mod:`hardneg.train.inbatch`). Use ``mask`` when
    queries have many positives that other queries share (NFCorpus: ~43 a query)."""

    KEEP = "keep"
    MASK = "mask"


class Hardness(str, Enum):
    """sentence-transformers' hard-negative weighting of the InfoNCE losses (``hardness_mode``): each
    chosen negative's logit gains ``hardness_strength`` x its (stop-gradient) cosine, so harder ones
    weigh more in the softmax. ``off``; ``in-batch`` (other rows' documents; Lan et al. 2025 use
    strength 9); ``hard`` (the row's own mined negatives; Schechter Vera et al. 2025 use 5); ``all``."""

    OFF = "off"
    IN_BATCH = "in-batch"
    HARD = "hard"
    ALL = "all"

    @property
    def st_mode(self) -> str | None:
        """The value of sentence-transformers' ``hardness_mode``."""
        return {"off": None, "in-batch": "in_batch_negatives", "hard": "hard_negatives",
                "all": "all_negatives"}[self.value]


#: The losses whose softmax ``inbatch_positives = "mask"`` edits (the GradCache twin included).
MASKABLE = (Loss.AUTO, Loss.MNRL, Loss.CACHED_MNRL)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fine-tuning run; the defaults are sentence-transformers' usual ones,
    except ``lr``: 5e-5, not 2e-5. One epoch of SciFact (29 steps of 32) at 2e-5 barely moves the
    model; 5e-5 gave +0.02 NDCG@10 to hardneg's policy and to ST's alike (docs/benchmarks.md, progression).
    Lower it for long runs (many thousand steps).

    ``num_negatives`` None means "as many as the richest query has" (short queries then
    follow ``short_rows``); an int caps every query at that many, in mined order.
    ``max_steps`` fixes a training budget (it overrides ``epochs``). ``eval_steps`` is an int
    or a fraction of the run (None: every quarter, plus the end). ``eval_queries`` and
    ``eval_corpus`` bound the dev subset; ``holdout_fraction`` of the train queries is held
    out for evaluation when there is no dev split. ``student_range`` is the cosine range
    that teacher margins are mapped onto (marginmse). ``mixed_precision``: auto (bf16 autocast
    on CPUs with AMX and on CUDA GPUs that have bf16, fp16 on older GPUs, else off; see
    :mod:`hardneg.precision`), no, bf16, fp16 (CUDA only). ``mini_batch_size``: texts per
    GradCache chunk (None: as many of the longest text as fit in 8,192 tokens).
    ``memory_gb`` caps the planned peak memory (None: 90% of what the machine has free). ``checkpoint_dir`` None: ``OUT/checkpoints``,
    removed after training unless ``keep_checkpoints`` (a named ``checkpoint_dir`` is kept).
    ``gather_across_devices``: under ``torchrun`` / ``accelerate launch`` (world size > 1), the
    in-batch losses (mnrl, cached-mnrl, gist) gather every process's embeddings, so each query
    sees the whole global batch as negatives, not only its own device's share.
    ``inbatch_positives`` (:class:`InBatchPositives`): mask works with mnrl and cached-mnrl; gist
    already drops candidates its guide scores above the positive, and marginmse has no in-batch
    softmax. Either way the run reports how often anchors met their own positives in a batch.
    """

    loss: Loss = option(Loss.AUTO, "auto (mnrl while it fits in 6 GB, else cached-mnrl) | mnrl (InfoNCE, in-batch "
                                   "+ mined negatives) | cached-mnrl (GradCache: memory bounded by one chunk) | "
                                   "gist (a guide model masks in-batch false negatives) | marginmse (distils "
                                   "cross-encoder teacher margins).")
    epochs: float = option(1, "Passes over the training rows (max_steps overrides).", gt=0)
    batch_size: int = option(32, "Queries per training batch.", gt=0)
    lr: float = option(5e-5, "Peak learning rate (measured on SciFact: +0.02 NDCG@10 over 2e-5; lower it for "
                             "long runs).", gt=0)
    warmup_ratio: float = option(0.1, "Fraction of the steps spent warming up.", ge=0, lt=1)
    max_seq_length: int = option(256, "Max tokens per text while training (the model is saved with its own).", gt=0)
    num_negatives: int | None = option(None, "Negatives per training row; none: as many as the richest query has.",
                                       ge=0)
    short_rows: ShortRows = option(ShortRows.DROP, "Queries with fewer negatives than that: drop | repeat.")
    positives: Positives = option(Positives.EACH, "Rows a query gives per epoch: each (one per positive) | one (one "
                                                  "row, its positive a seeded draw each epoch).")
    seed: int = seed_option(42, "Training seed (data order, initialisation of new layers).")
    mini_batch_size: int | None = option(None, "Texts per GradCache chunk (cached-mnrl; gist with several "
                                               "negatives); none: as many of the longest text as fit in 8,192 "
                                               "tokens.", gt=0)
    guide_model: str | None = option(None, "gist's guide model folder; none: a frozen copy of the starting model.",
                                     path="model")
    student_range: tuple[float, float] = option((0.0, 1.0), "marginmse: LOW:HIGH cosine range the teacher margins "
                                                            "are mapped onto.")
    max_steps: int | None = option(None, "A fixed budget of optimizer steps (overrides epochs).", ge=1)
    eval_steps: int | float | None = option(None, "Evaluate on dev every N steps (integer) or fraction of the run; "
                                                  "none: every quarter.", gt=0)
    patience: int | None = option(None, "Stop once this many dev evaluations in a row bring no gain in NDCG@10 "
                                        "(the best checkpoint is kept either way); none: train the whole budget.",
                                  ge=1)
    eval_queries: int = option(200, "Dev queries evaluated while training (seeded sample).", ge=1)
    eval_corpus: int = option(2000, "Documents of that evaluation: the queries' positives plus a seeded sample.",
                              ge=1)
    holdout_fraction: float = option(0.1, "`hardneg train` without a dev split: fraction of the train queries held "
                                          "out for evaluation (`hardneg run` uses [data] dev_holdout).", ge=0, lt=1)
    no_duplicates: bool = option(True, "No-duplicates batch sampler (no false in-batch negatives from repeated "
                                       "texts).", cli="--no-duplicates/--allow-duplicates")
    mixed_precision: str = option("auto", "auto (bf16 autocast on CPUs with AMX and on CUDA, else no) | no | bf16 | "
                                          "fp16 (CUDA only).", choices=TRAIN_PRECISIONS)
    query_prompt: str = option("", "Prompt prepended to queries while training (e.g. 'query: '); in a recipe, "
                                   "left out: [model]'s prompt.")
    passage_prompt: str = option("", "Prompt prepended to passages while training (e.g. 'passage: ').")
    logging_steps: int = option(10, "Log the training loss every N steps.", gt=0)
    show_progress: bool = option(True, "Progress bars.", cli="--progress/--no-progress")
    checkpoint_dir: str | None = option(None, "Checkpoint folder; none: inside the model folder, removed after "
                                              "training.", path="folder")
    keep_checkpoints: bool = option(False, "Keep the checkpoints after training.")
    gather_across_devices: bool = option(True, "Under torchrun / accelerate launch (several processes), in-batch "
                                               "losses use the other devices' texts as negatives too (the global "
                                               "batch).")
    inbatch_positives: InBatchPositives = option(
        InBatchPositives.KEEP, "A query's own labeled positives among its in-batch candidates (other rows' "
                               "positives, mined negatives): keep (as negatives) | mask (out of the softmax; "
                               "mnrl, cached-mnrl). Many positives a query (NFCorpus): mask.")
    attention_dropout: float | None = option(None, "Dropout on the attention probabilities while training; none: "
                                                   "the model's own (0.1 for MiniLM). 0 makes a bf16 CPU step "
                                                   "about 3x faster (docs/training.md).", ge=0, lt=1)
    hardness: Hardness = option(Hardness.OFF, "Hard-negative weighting of mnrl / cached-mnrl (sentence-transformers' "
                                              "hardness_mode): off | in-batch | hard | all.")
    hardness_strength: float = option(5.0, "Its alpha: a negative's logit gains alpha x its cosine (used when "
                                           "hardness is not off).", ge=0)
    memory_gb: float | None = option(None, "Cap on the planned peak memory in GB; none: 90% of what is free. A run "
                                           "estimated above it is refused before the first step, naming what to "
                                           "lower.", gt=0)

    def __post_init__(self) -> None:
        if isinstance(self.student_range, str):
            object.__setattr__(self, "student_range", parse(self.student_range, tuple[float, float], "student_range"))
        object.__setattr__(self, "student_range", tuple(float(x) for x in self.student_range))
        check(self)
        lo, hi = self.student_range
        if not hi > lo:
            raise HardnegError(f"student_range must be (low, high) with high > low, not {self.student_range}")
        if self.positives is Positives.ONE and self.loss is Loss.MARGINMSE:
            raise HardnegError("positives 'one' works with the n-tuple losses, not marginmse (one row per negative)")
        if self.hardness is not Hardness.OFF and self.loss not in MASKABLE:
            raise HardnegError(f"hardness weighting works with mnrl and cached-mnrl, not {self.loss.value}")
        if self.inbatch_positives is InBatchPositives.MASK and self.loss not in MASKABLE:
            raise HardnegError(f"inbatch_positives mask works with mnrl and cached-mnrl, not {self.loss.value} "
                               "(gist masks by its guide model; marginmse has no in-batch negatives)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (enums as strings)."""
        out = {k: v.value if isinstance(v, Enum) else v for k, v in asdict(self).items()}
        out["student_range"] = list(self.student_range)
        return out




def check_schedule(config: Any, positive: Sequence[str]) -> None:
    """The range checks every training config shares (bi-encoder and reranker): the ``positive``
    fields > 0, ``warmup_ratio`` and ``holdout_fraction`` in [0, 1), ``max_steps`` >= 1 and
    ``num_negatives`` >= 0 (each or None)."""
    for name in positive:
        if not getattr(config, name) > 0:
            raise HardnegError(f"{name} must be positive, not {getattr(config, name)}")
    for name in ("warmup_ratio", "holdout_fraction"):
        if not 0 <= getattr(config, name) < 1:
            raise HardnegError(f"{name} must be in [0, 1), not {getattr(config, name)}")
    if config.max_steps is not None and config.max_steps < 1:
        raise HardnegError(f"max_steps must be >= 1 or None, not {config.max_steps}")
    if config.num_negatives is not None and config.num_negatives < 0:
        raise HardnegError(f"num_negatives must be >= 0 or None, not {config.num_negatives}")



def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from plain values (a recipe table, CLI options); unknown keys are an error."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise HardnegError(f"unknown train option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return TrainConfig(**values)


