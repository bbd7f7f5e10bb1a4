"""The training rows: ``negatives.jsonl`` read and checked, turned into the columns a loss takes
(:func:`build_train_dataset`, MarginMSE labels from rescaled teacher margins), and the dev subset
evaluated while training (:func:`build_eval_set`)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Iterable, Mapping, Sequence

import numpy as np

from hardneg.data import Dataset, _read_jsonl
from hardneg.errors import DataError, HardnegError
from hardneg.options import as_enum
from hardneg.sampling import holdout, sample
from hardneg.train.config import TEACHER_SCORERS, Loss, ShortRows, TrainConfig

if TYPE_CHECKING:
    import datasets

__all__: list[str] = []  # internal: import from hardneg.train

log = logging.getLogger("hardneg.train")


# ---- reading the mined negatives --------------------------------------------------------------
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
    meta = read_sidecar(meta_file) if meta_file.is_file() else {}
    meta.setdefault("negatives_file", str(path))
    return rows, meta


def read_sidecar(path: Path) -> dict[str, Any]:
    """``negatives.meta.json`` as a dict; unreadable JSON (or another shape) is a located error."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(path, None, "not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"malformed JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise DataError(path, None, "JSON nested too deeply") from None
    if not isinstance(meta, dict):
        raise DataError(path, 1, "expected a JSON object")
    return meta


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
    meta = read_sidecar(meta_file)
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
    one_positive: tuple[int, int] | None = None,
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
    Queries in ``exclude_queries`` (held out for evaluation) are left out. ``one_positive``
    ``(passes, seed)`` (``[train] positives = "one"``, n-tuple losses): instead of a row per
    positive, ``passes`` rows per query, pass ``p``'s positive drawn by ``default_rng([seed, p])``.
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
        columns = _ntuple_columns(kept, k, policy, report, one_positive)
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


def _ntuple_columns(rows, k: int, policy: ShortRows, report: BuildReport,
                    one_positive: tuple[int, int] | None = None) -> dict[str, list[str]]:
    names = ["anchor", "positive", *[f"negative_{i}" for i in range(1, k + 1)]]
    columns: dict[str, list[str]] = {name: [] for name in names}
    draws = [np.random.default_rng([one_positive[1], p]) for p in range(one_positive[0])] if one_positive else []
    for row in rows:
        negs = _fill_negatives(row["neg"], k, policy)
        short = len(row["neg"]) < k
        report.short_queries += short
        report.dropped_queries += negs is None
        report.padded_queries += short and negs is not None
        if negs is None:
            continue
        report.n_queries += 1
        chosen = [row["pos"][int(rng.integers(len(row["pos"])))] for rng in draws] if draws else row["pos"]
        for pos in chosen:
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

