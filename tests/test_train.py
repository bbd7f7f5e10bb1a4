"""Fine-tuning: data layout for each loss, margin rescaling, teacher check, and tiny training runs.

Training runs use the 32-d random model of ``tiny_model_dir`` on 16 toy (query, document)
topics whose positives share the topic word with the query, so a few steps learn them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from hardneg.encode.cache import EmbeddingCache
from hardneg.data import Dataset
from hardneg.encode import Encoder, EncoderConfig
from hardneg.errors import DataError, HardnegError
from hardneg.train import (
    TrainConfig,
    TrainResult,
    build_eval_set,
    build_train_dataset,
    check_teacher,
    config_from_dict,
    read_negatives,
    rescale_margins,
    score_range,
    sidecar_path,
    train,
)

WORDS = ("apple river guitar planet copper tiger violin desert "
         "glacier pepper rocket castle forest marble thunder lantern").split()
DOCS = [f"The {w} article: everything about the {w}." for w in WORDS]


def toy_dataset(dev: bool = True) -> Dataset:
    """16 train queries (one positive each) and, with ``dev``, 4 reworded dev queries."""
    queries = {f"q{i}": f"where can I learn about the {w}" for i, w in enumerate(WORDS)}
    qrels = {"train": {f"q{i}": {f"d{i}": 1} for i in range(16)}}
    if dev:
        queries |= {f"v{i}": f"tell me about the {w}" for i, w in enumerate(WORDS[:4])}
        qrels["dev"] = {f"v{i}": {f"d{i}": 1} for i in range(4)}
    return Dataset([f"d{i}" for i in range(16)], [""] * 16, list(DOCS), queries, qrels)


def toy_rows(n_neg: int = 3) -> list[dict]:
    """One negatives.jsonl row per train query; negatives are the next topics' documents."""
    rows = []
    for i, w in enumerate(WORDS):
        negs = [(i + j) % 16 for j in range(1, n_neg + 1)]
        rows.append({
            "query_id": f"q{i}", "query": f"where can I learn about the {w}", "pos_ids": [f"d{i}"], "pos": [DOCS[i]],
            "neg_ids": [f"d{j}" for j in negs], "neg": [DOCS[j] for j in negs], "neg_ranks": list(range(1, n_neg + 1)),
            "neg_scores": [float(-j) for j in range(1, n_neg + 1)], "pos_scores": [5.0],
        })
    return rows


def infonce(model, rows: list[dict], scale: float = 20.0) -> float:
    """MNRL's objective on all rows as one batch (independent of sentence-transformers' loss code)."""
    import torch

    anchors = model.encode([r["query"] for r in rows], convert_to_tensor=True, normalize_embeddings=True)
    docs = [r["pos"][0] for r in rows] + [n for r in rows for n in r["neg"]]
    cands = model.encode(docs, convert_to_tensor=True, normalize_embeddings=True)
    logits = scale * anchors @ cands.T  # (n, n + n * k); the positive of row i is column i
    return float(torch.nn.functional.cross_entropy(logits, torch.arange(len(rows))))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAST = dict(batch_size=4, lr=1e-3, warmup_ratio=0.0, max_seq_length=32, logging_steps=1, show_progress=False)


# ---- pure helpers -----------------------------------------------------------------------------
def test_rescale_margins_hand_computed():
    # teacher logits span 20, student cosines span 1: margins shrink 20x
    got = rescale_margins([8.0, 8.0], [-2.0, 3.0], teacher_range=(-10.0, 10.0))
    np.testing.assert_allclose(got, [0.5, 0.25])
    # student range (-1, 1) spans 2: 10x; a margin of 40 clips to the widest expressible, 2
    got = rescale_margins([8.0, 8.0, 10.0], [-2.0, 3.0, -30.0], (-10.0, 10.0), student_range=(-1.0, 1.0))
    np.testing.assert_allclose(got, [1.0, 0.5, 2.0])
    # broadcasting, negative margins, float32 output
    got = rescale_margins(0.2, np.array([0.7, 0.2]), teacher_range=(0.0, 0.5))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [-1.0, 0.0])
    with pytest.raises(HardnegError):
        rescale_margins([1.0], [0.0], teacher_range=(1.0, 1.0))


def test_score_range_is_robust_and_refuses_constant_scores():
    assert score_range(np.arange(101.0)) == pytest.approx((1.0, 99.0))
    assert score_range([0.0, 4.0], quantile=0.0) == (0.0, 4.0)
    with pytest.raises(HardnegError, match="constant"):
        score_range([3.0, 3.0, 3.0])


