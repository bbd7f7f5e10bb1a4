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
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np

from hardneg import output
from hardneg.data import Dataset, _read_jsonl, load_dataset
from hardneg.errors import DataError, HardnegError
from hardneg.files import atomic_write_json, atomic_write_text
from hardneg.memory import MemoryPlan, plan
from hardneg.options import as_enum, check, option, parse
from hardneg.precision import TRAIN_PRECISIONS, machine_info, resolve_train
from hardneg.sampling import holdout, sample

if TYPE_CHECKING:
    import datasets
    from sentence_transformers import SentenceTransformer

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

log = logging.getLogger(__name__)

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
    seed: int = option(42, "Training seed (data order, initialisation of new layers).")
    mini_batch_size: int | None = option(None, "Texts per GradCache chunk (cached-mnrl; gist with several "
                                               "negatives); none: as many of the longest text as fit in 8,192 "
                                               "tokens.", gt=0)
    guide_model: str | None = option(None, "gist's guide model folder; none: a frozen copy of the starting model.")
    student_range: tuple[float, float] = option((0.0, 1.0), "marginmse: LOW:HIGH cosine range the teacher margins "
                                                            "are mapped onto.")
    max_steps: int | None = option(None, "A fixed budget of optimizer steps (overrides epochs).", ge=1)
    eval_steps: int | float | None = option(None, "Evaluate on dev every N steps (integer) or fraction of the run; "
                                                  "none: every quarter.", gt=0)
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
                                              "training.")
    keep_checkpoints: bool = option(False, "Keep the checkpoints after training.")
    gather_across_devices: bool = option(True, "Under torchrun / accelerate launch (several processes), in-batch "
                                               "losses use the other devices' texts as negatives too (the global "
                                               "batch).")
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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (enums as strings)."""
        out = asdict(self)
        out.update(loss=self.loss.value, short_rows=self.short_rows.value, student_range=list(self.student_range))
        return out


# ---- reading the mined negatives --------------------------------------------------------------
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


def sidecar_path(negatives_path: str | Path) -> Path:
    """``negatives.jsonl[.gz]`` -> ``negatives.meta.json`` beside it."""
    path = Path(negatives_path)
    stem = path.name.removesuffix(".gz").removesuffix(".jsonl")
    return path.with_name(f"{stem}.meta.json")


def read_negatives(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of ``negatives.jsonl`` (validated, ``FILE:LINE`` errors) and its sidecar metadata ({} if none)."""
    path = Path(path)
    rows = [_check_row(obj, path, n) for n, obj in _read_jsonl(path)]
    if not rows:
        raise DataError(path, None, "no rows")
    meta_file = sidecar_path(path)
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    meta.setdefault("negatives_file", str(path))
    return rows, meta


def pair_rows(data: Dataset, split: str = "train") -> list[dict[str, Any]]:
    """One row per query of ``split`` with its positives and no negatives (in-batch only).

    Use it to train without mined negatives: MNRL then contrasts each query with the other
    positives of its batch. FlagEmbedding's ``negatives.jsonl`` cannot hold such rows.
    """
    return [{"query_id": q, "query": data.queries[q], "pos_ids": list(docs),
             "pos": [data.doc_text(d) for d in docs], "neg": []}
            for q, docs in data.positives(split).items()]


def in_batch_only(negatives_path: str | Path) -> bool:
    """Whether ``negatives.jsonl`` is empty because none of its mined rows had negatives.

    That is what ``--sampler none`` (the in-batch-only baseline) exports: FlagEmbedding
    cannot read rows with an empty ``neg``, so the exporter leaves them out and says so in
    the sidecar (``rows_written`` 0, ``rows_dropped_no_negatives`` > 0).
    """
    meta_file = sidecar_path(negatives_path)
    if not meta_file.is_file():
        return False
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    return meta.get("rows_written") == 0 and (meta.get("rows_dropped_no_negatives") or 0) > 0


def _check_row(obj: dict[str, Any], path: Path | str, n: int | None) -> dict[str, Any]:
    """Validate one line; fills ``query_id`` (line number) and empty ``neg`` when absent."""
    if not isinstance(obj.get("query"), str) or not obj["query"].strip():
        raise DataError(path, n, "field 'query' must be a non-empty string")
    for key in ("pos", "neg"):
        value = obj.get(key, [] if key == "neg" else None)
        if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
            raise DataError(path, n, f"field '{key}' must be a list of non-empty strings")
    if not obj["pos"]:
        raise DataError(path, n, "field 'pos' is empty")
    row = {"neg": [], **obj}
    row["query_id"] = str(obj.get("query_id", f"line{n}"))
    for key, ref in (("pos_scores", "pos"), ("neg_scores", "neg")):
        if row.get(key) is not None and len(row[key]) != len(row[ref]):
            raise DataError(path, n, f"'{key}' has {len(row[key])} values for {len(row[ref])} '{ref}' texts")
    return row


