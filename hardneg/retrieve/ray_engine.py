"""The Ray engine (``--engine ray``): encode the corpus and search it on a Ray cluster.

Use it when one machine is too slow to embed or search the corpus: encoding runs as a Ray
Data ``map_batches`` job over corpus shards (a pool of actors, each holding the model), and
search as one Ray task per corpus shard computing every query's exact top-k against its shard,
merged into the global top-k on the driver (:func:`merge_topk`). Everything else (scores of
positives, flags, the Parquet candidate set) is the local engine's code:
:class:`RayDenseRetriever` is a :class:`~hardneg.retrieve.dense.DenseRetriever` whose corpus
vectors and search come from Ray, plugged into :func:`hardneg.mine.mine_candidates` by
``MineConfig(engine="ray")``.

The candidate set equals the local engine's exact search: scores are float64 dot products
rounded to float32 (a function of the two vectors alone) and ties are broken by lower corpus
index, so sharding cannot change the order. Corpus vectors go through the same embedding cache,
under the same key. The Ray engine always searches exactly (``search`` exact or auto).

Ray is an optional extra (``pip install 'hardneg[ray]'``), imported only here and only when
used. ``ray.init`` connects to ``address``, else to ``$RAY_ADDRESS`` or a cluster started with
``ray start`` on this machine, else starts a local instance; an already initialised Ray is
used as it is. Every node needs hardneg installed and, unless the model is passed in memory,
the model folder at the same path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hardneg.encode import Encoder, EncoderConfig
from hardneg.errors import HardnegError
from hardneg.retrieve.base import Ranking
from hardneg.retrieve.dense import DenseRetriever, _shared_attr
from hardneg.retrieve.search import Search, _sort_rows, exact_topk

__all__ = ["RayDenseRetriever", "RayEngine", "encode_passages"]

ENGINES = ("local", "ray")
RAY_SEARCHES = ("exact", "auto")  # the Ray engine's search is exact, sharded
BATCHES_PER_ACTOR_CALL = 8  # texts per map_batches call = this x the encoding batch size


def import_ray():
    """``ray`` with Ray Data, or a HardnegError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is ray[data])
    except ImportError as e:
        raise HardnegError(f"--engine ray needs Ray Data, which is not installed ({e}); "
                           "install it with: pip install 'hardneg[ray]'") from None
    return ray


def connect(address: str | None = None):
    """The ``ray`` module, initialised: an initialised Ray is kept, else ``ray.init(address)``
    (None: ``$RAY_ADDRESS``, a local ``ray start`` cluster, or a new local instance)."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address)
    return ray


def check_options(engine: str, search: str, shards: int | None = None, actors: int | None = None) -> None:
    """Refuse an unknown engine, a non-exact search on Ray, a shard/actor count below 1, or the
    Ray engine without Ray installed (so a recipe fails before anything runs)."""
    if engine not in ENGINES:
        raise HardnegError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    for name, value in (("--ray-shards", shards), ("--ray-actors", actors)):
        if value is not None and value < 1:
            raise HardnegError(f"{name} must be >= 1, got {value}")
    if engine == "ray" and str(getattr(search, "value", search)) not in RAY_SEARCHES:
        raise HardnegError(f"--engine ray searches exactly (sharded top-k); --search {search} needs --engine local")
    if engine == "ray":
        import_ray()


@dataclass(frozen=True)
class RayEngine:
    """Where and how wide the Ray engine runs.

    ``shards``: corpus shards, for encoding and for search (None: one per CPU of the cluster).
    ``actors``: encoding actors, each holding a copy of the model (None: one per GPU when
    encoding on GPUs, else one per CPU; never more than ``shards``). ``gpus_per_actor`` None
    means 1 when the cluster has GPUs and the encoder's device is unset or CUDA, else 0.
    """

    address: str | None = None
    shards: int | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None

    def __post_init__(self) -> None:
        check_options("local", "exact", self.shards, self.actors)  # the counts (Ray is imported on use)

    def resolve(self, n_docs: int, device: str | None) -> tuple[int, int, float]:
        """(shards, actors, GPUs per actor) on the connected cluster for a corpus of ``n_docs``."""
        resources = connect(self.address).cluster_resources()
        cpus, gpus = max(1, int(resources.get("CPU", 1))), int(resources.get("GPU", 0))
        gpu = self.gpus_per_actor
        if gpu is None:
            gpu = 1.0 if gpus and (device is None or str(device).startswith("cuda")) else 0.0
        shards = max(1, min(self.shards or cpus, n_docs))
        actors = self.actors or (max(1, int(gpus // gpu)) if gpu else cpus)
        return shards, max(1, min(actors, shards)), gpu


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``[lo, hi)`` ranges covering ``range(n)``, sizes differing by at most 1."""
    shards = max(1, min(shards, n))
    edges = np.linspace(0, n, shards + 1).round().astype(int) if n else np.zeros(2, dtype=int)
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:])]


