"""What mining uses of a retriever is declared (``Scorer`` / ``DenseScorer``) and each retriever meets it;
retrievers are named at construction; fusion takes any retrievers, not only BM25 + dense."""
from __future__ import annotations

import numpy as np
import pytest

from hardneg.encode import EncoderConfig
from hardneg.errors import HardnegError
from hardneg.retrieve import DenseScorer, Ranking, Retriever, Scorer, build_retrievers
from hardneg.retrieve.bm25 import BM25Retriever
from hardneg.retrieve.fusion import HybridRetriever, rrf

IDS = ["d0", "d1", "d2", "d3", "d4"]
DOCS = ["cats purr on warm laps", "dogs bark at the mailman", "the stock market fell sharply",
        "a cat and a dog became friends", "interest rates rise again"]


class Reversed:
    """A tiny custom scorer: prefers higher document positions (score = position)."""

    def __init__(self, n_docs: int, name: str = "reversed"):
        self.name, self.n_docs = name, n_docs

    def search(self, query_ids, query_texts, k) -> Ranking:
        k = min(k, self.n_docs)
        idx = np.tile(np.arange(self.n_docs - 1, self.n_docs - 1 - k, -1, dtype=np.int64), (len(query_ids), 1))
        return Ranking(list(query_ids), IDS, idx, idx.astype(np.float32))

    def score_docs(self, query_text, doc_indices) -> np.ndarray:
        return np.asarray(doc_indices, dtype=np.float32)


def test_each_retriever_satisfies_its_protocol_without_embedding(tiny_model_dir, tmp_path):
    rs = build_retrievers(["bm25", "bm25:lex", "dense", "dense:again", "hybrid"], IDS, DOCS,
                          EncoderConfig(model=str(tiny_model_dir)), cache=tmp_path)
    assert {n: r.name for n, r in rs.items()} == {n: n for n in rs}  # named at construction, no wrapper
    for name in ("bm25", "lex"):
        assert isinstance(rs[name], Scorer) and not isinstance(rs[name], DenseScorer)
    for name in ("dense", "again"):
        assert isinstance(rs[name], DenseScorer) and isinstance(rs[name], Scorer)
        assert rs[name]._doc_embeddings is None  # the check looked members up, it ran no property
    hybrid = rs["hybrid"]
    assert isinstance(hybrid, Retriever) and not isinstance(hybrid, Scorer)  # RRF values score no pair
    assert [r.name for r in hybrid.scorers] == ["bm25", "dense"]
    assert isinstance(Reversed(5), Scorer) and not isinstance(Reversed(5), DenseScorer)
    assert not isinstance(object(), Retriever)

    # names share one index and one encoder: vectors embedded by one view are the other's
    assert rs["lex"]._bm25 is rs["bm25"]._bm25
    assert rs["again"].encoder is rs["dense"].encoder is hybrid.scorers[1].encoder
    embs = rs["again"].doc_embeddings
    assert rs["dense"].doc_embeddings is embs
    rs["dense"].reset()
    assert rs["again"]._doc_embeddings is None


def test_dense_score_docs_equals_its_ranking_scores(tiny_model_dir, tmp_path):
    dense = build_retrievers(["dense"], IDS, DOCS, EncoderConfig(model=str(tiny_model_dir)), cache=tmp_path)["dense"]
    ranking = dense.search(["q"], ["a cat"], k=5)
    np.testing.assert_array_equal(dense.score_docs("a cat", ranking.indices[0]), ranking.scores[0])


def test_hybrid_fuses_any_scorers():
    bm25 = BM25Retriever(IDS, DOCS, name="lexical")
    custom = Reversed(len(IDS))
    hybrid = HybridRetriever([bm25, custom], name="mix", depth=5)
    qids, texts = ["q1", "q2"], ["cat", "market"]
    fused = hybrid.search(qids, texts, k=3)
    expected = rrf([bm25.search(qids, texts, 5), custom.search(qids, texts, 5)], 3)
    np.testing.assert_array_equal(fused.indices, expected.indices)
    np.testing.assert_array_equal(fused.scores, expected.scores)
    assert fused.k == 3 and hybrid.name == "mix"
    again = Reversed(len(IDS), "again")
    three = HybridRetriever([custom, again, custom], depth=5).search(qids, texts, k=5)
    assert three.indices.tolist() == [[4, 3, 2, 1, 0]] * 2  # no BM25, no dense: RRF of what it is given
    with pytest.raises(HardnegError):
        HybridRetriever([])
    with pytest.raises(HardnegError):
        hybrid.fuse([bm25.search(qids, texts, 5)], 3)  # one ranking per scorer
