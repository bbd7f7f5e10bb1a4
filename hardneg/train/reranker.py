"""Train a cross-encoder (reranker) on the train positives and mined negatives.

No cross-encoder ships offline, so, as RocketQA does, train one before denoising: a
sentence-transformers ``CrossEncoder`` (one logit, ``num_labels=1``) from the bundled MiniLM
or any local model, with ``CrossEncoderTrainer`` and one of two losses:

- ``mnrl`` (default): sentence-transformers' cross-encoder ``MultipleNegativesRankingLoss``, a
  softmax over (query, positive), its mined negatives and ``in_batch_negatives`` positives of
  other queries in the batch. The easy in-batch documents give the new classification head a
  signal from the first steps; measured on SciFact on 2 CPU cores, it left chance level within
  25 steps, while BCE on mined negatives alone stayed at chance for 100 steps at lr 2e-5 and 90
  at 1e-4.
- ``bce``: (query, positive) = 1 and (query, mined negative) = 0 pairs with
  ``BinaryCrossEntropyLoss`` (positives up-weighted by the negative:positive ratio, as
  sentence-transformers' reranker examples do).

The result is a
normal CrossEncoder folder plus ``hardneg_reranker.json`` holding its own evaluation:
NDCG@10 of BM25's top 100 reranked by it, against BM25, on the dev split or on held-out
train queries (:func:`hardneg.crossencoder.check_reranker`).

Cross-fitting (``folds=K``, K >= 2): when the cross-encoder will judge the training queries
themselves (denoising their candidates), a model trained on a query would vouch for its own
training labels. So K models are trained, ``fold_<i>/`` on the queries outside fold i, with
``folds.json`` mapping query id -> fold; :class:`hardneg.crossencoder.Reranker` scores each query
with the fold model that never saw it, and the evaluation is out-of-fold on train queries.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Mapping, Sequence

import numpy as np

from hardneg.candidates import CandidateSet
from hardneg.crossencoder import FOLDS_FILE, REPORT_FILE, Reranker, RerankerCheck, check_reranker
from hardneg.data import Dataset, load_dataset
from hardneg.encode import default_model_path
from hardneg.errors import HardnegError
from hardneg.files import atomic_write_json
from hardneg.options import check, option, seed_option
from hardneg.sampling import holdout
from hardneg.select import SelectionPolicy, select
from hardneg.select.policy import parse_window
from hardneg.train import read_negatives
from hardneg.train.config import TRAIN_LOG, check_schedule
from hardneg.train.trainer import trainer_logs

if TYPE_CHECKING:
    import datasets
    from sentence_transformers import CrossEncoder

__all__ = ["RerankerConfig", "RerankerResult", "train_reranker"]

log = logging.getLogger(__name__)

LOSSES = ("mnrl", "bce")
MNRL_NEGATIVES = 3  # mined negatives per (query, positive) tuple when num_negatives is not set


@dataclass(frozen=True)
class RerankerRows:
    """Where ``hardneg train-reranker --candidates`` draws its negatives from."""

    window: str = option("{}:{}".format(*SelectionPolicy().window), "With --candidates: MIN:MAX ranks negatives "
                         "come from (the default policy's).", recipe=False)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class RerankerConfig:
    """Hyper-parameters of ``train-reranker``; defaults follow sentence-transformers' reranker examples.

    ``folds`` 1 trains one model (evaluated on the dev split, else on ``holdout_fraction`` of
    the train queries, which it then never trains on); K >= 2 cross-fits K models (evaluated
    out of fold). ``num_negatives`` caps the mined negatives used per query (None: all).
    ``max_steps`` fixes a budget (overrides ``epochs``). The evaluation reranks BM25's top
    ``eval_depth`` for at most ``eval_queries`` queries (seeded sample). ``loss`` is ``mnrl``
    (``batch_size`` queries per batch, each with one positive, ``num_negatives`` mined negatives,
    default 3, and ``in_batch_negatives`` other queries' documents) or ``bce`` (``batch_size`` pairs).
    """

    loss: str = option("mnrl", "mnrl: listwise softmax over the positive, mined and in-batch negatives (learns "
                               "within tens of steps) | bce: binary labels per pair.")
    in_batch_negatives: int = option(4, "mnrl: other queries' documents added to each softmax.")
    epochs: float = option(1, "Passes over the data (max_steps overrides).")
    batch_size: int = option(16, "Queries (mnrl) or pairs (bce) per training batch.")
    lr: float = option(1e-4, "Peak learning rate.")
    warmup_ratio: float = option(0.1, "Fraction of the steps spent warming up.")
    max_length: int = option(256, "Max tokens of a (query, document) pair.")
    max_steps: int | None = option(None, "A fixed budget of optimizer steps.")
    seed: int = seed_option(42, "Seed of training, folds, held-out queries and sampling.")
    folds: int = option(1, "K >= 2: cross-fit K models, each never trained on its fold's queries (for judging "
                           "training queries); evaluated out of fold.")
    num_negatives: int | None = option(None, "Mined negatives per query; none: 3 with mnrl; with bce all of the "
                                             "negatives file, 7 from candidates.")
    holdout_fraction: float = option(0.1, "Without a dev split (and folds 1): train queries held out for the "
                                          "evaluation.")
    eval_queries: int = option(200, "Queries of the evaluation (seeded sample).")
    eval_depth: int = option(100, "The evaluation reranks BM25's top this many.")
    logging_steps: int = option(10, "Log the training loss every N steps.")
    show_progress: bool = option(True, "Progress bars.", cli="--progress/--no-progress")

    def __post_init__(self) -> None:
        check_schedule(self, ("epochs", "batch_size", "lr", "max_length", "eval_queries", "eval_depth",
                              "logging_steps"))
        if self.loss not in LOSSES:
            raise HardnegError(f"reranker loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.in_batch_negatives < 0:
            raise HardnegError(f"in_batch_negatives must be >= 0, not {self.in_batch_negatives}")
        if self.folds < 1:
            raise HardnegError(f"folds must be 1 (one model) or K >= 2 (cross-fitting), not {self.folds}")


@dataclass
class RerankerResult:
    """What ``train_reranker`` wrote: the folder, the data used, the losses and its own check."""

    model_dir: str
    base_model: str
    config: dict[str, Any]
    data: dict[str, Any]
    folds: dict[str, Any] | None
    losses: list[list[list[float]]]  # per model: [[step, loss], ...]
    check: RerankerCheck | None
    train_seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["check"] = self.check.to_dict() if self.check else None
        return out

    def summary(self) -> list[str]:
        """What `hardneg train-reranker` prints: the pairs trained on and its check against BM25."""
        d = self.data
        return [f"trained on {d['pairs']:,} pairs ({d['positives']:,} positive, {d['negatives']:,} negative) of "
                f"{d['queries']:,} queries" + (f" in {self.config['folds']} folds" if self.folds else "")
                + f" in {self.train_seconds:.1f}s"] + ([self.check.summary()] if self.check is not None else [])

    def written(self) -> str:
        return f"wrote {self.model_dir} ({'fold_<i>/, folds.json, ' if self.folds else ''}hardneg_reranker.json)"


# ---- training rows ---------------------------------------------------------------------------
def training_rows(ds: Dataset, config: RerankerConfig, *, negatives: str | Path | None = None,
                  candidates: str | Path | None = None, window: str = "10:100") -> Any:
    """What ``hardneg train-reranker`` trains on: a negatives file, or rows drawn from a candidate
    set (``config.num_negatives`` per query, default 3 with mnrl and 7 with bce, uniformly from
    the original ranks in ``window``). Exactly one of the two must be given."""
    if (negatives is None) == (candidates is None):
        raise HardnegError("give exactly one of --negatives and --candidates")
    if negatives is not None:
        return negatives
    k = config.num_negatives or (MNRL_NEGATIVES if config.loss == "mnrl" else 7)
    return rows_from_candidates(CandidateSet.read(candidates), ds, num_negatives=k, window=parse_window(window),
                                seed=config.seed)


def rows_from_candidates(cands, ds: Dataset, *, num_negatives: int = 7, window: tuple[int, int] = (10, 100),
                         seed: int = 42) -> list[dict[str, Any]]:
    """Training rows from a candidate set: per query its positives and ``num_negatives`` drawn
    uniformly from original ranks ``window`` (RocketQA samples the retriever's top ranks; the
    very top is skipped, where unlabeled positives crowd)."""
    mined = select(cands, SelectionPolicy.unfiltered(window=window, sampler="uniform", num_negatives=num_negatives, seed=seed))
    view = mined.per_row()
    return [{"query_id": r.query_id, "query": ds.queries[r.query_id], "pos": [ds.doc_text(d) for d in r.pos_ids],
             "neg": [ds.doc_text(d) for d in r.neg_ids]} for r in view.itertuples(index=False)]


def pair_dataset(rows: Sequence[Mapping[str, Any]], num_negatives: int | None = None,
                 exclude: Collection[str] = ()) -> tuple["datasets.Dataset", dict[str, int]]:
    """``(query, document, label)`` rows: 1 per positive, 0 per negative (the first
    ``num_negatives`` of each query), each (query, document) once; queries in ``exclude`` left out."""
    import datasets

    skip = set(exclude)
    cols: dict[str, list] = {"query": [], "document": [], "label": []}
    seen: set[tuple[str, str]] = set()
    n_queries = 0
    for row in rows:
        if str(row["query_id"]) in skip:
            continue
        n_queries += 1
        negs = list(row["neg"])[:num_negatives] if num_negatives is not None else list(row["neg"])
        for text, label in [(p, 1.0) for p in row["pos"]] + [(n, 0.0) for n in negs]:
            if (row["query"], text) in seen:
                continue
            seen.add((row["query"], text))
            cols["query"].append(row["query"])
            cols["document"].append(text)
            cols["label"].append(label)
    n_pos = int(sum(cols["label"]))
    counts = {"queries": n_queries, "pairs": len(cols["label"]), "positives": n_pos,
              "negatives": len(cols["label"]) - n_pos}
    return datasets.Dataset.from_dict(cols), counts


def tuple_dataset(rows: Sequence[Mapping[str, Any]], num_negatives: int,
                  exclude: Collection[str] = ()) -> tuple["datasets.Dataset", dict[str, int]]:
    """``(query, positive, negative_1..negative_n)`` rows for the listwise loss: one per positive,
    with the query's first ``num_negatives`` negatives; queries with fewer are left out (counted
    as ``short``) rather than padded with repeats; queries in ``exclude`` left out."""
    import datasets

    skip = set(exclude)
    cols: dict[str, list] = {"query": [], "positive": [], **{f"negative_{i + 1}": [] for i in range(num_negatives)}}
    n_queries = short = 0
    for row in rows:
        if str(row["query_id"]) in skip:
            continue
        negs = list(row["neg"])[:num_negatives]
        if len(negs) < num_negatives or not row["pos"]:
            short += 1
            continue
        n_queries += 1
        for pos in row["pos"]:
            cols["query"].append(row["query"])
            cols["positive"].append(pos)
            for i, neg in enumerate(negs):
                cols[f"negative_{i + 1}"].append(neg)
    n = len(cols["query"])
    counts = {"queries": n_queries, "pairs": n * (1 + num_negatives), "positives": n, "negatives": n * num_negatives,
              "short": short}
    return datasets.Dataset.from_dict(cols), counts


def assign_folds(query_ids: Sequence[str], k: int, seed: int = 42) -> dict[str, int]:
    """Query id -> fold in 0..k-1: a seeded shuffle of the sorted ids dealt round-robin (sizes differ by <= 1)."""
    ids = sorted({str(q) for q in query_ids})
    if k > len(ids):
        raise HardnegError(f"{k} folds need at least {k} queries; have {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[j]: int(pos % k) for pos, j in enumerate(order)}


# ---- one model -------------------------------------------------------------------------------
def _load_base(model: "str | Path | None", max_length: int, seed: int) -> "CrossEncoder":
    """A CrossEncoder (one logit) from a local folder; a sentence-transformers folder gets a new,
    seeded classification head."""
    import torch
    from sentence_transformers import CrossEncoder

    path = Path(model).expanduser() if model else Path(default_model_path())
    if not path.is_dir():
        raise HardnegError(f"model {str(path)!r} is not a local folder; hardneg loads models from local folders only")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ce = CrossEncoder(str(path), num_labels=1, max_length=max_length, local_files_only=True)
    if ce.num_labels != 1:
        raise HardnegError(f"{path} is a cross-encoder with {ce.num_labels} labels; start from one with 1 or a "
                           "sentence-transformers / transformers model")
    return ce


def _fit(ce: "CrossEncoder", train_ds: "datasets.Dataset", counts: Mapping[str, int],
         config: RerankerConfig, log_file: Path) -> list[list[float]]:
    """Train in place with the configured loss; returns [[step, loss], ...]. The trainer's own
    logs go to ``log_file`` (:func:`hardneg.train.trainer.trainer_logs`)."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MultipleNegativesRankingLoss

    if config.loss == "mnrl":
        loss = MultipleNegativesRankingLoss(ce, num_negatives=config.in_batch_negatives or None)
        sampler = {"batch_sampler": "no_duplicates"}  # an in-batch "negative" equal to a query's positive is false
    else:
        pos_weight = torch.tensor(max(1.0, counts["negatives"] / max(1, counts["positives"])))
        loss, sampler = BinaryCrossEntropyLoss(ce, pos_weight=pos_weight), {}
    with tempfile.TemporaryDirectory(prefix="hardneg-reranker-") as tmp:
        args = CrossEncoderTrainingArguments(
            output_dir=tmp, num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
            per_device_train_batch_size=config.batch_size, learning_rate=config.lr,
            warmup_steps=config.warmup_ratio, seed=config.seed, data_seed=config.seed, eval_strategy="no",
            save_strategy="no", logging_steps=config.logging_steps, logging_first_step=True, report_to="none",
            disable_tqdm=not config.show_progress, dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(), **sampler)
        with trainer_logs(log_file) as logged:
            trainer = logged.quiet(CrossEncoderTrainer(model=ce, args=args, train_dataset=train_ds, loss=loss,
                                                       callbacks=logged.callbacks))
            trainer.train()
    return [[int(h["step"]), float(h["loss"])] for h in trainer.state.log_history if "loss" in h]


