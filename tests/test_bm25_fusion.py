"""BM25 against an independent Lucene-formula computation; RRF on a hand-worked fixture."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from hardneg.retrieve.base import Ranking
from hardneg.retrieve.bm25 import BM25Config, BM25Retriever
from hardneg.retrieve.fusion import rrf

DOCS = ["apple banana apple", "banana cherry", "cherry cherry cherry date", "apple date fig grape",
        "fig fig banana"]


def lucene_bm25(query: str, docs: list[str], k1=1.2, b=0.75) -> np.ndarray:
    toks = [d.split() for d in docs]
    avgdl = sum(map(len, toks)) / len(toks)
    n = len(docs)
    out = np.zeros(n)
    for term in set(query.split()):
        df = sum(term in t for t in toks)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, t in enumerate(toks):
            tf = Counter(t)[term]
            out[i] += idf * tf / (tf + k1 * (1 - b + b * len(t) / avgdl))
    return out


@pytest.mark.parametrize("query", ["apple", "banana fig", "cherry date grape", "kiwi"])
def test_bm25_matches_lucene_formula(query):
    r = BM25Retriever([f"d{i}" for i in range(len(DOCS))], DOCS, BM25Config(stemmer=None, stopwords=None))
    expected = lucene_bm25(query, DOCS)
    got = r.score_docs(query, np.arange(len(DOCS)))
    assert np.allclose(got, expected, atol=1e-5)
    ranking = r.search(["q"], [query], k=10)
    assert ranking.k == len(DOCS)  # k larger than the corpus is capped
    order = sorted(range(len(DOCS)), key=lambda i: (-round(expected[i], 5), i))
    assert ranking.indices[0].tolist() == order
    assert np.allclose(ranking.scores[0], expected[order], atol=1e-5)


def test_bm25_default_uses_stemming_and_stopwords():
    r = BM25Retriever(["a", "b"], ["The cats are running", "A dog sleeps"])
    ranking = r.search(["q"], ["cat run"], k=2)
    assert ranking.row(0)[0][0] == "a" and ranking.row(0)[0][1] > 0
    assert r.score_docs("the are", np.array([0, 1])).tolist() == [0.0, 0.0]


def test_rrf_hand_worked():
    docs = ["a", "b", "c", "d"]
    r1 = Ranking(["q"], docs, np.array([[0, 1, 2]]), np.array([[3, 2, 1]], dtype=np.float32))
    r2 = Ranking(["q"], docs, np.array([[2, 0, 3]]), np.array([[9, 8, 7]], dtype=np.float32))
    fused = rrf([r1, r2], k=4, rrf_k=60)
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, d: 1/63
    assert [d for d, _ in fused.row(0)] == ["a", "c", "b", "d"]
    assert fused.scores[0, 0] == pytest.approx(1 / 61 + 1 / 62)
    assert fused.scores[0, 3] == pytest.approx(1 / 63)


def test_bm25_plus_prior_by_hand():
    """bm25 / top + w x prior over BM25's list and the prior's top documents, the same depth."""
    from hardneg.retrieve.prior import with_prior

    docs = ["a", "b", "c", "d"]
    ranking = Ranking(["q"], docs, np.array([[0, 1]]), np.array([[4.0, 2.0]], dtype=np.float32))
    prior = np.array([0.0, 0.1, 0.0, 0.9])
    # w = 1: a 1.0, b 0.5 + 0.1 = 0.6, d (prior only) 0.9 -> a, d at depth 2
    r = with_prior(ranking, prior, 1.0)
    assert [docs[i] for i in r.indices[0]] == ["a", "d"] and r.scores[0].tolist() == pytest.approx([1.0, 0.9])
    # w = 0: BM25's order, scores normalised by the top one
    r0 = with_prior(ranking, prior, 0.0)
    assert [docs[i] for i in r0.indices[0]] == ["a", "b"] and r0.scores[0].tolist() == pytest.approx([1.0, 0.5])