def check_teacher(meta: Mapping[str, Any]) -> str:
    """The scorer of ``pos_scores``/``neg_scores`` if it may teach MarginMSE; else a HardnegError.

    Reads either sidecar layout: ``{"score_by": "ce"}`` or the exporter's
    ``{"score_fields": {"pos_scores": {"scorer": "ce", "teacher": true}}}``. A teacher must
    be stronger than the student: a cross-encoder (``ce``), a scorer the sidecar marks as a
    teacher, or one named ``teacher``. Dense cosines are usually the student's own mining
    scores, and BM25 / hybrid scores are weaker than a bi-encoder: distilling them teaches
    the student nothing it does not already know.
    """
    scorer, declared = _declared_scorer(meta)
    if not scorer:
        why = (meta.get("teacher_scores") or {}).get("why")
        raise HardnegError(
            "marginmse needs teacher scores (pos_scores/neg_scores from a cross-encoder), but "
            f"negatives.meta.json names no scorer for them{f' ({why})' if why else ''}; "
            "rescore the candidates with a cross-encoder and export again, or use loss mnrl"
        )
    if declared is False or (declared is None and scorer.lower().split(":")[0] not in TEACHER_SCORERS):
        raise HardnegError(
            f"marginmse refuses scores by '{scorer}': they are not from a teacher stronger than the student "
            f"(accepted scorers: {', '.join(TEACHER_SCORERS)}); rescore with a cross-encoder or use loss mnrl"
        )
    return scorer


def _declared_scorer(meta: Mapping[str, Any]) -> tuple[str, bool | None]:
    """(scorer of ``pos_scores``, its declared teacher flag or None) from either sidecar layout."""
    info = (meta.get("score_fields") or {}).get("pos_scores")
    if isinstance(info, Mapping):
        return str(info.get("scorer") or ""), info.get("teacher")
    return str(meta.get("score_by") or "").strip(), None


# ---- margins ----------------------------------------------------------------------------------
def score_range(scores: Iterable[float], quantile: float = 0.01) -> tuple[float, float]:
    """Robust (low, high) of teacher scores: the ``quantile`` and ``1 - quantile`` quantiles."""
    x = np.asarray(list(scores), dtype=np.float64)
    if x.size == 0 or not np.isfinite(x).all():
        raise HardnegError("teacher scores are missing or not finite")
    lo, hi = np.quantile(x, [quantile, 1 - quantile])
    if not hi > lo:
        raise HardnegError(f"teacher scores are constant ({lo:g}); they carry no margin to distil")
    return float(lo), float(hi)


