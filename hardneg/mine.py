"""Build a candidate set: retrieve the top-``depth`` documents per training query once, under
every scorer, and store ranks, scores and the flags selection needs ("score once, select many").

Use :func:`mine_candidates` once per (data, model) and then try as many selection policies as
you like with :func:`hardneg.select.select` on the stored ``candidates.parquet``.

Queries are mined in chunks (``MineConfig.query_chunk``): search, scores and flags of one chunk
at a time, so memory follows the chunk, not the query set. With a checkpoint folder every finished
chunk is stored (:mod:`hardneg.checkpoint`) and a killed run resumes; :func:`write_candidates`
streams the chunks straight into the Parquet file.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from hardneg import __version__
from hardneg.candidates import CandidateSet, CandidateWriter, Column, rank_col, score_col
from hardneg.checkpoint import CHECKPOINT_DIRNAME, MineCheckpoint, digest
from hardneg.chunking import ChunkConfig, ChunkedDataset, chunk_config, chunk_dataset
from hardneg.data import Dataset, normalize_text
from hardneg.encode import Encoder, EncoderConfig
from hardneg.encode.cache import texts_hash
from hardneg.errors import HardnegError
from hardneg.files import atomic_write_json
from hardneg.options import check, option
from hardneg.retrieve import Kind, RetrieverSpec, build_retrievers
from hardneg.retrieve.ann import SearchConfig
from hardneg.retrieve.base import DenseScorer, Ranking, Scorer
from hardneg.retrieve.fusion import HybridRetriever
from hardneg.retrieve.ray_engine import RayEngine, check_options, use_ray
from hardneg.retrieve.search import Search

__all__ = ["MineConfig", "mine_candidates", "mine_to_folder", "write_candidates"]

DEFAULT_DEPTH = 200
HYBRID = "hybrid"  #: the scorer name of the RRF ranks when the retriever is hybrid
#: MineConfig fields that pick where mining runs, not what it finds (left out of checkpoint fingerprints)
ENGINE_OPTIONS = ("engine", "ray_address", "ray_shards", "ray_actors")


@dataclass(frozen=True)
class MineConfig:
    """What to retrieve: the retriever that proposes candidates, extra teachers that add score
    columns (and their own top-``depth`` candidates), and which scorer ranks / scores.

    ``search`` picks how dense scorers search (exact | faiss | ivf | hnsw | ivf-sq8 | auto:
    exact below 200k passages, else IVF); ``nlist``/``nprobe``/``ef_search`` fix ANN parameters
    (unset: scaled to the corpus, or tuned on ``recall_sample`` queries to ``target_recall``).
    Queries are mined ``query_chunk`` at a time: the unit of memory and of checkpoints.
    ``engine`` "ray" embeds the corpus and searches it (exactly, sharded) on a Ray cluster at
    ``ray_address`` over ``ray_shards`` corpus shards with ``ray_actors`` model copies
    (:mod:`hardneg.retrieve.ray_engine`); the candidate set equals the local engine's exact one.
    ``chunk_tokens`` mines over chunks of at most that many of the model's tokens, neighbours
    sharing ``chunk_overlap`` (:mod:`hardneg.chunking`): candidates are chunks, with a
    ``parent_id`` column naming their document.
    """

    retriever: str = option("dense", "dense | bm25 | hybrid (RRF ranks; scores stay the scorers' own), as "
                                     "KIND[:NAME][=MODEL]; re-mining rounds use the new model.", path="specs")
    teachers: list[str] = option(factory=list, help="Extra scorers adding rank/score columns, e.g. bm25 or "
                                                    "dense:e5=PATH; repeatable.", cli="--teacher", path="specs")
    depth: int = option(DEFAULT_DEPTH, "Candidates retrieved per query and scorer.", ge=1)
    rank_by: str | None = option(None, "Set from the policy's rank_by.", cli=False, recipe=False)
    score_by: str | None = option(None, "Set from the policy's score_by.", cli=False, recipe=False)
    split: str = option("train", "Split whose queries get negatives (and whose pairs train).")
    search: str = option("auto", "Dense search: exact | faiss | ivf | hnsw | ivf-sq8 | auto (exact below 200k "
                                 "passages, else ivf). ANN recall@depth is measured against exact search on a "
                                 "query sample and stored in the candidates' metadata.")
    nlist: int | None = option(None, "IVF lists; none: ~4 sqrt(corpus size).", ge=1)
    nprobe: int | None = option(None, "IVF lists searched; none: tuned to target_recall on a query sample.", ge=1)
    ef_search: int | None = option(None, "HNSW efSearch; none: tuned likewise.", ge=1)
    recall_sample: int = option(200, "Queries sampled (seeded) to measure ANN recall@depth against exact search; "
                                     "as many again tune nprobe / ef_search.", ge=1)
    target_recall: float = option(0.95, "The recall@depth that nprobe / ef_search tuning aims for.", gt=0, le=1)
    query_chunk: int = option(4096, "Queries mined per chunk: the unit of memory and of checkpoints "
                                    "(OUT/.mine-checkpoint; a rerun resumes).", ge=1)
    engine: str = option("local", "Where encoding and search run: local | ray (a Ray Data job embeds corpus "
                                  "shards, Ray tasks search them exactly, top-k merged: the local engine's exact "
                                  "candidates; needs pip install 'hardneg[ray]').")
    ray_address: str | None = option(None, "Ray cluster of engine ray; none: $RAY_ADDRESS, a `ray start` cluster "
                                           "here, else a new local Ray.")
    ray_shards: int | None = option(None, "Corpus shards of engine ray; none: one per CPU of the cluster.")
    ray_actors: int | None = option(None, "Encoding actors (model copies) of engine ray; none: one per GPU, else "
                                          "one per CPU.")
    chunk_tokens: int | None = option(None, "Split documents longer than this many tokens of the model's tokenizer "
                                            "(title included, repeated in every chunk) into chunks; none: off. "
                                            "Keep it within the model's max length minus its special tokens.")
    chunk_overlap: int = option(0, "Tokens a chunk repeats from the end of the one before (with chunk_tokens; "
                                   "10-20% of it keeps a passage cut at a boundary whole).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "teachers", list(self.teachers))
        chunk_config(self.chunk_tokens, self.chunk_overlap)  # validates them
        check(self)
        self.search_config()  # validates the search options
        check_options(self.engine, self.search, self.ray_shards, self.ray_actors)
        scorer_specs(self)  # validates the retriever and teachers (kinds, plain names)

    def for_policy(self, policy: Any) -> "MineConfig":
        """This config ranking and scoring as ``policy`` does (what ``hardneg mine`` mines for), refusing
        a policy these scorers cannot serve before anything is mined: ``near_dup`` needs a dense scorer."""
        if policy.near_dup_cosine is not None and all(s.kind is Kind.BM25 for s in scorer_specs(self)[0]):
            raise HardnegError("--near-dup needs embeddings: with BM25 alone it would drop nothing; mine with "
                               "a dense or hybrid retriever or a dense --teacher")
        return replace(self, rank_by=policy.rank_by, score_by=policy.score_by)

    def search_config(self) -> SearchConfig:
        """The dense scorers' search settings."""
        return SearchConfig(kind=self.search, nlist=self.nlist, nprobe=self.nprobe, ef_search=self.ef_search,
                            recall_sample=self.recall_sample, target_recall=self.target_recall)