def test_config_validation():
    assert TrainConfig(loss="gist").loss.value == "gist"
    with pytest.raises(HardnegError, match="loss must be one of"):
        TrainConfig(loss="triplet")
    with pytest.raises(HardnegError, match="unknown train option"):
        config_from_dict({"lr": 1e-5, "learning_rate": 1e-5})
    assert config_from_dict({"batch_size": 8}).batch_size == 8


# ---- building the training rows ---------------------------------------------------------------
def uneven_rows() -> list[dict]:
    """Queries with 3, 2, 0 and 1 negatives; the first has two positives."""
    rows = toy_rows(3)[:4]
    rows[0]["pos"] = [DOCS[0], "A second apple document."]
    rows[0]["pos_scores"] = [5.0, 4.0]
    for row, n in zip(rows, (3, 2, 0, 1)):
        row["neg"], row["neg_scores"] = row["neg"][:n], row["neg_scores"][:n]
    return rows


def test_ntuple_layout_and_dropped_short_rows():
    ds, rep = build_train_dataset(uneven_rows(), None, "mnrl")
    assert ds.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert rep.num_negatives == 3  # None: the richest query's count
    assert (rep.short_queries, rep.dropped_queries, rep.padded_queries) == (3, 3, 0)
    assert (rep.n_queries, rep.n_rows) == (1, 2)  # one query, one row per positive
    assert ds["positive"] == [DOCS[0], "A second apple document."]
    assert ds["negative_3"] == [DOCS[3], DOCS[3]]


def test_ntuple_short_rows_repeat_and_cap():
    ds, rep = build_train_dataset(uneven_rows(), None, "gist", short_rows="repeat")
    assert (rep.short_queries, rep.dropped_queries, rep.padded_queries, rep.n_rows) == (3, 1, 2, 4)
    assert [ds[i]["negative_1"] for i in range(4)] == [DOCS[1], DOCS[1], DOCS[2], DOCS[4]]
    row1 = ds[2]  # query 1 had negatives (d2, d3): cycled to (d2, d3, d2)
    assert [row1[f"negative_{j}"] for j in (1, 2, 3)] == [DOCS[2], DOCS[3], DOCS[2]]
    assert [ds[3][f"negative_{j}"] for j in (1, 2, 3)] == [DOCS[4]] * 3
    ds, rep = build_train_dataset(uneven_rows(), 2, "cached-mnrl")
    assert ds.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert (rep.short_queries, rep.dropped_queries, rep.n_queries, rep.n_rows) == (2, 2, 2, 3)


def test_in_batch_only_gives_pairs():
    rows = uneven_rows()
    for row in rows:
        row["neg"], row["neg_scores"] = [], []
    ds, rep = build_train_dataset(rows, None, "mnrl")
    assert ds.column_names == ["anchor", "positive"]
    assert (rep.num_negatives, rep.n_queries, rep.n_rows, rep.dropped_queries) == (0, 4, 5, 0)
    ds, rep = build_train_dataset(uneven_rows(), 0, "mnrl")  # k=0 asked: negatives ignored
    assert ds.column_names == ["anchor", "positive"] and rep.n_rows == 5


def test_marginmse_layout_and_labels():
    ds, rep = build_train_dataset(uneven_rows(), 2, "marginmse", meta={"score_by": "ce"})
    assert ds.column_names == ["query", "positive", "negative", "label"]
    # (query, positive, negative) triples over the first 2 negatives: 2 pos x 2 + 2 + 0 + 1
    assert rep.n_rows == 7 and (rep.n_queries, rep.dropped_queries, rep.short_queries) == (3, 1, 2)
    assert rep.teacher == "ce"
    pos = [5.0, 5.0, 4.0, 4.0, 5.0, 5.0, 5.0]
    neg = [-1.0, -2.0, -1.0, -2.0, -1.0, -2.0, -1.0]
    assert rep.teacher_range == score_range(pos + neg)
    np.testing.assert_allclose(ds["label"], rescale_margins(pos, neg, rep.teacher_range), rtol=1e-6)
    assert ds["negative"][:2] == [DOCS[1], DOCS[2]] and ds["positive"][2] == "A second apple document."