def rescale_margins(
    pos_scores: Sequence[float] | np.ndarray,
    neg_scores: Sequence[float] | np.ndarray,
    teacher_range: tuple[float, float],
    student_range: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Teacher margins ``pos - neg`` mapped onto the student's score scale; float32 array.

    The teacher's scores are mapped affinely from ``teacher_range`` (e.g. cross-encoder
    logits in [-10, 10], see :func:`score_range`) onto ``student_range`` (cosines in
    [0, 1] by default). The offset cancels in a difference, so a margin is scaled by
    ``(s_hi - s_lo) / (t_hi - t_lo)`` and clipped to ``+-(s_hi - s_lo)``, the widest
    margin the student can express in that range. Inputs broadcast against each other.
    """
    (t_lo, t_hi), (s_lo, s_hi) = teacher_range, student_range
    if not (t_hi > t_lo and s_hi > s_lo):
        raise HardnegError(f"ranges must be (low, high) with high > low: {teacher_range}, {student_range}")
    span = s_hi - s_lo
    margins = (np.asarray(pos_scores, np.float64) - np.asarray(neg_scores, np.float64)) * (span / (t_hi - t_lo))
    return np.clip(margins, -span, span).astype(np.float32)


# ---- training rows ----------------------------------------------------------------------------
@dataclass
class BuildReport:
    """What :func:`build_train_dataset` kept and dropped.

    "Queries" count input lines (one per query, or per (query, positive) in a per-pair
    export); ``n_rows`` counts training rows.
    """

    loss: str
    num_negatives: int
    short_rows: str
    n_queries: int = 0
    n_rows: int = 0
    excluded_queries: int = 0  # held out for evaluation
    short_queries: int = 0  # fewer than num_negatives mined negatives (incl. none)
    dropped_queries: int = 0
    padded_queries: int = 0  # filled by repeating their negatives
    teacher: str | None = None
    teacher_range: tuple[float, float] | None = None

    def summary(self) -> str:
        text = (f"{self.n_rows} training rows from {self.n_queries} queries, {self.num_negatives} negatives each "
                f"({self.loss}); {self.short_queries} queries had fewer: {self.dropped_queries} dropped, "
                f"{self.padded_queries} padded by repeating (policy '{self.short_rows}')")
        if self.excluded_queries:
            text += f"; {self.excluded_queries} queries held out for evaluation"
        return text


def resolve_num_negatives(rows: Sequence[Mapping[str, Any]], num_negatives: int | None) -> int:
    """k: ``num_negatives`` if given, else the largest number of negatives any query has."""
    if num_negatives is not None:
        return int(num_negatives)
    return max((len(r["neg"]) for r in rows), default=0)


def build_train_dataset(
    negatives: str | Path | Sequence[Mapping[str, Any]],
    num_negatives: int | None = None,
    loss: Loss | str = Loss.MNRL,
    *,
    short_rows: ShortRows | str = ShortRows.DROP,
    meta: Mapping[str, Any] | None = None,
    student_range: tuple[float, float] = (0.0, 1.0),
    exclude_queries: Collection[str] = (),
) -> tuple["datasets.Dataset", BuildReport]:
    """Training rows in the column layout ``loss`` accepts, and a report of what was kept.

    * mnrl / cached-mnrl / gist: one row per (query, positive): ``anchor, positive,
      negative_1 .. negative_k`` (just ``anchor, positive`` when k is 0: in-batch only).
      Queries with fewer than k negatives follow ``short_rows`` (:class:`ShortRows`).
    * marginmse: one row per (query, positive, negative) among the first k negatives:
      ``query, positive, negative, label`` with the label from :func:`rescale_margins`
      (teacher range from :func:`score_range` over every kept teacher score). The scorer
      in ``meta`` must pass :func:`check_teacher`. No padding is needed.

    ``negatives`` is a ``negatives.jsonl`` path (its sidecar gives ``meta``) or rows.
    Queries in ``exclude_queries`` (held out for evaluation) are left out.
    """
    import datasets

    rows, meta = _rows_and_meta(negatives, meta)
    loss, policy = as_enum(Loss, loss, "loss"), as_enum(ShortRows, short_rows, "short_rows")
    excluded = set(exclude_queries)
    kept = [r for r in rows if r["query_id"] not in excluded]
    k = resolve_num_negatives(kept, num_negatives)
    report = BuildReport(loss.value, k, policy.value, excluded_queries=len(rows) - len(kept))
    if loss is Loss.MARGINMSE:
        columns = _margin_columns(kept, k, meta, student_range, report)
    else:
        columns = _ntuple_columns(kept, k, policy, report)
    report.n_rows = len(next(iter(columns.values())))
    if report.n_rows == 0:
        raise HardnegError(f"no training rows left: {report.summary()}")
    log.info(report.summary())
    return datasets.Dataset.from_dict(columns), report


def _rows_and_meta(negatives, meta) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if isinstance(negatives, (str, Path)):
        rows, file_meta = read_negatives(negatives)
        return rows, {**file_meta, **(meta or {})}
    rows = [_check_row(dict(r), "negatives", i + 1) for i, r in enumerate(negatives)]
    return rows, dict(meta or {})


def _fill_negatives(neg: list[str], k: int, policy: ShortRows) -> list[str] | None:
    """The first k negatives, cycled to k under ``repeat``; None when the query is dropped."""
    if len(neg) >= k:
        return neg[:k]
    if policy is ShortRows.DROP or not neg:
        return None
    return [neg[i % len(neg)] for i in range(k)]


def _ntuple_columns(rows, k: int, policy: ShortRows, report: BuildReport) -> dict[str, list[str]]:
    names = ["anchor", "positive", *[f"negative_{i}" for i in range(1, k + 1)]]
    columns: dict[str, list[str]] = {name: [] for name in names}
    for row in rows:
        negs = _fill_negatives(row["neg"], k, policy)
        short = len(row["neg"]) < k
        report.short_queries += short
        report.dropped_queries += negs is None
        report.padded_queries += short and negs is not None
        if negs is None:
            continue
        report.n_queries += 1
        for pos in row["pos"]:
            for name, text in zip(names, [row["query"], pos, *negs]):
                columns[name].append(text)
    return columns


def _margin_columns(rows, k: int, meta, student_range, report: BuildReport) -> dict[str, list]:
    """(query, positive, negative, label) per positive x each of the first k negatives."""
    report.teacher = check_teacher(meta)
    used = [r for r in rows if r["neg"] and k > 0]
    missing = next((r["query_id"] for r in used if r.get("pos_scores") is None or r.get("neg_scores") is None), None)
    if missing is not None:
        raise DataError("negatives", None, f"query '{missing}' has no pos_scores/neg_scores, which marginmse needs")
    triples = [(r, i, j) for r in used for i in range(len(r["pos"])) for j in range(min(k, len(r["neg"])))]
    pos = [r["pos_scores"][i] for r, i, _ in triples]
    neg = [r["neg_scores"][j] for r, _, j in triples]
    report.short_queries = sum(len(r["neg"]) < k for r in rows)
    report.dropped_queries, report.n_queries = len(rows) - len(used), len(used)
    report.teacher_range = score_range(pos + neg) if triples else None
    labels = rescale_margins(pos, neg, report.teacher_range, student_range) if triples else []
    return {
        "query": [r["query"] for r, _, _ in triples],
        "positive": [r["pos"][i] for r, i, _ in triples],
        "negative": [r["neg"][j] for r, _, j in triples],
        "label": [float(x) for x in labels],
    }


# ---- evaluation subset ------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSet:
    """Queries, corpus subset and qrels for the in-training evaluator, and where they came from."""

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant: dict[str, set[str]]
    description: str
    holdout_ids: list[str] = field(default_factory=list)  # train queries withheld from training


def build_eval_set(data: Dataset, query_ids: Sequence[str], config: TrainConfig,
                   dev_split: str | None = None) -> EvalSet | None:
    """The dev split (``dev_split``, else ``dev`` if present) or held-out train queries; None if neither.

    At most ``config.eval_queries`` queries (seeded sample). The corpus is every positive of
    those queries plus a seeded uniform sample of other documents, ``config.eval_corpus``
    documents in all (the whole corpus when smaller): cheap, and the same at every step.
    Held-out queries are drawn from ``query_ids`` (the queries of the negatives file that
    have train positives): ``holdout_fraction`` of them, at most ``eval_queries``.
    """
    rng = np.random.default_rng(config.seed)
    split = dev_split or ("dev" if "dev" in data.splits else None)
    if split is not None:
        positives = data.positives(split)
        chosen = sample(sorted(positives), config.eval_queries, rng)
        source, held = f"'{split}' split: {len(chosen)} of {len(positives)} queries", []
    else:
        train_pos = data.positives("train") if "train" in data.splits else {}
        pool = set(query_ids) & set(train_pos)
        chosen = held = holdout(pool, config.holdout_fraction, rng, config.eval_queries)
        if not held:
            return None
        positives = train_pos
        source = f"{len(held)} of {len(pool)} train queries held out from training (no dev split)"
    relevant = {q: set(positives[q]) for q in chosen}
    corpus_ids = _eval_corpus(data, relevant, config.eval_corpus, rng)
    corpus = {d: data.doc_text(d) for d in corpus_ids}
    description = f"{source}; corpus {len(corpus)} of {len(data.doc_ids)} docs (their positives + a seeded sample)"
    return EvalSet({q: data.queries[q] for q in chosen}, corpus, relevant, description, held)


def _eval_corpus(data: Dataset, relevant: Mapping[str, set[str]], size: int, rng: np.random.Generator) -> list[str]:
    needed = sorted(set().union(*relevant.values()))
    skip = set(needed)
    others = [d for d in data.doc_ids if d not in skip]
    return needed + sample(others, max(0, size - len(needed)), rng)


def build_evaluator(evalset: EvalSet, config: TrainConfig):
    """sentence-transformers' InformationRetrievalEvaluator on ``evalset`` (cosine, NDCG@10 primary)."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    return InformationRetrievalEvaluator(
        evalset.queries, evalset.corpus, evalset.relevant, name=EVAL_NAME,
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[10, 100], map_at_k=[100],
        score_functions={"cosine": cos_sim}, main_score_function="cosine", batch_size=config.batch_size,
        query_prompt=config.query_prompt or None, corpus_prompt=config.passage_prompt or None, write_csv=False,
    )