def scorer_specs(config: MineConfig) -> tuple[list[RetrieverSpec], list[str]]:
    """Expand the retriever and teachers into plain scorers, and name the scorers whose RRF gives
    the ranks (the hybrid retriever's parts; empty unless the retriever is hybrid)."""
    specs = [RetrieverSpec.parse(s) for s in [config.retriever, *config.teachers]]
    out = [part for spec in specs for part in _parts(spec)]
    fused = [part.name for part in _parts(specs[0])] if specs[0].kind is Kind.HYBRID else []
    unique = {s.name: s for s in reversed(out)}  # first mention wins, order kept
    return [unique[n] for n in dict.fromkeys(s.name for s in out)], fused


def _parts(spec: RetrieverSpec) -> list[RetrieverSpec]:
    """The plain scorers behind a spec: a hybrid's are BM25 and its dense model, as ``build_retrievers`` fuses."""
    if spec.kind is not Kind.HYBRID:
        return [spec]
    return [RetrieverSpec(Kind.BM25, "bm25"), RetrieverSpec(Kind.DENSE, "dense", spec.model)]


@dataclass
class _Job:
    """Everything one mining run shares between its query chunks."""

    ds: Dataset
    config: MineConfig
    qids: list[str]
    qtexts: list[str]
    positives: dict[str, list[str]]
    retrievers: dict[str, Scorer]
    hybrid: HybridRetriever | None  # fuses some of ``retrievers`` into the HYBRID ranks
    doc_texts: list[str]
    query_embs: dict[str, np.ndarray] = field(default_factory=dict)  # dense scorer -> (Q, dim)
    meta: dict = field(default_factory=dict)

    def chunks(self) -> list[tuple[int, int]]:
        n, step = len(self.qids), self.config.query_chunk
        return [(lo, min(lo + step, n)) for lo in range(0, n, step)] or [(0, 0)]


