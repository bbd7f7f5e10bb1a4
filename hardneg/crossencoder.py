"""Cross-encoder rescoring: add a ``ce`` score column to a candidate set, and check the
cross-encoder is worth trusting first.

Use :func:`rescore` after mining when a cross-encoder (reranker) is available, e.g. one
trained by ``hardneg train-reranker``. It scores only the candidates whose ORIGINAL rank lies
inside ``window`` (scoring all 200 candidates per query costs hours on a CPU) plus every known
positive of each query, so positive-aware filters (``--margin`` against ``ce``) and
MarginMSE distillation have the positives' scores. Then:

* ``select --denoise-above T`` drops candidates the cross-encoder scores above ``T``
  (RocketQA-style denoising of likely false negatives). Candidates it did not score (outside
  the window) are kept: denoising can only remove what was judged.
* ``export`` writes the ``ce`` scores as FlagEmbedding's teacher ``pos_scores/neg_scores``,
  which ``hardneg train --loss marginmse`` distils.

Scores are raw logits (no sigmoid: ``T = 0`` is probability 0.5), so they can be negative and
``--percent`` is refused on them. They are cached on disk (:class:`hardneg.encode.cache.EmbeddingCache`)
under the weights fingerprint and a hash of the (query, document) pairs: rescoring the same set
again does not run the model.

A cross-fit folder (``hardneg train-reranker --folds K``: ``fold_<i>/`` models plus
``folds.json``) scores each query with the fold model that never trained on it.

Before denoising, :func:`check_reranker` reranks BM25's top 100 on held-out queries: a
cross-encoder that does not beat BM25 there would denoise with noise (:func:`warn_if_worse`).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hardneg import output
from hardneg.candidates import CandidateSet, Column, rank_col, score_col
from hardneg.data import Dataset
from hardneg.encode.cache import CacheKey, EmbeddingCache, texts_hash
from hardneg.encode.fingerprint import model_fingerprint
from hardneg.errors import HardnegError
from hardneg.evaluate import paired_randomization_test
from hardneg.metrics import per_query_scores
from hardneg.options import check, option
from hardneg.retrieve.base import Ranking
from hardneg.retrieve.bm25 import BM25Retriever
from hardneg.sampling import sample
from hardneg.select.policy import parse_window

__all__ = ["DenoiseConfig", "Reranker", "RerankerCheck", "RescoreReport", "check_reranker", "load_judge",
           "rescore", "rescore_with_report"]

log = logging.getLogger(__name__)

DEFAULT_WINDOW = (1, 100)
FOLDS_FILE = "folds.json"  # {query_id: fold} of a cross-fit folder
REPORT_FILE = "hardneg_reranker.json"  # written by train-reranker: its own dev check
CHUNK_BATCHES = 16  # batches per model call: the progress bar advances per chunk
_DEFAULT_CACHE: Any = object()  # sentinel: "use EmbeddingCache() at the default folder"


@dataclass(frozen=True)
class DenoiseConfig:
    """Cross-encoder scores inside ``hardneg run`` (recipe section ``[denoise]``).

    With ``cross_encoder`` (a CrossEncoder folder, or a cross-fitted ``train-reranker --folds``
    one for training queries) every round adds ``score_ce`` to its candidates for the original
    ranks in ``window``, before selection; ``select.denoise_above`` then drops the candidates it
    scores above that threshold, and the scores travel to MarginMSE. Keep the window to the ranks
    the sampler can reach: a cross-encoder costs about as much per pair as encoding a passage.
    """

    cross_encoder: str | None = option(None, "A CrossEncoder folder, or a cross-fit folder from `hardneg "
                                             "train-reranker --folds K` (each query scored by the model that never "
                                             "saw it); none: no rescoring.", path="model")
    window: str = option("10:30", "MIN:MAX original ranks scored (about one passage-encoding of cost per pair), plus "
                                  "every known positive; 'off': all.")
    batch_size: int = option(32, "Pairs per cross-encoder batch.", ge=1)

    def __post_init__(self) -> None:
        _parse_window(self.window)
        check(self)


# ---- the model(s) ----------------------------------------------------------------------------
class Reranker:
    """One cross-encoder, or a cross-fit set of K, that scores (query, document) pairs as logits.

    Build it with :meth:`load` from a CrossEncoder folder, a cross-fit folder or a loaded
    ``CrossEncoder``. ``pairs_run`` counts the pairs that actually went through a model
    (cache hits excluded), so callers and tests can see whether the model ran.
    """

    def __init__(self, models: list[Any], fold_of: dict[str, int] | None = None, path: str | None = None):
        for m in models:
            if m.num_labels != 1:
                raise HardnegError(f"cross-encoder {path or ''} has {m.num_labels} labels; hardneg needs a single "
                                   "relevance score (num_labels=1)")
        self.models, self.fold_of, self.path = models, fold_of, path
        self.fingerprints = [model_fingerprint(m) for m in models]
        self.pairs_run = 0

    @classmethod
    def load(cls, source: "str | Path | Reranker | Any", *, device: str | None = None,
             max_length: int | None = None) -> "Reranker":
        """A Reranker from a local folder (single or cross-fit) or a loaded ``CrossEncoder``."""
        if isinstance(source, Reranker):
            return source
        if not isinstance(source, (str, Path)):
            return cls([source])
        path = Path(source).expanduser()
        if not path.is_dir():
            raise HardnegError(f"cross-encoder {str(path)!r} is not a local folder; hardneg loads models from "
                               "local folders only")
        if (path / FOLDS_FILE).is_file():
            fold_of = _read_folds(path / FOLDS_FILE)
            k = max(fold_of.values()) + 1
            return cls([_load_ce(path / f"fold_{i}", device, max_length) for i in range(k)], fold_of, str(path))
        return cls([_load_ce(path, device, max_length)], None, str(path))

    @property
    def folds(self) -> int | None:
        """K of a cross-fit set, None for a single model."""
        return len(self.models) if self.fold_of is not None else None

    def model_index(self, query_ids: Sequence[str]) -> np.ndarray:
        """Which model scores each query: its fold's (never trained on it); 0 for a single model
        and for queries outside ``folds.json`` (no fold model trained on those)."""
        if self.fold_of is None:
            return np.zeros(len(query_ids), np.int64)
        return np.array([self.fold_of.get(str(q), 0) for q in query_ids], np.int64)

    def describe(self) -> dict[str, Any]:
        """JSON-ready identity: path, weights fingerprint(s), folds, max length, score kind."""
        fps = self.fingerprints
        return {"model": self.path, "fingerprint": fps[0] if len(fps) == 1 else fps, "folds": self.folds,
                "max_length": int(self.models[0].max_seq_length), "score": "logit"}

    def score(self, query_ids: Sequence[str], queries: Sequence[str], docs: Sequence[str], *,
              batch_size: int = 32, cache: EmbeddingCache | None = None, progress: bool = False) -> np.ndarray:
        """Logits of each (query, doc) pair, float32; pairs grouped by model, each group cached."""
        if batch_size < 1:
            raise HardnegError(f"batch size must be at least 1, not {batch_size}")
        out = np.zeros(len(docs), np.float32)
        which = self.model_index(query_ids)
        for i in np.unique(which):
            rows = np.flatnonzero(which == i)
            pairs = [(queries[r], docs[r]) for r in rows]
            out[rows] = self._score_cached(int(i), pairs, batch_size, cache, progress)
        return out

    def _score_cached(self, i: int, pairs: list[tuple[str, str]], batch_size: int,
                      cache: EmbeddingCache | None, progress: bool) -> np.ndarray:
        if cache is None:
            return self._run(i, pairs, batch_size, progress)
        key = self.cache_key(i, pairs)
        extra = {"n_pairs": len(pairs), "cross_encoder": self.path}
        return np.asarray(cache.get_or_compute(key, lambda: self._run(i, pairs, batch_size, progress), extra))

    def cache_key(self, i: int, pairs: Sequence[tuple[str, str]]) -> CacheKey:
        """Cache key of model ``i`` scoring ``pairs`` (in order)."""
        return CacheKey(model=self.fingerprints[i], prompt="", max_length=int(self.models[i].max_seq_length),
                        normalize=False, backend="cross-encoder-logits", precision=_precision(self.models[i]),
                        texts=texts_hash([t for pair in pairs for t in pair]))

    def _run(self, i: int, pairs: list[tuple[str, str]], batch_size: int, progress: bool) -> np.ndarray:
        """Longest pairs first (little padding), chunks of batches, one progress bar over pairs."""
        import torch
        from tqdm.auto import tqdm

        model = self.models[i]
        order = np.argsort([-(len(q) + len(d)) for q, d in pairs], kind="stable")
        scores = np.zeros(len(pairs), np.float32)
        step = batch_size * CHUNK_BATCHES
        desc = "cross-encoder" + (f" fold {i}" if self.folds else "")
        with tqdm(total=len(pairs), desc=desc, unit="pair", disable=not (progress and output.verbose())) as bar:
            for start in range(0, len(pairs), step):
                idx = order[start:start + step]
                chunk = [pairs[j] for j in idx]
                scores[idx] = model.predict(chunk, batch_size=batch_size, show_progress_bar=False,
                                            activation_fn=torch.nn.Identity(), convert_to_numpy=True)
                bar.update(len(idx))
        self.pairs_run += len(pairs)
        return scores


def load_judge(cross_encoder: "str | Path | Reranker | Any", *, batch_size: int = 32, cache: Any = _DEFAULT_CACHE,
               progress: bool = True):
    """A judge for :func:`hardneg.audit.judge_audit`: ``judge(query_ids, queries, docs) -> logits``.

    Cross-fit folders route each query to the fold model that never trained on it; scores are cached.
    """
    reranker = Reranker.load(cross_encoder)
    store = _as_cache(cache)

    def judge(query_ids: Sequence[str], queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        return reranker.score(query_ids, queries, docs, batch_size=batch_size, cache=store, progress=progress)

    return judge


def _load_ce(path: Path, device: str | None, max_length: int | None):
    from sentence_transformers import CrossEncoder

    if not path.is_dir():
        raise HardnegError(f"cross-encoder folder {str(path)!r} is missing")
    return CrossEncoder(str(path), device=device, max_length=max_length, local_files_only=True)


def _read_folds(path: Path) -> dict[str, int]:
    try:
        folds = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HardnegError(f"{path}: unreadable ({e})") from None
    if not isinstance(folds, dict) or not folds or not all(isinstance(v, int) and v >= 0 for v in folds.values()):
        raise HardnegError(f"{path}: expected a non-empty mapping query id -> fold number (0..K-1)")
    return {str(q): int(f) for q, f in folds.items()}


def _precision(model: Any) -> str:
    try:
        return str(next(model.parameters()).dtype).removeprefix("torch.")
    except StopIteration:
        return "unknown"


def _as_cache(cache: Any) -> EmbeddingCache | None:
    if cache is _DEFAULT_CACHE:
        return EmbeddingCache()
    if cache is None or isinstance(cache, EmbeddingCache):
        return cache
    return EmbeddingCache(cache)


# ---- rescoring a candidate set ---------------------------------------------------------------
@dataclass(frozen=True)
class RescoreCheck:
    """``hardneg rescore``'s check of the cross-encoder before it rescores (:func:`check_for_candidates`)."""

    check: bool = option(True, "Check that the cross-encoder reranks BM25's top 100 better than BM25 (its "
                         "train-reranker record, else dev, else the candidates' queries).", recipe=False)
    check_queries: int = option(100, "Queries of that check (seeded sample).", recipe=False)

    def __post_init__(self) -> None:
        check(self)