@pytest.mark.parametrize("meta, match", [
    ({"score_by": "dense"}, "not from a teacher"),
    ({"score_by": "bm25"}, "not from a teacher"),
    ({}, "names no scorer"),
])
def test_marginmse_refuses_scores_that_are_not_a_teacher(meta, match):
    with pytest.raises(HardnegError, match=match):
        build_train_dataset(toy_rows(), 3, "marginmse", meta=meta)
    assert check_teacher({"score_by": "ce"}) == "ce"
    assert check_teacher({"score_by": "cross-encoder:ms-marco"}) == "cross-encoder:ms-marco"


def test_check_teacher_reads_the_exporters_sidecar():
    """hardneg.export names each score field's scorer and whether it is a teacher."""
    ce = {"score_fields": {"pos_scores": {"scorer": "ce", "teacher": True}}}
    assert check_teacher(ce) == "ce"
    assert check_teacher({"score_fields": {"pos_scores": {"scorer": "bge-reranker", "teacher": True}}})
    with pytest.raises(HardnegError, match="refuses scores by 'dense'"):
        check_teacher({"score_fields": {"pos_scores": {"scorer": "dense", "teacher": False}}})
    own_only = {"score_fields": {"pos_scores_dense": {"scorer": "dense", "teacher": False}},
                "teacher_scores": {"scorer": "ce", "written": False, "why": "no 'ce' scorer in the candidate set"}}
    with pytest.raises(HardnegError, match="names no scorer for them .no 'ce' scorer"):
        check_teacher(own_only)


def test_read_negatives_with_sidecar(tmp_path):
    path = tmp_path / "negatives.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in toy_rows(2)) + "\n")
    sidecar_path(path).write_text(json.dumps({"score_by": "dense", "strategy": "dense window"}))
    assert sidecar_path(path).name == "negatives.meta.json"
    rows, meta = read_negatives(path)
    assert len(rows) == 16 and meta["score_by"] == "dense" and meta["negatives_file"] == str(path)
    with pytest.raises(HardnegError, match="refuses scores by 'dense'"):
        train(toy_dataset(), path, None, tmp_path / "never", TrainConfig(loss="marginmse"))
    path.write_text(json.dumps(toy_rows()[0]) + "\n" + json.dumps({"query": "x", "neg": []}) + "\n")
    with pytest.raises(DataError, match=r"negatives.jsonl:2: field 'pos'"):
        read_negatives(path)


def test_holdout_eval_set_without_dev_split():
    data = toy_dataset(dev=False)
    ev = build_eval_set(data, [f"q{i}" for i in range(16)], TrainConfig(holdout_fraction=0.25))
    assert len(ev.holdout_ids) == 4 and set(ev.queries) == set(ev.holdout_ids)
    assert ev.description.startswith("4 of 16 train queries held out")
    assert len(ev.corpus) == 16  # the corpus is smaller than eval_corpus: all of it
    ds, rep = build_train_dataset(toy_rows(), None, "mnrl", exclude_queries=ev.holdout_ids)
    assert rep.excluded_queries == 4 and rep.n_rows == 12
    held_out_texts = {data.queries[q] for q in ev.holdout_ids}
    assert held_out_texts.isdisjoint(ds["anchor"])
    assert build_eval_set(data, [f"q{i}" for i in range(16)], TrainConfig(holdout_fraction=0.0)) is None
    ev = build_eval_set(toy_dataset(), [], TrainConfig(eval_queries=2, eval_corpus=5))
    assert len(ev.queries) == 2 and len(ev.corpus) == 5 and not ev.holdout_ids
    assert set().union(*ev.relevant.values()) <= set(ev.corpus)


# ---- training runs ----------------------------------------------------------------------------
@dataclass
class Run:
    result: TrainResult
    out: Path
    texts: list[str]
    before: np.ndarray  # passage vectors of the starting model
    after: np.ndarray  # the same texts through the same Encoder after training
    cache: EmbeddingCache
    misses_before_train: int
    objective: tuple[float, float]  # InfoNCE on the training rows, before and after