def _train_one(model, rows, exclude: Collection[str], config: RerankerConfig, out: Path) -> tuple[list, dict]:
    if config.loss == "mnrl":
        train_ds, counts = tuple_dataset(rows, config.num_negatives or MNRL_NEGATIVES, exclude)
        if counts["short"]:
            log.warning(f"{counts['short']} queries have fewer than {config.num_negatives or MNRL_NEGATIVES} "
                        "negatives and were left out of the reranker's training")
    else:
        train_ds, counts = pair_dataset(rows, config.num_negatives, exclude)
    if counts["positives"] == 0 or counts["negatives"] == 0:
        raise HardnegError(f"a reranker needs positive and negative pairs; got {counts['positives']} positive and "
                           f"{counts['negatives']} negative (mine negatives first)")
    ce = _load_base(model, config.max_length, config.seed)
    losses = _fit(ce, train_ds, counts, config, out / TRAIN_LOG)
    ce.save(str(out), create_model_card=False)
    return losses, counts


# ---- the run ---------------------------------------------------------------------------------
def train_reranker(data: Dataset | str | Path, negatives: "str | Path | Sequence[Mapping[str, Any]]",
                   out_dir: str | Path, model: "str | Path | None" = None, config: RerankerConfig | None = None,
                   dev_split: str | None = None) -> RerankerResult:
    """Train a cross-encoder (or K cross-fit ones) into ``out_dir`` and check it against BM25.

    ``negatives`` is a ``negatives.jsonl`` from ``hardneg mine``/``select``, or rows with
    ``query_id, query, pos, neg`` (e.g. :func:`rows_from_candidates`). Writes the model
    (``fold_<i>/`` + ``folds.json`` when cross-fitting) and ``hardneg_reranker.json``.
    """
    config = config or RerankerConfig()
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    rows = read_negatives(negatives)[0] if isinstance(negatives, (str, Path)) else list(negatives)
    out = Path(out_dir)
    start = time.perf_counter()
    if config.folds >= 2:
        losses, counts, folds, check = _train_folds(ds, rows, model, config, out)
    else:
        losses, counts, check = _train_single(ds, rows, model, config, out, dev_split)
        folds = None
    result = RerankerResult(str(out), str(model or default_model_path()), asdict(config), counts, folds, losses,
                            check, time.perf_counter() - start)
    atomic_write_json(out / REPORT_FILE, result.to_dict())
    return result


