"""Approximate nearest-neighbour search with faiss (IVF, HNSW, IVF-SQ8), with its recall measured.

Use an ANN index past a few hundred thousand passages, where exact search
(:func:`hardneg.retrieve.search.exact_topk`) costs too much per query; below that, exact search
is fast enough and has no approximation to explain. ``Search.AUTO`` makes that choice by
corpus size.

Every index is checked the moment it is built (:func:`build_index`): the top-``depth`` of a
seeded sample of the real queries is compared with exact search, and the mean recall@depth goes
into :class:`SearchInfo` (a candidate set keeps it in its metadata), so a user sees what the
approximation cost. Unless given, ``nprobe`` (IVF) or ``efSearch`` (HNSW) is tuned on a second,
disjoint sample until ``target_recall`` is reached, so the reported recall is not measured on the
queries it was tuned on.

The index only decides *which* documents make the top-k: their scores are recomputed from the
corpus vectors exactly as :func:`~hardneg.retrieve.search.exact_topk` computes them (float64 dot
products rounded to float32) and rows are ordered by (score desc, index asc). So ranks and scores
agree with every other scorer in hardneg, also for the lossy SQ8 codes.

Memory: the corpus may be a read-only memmap (float32 or float16); it is added to the index in
blocks. ``ivf`` and ``hnsw`` hold a float32 copy of the corpus (1x the float32 matrix, plus the
HNSW graph); ``ivf-sq8`` holds one byte per dimension (0.25x).

Determinism: the training sample and the k-means seed come from ``SearchConfig.seed``. IVF
training, IVF adds and all searches are deterministic on one machine with one faiss build and
thread count. faiss adds to HNSW graphs in parallel with a race, so the HNSW add runs on one
OpenMP thread (slower, but the same graph every time). Across machines or BLAS libraries,
float32 rounding in k-means may differ: save the index (:meth:`AnnIndex.save`) to reuse it.
"""
from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hardneg.errors import HardnegError
from hardneg.files import atomic_path, atomic_write_json
from hardneg.options import as_enum
from hardneg.retrieve.search import Search, _sort_rows, exact_topk, pair_scores
from hardneg.sampling import sample

__all__ = ["AnnIndex", "SearchConfig", "SearchInfo", "build_index"]

log = logging.getLogger("hardneg")

ANN_KINDS = (Search.IVF, Search.HNSW, Search.IVF_SQ8)
AUTO_THRESHOLD = 200_000  # corpus size from which Search.AUTO picks IVF
ADD_BLOCK = 65_536  # corpus rows converted to float32 at a time while adding to an index
TUNING_MARGIN = 0.01  # tuning aims at target_recall + this on its own sample
_FACTORY = {Search.FAISS: "Flat", Search.IVF: "IVF{nlist},Flat", Search.IVF_SQ8: "IVF{nlist},SQ8",
            Search.HNSW: "HNSW{m},Flat"}