@dataclass
class RescoreReport:
    """What one rescoring cost (kept out of the candidate metadata so outputs stay byte-identical)."""

    pairs: int
    queries: int
    pairs_run: int  # pairs that went through a model (0 when every score came from the cache)
    cache_hits: int
    cache_misses: int
    seconds: float
    queries_outside_folds: int = 0

    def summary(self) -> str:
        cached = "all from the cache" if self.pairs and not self.pairs_run else f"{self.pairs_run:,} through the model"
        return f"{self.pairs:,} pairs of {self.queries:,} queries scored ({cached}) in {self.seconds:.1f}s"


def rows_to_score(table: pd.DataFrame, rank_column: str, window: tuple[int, int] | None) -> np.ndarray:
    """Boolean mask of the rows a cross-encoder should score: every known positive, plus each
    candidate whose original rank (``rank_column``) lies in ``window`` (both ends included;
    None: every row)."""
    if window is None:
        return np.ones(len(table), bool)
    lo, hi = window
    rank = table[rank_column].to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        inside = (rank >= lo) & (rank <= hi)
    return inside | table[Column.IS_POSITIVE].to_numpy(dtype=bool)


def rescore(cands: CandidateSet, ds: Dataset, cross_encoder: "str | Path | Reranker | Any", *,
            window: tuple[int, int] | str | None = DEFAULT_WINDOW, rank_by: str | None = None,
            batch_size: int = 32, cache: Any = _DEFAULT_CACHE, progress: bool = True,
            name: str = "ce") -> CandidateSet:
    """A copy of ``cands`` with scorer ``name`` (``score_ce``: logits, NaN where not scored).

    Scored: every known positive and the candidates whose original rank under ``rank_by``
    (default: the set's) lies in ``window`` (``"10:100"`` or ``(10, 100)``, both ends kept;
    None: all). ``cross_encoder`` is a CrossEncoder folder, a cross-fit folder, a loaded
    ``CrossEncoder`` or a :class:`Reranker`. ``cache``: an EmbeddingCache, a folder, None (off)
    or left out (the default folder). See :func:`rescore_with_report` for the cost.
    """
    return rescore_with_report(cands, ds, cross_encoder, window=window, rank_by=rank_by, batch_size=batch_size,
                               cache=cache, progress=progress, name=name)[0]