def mine_candidates(ds: Dataset, config: MineConfig | None = None, encoder_config=None, cache=None,
                    model=None, *, checkpoint_dir: str | Path | None = None, restart: bool = False,
                    progress: Callable[[int, int], None] | None = None,
                    doc_texts: Sequence[str] | None = None) -> CandidateSet:
    """Retrieve and score candidates for every query of ``config.split`` that has positives.

    Every known positive gets a row (also one ranked below ``depth``: its rank is null, its
    scores are still computed), so positive-aware filters never miss a positive.
    ``model`` optionally passes an already loaded SentenceTransformer for the dense scorer, or an
    :class:`~hardneg.encode.Encoder` (its loaded model and fingerprint are then shared, e.g. by
    ``hardneg run``, which keeps one encoder per model). ``doc_texts`` is ``ds.doc_texts()`` when
    the caller holds it already: the same list across calls lets the run hash the corpus once.

    Queries are mined ``config.query_chunk`` at a time. With ``checkpoint_dir`` each finished
    chunk (and any ANN index) is stored there, and a rerun of the same mining resumes from the
    last complete chunk with a byte-identical result; a checkpoint of different inputs is
    refused unless ``restart``. ``progress(done, total)`` is called after each chunk.
    ``result.run`` holds what varies between runs: search timings, resumed chunks.
    """
    job, store, infos = _start(ds, config or MineConfig(), encoder_config, cache, model, checkpoint_dir, restart, doc_texts)
    parts = [chunk.table for chunk in _iter_chunks(job, store, progress)]
    table = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    cands = CandidateSet(table, job.meta)
    cands.validate()
    cands.run = {"search": {n: i.timings() for n, i in infos.items()},
                 "resumed_chunks": store.resumed if store else 0, "chunks": len(job.chunks())}
    return cands