# ---- model, loss, trainer ---------------------------------------------------------------------
def load_student(model: "str | Path | SentenceTransformer | None",
                 max_seq_length: int | None = None) -> "SentenceTransformer":
    """A local model folder (None: the bundled MiniLM) or a model you hold; optionally re-set its max length."""
    from hardneg.encode import EncoderConfig, load_model

    if model is None or isinstance(model, (str, Path)):
        model = load_model(EncoderConfig(model=str(model) if model else None))
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def build_loss(model: "SentenceTransformer", config: TrainConfig, n_negatives: int, world_size: int = 1,
               memory: MemoryPlan | None = None):
    """The sentence-transformers loss object for ``config.loss`` on rows with ``n_negatives`` columns.

    ``memory`` (from :func:`hardneg.memory.plan`) gives the loss ``auto`` resolved to and the
    GradCache chunk; without it, ``auto`` is plain MNRL and chunks hold ``mini_batch_size`` or 32.
    GISTEmbedLoss takes at most one negative column; with more, its GradCache twin
    CachedGISTEmbedLoss (same objective, n-tuples, chunks of ``mini_batch_size``) is used.
    With ``world_size`` > 1 (DDP) the in-batch losses gather negatives across devices
    unless ``config.gather_across_devices`` is off.
    """
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.util import pairwise_cos_sim

    gather = {"gather_across_devices": config.gather_across_devices and world_size > 1}
    loss = Loss(memory.loss) if memory else Loss.MNRL if config.loss is Loss.AUTO else config.loss
    chunk = (memory.mini_batch_size if memory else None) or config.mini_batch_size or 32
    if loss is Loss.MNRL:
        return losses.MultipleNegativesRankingLoss(model, **gather)
    if loss is Loss.CACHED_MNRL:
        return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=chunk, **gather)
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


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _cpu_processes() -> bool:
    """Several processes (torchrun sets WORLD_SIZE) and no GPU: DDP over gloo on CPUs, which
    transformers only sets up when told ``use_cpu``."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _cuda()


def _precision_flags(mode: str) -> dict[str, bool]:
    """The trainer's precision flags for the resolved ``mode``; bf16 on a CPU needs ``use_cpu``
    (else transformers stops with "Your setup doesn't support bf16/gpu")."""
    cuda = _cuda()
    mode = resolve_train(mode, cuda)
    return {"fp16": mode == "fp16", "bf16": mode == "bf16", "use_cpu": _cpu_processes() or (mode == "bf16" and not cuda)}


def _prompts(columns: Sequence[str], config: TrainConfig) -> dict[str, str] | None:
    if not (config.query_prompt or config.passage_prompt):
        return None
    return {c: config.query_prompt if c in ("anchor", "query") else config.passage_prompt
            for c in columns if c != "label"}


def training_args(config: TrainConfig, checkpoint_dir: Path, columns: Sequence[str], with_eval: bool):
    """SentenceTransformerTrainingArguments for ``config`` (eval + best checkpoint only ``with_eval``)."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    every = config.eval_steps if config.eval_steps is not None else 0.25
    strategy = "steps" if with_eval else "no"
    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir), num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        learning_rate=config.lr, warmup_steps=config.warmup_ratio, seed=config.seed, data_seed=config.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES if config.no_duplicates else BatchSamplers.BATCH_SAMPLER,
        eval_strategy=strategy, eval_steps=every if with_eval else None, eval_on_start=with_eval,
        save_strategy=strategy, save_steps=every, save_total_limit=1, save_only_model=True,
        load_best_model_at_end=with_eval, metric_for_best_model=BEST_METRIC if with_eval else None,
        greater_is_better=True, logging_steps=config.logging_steps, logging_first_step=True,
        report_to="none", disable_tqdm=not config.show_progress, dataloader_num_workers=0,
        dataloader_pin_memory=_cuda(),
        prompts=_prompts(columns, config), **_precision_flags(config.mixed_precision),
    )