def rescore_with_report(cands: CandidateSet, ds: Dataset, cross_encoder: Any, *,
                        window: tuple[int, int] | str | None = DEFAULT_WINDOW, rank_by: str | None = None,
                        batch_size: int = 32, cache: Any = _DEFAULT_CACHE, progress: bool = True,
                        name: str = "ce") -> tuple[CandidateSet, RescoreReport]:
    """:func:`rescore`, also returning what it cost (pairs, cache hits, seconds)."""
    start = time.perf_counter()
    window = _parse_window(window)
    rank_by = _check_rank_by(cands, rank_by or cands.rank_by, name)
    reranker = Reranker.load(cross_encoder)
    store = _as_cache(cache)
    hits0, misses0, ran0 = (store.hits if store else 0), (store.misses if store else 0), reranker.pairs_run
    table = cands.table
    rows = np.flatnonzero(rows_to_score(table, rank_col(rank_by), window))
    qids = table[Column.QUERY_ID].to_numpy(object)[rows]
    queries, docs = _texts(ds, qids, table[Column.DOC_ID].to_numpy(object)[rows])
    scores = reranker.score(qids, queries, docs, batch_size=batch_size, cache=store, progress=progress)
    out = _with_scores(cands, name, rows, scores)
    n_queries = len(pd.unique(qids))
    outside = 0 if reranker.fold_of is None else len(set(qids) - set(reranker.fold_of))
    out.meta.setdefault("rescoring", {})[name] = {
        **reranker.describe(), "window": list(window) if window else None, "rank_by": rank_by,
        "pairs_scored": int(len(rows)), "queries": int(n_queries), "queries_outside_folds": int(outside),
    }
    report = RescoreReport(int(len(rows)), int(n_queries), reranker.pairs_run - ran0,
                           (store.hits - hits0) if store else 0, (store.misses - misses0) if store else 0,
                           time.perf_counter() - start, outside)
    log.info(report.summary())
    return out, report