@dataclass(frozen=True)
class SearchConfig:
    """How a dense retriever searches: the kind and, for ANN kinds, the index parameters.

    ``None`` parameters are scaled to the corpus (``nlist`` ~ 4 sqrt(N)) or tuned on a query
    sample to ``target_recall`` + 0.01 (``nprobe``, ``ef_search``). ``refine`` fetches ``refine x k``
    ANN candidates and keeps the k best by exact score (default 2 for ``ivf-sq8``, else 1).
    """

    kind: Search | str = Search.AUTO
    nlist: int | None = None
    nprobe: int | None = None
    ef_search: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 64
    refine: int | None = None
    recall_sample: int = 200
    target_recall: float = 0.95
    auto_threshold: int = AUTO_THRESHOLD
    seed: int = 0
    query_chunk: int = 4096

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", as_enum(Search, self.kind, "search"))
        for name in ("nlist", "nprobe", "ef_search", "refine"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise HardnegError(f"{name} must be at least 1 or unset, not {value}")
        for name in ("hnsw_m", "ef_construction", "query_chunk", "auto_threshold"):
            if getattr(self, name) < 1:
                raise HardnegError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.recall_sample < 0:
            raise HardnegError(f"recall_sample must be >= 0, not {self.recall_sample}")
        if not 0 < self.target_recall <= 1:
            raise HardnegError(f"target_recall must be in (0, 1], not {self.target_recall}")


@dataclass
class SearchInfo:
    """What a search cost and how good it was: kind, parameters, measured recall, timings.

    ``to_meta()`` is the deterministic part stored in a candidate set's metadata; the
    seconds vary between runs and stay out of it, so the candidate file is byte-identical.
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    depth: int | None = None
    recall_at_depth: float | None = None  # None: exact search, nothing to measure
    recall_sample: int = 0
    tuned: bool = False
    seed: int | None = None
    build_seconds: float = 0.0
    recall_seconds: float = 0.0
    search_seconds: float = 0.0

    def to_meta(self) -> dict[str, Any]:
        meta = {"kind": self.kind, "params": self.params}
        if self.kind in {k.value for k in ANN_KINDS}:
            meta |= {"depth": self.depth, "recall_at_depth": self.recall_at_depth,
                     "recall_sample": self.recall_sample, "tuned": self.tuned, "seed": self.seed}
        return meta

    def timings(self) -> dict[str, float]:
        return {"build_seconds": round(self.build_seconds, 3), "recall_seconds": round(self.recall_seconds, 3),
                "search_seconds": round(self.search_seconds, 3)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_kind(kind: Search | str, n_docs: int, threshold: int = AUTO_THRESHOLD) -> Search:
    """``AUTO`` -> exact below ``threshold`` documents, else IVF; any other kind unchanged."""
    kind = as_enum(Search, kind, "search")
    if kind is not Search.AUTO:
        return kind
    return Search.EXACT if n_docs < threshold else Search.IVF


def default_nlist(n_docs: int) -> int:
    """About 4 sqrt(N) inverted lists (4,000 for 1M passages), with at least 39 training points
    each (faiss's floor). More lists scan a smaller share of the corpus at the same recall; the
    price is k-means time at build."""
    return max(1, min(int(round(4 * math.sqrt(n_docs))), n_docs // 39))


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx_i & exact_i| / |exact_i| (row sets of document indices).

    Negative entries (faiss's "no result") never count. Use it to compare an ANN top-k with
    the exact top-k of the same queries; NaN for zero queries.
    """
    approx, exact = np.asarray(approx), np.asarray(exact)
    if approx.shape[0] != exact.shape[0]:
        raise HardnegError(f"recall needs the same queries: {approx.shape[0]} vs {exact.shape[0]} rows")
    if exact.shape[0] == 0:
        return float("nan")
    per_query = [np.intersect1d(a[a >= 0], e[e >= 0]).size / max(1, int((e >= 0).sum()))
                 for a, e in zip(approx, exact)]
    return float(np.mean(per_query))


# ---- the index --------------------------------------------------------------------------------
@contextmanager
def _omp_threads(n: int | None) -> Iterator[None]:
    """Run faiss with ``n`` OpenMP threads inside the block (None: unchanged)."""
    import faiss

    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _float32_rows(corpus: np.ndarray, start: int, stop: int) -> np.ndarray:
    return np.ascontiguousarray(corpus[start:stop], dtype=np.float32)


class AnnIndex:
    """A faiss index over a corpus matrix that returns exactly re-scored top-k rows.

    Build it with :func:`build_index` (which also measures recall) or :meth:`create`; keep
    the corpus array alive (it may be a memmap): searches read candidate rows from it.
    """

    def __init__(self, index: Any, kind: Search, corpus: np.ndarray, params: dict[str, Any]):
        self.index, self.kind, self.corpus = index, as_enum(Search, kind, "search"), corpus
        self.params = dict(params)
        self._apply_search_params()

    @classmethod
    def create(cls, corpus: np.ndarray, kind: Search | str, config: SearchConfig = SearchConfig()) -> "AnnIndex":
        """Train (IVF: seeded sample, seeded k-means) and fill an index of ``kind`` over ``corpus``."""
        import faiss

        kind = as_enum(Search, kind, "search")
        if kind not in _FACTORY:
            raise HardnegError(f"no faiss index for search kind {kind.value!r}")
        n_docs, dim = corpus.shape
        if n_docs == 0:
            raise HardnegError("cannot build an index over an empty corpus")
        params = _build_params(kind, n_docs, config)
        index = faiss.index_factory(dim, _FACTORY[kind].format(**params), faiss.METRIC_INNER_PRODUCT)
        if kind is Search.HNSW:
            index.hnsw.efConstruction = params["ef_construction"]
        if kind in (Search.IVF, Search.IVF_SQ8):
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.seed = config.seed
            sample = _training_rows(n_docs, params["nlist"], config.seed)
            index.train(np.ascontiguousarray(corpus[sample], dtype=np.float32))
        with _omp_threads(1 if kind is Search.HNSW else None):  # parallel HNSW adds are racy
            for s in range(0, n_docs, ADD_BLOCK):
                index.add(_float32_rows(corpus, s, s + ADD_BLOCK))
        return cls(index, kind, corpus, params | _search_defaults(kind, params, config))

    def set_params(self, **params: int) -> None:
        """Change search-time parameters (``nprobe``, ``ef_search``, ``refine``)."""
        self.params.update(params)
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        import faiss

        if self.kind in (Search.IVF, Search.IVF_SQ8):
            faiss.extract_index_ivf(self.index).nprobe = int(self.params["nprobe"])
        elif self.kind is Search.HNSW:
            self.index.hnsw.efSearch = int(self.params["ef_search"])

    def search(self, queries: np.ndarray, k: int, query_chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ``(indices int64 (Q, k'), scores float32 (Q, k'))``, ``k' = min(k, N)``, best first.

        Rows where the index found fewer than k documents are completed by exact search.
        """
        if queries.ndim != 2 or queries.shape[1] != self.corpus.shape[1]:
            raise HardnegError(f"queries {queries.shape} do not match the index dimension {self.corpus.shape[1]}")
        n_docs = self.corpus.shape[0]
        k = min(int(k), n_docs)
        indices = np.empty((queries.shape[0], k), dtype=np.int64)
        scores = np.empty((queries.shape[0], k), dtype=np.float32)
        fetch = min(n_docs, k * int(self.params.get("refine", 1)))
        for q0 in range(0, queries.shape[0], query_chunk):
            q = np.ascontiguousarray(queries[q0 : q0 + query_chunk], dtype=np.float32)
            if k == 0 or q.shape[0] == 0:
                continue
            _, cand = self.index.search(q, fetch)
            indices[q0 : q0 + q.shape[0]], scores[q0 : q0 + q.shape[0]] = self._refine(q, cand.astype(np.int64), k)
        return indices, scores

    def _refine(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores for the candidates; keep the k best by (score desc, index asc)."""
        missing = cand < 0
        cand = np.where(missing, 0, cand)
        sc = pair_scores(q, self.corpus, cand)
        sc[missing] = -np.inf
        idx, sc = _sort_rows(cand, sc, k)
        short = np.flatnonzero(np.isneginf(sc).any(axis=1))
        if short.size:  # the index returned fewer than k: these rows are searched exactly
            idx[short], sc[short] = exact_topk(q[short], self.corpus, k)
        return idx, sc

    def save(self, path: str | Path, info: "SearchInfo | None" = None) -> None:
        """Write the index (faiss format) and a JSON sidecar (params, and ``info`` if given)."""
        import faiss

        path = Path(path)
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        sidecar = {"kind": self.kind.value, "params": self.params, "n_docs": int(self.corpus.shape[0]),
                   "info": info.to_dict() if info else None}
        atomic_write_json(_sidecar(path), sidecar)  # written last: marks the index complete

    @classmethod
    def load(cls, path: str | Path, corpus: np.ndarray) -> tuple["AnnIndex", "SearchInfo | None"]:
        """Read an index saved by :meth:`save` over the same ``corpus``; returns it and its info."""
        import faiss

        path = Path(path)
        try:
            sidecar = json.loads(_sidecar(path).read_text(encoding="utf-8"))
            index = faiss.read_index(str(path))
        except (OSError, ValueError, RuntimeError) as e:
            raise HardnegError(f"{path}: cannot read the saved index ({e})") from None
        if sidecar["n_docs"] != corpus.shape[0] or index.ntotal != corpus.shape[0] or index.d != corpus.shape[1]:
            raise HardnegError(f"{path}: the saved index does not match the corpus ({index.ntotal} x {index.d} "
                               f"vs {corpus.shape[0]} x {corpus.shape[1]})")
        info = SearchInfo(**sidecar["info"]) if sidecar.get("info") else None
        return cls(index, Search(sidecar["kind"]), corpus, sidecar["params"]), info

    @staticmethod
    def exists(path: str | Path) -> bool:
        """True when ``path`` and its sidecar (written last) are both there."""
        return Path(path).is_file() and _sidecar(Path(path)).is_file()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _build_params(kind: Search, n_docs: int, config: SearchConfig) -> dict[str, int]:
    if kind in (Search.IVF, Search.IVF_SQ8):
        nlist = config.nlist or default_nlist(n_docs)
        if nlist > n_docs:
            raise HardnegError(f"nlist {nlist} exceeds the corpus size {n_docs}")
        return {"nlist": nlist}
    if kind is Search.HNSW:
        return {"m": config.hnsw_m, "ef_construction": config.ef_construction}
    return {}


def _search_defaults(kind: Search, params: dict[str, int], config: SearchConfig) -> dict[str, int]:
    """Starting search parameters (tuning may raise them)."""
    refine = config.refine or (2 if kind is Search.IVF_SQ8 else 1)
    if kind in (Search.IVF, Search.IVF_SQ8):
        return {"nprobe": min(params["nlist"], config.nprobe or max(1, params["nlist"] // 64)), "refine": refine}
    if kind is Search.HNSW:
        return {"ef_search": config.ef_search or 64, "refine": refine}
    return {"refine": 1}


def _training_rows(n_docs: int, nlist: int, seed: int) -> np.ndarray:
    """A seeded, sorted sample of 50 rows per list (all rows for small corpora)."""
    return sample(n_docs, 50 * nlist, seed)


# ---- build + measure ----------------------------------------------------------------------------
def build_index(corpus: np.ndarray, queries: np.ndarray, depth: int,
                config: SearchConfig = SearchConfig()) -> tuple[AnnIndex, SearchInfo]:
    """Build an index of ``config.kind`` (AUTO resolved by corpus size; must be an index kind)
    and measure its recall@depth against exact search on a seeded sample of ``queries``.

    Use the real queries to be searched (or a sample of them): recall depends on the query
    distribution. Parameters not fixed in ``config`` are tuned on a second disjoint sample.
    """
    kind = resolve_kind(config.kind, corpus.shape[0], config.auto_threshold)
    start = time.perf_counter()
    index = AnnIndex.create(corpus, kind, config)
    built = time.perf_counter()
    info = SearchInfo(kind=kind.value, depth=int(depth), seed=config.seed, build_seconds=built - start)
    if kind in ANN_KINDS:
        _measure(index, queries, depth, config, info)
    info.params = dict(index.params)
    info.recall_seconds = time.perf_counter() - built
    return index, info


def _measure(index: AnnIndex, queries: np.ndarray, depth: int, config: SearchConfig, info: SearchInfo) -> None:
    """Tune the search parameter on one sample, then report recall on another."""
    eval_rows, tune_rows = _sample_rows(queries.shape[0], config.recall_sample, config.seed)
    k = min(int(depth), index.corpus.shape[0])
    if eval_rows.size == 0 or k == 0:
        return
    knob = "nprobe" if index.kind in (Search.IVF, Search.IVF_SQ8) else "ef_search"
    fixed = getattr(config, knob) is not None
    if not fixed:  # aim a little higher, so a fresh sample still meets the target despite sampling noise
        tune_q = np.ascontiguousarray(queries[tune_rows], dtype=np.float32)
        aim = min(1.0, config.target_recall + TUNING_MARGIN)
        _tune(index, knob, tune_q, exact_topk(tune_q, index.corpus, k)[0], k, aim)
        info.tuned = True
    eval_q = np.ascontiguousarray(queries[eval_rows], dtype=np.float32)
    found = index.search(eval_q, k)[0]
    info.recall_at_depth = round(recall_at_k(found, exact_topk(eval_q, index.corpus, k)[0]), 6)
    info.recall_sample = int(eval_rows.size)
    if info.recall_at_depth < config.target_recall:
        log.warning("%s search reaches recall@%d = %.3f < target %.2f (%s); raise nprobe/ef_search or use exact "
                    "search", index.kind.value, k, info.recall_at_depth, config.target_recall, index.params)


def _tune(index: AnnIndex, knob: str, queries: np.ndarray, truth: np.ndarray, k: int, target: float) -> None:
    """Set ``knob`` to about the smallest value whose recall@k on ``queries`` reaches ``target``.

    Doubles from the start value until the target is met (or the cap: best effort), then
    bisects three times between the last failing and the first passing value. Recall grows
    with nprobe / efSearch, and a smaller value is a faster search.
    """
    cap = index.params["nlist"] if knob == "nprobe" else max(1024, 16 * k)

    def reaches(value: int) -> bool:
        index.set_params(**{knob: value})
        return recall_at_k(index.search(queries, k)[0], truth) >= target

    lo, hi = 0, index.params[knob]  # lo fails (0: not tried), hi is being tried
    while not reaches(hi):
        if hi >= cap:
            return
        lo, hi = hi, min(cap, 2 * hi)
    for _ in range(3):
        mid = (lo + hi) // 2
        if mid <= lo:
            break
        if reaches(mid):
            hi = mid
        else:
            lo = mid
    index.set_params(**{knob: hi})


def _sample_rows(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (eval, tune) row samples of up to ``size`` each, disjoint when there are enough rows."""
    perm = np.random.default_rng(seed).permutation(n)
    eval_rows = np.sort(perm[:size])
    tune_rows = np.sort(perm[size : 2 * size])
    return eval_rows, (tune_rows if tune_rows.size else eval_rows)