# ---- results and model card -------------------------------------------------------------------
@dataclass
class TrainResult:
    """What a run produced: the model folder, the loss curve, the evaluations and the data report.

    ``losses`` is ``[(step, loss), ...]``; ``evals`` is one dict per evaluation (``step``
    plus metric names such as ``ndcg@10``), the step-0 one being the starting model;
    ``best`` is the evaluation whose checkpoint was kept (None without evaluation).
    """

    model_dir: str
    config: dict[str, Any]
    data: BuildReport
    eval_set: str | None
    losses: list[tuple[int, float]]
    evals: list[dict[str, float]]
    best: dict[str, float] | None
    train_seconds: float
    negatives_meta: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1  # training processes (DDP); the global batch is batch_size x world_size
    memory: dict[str, Any] = field(default_factory=dict)  # hardneg.memory.plan: loss run, chunk, estimate
    precision: str = "no"  # the trainer's resolved mixed precision: no | bf16 | fp16
    machine: dict[str, Any] = field(default_factory=dict)  # hardneg.precision.machine_info()
    step_seconds: list[float] = field(default_factory=list)  # wall time of each optimizer step

    @property
    def loss(self) -> str:
        """The loss that ran (``auto`` resolved)."""
        return self.memory.get("loss") or self.config["loss"]

    @property
    def before(self) -> dict[str, float] | None:
        """The evaluation of the starting model (step 0), if any."""
        return next((e for e in self.evals if e["step"] == 0), None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["losses"] = [list(x) for x in self.losses]
        return out


def _split_log(history: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[int, float]], list[dict[str, float]]]:
    """Trainer log history -> (step, training loss) pairs and evaluations with short metric names."""
    prefix = f"eval_{EVAL_NAME}_cosine_"
    losses = [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h]
    evals = [{"step": int(h["step"]), **{k[len(prefix):]: float(v) for k, v in h.items() if k.startswith(prefix)}}
             for h in history if BEST_METRIC in h]
    return losses, evals