def _parse_window(window: tuple[int, int] | str | None) -> tuple[int, int] | None:
    if isinstance(window, str):
        window = None if window.strip().lower() in ("off", "none", "") else parse_window(window)
    if window is None:
        return None
    lo, hi = (int(x) for x in window)
    if lo < 1 or lo > hi:
        raise HardnegError(f"cross-encoder window must be MIN:MAX with 1 <= MIN <= MAX, got {lo}:{hi}")
    return lo, hi


def _check_rank_by(cands: CandidateSet, rank_by: str, name: str) -> str:
    if rank_by == name or rank_by in (cands.meta.get("score_only") or []):
        raise HardnegError(f"cannot choose the window by '{rank_by}': it has no ranks; use the retriever's")
    if rank_by not in cands.scorers:
        raise HardnegError(f"unknown scorer {rank_by!r} for the window; this candidate set has {cands.scorers}")
    return rank_by


def _texts(ds: Dataset, qids: np.ndarray, dids: np.ndarray) -> tuple[list[str], list[str]]:
    """Query and document texts of the pairs; a clear error when the set was mined on other data."""
    missing = next((q for q in pd.unique(qids) if q not in ds.queries), None)
    if missing is not None:
        raise HardnegError(f"candidate query {missing!r} is not in {ds.source}: pass the dataset that was mined")
    docs: dict[str, str] = {}
    try:
        for d in pd.unique(dids):
            docs[d] = ds.doc_text(d)
    except KeyError:
        raise HardnegError(f"candidate document {d!r} is not in {ds.source}: pass the dataset that was mined") from None
    return [ds.queries[q] for q in qids], [docs[d] for d in dids]