# ---- search: per-shard top-k, then a merge ------------------------------------------------------
def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The global top-k from per-shard top-k lists whose indices are already global.

    ``parts`` holds one ``(indices int64 (Q, k_s), scores float32 (Q, k_s))`` per shard. Rows
    are ordered by score descending, equal scores by lower corpus index: exactly the order of
    :func:`~hardneg.retrieve.search.exact_topk`, whatever the sharding. A shard's top-k under
    that total order holds every document of the global top-k that lies in the shard, so the
    merge of the shards' lists is the global list.
    """
    if not parts:
        raise HardnegError("merge_topk needs at least one shard's results")
    indices = np.concatenate([np.asarray(i, dtype=np.int64) for i, _ in parts], axis=1)  # (Q, sum k_s)
    scores = np.concatenate([np.asarray(s, dtype=np.float32) for _, s in parts], axis=1)
    return _sort_rows(indices, scores, min(k, indices.shape[1]))


def _shard_topk(queries: np.ndarray, shard: np.ndarray, offset: int, k: int, query_chunk: int,
                corpus_chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """A Ray task: exact top-k of every query within one corpus shard, with global indices."""
    indices, scores = exact_topk(queries, shard, k, query_chunk, corpus_chunk)
    return indices + offset, scores


# ---- encoding: Ray Data map_batches over corpus shards ------------------------------------------
class _EncodeBatch:
    """Ray Data UDF: holds one hardneg Encoder (no cache) and embeds passages batch by batch."""

    def __init__(self, config: "EncoderConfig", model: Any = None):
        if model is not None:
            import ray

            model = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        self.encoder = Encoder(config, model=model, cache=None)  # model None: loaded from config.model

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        return {"i": np.asarray(batch["i"], dtype=np.int64), "emb": self.encoder.encode_passages(texts)}


def encode_passages(encoder: "Encoder", texts: Sequence[str], engine: RayEngine = RayEngine(),
                    model: Any = None) -> np.ndarray:
    """Passage embeddings of ``texts`` computed on Ray, row i for ``texts[i]``, no cache.

    The same vectors as ``encoder.encode_passages(texts)`` (same prompt, max length,
    normalisation, storage dtype) when the model embeds a text independently of its batch
    (sentence-transformers does on CPU); else equal to float tolerance. The actors load the
    model from ``encoder.config.model`` (None: the bundled MiniLM), or use ``model`` (a
    SentenceTransformer or its ObjectRef), shipped through the object store.
    """
    import pandas as pd

    config, storage = encoder.config, np.float16 if encoder.config.float16 else np.float32
    texts = list(texts)
    if not texts:
        return np.zeros((0, encoder.dimension), dtype=storage)
    ray = connect(engine.address)
    shards, actors, gpus = engine.resolve(len(texts), config.device)
    frames = [pd.DataFrame({"i": np.arange(lo, hi, dtype=np.int64), "text": texts[lo:hi]})
              for lo, hi in shard_bounds(len(texts), shards)]
    if model is not None and not isinstance(model, ray.ObjectRef):
        model = ray.put(model)
    embedded = ray.data.from_pandas(frames).map_batches(
        _EncodeBatch, fn_constructor_kwargs={"config": config, "model": model}, batch_format="numpy",
        batch_size=config.batch_size * BATCHES_PER_ACTOR_CALL, compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1, num_gpus=gpus)
    out = np.empty((len(texts), encoder.dimension), dtype=storage)
    seen = np.zeros(len(texts), dtype=bool)
    for batch in embedded.iter_batches(batch_format="numpy", batch_size=None):
        out[batch["i"]] = batch["emb"]  # Ray Data may reorder batches: the index column puts rows back
        seen[batch["i"]] = True
    if not seen.all():
        raise HardnegError(f"the Ray encoding job returned {int(seen.sum())} of {len(texts)} passages")
    return out


class RayDenseRetriever(DenseRetriever):
    """A DenseRetriever whose corpus vectors are embedded on Ray and whose exact search is sharded.

    Same interface and same results as ``DenseRetriever(..., search="exact")``; queries are
    still embedded on the driver (one batch per mining run). Corpus vectors go through the
    encoder's cache under the local engine's key, so either engine reuses the other's vectors.
    ``model`` is an in-memory model (e.g. just fine-tuned) the actors use instead of loading
    ``encoder.config.model``.
    """

    _shards = _shared_attr("shards")  # [(ObjectRef of the shard's vectors, offset)], shared by the views

    def __init__(self, encoder: "Encoder", doc_ids: Sequence[str], doc_texts: Sequence[str], name: str = "dense",
                 engine: RayEngine = RayEngine(), model: Any = None, query_chunk: int = 1024,
                 corpus_chunk: int = 65536):
        super().__init__(encoder, doc_ids, doc_texts, name, Search.EXACT, query_chunk, corpus_chunk)
        self.engine, self.model = engine, model
        self._shards: list[tuple[Any, int]] | None = None
        self._task = None  # the remote _shard_topk, registered once

    @classmethod
    def from_dense(cls, dense: DenseRetriever, engine: RayEngine, model: Any = None) -> "RayDenseRetriever":
        """The Ray twin of a local DenseRetriever (same encoder, corpus, name and chunk sizes)."""
        return cls(dense.encoder, dense.doc_ids, dense.doc_texts, dense.name, engine, model, dense.query_chunk,
                   dense.corpus_chunk)

    @property
    def doc_embeddings(self) -> np.ndarray:
        """(N, dim) passage embeddings, from the cache or embedded on Ray; computed on first access."""
        if self._doc_embeddings is None:
            enc = self.encoder
            self._doc_embeddings = enc.encode_passages(
                list(self.doc_texts), run=lambda texts: encode_passages(enc, texts, self.engine, self.model))
        return self._doc_embeddings

    def reset(self) -> None:
        super().reset()
        self._shards = None

    def search_embeddings(self, query_ids: Sequence[str], query_embs: np.ndarray, k: int) -> Ranking:
        """Top-k for embedded queries: one Ray task per corpus shard, then :func:`merge_topk`."""
        start = time.perf_counter()
        embs = self.doc_embeddings
        n_queries, k = query_embs.shape[0], min(k, embs.shape[0])
        if n_queries == 0 or k == 0:
            indices, scores = exact_topk(query_embs, embs, k)  # nothing to distribute
        else:
            ray = connect(self.engine.address)
            if self._shards is None:
                shards, _, _ = self.engine.resolve(embs.shape[0], None)
                self._shards = [(ray.put(np.ascontiguousarray(embs[lo:hi])), lo)
                                for lo, hi in shard_bounds(embs.shape[0], shards)]
            if self._task is None:
                self._task = ray.remote(num_cpus=1)(_shard_topk)
            queries = ray.put(np.ascontiguousarray(query_embs))
            parts = ray.get([self._task.remote(queries, ref, lo, k, self.query_chunk, self.corpus_chunk)
                             for ref, lo in self._shards])
            indices, scores = merge_topk(parts, k)
        self.search_info.search_seconds += time.perf_counter() - start
        return Ranking([str(q) for q in query_ids], self.doc_ids, indices, scores)


def use_ray(retrievers: dict, engine: RayEngine, model: Any = None) -> dict:
    """Swap every dense retriever of ``build_retrievers``'s dict for its Ray twin (BM25 stays).

    Views of one DenseRetriever (:meth:`~hardneg.retrieve.dense.DenseRetriever.with_name`) become
    views of one twin. ``model`` is passed on to the twins (see :class:`RayDenseRetriever`).
    """
    twins: dict[int, RayDenseRetriever] = {}

    def twin(dense: DenseRetriever) -> RayDenseRetriever:
        key = id(dense._shared)  # one per encoder and set of vectors, whatever the views' names
        if key not in twins:
            twins[key] = RayDenseRetriever.from_dense(dense, engine, model)
        first = twins[key]
        return first if first.name == dense.name else first.with_name(dense.name)

    return {name: twin(r) if isinstance(r, DenseRetriever) else r for name, r in retrievers.items()}
