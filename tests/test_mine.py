"""Mining against the reference (sentence-transformers' mine_hard_negatives) and with uneven positives."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hardneg.data import Dataset, load_dataset
from hardneg.mine import MineConfig, mine_candidates
from hardneg.select import SelectionPolicy, select

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scifact-sample"


@pytest.fixture(scope="module")
def minilm():
    from sentence_transformers import SentenceTransformer

    from hardneg.encode import default_model_path

    model = SentenceTransformer(default_model_path(), device="cpu")
    model.max_seq_length = 128  # both sides use the same model object, so the same setting
    return model


def toy_dataset(n_queries: int, n_docs: int, positives_per_query) -> Dataset:
    """Real SciFact texts: the first queries of the sample, their positives, then other abstracts."""
    ds = load_dataset(SAMPLE)
    pos = ds.positives("train")
    qids = [q for q in pos if len(pos[q]) >= max(positives_per_query)][:n_queries]
    keep: dict[str, None] = {}
    qrels = {}
    for q, n in zip(qids, positives_per_query * n_queries):
        qrels[q] = {d: 1 for d in pos[q][:n]}
        keep.update(dict.fromkeys(qrels[q]))
    keep.update(dict.fromkeys(d for d in ds.doc_ids if d not in keep))
    docs = list(keep)[:n_docs]
    return Dataset(docs, [""] * len(docs), [ds.doc_text(d) for d in docs], {q: ds.queries[q] for q in qids},
                   {"train": qrels})


def test_same_negatives_as_sentence_transformers(minilm, tmp_path):
    from datasets import Dataset as HFDataset
    from sentence_transformers.util import mine_hard_negatives

    ds = toy_dataset(12, 80, [1])
    pos = ds.positives("train")
    qids = list(pos)
    pairs = HFDataset.from_dict({"anchor": [ds.queries[q] for q in qids],
                                 "positive": [ds.doc_text(pos[q][0]) for q in qids]})
    st = mine_hard_negatives(pairs, minilm, corpus=ds.texts, num_negatives=4, sampling_strategy="top",
                             output_format="n-tuple", verbose=False, batch_size=16)
    st_negs = {row["anchor"]: [row[f"negative_{i}"] for i in range(1, 5)] for row in st}

    cands = mine_candidates(ds, MineConfig(retriever="dense", depth=len(ds.doc_ids)), cache=tmp_path, model=minilm)
    mined = select(cands, SelectionPolicy.unfiltered(sampler="top", num_negatives=4))
    ours = {ds.queries[r.query_id]: [ds.doc_text(d) for d in r.neg_ids] for r in mined.per_row().itertuples()}
    assert set(st_negs) == set(ours)
    # our score of every (query, document): the whole corpus is ranked (depth = corpus size)
    by_text = {ds.doc_text(d): d for d in ds.doc_ids}
    assert len(by_text) == len(ds.doc_ids)  # texts identify documents
    score = {(ds.queries[q], d): s for q, d, s in cands.table[["query_id", "doc_id", "score_dense"]].itertuples(False)}
    for anchor, negs in st_negs.items():
        # the same negatives in the same order; sentence-transformers scores in float32 torch, on other
        # batches, so two documents may swap only where our scores of them differ by < 1e-5 (a near-tie)
        assert len(ours[anchor]) == len(negs) == 4
        for a, b in zip(ours[anchor], negs):
            assert a == b or abs(score[anchor, by_text[a]] - score[anchor, by_text[b]]) < 1e-5, (anchor, a, b)


def test_uneven_positives_all_excluded_and_scored(minilm, tmp_path):
    ds = toy_dataset(6, 60, [1, 3])  # queries alternate between 1 and 3 positives
    pos = ds.positives("train")
    assert sorted({len(v) for v in pos.values()}) == [1, 3]
    cands = mine_candidates(ds, MineConfig(retriever="dense", depth=10), cache=tmp_path, model=minilm)
    table = cands.table
    # every positive has a row with a score, also those ranked below the depth
    for q, docs in pos.items():
        rows = table[(table.query_id == q) & table.is_positive]
        assert sorted(rows.doc_id) == sorted(docs)
        assert rows["score_dense"].notna().all()
    mined = select(cands, SelectionPolicy.unfiltered(sampler="top", num_negatives=5))
    for r in mined.per_row().itertuples():
        assert not set(r.neg_ids) & set(pos[r.query_id])
        assert len(r.neg_ids) == 5
    # scores in the table equal the model's cosine (independent reference: sentence-transformers util)
    from sentence_transformers.util import cos_sim

    q = next(iter(pos))
    row = table[(table.query_id == q)].iloc[0]
    ref = cos_sim(minilm.encode([ds.queries[q]]), minilm.encode([ds.doc_text(row.doc_id)]))[0, 0].item()
    assert row.score_dense == pytest.approx(ref, abs=1e-4)


def test_ranks_count_positives_and_bm25_teacher_adds_columns(tmp_path):
    ds = toy_dataset(5, 60, [2])
    cands = mine_candidates(ds, MineConfig(retriever="bm25", teachers=[], depth=20))
    t = cands.table
    for q, g in t.groupby("query_id"):
        ranked = g.dropna(subset=["rank_bm25"]).sort_values("rank_bm25")
        assert ranked["rank_bm25"].tolist() == list(range(1, len(ranked) + 1))  # positives keep their rank
        assert np.all(np.diff(ranked["score_bm25"].to_numpy()) <= 1e-6)
    hybrid = mine_candidates(ds, MineConfig(retriever="hybrid", depth=20), cache=tmp_path)
    assert hybrid.meta["rank_by"] == "hybrid" and hybrid.meta["score_by"] == "dense"
    assert {"score_bm25", "score_dense", "rank_hybrid"} <= set(hybrid.table.columns)
    assert hybrid.table["score_hybrid"].isna().all()