def _with_scores(cands: CandidateSet, name: str, rows: np.ndarray, scores: np.ndarray) -> CandidateSet:
    """Copy of the set with ``score_<name>`` filled at ``rows``; ``rank_<name>`` all null (the
    contract wants a rank column per scorer; a partial rescoring defines no ranking)."""
    table = cands.table.copy()
    col = np.full(len(table), np.nan, np.float32)
    col[rows] = scores
    table[score_col(name)] = col
    table[rank_col(name)] = pd.array([pd.NA] * len(table), dtype="Int32")
    meta = copy.deepcopy(cands.meta)
    if name not in meta["scorers"]:
        meta["scorers"] = list(meta["scorers"]) + [name]
    meta["negative_scores"] = {**(meta.get("negative_scores") or {}), name: True}
    meta["score_only"] = sorted(set(meta.get("score_only") or []) | {name})
    out = CandidateSet(table, meta)
    out.validate()
    return out


# ---- is the cross-encoder better than BM25? --------------------------------------------------
@dataclass
class RerankerCheck:
    """NDCG@10 of BM25's top-``depth`` as ranked by BM25 and as reranked by the cross-encoder."""

    split: str
    source: str  # which queries, in words
    query_ids: list[str]
    bm25: list[float]  # per-query NDCG@10
    reranked: list[float]
    depth: int
    p_value: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bm25_ndcg(self) -> float:
        return float(np.mean(self.bm25)) if self.bm25 else float("nan")

    @property
    def reranked_ndcg(self) -> float:
        return float(np.mean(self.reranked)) if self.reranked else float("nan")

    @property
    def beats_bm25(self) -> bool:
        return self.reranked_ndcg > self.bm25_ndcg

    def summary(self) -> str:
        return (f"reranking BM25 top-{self.depth} on {self.source}: NDCG@10 BM25 {self.bm25_ndcg:.4f} -> "
                f"cross-encoder {self.reranked_ndcg:.4f} (p={self.p_value:.3g}, {len(self.query_ids)} queries)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bm25_ndcg@10": self.bm25_ndcg, "reranked_ndcg@10": self.reranked_ndcg,
                "beats_bm25": self.beats_bm25}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RerankerCheck":
        names = {"split", "source", "query_ids", "bm25", "reranked", "depth", "p_value", "extra"}
        return cls(**{k: v for k, v in values.items() if k in names})


def check_reranker(cross_encoder: Any, ds: Dataset, split: str = "dev", *, query_ids: Sequence[str] | None = None,
                   depth: int = 100, max_queries: int | None = None, batch_size: int = 32,
                   cache: Any = _DEFAULT_CACHE, progress: bool = False, seed: int = 0,
                   source: str | None = None) -> RerankerCheck:
    """Rerank BM25's top ``depth`` with the cross-encoder on ``split`` (or on ``query_ids`` of it,
    e.g. train queries the cross-encoder never saw) and compare NDCG@10 (ranx), with a paired test.

    Use it before denoising: a cross-encoder that does not beat BM25 on held-out queries judges
    relevance worse than word overlap. ``max_queries`` takes a seeded sample. A cross-fit
    :class:`Reranker` scores each query with the model that never trained on it.
    """
    qrels = ds.split_qrels(split)
    qids = _check_queries(ds, split, query_ids, max_queries, seed)
    reranker = Reranker.load(cross_encoder)
    bm25 = BM25Retriever(ds.doc_ids, ds.doc_texts()).search(qids, [ds.queries[q] for q in qids], depth)
    flat = bm25.indices.reshape(-1)
    pair_q = np.repeat(np.asarray(qids, object), bm25.k)
    texts = [ds.queries[q] for q in pair_q]
    docs = [ds.doc_text(ds.doc_ids[i]) for i in flat]
    scores = reranker.score(pair_q, texts, docs, batch_size=batch_size, cache=_as_cache(cache), progress=progress)
    reranked = _rerank(bm25, scores.reshape(bm25.indices.shape))
    before = per_query_scores(qrels, bm25, ["ndcg@10"])["ndcg@10"]
    after = per_query_scores(qrels, reranked, ["ndcg@10"])["ndcg@10"]
    return RerankerCheck(split, source or f"'{split}' ({len(qids)} queries)", list(qids),
                         [float(x) for x in before], [float(x) for x in after], bm25.k,
                         paired_randomization_test(after, before, seed=seed))