def write_candidates(ds: Dataset, path: str | Path, config: MineConfig | None = None, encoder_config=None,
                     cache=None, model=None, *, checkpoint_dir: str | Path | None = None, restart: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Like :func:`mine_candidates`, but stream each chunk into ``path`` and return the metadata.

    Use it for query sets too big to hold as one candidate table: memory stays at one chunk.
    The file is byte-identical to ``mine_candidates(...).write(path)``.
    """
    job, store, _ = _start(ds, config or MineConfig(), encoder_config, cache, model, checkpoint_dir, restart)
    with CandidateWriter(path, job.meta) as writer:
        for chunk in _iter_chunks(job, store, progress):
            writer.append(chunk.table)
    return dict(job.meta)


def _start(ds, config, encoder_config, cache, model, checkpoint_dir, restart, doc_texts=None):
    """The job, its checkpoint (or None) and the dense scorers' SearchInfo, indexes ready."""
    job = _job(ds, config, encoder_config, cache, model, doc_texts)
    store = None
    if checkpoint_dir is not None:
        store = MineCheckpoint(checkpoint_dir, _fingerprint_inputs(job, encoder_config), len(job.chunks()), restart)
    return job, store, _prepare_search(job, store)


def _job(ds: Dataset, config: MineConfig, encoder_config, cache, model, doc_texts=None) -> _Job:
    """Build the retrievers and the metadata; check the scorers before any heavy work."""
    given = ds
    ds = chunked_for(ds, config, encoder_config)
    specs, fused = scorer_specs(config)
    positives = ds.positives(config.split)
    qids = list(positives)
    if doc_texts is None or ds is not given or len(doc_texts) != len(ds.doc_ids):
        doc_texts = ds.doc_texts()
    retrievers = build_retrievers(specs, ds.doc_ids, doc_texts, encoder_config, cache=cache,
                                  search=config.search_config())
    if model is not None:
        _use_model(retrievers, model)
    if config.engine == "ray":
        retrievers = use_ray(retrievers, RayEngine(config.ray_address, config.ray_shards, config.ray_actors),
                             _in_memory(model))
    for name, r in retrievers.items():
        if not isinstance(r, Scorer):
            raise HardnegError(f"retriever '{name}' cannot score given pairs (no score_docs): it cannot be mined")
    hybrid = HybridRetriever([retrievers[n] for n in fused], name=HYBRID) if fused else None
    names = ([HYBRID] if hybrid is not None else []) + list(retrievers)
    rank_by = config.rank_by or (HYBRID if hybrid is not None else names[0])
    score_by = config.score_by or (_fused_score_by(hybrid) if hybrid is not None else names[0])
    _check_scorers(rank_by, score_by, names)
    job = _Job(ds, config, qids, [ds.queries[q] for q in qids], positives, retrievers, hybrid, doc_texts)
    job.meta = {
        "scorers": names, "rank_by": rank_by, "score_by": score_by,
        "negative_scores": {n: n != HYBRID and _can_be_negative(retrievers.get(n)) for n in names},
        "split": config.split, "depth": config.depth, "corpus_size": len(ds.doc_ids), "data": ds.source,
        "retriever": config.retriever, "teachers": list(config.teachers),
        "models": {n: _fingerprint(r) for n, r in retrievers.items() if _fingerprint(r)},
        "rank_only": [HYBRID] if hybrid is not None else [],
        "corpus": corpus_digest(ds.doc_ids, doc_texts),
    }
    if getattr(ds, "chunking", None):
        job.meta["chunks"] = dict(ds.chunking)
    return job


def chunked_for(ds: Dataset, config: MineConfig, encoder_config) -> Dataset:
    """``ds`` chunked as ``config`` asks (as given when it is chunked that way already)."""
    if config.chunk_tokens is None:
        return ds
    if isinstance(ds, ChunkedDataset):
        have = (ds.chunking.get("max_tokens"), ds.chunking.get("overlap"))
        if have != (config.chunk_tokens, config.chunk_overlap):
            raise HardnegError(f"the dataset is chunked with {have[0]} tokens, overlap {have[1]}, but the mine "
                               f"config asks for {config.chunk_tokens}, overlap {config.chunk_overlap}")
        return ds
    model = encoder_config.model if encoder_config is not None else None
    max_length = encoder_config.passage_max_length if encoder_config is not None else None
    return chunk_dataset(ds, ChunkConfig(config.chunk_tokens, config.chunk_overlap, model), max_length=max_length)


def chunked_with_note(ds: Dataset, config: MineConfig, encoder_config) -> tuple[Dataset, str | None]:
    """:func:`chunked_for`, with the line a command prints when it chunked (None when it did not)."""
    chunked = chunked_for(ds, config, encoder_config)
    if chunked is ds:
        return ds, None
    info = chunked.chunking
    return chunked, (f"chunked {info['documents_split']} of {info['documents']} documents longer than "
                     f"{config.chunk_tokens} tokens (overlap {config.chunk_overlap}): {info['chunks']} chunks")


def _fused_score_by(hybrid: HybridRetriever) -> str:
    """The default ``score_by`` of a fused mine: its first dense part (RRF values are no scores)."""
    return next((r.name for r in hybrid.scorers if isinstance(r, DenseScorer)), hybrid.scorers[0].name)


def _prepare_search(job: _Job, store: MineCheckpoint | None) -> dict:
    """Embed all queries once per dense scorer and build (or load) their indexes; record the search."""
    infos, search_meta = {}, {}
    for name, dense in job.retrievers.items():
        if not isinstance(dense, DenseScorer):
            search_meta[name] = {"kind": "bm25s"}
            continue
        job.query_embs[name] = dense.encoder.encode_queries(job.qtexts) if job.qtexts else \
            np.zeros((0, dense.encoder.dimension), dtype=np.float32)
        index_path = store.index_path(name) if store is not None else None
        if job.qtexts:
            dense.prepare(job.query_embs[name], job.config.depth, index_path)
        infos[name] = dense.search_info
        search_meta[name] = dense.search_info.to_meta()
    job.meta["search"] = search_meta
    return infos


def _iter_chunks(job: _Job, store: MineCheckpoint | None, progress) -> Iterator[CandidateSet]:
    """Each query chunk's candidates, from the checkpoint when stored there, else mined (and stored)."""
    chunks = job.chunks()
    for i, (lo, hi) in enumerate(chunks):
        if store is not None and store.has(i):
            table = store.load(i)
        else:
            table = _mine_chunk(job, lo, hi).table
            if store is not None:
                store.save(i, table)
        if progress is not None:
            progress(i + 1, len(chunks))
        yield CandidateSet(table, job.meta)


def _mine_chunk(job: _Job, lo: int, hi: int) -> CandidateSet:
    """Search, score and flag the queries ``lo:hi``; a validated CandidateSet of them."""
    ds, depth = job.ds, job.config.depth
    qids, qtexts = job.qids[lo:hi], job.qtexts[lo:hi]
    q_embs = {n: e[lo:hi] for n, e in job.query_embs.items()}
    rankings = {}
    for name, r in job.retrievers.items():
        rankings[name] = (r.search_embeddings(qids, q_embs[name], depth) if isinstance(r, DenseScorer)
                          else r.search(qids, qtexts, depth))
    if job.hybrid is not None:
        fused = job.hybrid.fuse([rankings[r.name] for r in job.hybrid.scorers], depth)
        rankings = {HYBRID: fused, **rankings}
    frame = _candidate_frame(ds, qids, job.positives, rankings)
    _add_scores(frame, ds, qids, qtexts, job.retrievers, q_embs, rankings)
    if job.hybrid is not None:
        frame[score_col(HYBRID)] = np.nan  # rank-only scorer: RRF values are not relevance scores
    _add_flags(frame, ds, job.config.split, qids, job.positives, job.retrievers)
    if getattr(ds, "parent", None):  # a ChunkedDataset: each chunk's document
        frame[Column.PARENT_ID] = frame["doc_id"].map(ds.parent)
    meta = {k: v for k, v in job.meta.items() if k not in ("scorers", "rank_by", "score_by", "negative_scores")}
    return CandidateSet.from_frame(frame, scorers=job.meta["scorers"], rank_by=job.meta["rank_by"],
                                   score_by=job.meta["score_by"], negative_scores=job.meta["negative_scores"], **meta)


def corpus_digest(doc_ids: Sequence[str], doc_texts: Sequence[str]) -> str:
    """The corpus (ids and texts, in order) a candidate set was mined over: recorded in its metadata
    as ``corpus``, so that selecting from it with another corpus under the same ids is refused."""
    return digest([texts_hash(doc_ids), texts_hash(doc_texts)])


def dataset_digest(ds: Dataset, doc_ids: Sequence[str], doc_texts: Sequence[str]) -> str:
    """The corpus (``doc_ids`` and ``doc_texts``: the documents' or the chunks'), the queries and the
    qrels of ``ds`` as one hash: what decides a run's or a comparison's files, besides the recipe."""
    return digest([texts_hash(doc_ids), texts_hash(doc_texts), texts_hash(list(ds.queries)),
                   texts_hash(list(ds.queries.values())), ds.qrels])


def same_corpus(ds: Dataset, meta: dict) -> Dataset:
    """``ds`` when it holds the corpus ``meta["corpus"]`` records (or the metadata predates it);
    else a :class:`HardnegError`: negatives chosen on other texts would be exported with these."""
    if "corpus" in meta and corpus_digest(ds.doc_ids, ds.doc_texts()) != meta["corpus"]:
        raise HardnegError(f"--data: {ds.source}: the corpus differs from the one these candidates were mined on "
                           f"(same ids, other texts or order): mine again")
    return ds


def _fingerprint_inputs(job: _Job, encoder_config) -> dict[str, str]:
    """Hashes of everything that decides the candidates, by component (named when one changes)."""
    ds, split = job.ds, job.config.split
    labels = {"positives": job.positives, "known_negatives": ds.known_negatives(split)}
    return {
        "corpus": job.meta["corpus"],
        "queries": digest([texts_hash(job.qids), texts_hash(job.qtexts)]),
        "labels": digest(labels),
        "mine options": digest({k: v for k, v in asdict(job.config).items() if k not in ENGINE_OPTIONS}),
        "encoder options": digest(asdict(encoder_config or EncoderConfig())),
        "models": digest(job.meta["models"]),
        "hardneg": __version__,
    }


def _check_scorers(rank_by: str, score_by: str, names: list[str]) -> None:
    for opt, value in (("--rank-by", rank_by), ("--score-by", score_by)):
        if value not in names:
            raise HardnegError(f"{opt} '{value}' is not a scorer of this mine (have: {', '.join(names)})")
    if score_by == HYBRID:
        raise HardnegError("--score-by cannot be 'hybrid': an RRF value is not a relevance score; "
                           "use --score-by dense or bm25")


def _use_model(retrievers, model) -> None:
    """Give the dense scorers ``model``: a SentenceTransformer (wrapped in one new Encoder) or an
    Encoder (shared as it is: one loaded model, one fingerprint)."""
    shared = None
    for r in retrievers.values():
        if isinstance(r, DenseScorer):
            if shared is None:
                shared = model if isinstance(model, Encoder) else Encoder(r.encoder.config, model=model,
                                                                           cache=r.encoder.cache)
            r.encoder = shared
            r.reset()


def _in_memory(model):
    """The SentenceTransformer behind ``model`` for engines that copy it (None: they load the folder)."""
    if isinstance(model, Encoder):
        return model.model if (model.loaded or model.folder is None) else None
    return model


def _fingerprint(retriever: Scorer) -> str | None:
    return retriever.encoder.fingerprint if isinstance(retriever, DenseScorer) else None


def _can_be_negative(retriever: Scorer | None) -> bool:
    """Normalised cosines are bounded but may dip below 0 only for unrelated texts; BM25 is >= 0.
    Unnormalised dot products can be anything."""
    return isinstance(retriever, DenseScorer) and not retriever.encoder.config.normalize


def _candidate_frame(ds: Dataset, qids: list[str], positives: dict[str, list[str]],
                     rankings: dict[str, Ranking]) -> pd.DataFrame:
    """One row per (query, doc) in the union of all scorers' top-depth lists and the positives."""
    n_q = len(qids)
    parts = []
    for name, r in rankings.items():
        k = r.k
        parts.append(pd.DataFrame({
            "qi": np.repeat(np.arange(n_q), k), "di": r.indices.reshape(-1),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n_q), "scorer": name,
        }))
    hits = pd.concat(parts, ignore_index=True)
    pos_q = [i for i, q in enumerate(qids) for _ in positives[q]]
    pos_d = [ds.doc_index(d) for q in qids for d in positives[q]]
    pairs = pd.concat([hits[["qi", "di"]], pd.DataFrame({"qi": pos_q, "di": pos_d})]).drop_duplicates()
    frame = pairs.reset_index(drop=True)
    for name in rankings:
        ranks = hits[hits["scorer"] == name].set_index(["qi", "di"])["rank"]
        frame[rank_col(name)] = pd.array(
            ranks.reindex(pd.MultiIndex.from_frame(frame[["qi", "di"]])).to_numpy(), dtype="Int32")
    first = hits.sort_values(["qi", "rank"], kind="stable").drop_duplicates(["qi", "di"])
    frame = frame.merge(first[["qi", "di", "scorer"]].rename(columns={"scorer": "source"}), how="left", on=["qi", "di"])
    frame["source"] = frame["source"].fillna("qrels")
    n_docs = len(ds.doc_ids)
    pos_keys = np.asarray(pos_q, np.int64) * n_docs + np.asarray(pos_d, np.int64)
    frame["is_positive"] = np.isin(frame["qi"].to_numpy(np.int64) * n_docs + frame["di"].to_numpy(np.int64), pos_keys)
    return frame