def _best_eval(evals: list[dict[str, float]], best_checkpoint: str | None) -> dict[str, float] | None:
    """The evaluation at the kept checkpoint (``checkpoint-<step>``)."""
    if not best_checkpoint:
        return None
    step = int(Path(best_checkpoint).name.rsplit("-", 1)[-1])
    return next((e for e in evals if e["step"] == step), None)


def model_card(result: TrainResult, base_model: str, saved_max_length: int) -> str:
    """Markdown model card: data, negatives policy, loss, hyper-parameters, evaluation figures."""
    cfg, rep = result.config, result.data
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             "tags: [sentence-transformers, sentence-similarity, hardneg, hard-negatives]", "---", "",
             f"# Retriever fine-tuned with hardneg ({result.loss})", "",
             f"Base model: `{base_model}`. Loss: **{result.loss}** ({_loss_words(result.loss)}).", "",
             "## Data and negatives", "", f"- Training data: {rep.summary()}."]
    lines += [f"- Negatives {k}: `{json.dumps(v, sort_keys=True)}`" for k, v in sorted(result.negatives_meta.items())]
    if rep.teacher:
        lines.append(f"- MarginMSE teacher: `{rep.teacher}`, scores in {_fmt_range(rep.teacher_range)} mapped onto "
                     f"student cosines {_fmt_range(cfg['student_range'])}.")
    lines += ["", "## Hyper-parameters", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in cfg.items() if k not in CARD_SKIP]
    lines += ["", f"Trained at max sequence length {cfg['max_seq_length']}; saved with max length {saved_max_length}.",
              f"Precision: {result.precision} on {result.machine.get('cpu', 'an unknown CPU')}."]
    lines += ["", "## Evaluation during training", "",
              f"Cosine retrieval at max length {cfg['max_seq_length']} on "
              f"{result.eval_set or 'nothing (no dev split, too few queries to hold out)'}. A corpus subset "
              "gives higher figures than the full corpus: compare these rows with each other only."]
    lines += _eval_table(result)
    lines += ["", f"Training time: {result.train_seconds:.1f} s. Saved by `hardneg.train`; "
              f"full log in `{RESULT_FILE}`."]
    return "\n".join(lines) + "\n"


def _fmt_range(r) -> str:
    return "n/a" if r is None else f"[{r[0]:.4g}, {r[1]:.4g}]"


def _loss_words(loss: str) -> str:
    return {"mnrl": "InfoNCE over in-batch and mined negatives",
            "cached-mnrl": "InfoNCE with GradCache, large batches in small memory",
            "gist": "InfoNCE with a guide model masking in-batch false negatives",
            "marginmse": "distillation of teacher score margins"}[loss]