@pytest.fixture(scope="module")
def mnrl_run(tiny_model_dir, tmp_path_factory) -> Run:
    """16 MNRL steps (4 epochs of 4 batches) from a model held in memory, dev evaluation every 8."""
    from sentence_transformers import SentenceTransformer

    tmp = tmp_path_factory.mktemp("train")
    student = SentenceTransformer(str(tiny_model_dir), device="cpu")
    cache = EmbeddingCache(tmp / "cache")
    encoder = Encoder(EncoderConfig(), model=student, cache=cache)
    before = np.array(encoder.encode_passages(DOCS))
    encoder.encode_passages(DOCS)  # a hit: same weights
    misses = cache.misses
    rows = toy_rows()
    start = infonce(student, rows)
    config = TrainConfig(epochs=4, eval_steps=8, **FAST)
    result = train(toy_dataset(), rows, student, tmp / "model", config, meta={"strategy": "next topics", "k": 3})
    after = np.array(encoder.encode_passages(DOCS))
    return Run(result, tmp / "model", DOCS, before, after, cache, misses, (start, infonce(student, rows)))


def test_loss_falls(mnrl_run):
    start, end = mnrl_run.objective
    assert end < 0.85 * start, (start, end)
    logged = [loss for _, loss in mnrl_run.result.losses]
    assert len(logged) == 16
    assert np.mean(logged[-4:]) < np.mean(logged[:4])


def test_evaluation_and_best_checkpoint(mnrl_run):
    res = mnrl_run.result
    assert [e["step"] for e in res.evals] == [0, 8, 16]
    assert res.before is res.evals[0] and 0 <= res.before["ndcg@10"] <= 1
    assert res.best is not None and res.best["ndcg@10"] == max(e["ndcg@10"] for e in res.evals[1:])
    assert res.eval_set.startswith("'dev' split: 4 of 4 queries")
    assert not (mnrl_run.out / "checkpoints").exists()


def test_saved_folder_loads_and_encodes(mnrl_run, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(mnrl_run.out), device="cpu", local_files_only=True)
    assert model.max_seq_length == 64  # trained at 32, saved at the model's own length
    vecs = model.encode(["a query about rockets", DOCS[0]])
    assert vecs.shape == (2, 32) and np.isfinite(vecs).all()
    log = json.loads((mnrl_run.out / "hardneg_train.json").read_text())
    assert log["config"]["loss"] == "auto" and log["memory"]["loss"] == "mnrl" and len(log["losses"]) == 16
    assert log["precision"] == "no" and log["machine"]["cpu"]  # auto resolves to fp32 in the tests


def test_model_card_states_loss_negatives_and_figures(mnrl_run):
    card = (mnrl_run.out / "README.md").read_text()
    assert "library_name: sentence-transformers" in card
    assert "Loss: **mnrl**" in card
    assert "16 training rows from 16 queries, 3 negatives each" in card
    assert 'Negatives strategy: `"next topics"`' in card
    assert "| lr | `0.001` |" in card and "ndcg@10" in card and "(kept)" in card


def test_cache_misses_after_training(mnrl_run, tmp_path):
    assert mnrl_run.misses_before_train == 1 and mnrl_run.cache.hits == 1
    assert mnrl_run.cache.misses == 2  # the trained weights are a new key
    assert not np.allclose(mnrl_run.before, mnrl_run.after, atol=1e-4)
    # the saved folder embeds like the trained in-memory model, never like the base model
    saved = Encoder(EncoderConfig(model=str(mnrl_run.out)), cache=mnrl_run.cache).encode_passages(DOCS)
    np.testing.assert_allclose(saved, mnrl_run.after, atol=1e-5)


@pytest.mark.parametrize("loss", ["cached-mnrl", "gist", "marginmse"])
def test_other_losses_train_from_a_folder(loss, tiny_model_dir, tmp_path):
    config = TrainConfig(loss=loss, max_steps=2, mini_batch_size=2, holdout_fraction=0.0, **FAST)
    res = train(toy_dataset(dev=False), toy_rows(), str(tiny_model_dir), tmp_path / "m", config,
                meta={"score_by": "ce"})
    assert len(res.losses) == 2 and all(np.isfinite(loss_) for _, loss_ in res.losses)
    assert res.evals == [] and res.best is None and res.eval_set is None
    assert f"Loss: **{loss}**" in (tmp_path / "m" / "README.md").read_text()


def test_same_seed_same_run(tiny_model_dir, tmp_path):
    from safetensors.numpy import load_file

    config = TrainConfig(max_steps=3, holdout_fraction=0.0, **FAST)
    runs = [train(toy_dataset(dev=False), toy_rows(), str(tiny_model_dir), tmp_path / f"m{i}", config) for i in (0, 1)]
    assert runs[0].losses == runs[1].losses
    w0, w1 = (load_file(str(tmp_path / f"m{i}" / "model.safetensors")) for i in (0, 1))
    assert all(np.array_equal(w0[k], w1[k]) for k in w0)