def _add_scores(frame: pd.DataFrame, ds: Dataset, qids, qtexts, retrievers, query_embs,
                rankings: dict[str, Ranking] | None = None) -> None:
    """Score every row under every scorer (also positives beyond the depth). Rows an exact dense
    search ranked take the score it reported (``score_pairs``, i.e.
    :func:`~hardneg.retrieve.search.pair_scores`, gives the same value: both are float64 dot products
    rounded to float32); the others are scored."""
    qi, di = frame["qi"].to_numpy(), frame["di"].to_numpy()
    for name, r in retrievers.items():
        scores = np.full(len(frame), np.nan, dtype=np.float32)
        if isinstance(r, DenseScorer):
            q_embs = query_embs[name]
            todo = np.arange(len(frame))
            ranking = (rankings or {}).get(name)
            if ranking is not None and r.search_mode is Search.EXACT:
                rank = frame[rank_col(name)].to_numpy(np.int64, na_value=0)
                ranked = rank > 0
                scores[ranked] = ranking.scores[qi[ranked], rank[ranked] - 1]
                todo = np.flatnonzero(~ranked)
            for s in range(0, len(todo), 65536):  # chunks bound the gathered query vectors
                rows = todo[s:s + 65536]
                scores[rows] = r.score_pairs(q_embs[qi[rows]], di[rows])
        else:
            order = np.argsort(qi, kind="stable")
            bounds = np.searchsorted(qi[order], np.arange(len(qids) + 1))
            for q in range(len(qids)):
                rows = order[bounds[q]:bounds[q + 1]]
                scores[rows] = r.score_docs(qtexts[q], di[rows])
        frame[score_col(name)] = scores
    frame["query_id"] = np.asarray(qids, dtype=object)[qi] if len(qi) else np.zeros(0, object)
    frame["doc_id"] = np.asarray(ds.doc_ids, dtype=object)[di] if len(di) else np.zeros(0, object)