def _train_pool(ds: Dataset, rows) -> list[str]:
    """Train queries of the rows that have train qrels (the ones an evaluation can judge)."""
    train_pos = ds.positives("train") if "train" in ds.splits else {}
    return sorted({str(r["query_id"]) for r in rows} & set(train_pos))


def _train_single(ds, rows, model, config: RerankerConfig, out: Path, dev_split: str | None):
    split = dev_split or ("dev" if "dev" in ds.splits else None)
    held: list[str] = []
    if split is not None:
        ds.split_qrels(split)  # an unknown split fails now, not after training
    else:
        held = holdout(_train_pool(ds, rows), config.holdout_fraction, config.seed, config.eval_queries)
    losses, counts = _train_one(model, rows, held, config, out)
    counts = {**counts, "held_out_queries": len(held)}
    if split is not None:
        check = _check(out, ds, split, None, config, f"the '{split}' split")
    elif held:
        check = _check(out, ds, "train", held, config,
                       f"{len(held)} train queries held out from training")
    else:
        log.warning("no dev split and too few train queries to hold out: the reranker is not evaluated")
        check = None
    return [losses], counts, check


def _train_folds(ds, rows, model, config: RerankerConfig, out: Path):
    fold_of = assign_folds([r["query_id"] for r in rows], config.folds, config.seed)
    losses, counts = [], []
    for i in range(config.folds):
        log.info(f"training reranker fold {i + 1}/{config.folds}")
        held = [q for q, f in fold_of.items() if f == i]
        fold_losses, fold_counts = _train_one(model, rows, held, config, out / f"fold_{i}")
        losses.append(fold_losses)
        counts.append(fold_counts)
    atomic_write_json(out / FOLDS_FILE, fold_of)
    sizes = [sum(1 for f in fold_of.values() if f == i) for i in range(config.folds)]
    folds = {"k": config.folds, "sizes": sizes, "file": FOLDS_FILE}
    pool = _train_pool(ds, rows)
    check = (_check(out, ds, "train", pool, config, f"{min(len(pool), config.eval_queries)} train queries, each "
                    "reranked by the fold model that never trained on it") if pool else None)
    total = {k: int(sum(c[k] for c in counts)) for k in ("pairs", "positives", "negatives")}
    return losses, {**total, "queries": len(fold_of), "per_fold": counts}, folds, check


def _check(out: Path, ds: Dataset, split: str, query_ids, config: RerankerConfig, source: str) -> RerankerCheck:
    reranker = Reranker.load(out)
    check = check_reranker(reranker, ds, split, query_ids=query_ids, depth=config.eval_depth,
                           max_queries=config.eval_queries, batch_size=max(32, config.batch_size), cache=None,
                           seed=config.seed, source=source)
    log.info(check.summary())
    return check