def _check_queries(ds: Dataset, split: str, query_ids: Sequence[str] | None, max_queries: int | None,
                   seed: int) -> list[str]:
    positives = ds.positives(split)
    pool = [str(q) for q in (query_ids if query_ids is not None else positives) if str(q) in positives]
    if not pool:
        raise HardnegError(f"no queries with '{split}' positives to check the cross-encoder on")
    return pool if max_queries is None else sample(pool, max_queries, seed)


def _rerank(bm25, scores: np.ndarray):
    """The BM25 ranking reordered by cross-encoder score (ties keep BM25's order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return Ranking(bm25.query_ids, bm25.doc_ids, np.take_along_axis(bm25.indices, order, 1),
                   np.take_along_axis(scores, order, 1).astype(np.float32))


def recorded_check(cross_encoder: "str | Path | Reranker | Any") -> RerankerCheck | None:
    """The check ``hardneg train-reranker`` stored beside the model (``hardneg_reranker.json``), if any."""
    path = cross_encoder.path if isinstance(cross_encoder, Reranker) else cross_encoder
    if not isinstance(path, (str, os.PathLike)):
        return None
    file = Path(path) / REPORT_FILE
    if not file.is_file():
        return None
    check = json.loads(file.read_text(encoding="utf-8")).get("check")
    return RerankerCheck.from_dict(check) if check else None


def warn_if_worse(check: RerankerCheck) -> str | None:
    """Log (and return) a warning when the cross-encoder does not beat BM25; None when it does."""
    if check.beats_bm25:
        return None
    message = (f"the cross-encoder does not rerank better than BM25 on {check.source} (NDCG@10 "
               f"{check.reranked_ndcg:.4f} vs BM25 {check.bm25_ndcg:.4f}): denoising with it would denoise "
               "with noise; train it longer or use another one")
    log.warning(message)
    return message


def check_for_candidates(reranker: Reranker, ds: Dataset, cands: CandidateSet, *, max_queries: int = 100,
                         batch_size: int = 32, cache: Any = _DEFAULT_CACHE) -> RerankerCheck:
    """How ``reranker`` reranks BM25's top 100, from the best source there is.

    Its ``train-reranker`` record if it has one; else the ``dev`` split; else the candidate
    set's own queries (each scored by the fold model that never saw it when cross-fitted;
    optimistic otherwise). Warns (:func:`warn_if_worse`) when it does not beat BM25.
    """
    check = recorded_check(reranker)
    if check is None:
        split = "dev" if "dev" in ds.splits else str(cands.meta.get("split", "train"))
        qids = None if split == "dev" else cands.query_ids()
        source = f"the '{split}' split" if split == "dev" else (
            f"'{split}' queries of the candidate set" + (", each scored by the fold model that never saw it"
                                                         if reranker.folds else
                                                         " (optimistic if the cross-encoder trained on them)"))
        check = check_reranker(reranker, ds, split, query_ids=qids, max_queries=max_queries, batch_size=batch_size,
                               cache=cache, source=source)
    warn_if_worse(check)
    return check


def check_and_rescore(cands: CandidateSet, ds: Dataset, config: DenoiseConfig, checking: RescoreCheck = RescoreCheck(),
                      *, rank_by: str | None = None, cache: Any = _DEFAULT_CACHE,
                      say: Any = print) -> tuple[CandidateSet, RescoreReport]:
    """What ``hardneg rescore`` does: load ``config.cross_encoder``, check it (``say`` gets the check's
    summary) unless ``checking.check`` is off, then :func:`rescore_with_report` in ``config.window``."""
    reranker = Reranker.load(config.cross_encoder)
    if checking.check:
        say(check_for_candidates(reranker, ds, cands, max_queries=checking.check_queries,
                                 batch_size=config.batch_size, cache=cache).summary())
    return rescore_with_report(cands, ds, reranker, window=config.window, rank_by=rank_by,
                               batch_size=config.batch_size, cache=cache)