def _add_flags(frame: pd.DataFrame, ds: Dataset, split: str, qids, positives, retrievers) -> None:
    """Exact duplicates of a positive, the query text itself, judged negatives, cosine to positives.

    Each distinct normalised text (of the documents the rows touch) gets a code, so the flags
    are array lookups: a row duplicates a positive when its document's code is one of its
    query's positives' codes, and is the query text when the code is the query's own.
    """
    qi, di = frame["qi"].to_numpy(np.int64), frame["di"].to_numpy(np.int64)
    is_pos = frame["is_positive"].to_numpy(bool)
    codes: dict[str, int] = {}
    doc_code = np.full(len(ds.doc_ids), -1, np.int64)
    pos_q = np.asarray([i for i, q in enumerate(qids) for _ in positives[q]], np.int64)
    pos_d = np.asarray([ds.doc_index(d) for q in qids for d in positives[q]], np.int64)
    for i in np.unique(np.r_[di, pos_d]).tolist():
        doc_code[i] = codes.setdefault(normalize_text(ds.doc_text(ds.doc_ids[i])), len(codes))
    q_code = np.asarray([codes.get(normalize_text(ds.queries[q]), -2) for q in qids], np.int64)
    n_codes = max(len(codes), 1)
    pos_keys = pos_q * n_codes + doc_code[pos_d]
    frame["dup_of_positive"] = ~is_pos & np.isin(qi * n_codes + doc_code[di], pos_keys)
    frame["is_query_text"] = doc_code[di] == q_code[qi] if len(qi) else np.zeros(0, bool)
    where = {q: i for i, q in enumerate(qids)}
    n_docs = len(ds.doc_ids)
    neg_keys = np.asarray([where[q] * n_docs + ds.doc_index(d) for q, docs in ds.known_negatives(split).items()
                           if q in where for d in docs if _has_doc(ds, d)], np.int64)
    frame["is_known_negative"] = np.isin(qi * n_docs + di, neg_keys)
    frame["pos_cosine"] = _pos_cosine(frame, ds, qids, positives, retrievers)
    del frame["qi"], frame["di"]


