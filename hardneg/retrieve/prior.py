"""BM25 plus a query-independent prior: how often a document is a train positive.

On collections whose positives concentrate on a few "hub" documents (NFCorpus: 22 documents are
positive for more than 5% of the train queries) the prior alone ranks well, and ``bm25+prior`` is a
free alternative a tuned model must beat. Use :func:`train_prior` for the prior, :func:`with_prior`
to re-rank a BM25 ranking with it, and :func:`choose_prior_weight` to pick the weight on dev.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from hardneg.data import Dataset
from hardneg.retrieve.base import Ranking

__all__: list[str] = []  # internal: used by hardneg.loop (run) and hardneg.compare (its bm25+prior row)

#: the weights of the prior tried on dev (0: BM25 normalised per query, the prior unused)
PRIOR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def train_prior(view: Dataset, doc_ids: Sequence[str] | None = None) -> np.ndarray:
    """Per document (``doc_ids`` order, default the corpus's) the share of train queries it is a positive of."""
    positives = view.positives("train")
    index = {d: i for i, d in enumerate(doc_ids if doc_ids is not None else view.doc_ids)}
    counts = np.zeros(len(index))
    for docs in positives.values():
        for d in set(docs):
            if d in index:
                counts[index[d]] += 1
    return counts / max(1, len(positives))


def with_prior(ranking: Ranking, prior: np.ndarray, w: float) -> Ranking:
    """Re-rank BM25's list and the prior's top documents by ``bm25 / top + w * prior`` (a document
    outside BM25's list scores 0 there); the same depth."""
    depth = ranking.indices.shape[1]
    top_prior = np.argsort(-prior, kind="stable")[:depth] if w > 0 else np.zeros(0, dtype=np.int64)
    indices, scores = [], []
    for i in range(len(ranking.query_ids)):
        top = float(ranking.scores[i, 0]) or 1.0
        bm = dict(zip(ranking.indices[i].tolist(), (ranking.scores[i] / top).tolist()))
        docs = list(dict.fromkeys([*ranking.indices[i].tolist(), *top_prior.tolist()]))
        s = np.array([bm.get(d, 0.0) + w * prior[d] for d in docs])
        order = np.argsort(-s, kind="stable")[:depth]
        indices.append(np.array(docs)[order])
        scores.append(s[order])
    return Ranking(list(ranking.query_ids), ranking.doc_ids, np.array(indices, dtype=np.int64),
                   np.array(scores, dtype=np.float32))


def choose_prior_weight(dev_bm25: Ranking, prior: np.ndarray, weights: Sequence[float],
                        dev_score: Callable[[Ranking], float]) -> tuple[float, dict[float, float]]:
    """The weight of ``weights`` whose re-ranked dev list scores best (``dev_score``, e.g. mean dev
    NDCG@10; the first, smallest, of equals) and every weight's dev score."""
    dev = {float(w): dev_score(with_prior(dev_bm25, prior, w)) for w in weights}
    return max(dev, key=lambda x: dev[x]), dev
