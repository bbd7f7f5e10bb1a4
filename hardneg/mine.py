"""Build a candidate set: retrieve the top-``depth`` documents per training query once, under
every scorer, and store ranks, scores and the flags selection needs ("score once, select many").

Use :func:`mine_candidates` once per (data, model) and then try as many selection policies as
you like with :func:`hardneg.select.select` on the stored ``candidates.parquet``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
import pandas as pd

from hardneg.candidates import CandidateSet, rank_col, score_col
from hardneg.data import Dataset, normalize_text
from hardneg.errors import HardnegError
from hardneg.retrieve import Kind, RetrieverSpec, build_retrievers
from hardneg.retrieve.base import Ranking
from hardneg.retrieve.dense import pair_scores
from hardneg.retrieve.fusion import rrf

DEFAULT_DEPTH = 200


@dataclass
class MineConfig:
    """What to retrieve: the retriever that proposes candidates, extra teachers that add score
    columns (and their own top-``depth`` candidates), and which scorer ranks / scores."""

    retriever: str = "dense"
    teachers: list[str] = field(default_factory=list)
    depth: int = DEFAULT_DEPTH
    rank_by: str | None = None
    score_by: str | None = None
    split: str = "train"

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise HardnegError(f"--depth must be >= 1, got {self.depth}")


def scorer_specs(config: MineConfig) -> tuple[list[RetrieverSpec], bool]:
    """Expand the retriever and teachers into plain scorers; True when ranks come from RRF."""
    specs = [RetrieverSpec.parse(s) for s in [config.retriever, *config.teachers]]
    fused = specs[0].kind is Kind.HYBRID
    out: list[RetrieverSpec] = []
    for spec in specs:
        if spec.kind is Kind.HYBRID:
            out += [RetrieverSpec(Kind.BM25, "bm25"), RetrieverSpec(Kind.DENSE, "dense", spec.model)]
        else:
            out.append(spec)
    unique = {s.name: s for s in reversed(out)}  # first mention wins, order kept
    return [unique[n] for n in dict.fromkeys(s.name for s in out)], fused


def mine_candidates(ds: Dataset, config: MineConfig = MineConfig(), encoder_config=None, cache=None,
                    model=None) -> CandidateSet:
    """Retrieve and score candidates for every query of ``config.split`` that has positives.

    Every known positive gets a row (also one ranked below ``depth``: its rank is null, its
    scores are still computed), so positive-aware filters never miss a positive.
    ``model`` optionally passes an already loaded SentenceTransformer for the dense scorer.
    """
    specs, fused = scorer_specs(config)
    positives = ds.positives(config.split)
    qids = list(positives)
    qtexts = [ds.queries[q] for q in qids]
    doc_texts = ds.doc_texts()
    retrievers = build_retrievers(specs, ds.doc_ids, doc_texts, encoder_config, cache=cache)
    if model is not None:
        _use_model(retrievers, model)
    rankings = {name: r.search(qids, qtexts, config.depth) for name, r in retrievers.items()}
    names = list(rankings)
    rank_by = config.rank_by or ("hybrid" if fused else names[0])
    if fused:
        rankings = {"hybrid": rrf([rankings["bm25"], rankings["dense"]], config.depth), **rankings}
    score_by = config.score_by or ("dense" if fused else names[0])
    _check_scorers(rank_by, score_by, list(rankings), fused)
    frame = _candidate_frame(ds, qids, positives, rankings)
    _add_scores(frame, ds, qids, qtexts, retrievers)
    if fused:
        frame[score_col("hybrid")] = np.nan  # rank-only scorer: RRF values are not relevance scores
    _add_flags(frame, ds, config.split, qids, positives, retrievers)
    meta = {
        "split": config.split, "depth": config.depth, "corpus_size": len(ds.doc_ids), "data": ds.source,
        "retriever": config.retriever, "teachers": list(config.teachers),
        "models": {n: _fingerprint(r) for n, r in retrievers.items() if _fingerprint(r)},
        "search": {n: getattr(getattr(r, "search_mode", None), "value", "bm25s") for n, r in retrievers.items()},
        "rank_only": ["hybrid"] if fused else [],
    }
    scorers = list(rankings)
    negative = {n: _can_be_negative(retrievers.get(n)) for n in scorers}
    return CandidateSet.from_frame(frame, scorers=scorers, rank_by=rank_by, score_by=score_by,
                                   negative_scores=negative, **meta)


def _check_scorers(rank_by: str, score_by: str, names: list[str], fused: bool) -> None:
    for opt, value in (("--rank-by", rank_by), ("--score-by", score_by)):
        if value not in names:
            raise HardnegError(f"{opt} '{value}' is not a scorer of this mine (have: {', '.join(names)})")
    if score_by == "hybrid":
        raise HardnegError("--score-by cannot be 'hybrid': an RRF value is not a relevance score; "
                           "use --score-by dense or bm25")


def _use_model(retrievers, model) -> None:
    from hardneg.encode import Encoder

    for r in retrievers.values():
        inner = getattr(r, "inner", r)
        if hasattr(inner, "encoder"):
            inner.encoder = Encoder(inner.encoder.config, model=model, cache=inner.encoder.cache)
            inner._doc_embeddings = None


def _fingerprint(retriever) -> str | None:
    encoder = getattr(getattr(retriever, "inner", retriever), "encoder", None)
    return encoder.fingerprint if encoder is not None else None


def _can_be_negative(retriever) -> bool:
    """Normalised cosines are bounded but may dip below 0 only for unrelated texts; BM25 is >= 0.
    Unnormalised dot products can be anything."""
    encoder = getattr(getattr(retriever, "inner", retriever), "encoder", None)
    return encoder is not None and not encoder.config.normalize


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
    pos_set = set(zip(pos_q, pos_d))
    frame["is_positive"] = [(q, d) in pos_set for q, d in zip(frame["qi"], frame["di"])]
    return frame


def _add_scores(frame: pd.DataFrame, ds: Dataset, qids, qtexts, retrievers) -> None:
    """Score every row under every scorer (also positives beyond the depth)."""
    qi, di = frame["qi"].to_numpy(), frame["di"].to_numpy()
    for name, r in retrievers.items():
        inner = getattr(r, "inner", r)
        scores = np.full(len(frame), np.nan, dtype=np.float32)
        if hasattr(inner, "score_pairs"):
            q_embs = inner.encoder.encode_queries(list(qtexts))  # a cache hit after the search
            for s in range(0, len(frame), 65536):  # chunks bound the gathered query vectors
                scores[s:s + 65536] = pair_scores(q_embs[qi[s:s + 65536]], inner.doc_embeddings, di[s:s + 65536])
        else:
            order = np.argsort(qi, kind="stable")
            bounds = np.searchsorted(qi[order], np.arange(len(qids) + 1))
            for q in range(len(qids)):
                rows = order[bounds[q]:bounds[q + 1]]
                scores[rows] = inner.score_docs(qtexts[q], di[rows])
        frame[score_col(name)] = scores
    frame["query_id"] = [qids[i] for i in qi]
    frame["doc_id"] = [ds.doc_ids[i] for i in di]


def _add_flags(frame: pd.DataFrame, ds: Dataset, split: str, qids, positives, retrievers) -> None:
    """Exact duplicates of a positive, the query text itself, judged negatives, cosine to positives."""
    norm_docs: dict[int, str] = {}

    def norm(i: int) -> str:
        if i not in norm_docs:
            norm_docs[i] = normalize_text(ds.doc_text(ds.doc_ids[i]))
        return norm_docs[i]

    pos_norm = {q: {norm(ds.doc_index(d)) for d in positives[q]} for q in qids}
    q_norm = {q: normalize_text(ds.queries[q]) for q in qids}
    known_neg = {(q, d) for q, ds_ in ds.known_negatives(split).items() for d in ds_}
    rows = zip(frame["query_id"], frame["di"], frame["doc_id"], frame["is_positive"])
    flags = [(not p and norm(i) in pos_norm[q], norm(i) == q_norm[q], (q, d) in known_neg) for q, i, d, p in rows]
    frame["dup_of_positive"], frame["is_query_text"], frame["is_known_negative"] = (
        np.array([f[k] for f in flags], dtype=bool) if flags else np.zeros(0, bool) for k in range(3))
    frame["pos_cosine"] = _pos_cosine(frame, ds, qids, positives, retrievers)
    del frame["qi"], frame["di"]


def _pos_cosine(frame: pd.DataFrame, ds: Dataset, qids, positives, retrievers) -> np.ndarray:
    """Max embedding cosine of each candidate to its query's positives (NaN without a dense scorer)."""
    dense = next((getattr(r, "inner", r) for r in retrievers.values()
                  if hasattr(getattr(r, "inner", r), "doc_embeddings")), None)
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