def test_patience_stops_when_dev_stops_improving(tiny_model_dir, tmp_path):
    """lr ~ 0 leaves dev NDCG@10 where it started: with patience 2, training stops after the third
    evaluation after step 0 (the first checkpoint sets the best, two bring no gain), far short of its
    16 steps; without patience it runs them all."""
    config = TrainConfig(epochs=4, eval_steps=1, patience=2, **{**FAST, "lr": 1e-12})
    res = train(toy_dataset(), toy_rows(), str(tiny_model_dir), tmp_path / "m", config)
    assert [e["step"] for e in res.evals] == [0, 1, 2, 3]
    assert len({round(e["ndcg@10"], 9) for e in res.evals}) == 1
    assert res.config["patience"] == 2
    whole = train(toy_dataset(), toy_rows(), str(tiny_model_dir), tmp_path / "w",
                  TrainConfig(epochs=4, eval_steps=8, **{**FAST, "lr": 1e-12}))
    assert [e["step"] for e in whole.evals] == [0, 8, 16]


def _two_positives() -> list[dict]:
    """toy_rows with a second positive per query (the next query's document)."""
    rows = toy_rows()
    for i, r in enumerate(rows):
        r["pos_ids"], r["pos"] = [f"d{i}", f"d{(i + 1) % 16}"], [DOCS[i], DOCS[(i + 1) % 16]]
        r["pos_scores"] = [5.0, 4.0]
    return rows


def test_positives_one_gives_a_row_per_query_per_pass_with_a_seeded_positive():
    rows = _two_positives()
    each, _ = build_train_dataset(rows, 2)
    assert len(each) == 32  # 16 queries x 2 positives
    one, report = build_train_dataset(rows, 2, one_positive=(3, 7))
    assert len(one) == 48 and report.n_queries == 16  # 3 passes of one row per query
    by_query = {r["query"]: set(r["pos"]) for r in rows}
    assert all(one[i]["positive"] in by_query[one[i]["anchor"]] for i in range(len(one)))
    again, _ = build_train_dataset(rows, 2, one_positive=(3, 7))
    assert again["positive"] == one["positive"]
    assert sum(a == rows[0]["query"] for a in one["anchor"]) == 3
    with pytest.raises(HardnegError, match="positives 'one' works with the n-tuple losses"):
        TrainConfig(loss="marginmse", positives="one")


def test_positives_one_trains_epochs_times_queries_over_batch_steps(tiny_model_dir, tmp_path):
    """2 epochs of 16 queries (32 positives) at batch 4: 8 steps with positives one, 16 with each."""
    common = dict(FAST, epochs=2)
    one = train(toy_dataset(), _two_positives(), str(tiny_model_dir), tmp_path / "one",
                TrainConfig(positives="one", **common))
    assert max(step for step, _ in one.losses) == 8 and one.config["epochs"] == 2
    assert one.config["positives"] == "one"
    each = train(toy_dataset(), _two_positives(), str(tiny_model_dir), tmp_path / "each", TrainConfig(**common))
    assert max(step for step, _ in each.losses) == 16


def test_attention_dropout_is_set_for_training_only(tiny_model_dir, tmp_path):
    """[train] attention_dropout sets the attention-probability dropout inside training and restores
    the model's own afterwards (the saved folder keeps its config); it is refused on a model without such modules."""
    import json

    import torch
    from sentence_transformers import SentenceTransformer

    from hardneg.train.losses import ATTENTION_DROPOUT, attention_dropout

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    probs = [m for n, m in model.named_modules()
             if isinstance(m, torch.nn.Dropout) and f".{n}".endswith(ATTENTION_DROPOUT)]
    own = [m.p for m in probs]
    assert probs and all(p > 0 for p in own)
    with attention_dropout(model, 0.0):
        assert all(m.p == 0.0 for m in probs)
    assert [m.p for m in probs] == own
    with pytest.raises(HardnegError, match="not a BERT-family encoder"):
        with attention_dropout(torch.nn.Sequential(torch.nn.Linear(2, 2)), 0.0):
            pass
    res = train(toy_dataset(), toy_rows(), str(tiny_model_dir), tmp_path / "m", TrainConfig(attention_dropout=0.0, **FAST))
    assert res.config["attention_dropout"] == 0.0
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["attention_probs_dropout_prob"] == json.loads((tiny_model_dir / "config.json").read_text())[
        "attention_probs_dropout_prob"]