def _has_doc(ds: Dataset, doc_id: str) -> bool:
    try:
        ds.doc_index(doc_id)
    except KeyError:
        return False
    return True


def _pos_cosine(frame: pd.DataFrame, ds: Dataset, qids, positives, retrievers) -> np.ndarray:
    """Max embedding cosine of each candidate to its query's positives (NaN without a dense scorer)."""
    dense = next((r for r in retrievers.values() if isinstance(r, DenseScorer)), None)
    out = np.full(len(frame), np.nan, dtype=np.float32)
    if dense is None:
        return out
    embs = dense.doc_embeddings
    qi, di = frame["qi"].to_numpy(), frame["di"].to_numpy()
    order = np.argsort(qi, kind="stable")
    bounds = np.searchsorted(qi[order], np.arange(len(qids) + 1))
    for q, qid in enumerate(qids):
        rows = order[bounds[q]:bounds[q + 1]]
        pos = embs[[ds.doc_index(d) for d in positives[qid]]]
        out[rows] = (np.asarray(embs[di[rows]], dtype=np.float32) @ np.asarray(pos, dtype=np.float32).T).max(axis=1)
    return out


def mine_to_folder(ds: Dataset, out: str | Path, config: MineConfig | None = None, encoder_config=None,
                   cache=None, *, restart: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> CandidateSet:
    """Mine into ``OUT/candidates.parquet``, checkpointing each query chunk in ``OUT/.mine-checkpoint``.

    What ``hardneg mine`` runs: a killed run rerun with the same inputs resumes from its last
    complete chunk (a checkpoint of other inputs is refused unless ``restart``); the
    checkpoint is removed once the candidates are written. With a dense scorer,
    ``OUT/search.json`` records each one's search (:func:`search_report`).
    """
    ckpt = Path(out) / CHECKPOINT_DIRNAME
    cands = mine_candidates(ds, config, encoder_config, cache=cache, checkpoint_dir=ckpt, restart=restart,
                            progress=progress)
    cands.write(Path(out) / "candidates.parquet")
    shutil.rmtree(ckpt, ignore_errors=True)
    searches = search_report(cands)
    if searches:
        atomic_write_json(Path(out) / "search.json", searches)
    return cands


def chunk_progress(out: str | Path, say: Callable[[str], None]) -> Callable[[int, int], None]:
    """A ``progress`` for :func:`mine_to_folder`: ``say`` a line per query chunk mined (when there are several)."""

    def progress(done: int, total: int) -> None:
        if total > 1:
            say(f"query chunk {done}/{total} mined (checkpoint: {Path(out) / CHECKPOINT_DIRNAME})")

    return progress


def mined_summary(cands: CandidateSet, out: str | Path, seconds: float) -> list[str]:
    """What ``hardneg mine`` prints once mined: resumed chunks, each search, the rows."""
    run = cands.run or {}
    lines = [f"resumed {run['resumed_chunks']} of {run['chunks']} query chunks"] if run.get("resumed_chunks") else []
    return lines + format_search(search_report(cands)) + [
        f"mined {len(cands.table)} candidate rows for {cands.table['query_id'].nunique()} queries "
        f"in {seconds:.1f}s -> {Path(out) / 'candidates.parquet'}"]


def search_report(cands: CandidateSet) -> dict[str, dict]:
    """Each dense scorer's search: kind, parameters, measured recall@depth and seconds."""
    run = cands.run.get("search", {}) if cands.run else {}
    return {n: s | run.get(n, {}) for n, s in cands.meta.get("search", {}).items() if s.get("kind") != "bm25s"}


def format_search(searches: dict[str, dict]) -> list[str]:
    """One line per dense scorer of :func:`search_report`: kind (params), measured recall, seconds."""
    lines = []
    for name, s in searches.items():
        recall = (f", recall@{s['depth']} {s['recall_at_depth']:.3f} on {s['recall_sample']} sampled queries"
                  if s.get("recall_at_depth") is not None else "")
        params = ", ".join(f"{k}={v}" for k, v in s.get("params", {}).items())
        built = (f"build {s.get('build_seconds', 0):.1f}s, recall check {s.get('recall_seconds', 0):.1f}s, "
                 if s["kind"] not in ("exact", "auto") else "")
        lines.append(f"search {name}: {s['kind']}{f' ({params})' if params else ''}{recall}; {built}"
                     f"search {s.get('search_seconds', 0):.1f}s")
    return lines