def _eval_table(result: TrainResult) -> list[str]:
    if not result.evals:
        return []
    metrics = [m for m in CARD_METRICS if m in result.evals[0]]
    best_step = result.best["step"] if result.best else None
    lines = ["", "| step | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for e in result.evals:
        mark = " (kept)" if e["step"] == best_step else " (start)" if e["step"] == 0 else ""
        lines.append(f"| {e['step']}{mark} | " + " | ".join(f"{e[m]:.4f}" for m in metrics) + " |")
    return lines


# ---- the run ----------------------------------------------------------------------------------
def train(
    data: Dataset | str | Path,
    negatives: str | Path | Sequence[Mapping[str, Any]] | None,
    model: "str | Path | SentenceTransformer | None",
    out_dir: str | Path,
    config: TrainConfig | None = None,
    dev_split: str | None = None,
    *,
    meta: Mapping[str, Any] | None = None,
    pairs_split: str = "train",
    log_file: str | Path | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``negatives`` and save the best checkpoint to ``out_dir``.

    ``data`` (a :class:`Dataset` or a BEIR folder) supplies the dev split (``dev_split``,
    else ``dev`` when present) or, without one, the train queries held out for evaluation
    (their rows are removed from training). ``model`` is a local folder, a loaded
    SentenceTransformer (trained in place) or None for the bundled MiniLM. Writes a
    sentence-transformers folder with ``README.md`` (model card) and ``hardneg_train.json``.

    ``negatives`` None, or a ``negatives.jsonl`` left empty by the in-batch-only baseline
    (:func:`in_batch_only`), trains on the (query, positive) pairs of ``pairs_split``
    (:func:`pair_rows`) with in-batch negatives only.

    ``log_file`` (default ``out_dir/train.log``) receives the trainer's own logs: its loss and
    evaluation dicts, its INFO lines and the libraries' warnings. Quiet (the command line without
    ``--verbose``, :mod:`hardneg.output`) they go there only, with no progress bars.
    """
    config = config or TrainConfig()
    data = data if isinstance(data, Dataset) else load_dataset(data)
    if negatives is None or (isinstance(negatives, (str, Path)) and in_batch_only(negatives)):
        file_meta = {}
        if negatives is not None:
            file_meta = json.loads(sidecar_path(negatives).read_text(encoding="utf-8"))
            log.warning(f"{negatives} has no rows: none of its {file_meta.get('rows_in_mined_set')} mined rows "
                        f"had negatives (the in-batch-only baseline); training on the (query, positive) pairs "
                        f"of '{pairs_split}' with in-batch negatives only")
        meta = {**file_meta, "strategy": "in-batch negatives only", "pairs_split": pairs_split, **(meta or {})}
        rows = pair_rows(data, pairs_split)
    else:
        rows, meta = _rows_and_meta(negatives, meta)
    evalset = build_eval_set(data, [r["query_id"] for r in rows], config, dev_split)
    train_ds, report = build_train_dataset(
        rows, config.num_negatives, config.loss, short_rows=config.short_rows, meta=meta,
        student_range=config.student_range, exclude_queries=evalset.holdout_ids if evalset else (),
    )
    base_name = _model_name(model)
    student = load_student(model)
    native_length, student.max_seq_length = student.max_seq_length, config.max_seq_length
    out_dir = Path(out_dir)
    result = _fit(student, train_ds, evalset, config, out_dir, report, meta,
                  Path(log_file) if log_file is not None else out_dir / TRAIN_LOG)
    student.max_seq_length = native_length  # trained at config.max_seq_length, saved at the model's own
    if _main_process():  # DDP: one writer; every process returns once the model is saved
        _save(student, result, out_dir, base_name)
    _barrier()
    return result


def _model_name(model) -> str:
    """How the model card names the starting model."""
    if model is None:
        from hardneg.encode import default_model_path

        return default_model_path()
    if isinstance(model, (str, Path)):
        return str(model)
    card = getattr(model, "model_card_data", None)
    return str(getattr(card, "base_model", None) or "a model passed in memory")


def _fit(student, train_ds, evalset: EvalSet | None, config: TrainConfig, out_dir: Path,
         report: BuildReport, meta: Mapping[str, Any], log_file: Path) -> TrainResult:
    """Run the trainer; the student ends up holding the best checkpoint's weights."""
    from sentence_transformers import SentenceTransformerTrainer

    if evalset is None and config.holdout_fraction == 0:
        log.info("no dev split and holdout_fraction 0: training without evaluation (the last step is kept)")
    elif evalset is None:
        log.warning("no dev split and too few train queries to hold out: training without evaluation")
    checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else out_dir / "checkpoints"
    args = training_args(config, checkpoint_dir, train_ds.column_names, evalset is not None)
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    memory = _memory_plan(student, train_ds, config, precision)
    clock = _StepClock()
    with trainer_logs(log_file) as logged:
        trainer = logged.quiet(SentenceTransformerTrainer(
            model=student, args=args, train_dataset=train_ds,
            loss=build_loss(student, config, report.num_negatives, args.world_size, memory),
            evaluator=build_evaluator(evalset, config) if evalset else None,
            callbacks=[clock.callback(), *logged.callbacks],
        ))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    losses, evals = _split_log(trainer.state.log_history)
    _barrier()  # DDP: every process has loaded the best checkpoint before it goes
    if not (config.keep_checkpoints or config.checkpoint_dir) and _main_process():  # never delete a named folder
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return TrainResult(
        str(out_dir), config.to_dict(), report, evalset.description if evalset else None, losses, evals,
        _best_eval(evals, trainer.state.best_model_checkpoint), seconds, dict(meta), args.world_size,
        memory.to_dict(), precision, machine_info(), clock.seconds,
    )


@dataclass
class TrainerLogs:
    """What :func:`trainer_logs` gives a trainer: ``callbacks`` to pass it, :meth:`quiet` to apply."""

    callbacks: list

    def quiet(self, trainer):
        """Without ``--verbose``: no progress bar and no log dicts on the terminal (the log file has
        the dicts). Returns ``trainer``."""
        if self.callbacks and not output.verbose():
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            trainer.remove_callback(ProgressCallback)
            trainer.remove_callback(PrinterCallback)
        return trainer


@contextmanager
def trainer_logs(log_file: str | Path) -> Iterator[TrainerLogs]:
    """A trainer's logs into ``log_file`` (the main process's; DDP replicas print as they do).

    Create the trainer and train inside the block. Its callback writes each log dict to the file
    and, quiet (:mod:`hardneg.output`), updates the status line (step i of n); quiet, the
    libraries' loggers write only to the file and sentence-transformers' "Computing widget
    examples" bar, which has no switch, is disabled.
    """
    if not _main_process():
        yield TrainerLogs([])
        return
    trainer_log = logging.getLogger(f"{__name__}.trainer")
    with output.library_logs_to(log_file, trainer_log), _no_widget_bar():
        yield TrainerLogs([_log_callback(trainer_log)])


def _log_callback(trainer_log: logging.Logger):
    """The trainer callback of :func:`trainer_logs`: log dicts to the file, steps to the status line."""
    from transformers import TrainerCallback

    class TrainerLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            output.status(f"training: step 0/{state.max_steps}")

        def on_step_end(self, args, state, control, **kwargs):
            output.status(f"training: step {state.global_step}/{state.max_steps}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not output.verbose() and args.disable_tqdm:
                logs.pop("total_flos", None)  # what the PrinterCallback it replaces did to the trainer's history
            trainer_log.info("step %d: %s", state.global_step, json.dumps(logs, default=str))

    return TrainerLog()


@contextmanager
def _no_widget_bar() -> Iterator[None]:
    """Quiet: sentence-transformers' model-card widget examples computed without their tqdm bar
    (still computed: they draw from ``random``, and the run must stay the same run)."""
    try:
        from sentence_transformers.base import model_card
    except ImportError:  # another layout: its bar shows
        model_card = None
    if output.verbose() or model_card is None or not hasattr(model_card, "tqdm"):
        yield
        return
    bar = model_card.tqdm
    model_card.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        model_card.tqdm = bar


class _StepClock:
    """Wall time of each optimizer step (evaluations and checkpoints excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class StepClock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                clock._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                clock.seconds.append(round(time.perf_counter() - clock._start, 4))

        return StepClock()


def _memory_plan(student, train_ds, config: TrainConfig, precision: str) -> MemoryPlan:
    """:func:`hardneg.memory.plan` for this run (refuses one that would not fit), logged in one line."""
    memory = plan(student, {c: train_ds[c] for c in train_ds.column_names}, loss=config.loss.value,
                  batch_size=config.batch_size, max_length=config.max_seq_length, precision=precision,
                  mini_batch_size=config.mini_batch_size, memory_gb=config.memory_gb,
                  guide=config.loss is Loss.GIST)
    info = machine_info()
    log.info(f"{memory.summary()}; precision {precision} on {info['cpu']} "
                f"(AMX-BF16: {'yes' if info['amx_bf16'] else 'no'})")
    return memory


def _process_group():
    """``torch.distributed`` while a process group runs (``torchrun`` / ``accelerate launch``), else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _main_process() -> bool:
    """True outside DDP and on rank 0: the process that writes the shared outputs."""
    group = _process_group()
    return group is None or group.get_rank() == 0


def _barrier() -> None:
    group = _process_group()
    if group is not None:
        group.barrier()


def _save(student, result: TrainResult, out_dir: Path, base_name: str) -> None:
    """The model folder without sentence-transformers' own card, then ours and the JSON log."""
    student.save(str(out_dir), create_model_card=False)
    atomic_write_text(out_dir / "README.md", model_card(result, base_name, student.max_seq_length))
    atomic_write_json(out_dir / RESULT_FILE, result.to_dict())


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from plain values (a recipe table, CLI options); unknown keys are an error."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise HardnegError(f"unknown train option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return TrainConfig(**values)

