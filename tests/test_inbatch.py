"""In-batch false negatives: the collision count over the trainer's batches, the masked InfoNCE,
and that masking changes nothing where nothing collides.

The fixture: q0 and q1 share their two positives (one row per pair), so whichever batch holds a
row of each, each anchor meets the other's positive, which is its own; q2's mined negative is
one of those shared positives too. The other topics have one positive each.
"""
from __future__ import annotations

import numpy as np
import pytest

from hardneg.data import Dataset
from hardneg.errors import HardnegError
from hardneg.train import TrainConfig, build_train_dataset, train
from hardneg.train.inbatch import KnownPositives, count_collisions
from hardneg.train.losses import build_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = "apple river guitar planet copper tiger violin desert".split()
DOCS = {f"d{i}": f"The {w} article: everything about the {w}." for i, w in enumerate(WORDS)}
SHARED = ["d0", "d1"]  # positives of q0 and q1 alike
POSITIVES = {"q0": SHARED, "q1": SHARED, **{f"q{i}": [f"d{i}"] for i in range(2, 8)}}
NEGATIVE = {"q0": "d5", "q1": "d6", "q2": "d0", "q3": "d7", "q4": "d2", "q5": "d3", "q6": "d4", "q7": "d2"}
FAST = dict(batch_size=4, lr=1e-3, warmup_ratio=0.0, max_seq_length=32, logging_steps=1, show_progress=False,
            holdout_fraction=0.0)


def query(q: str) -> str:
    return f"where can I learn about {'fruit and rivers' if q in ('q0', 'q1') else WORDS[int(q[1:])]} ({q})"


def rows() -> list[dict]:
    """One negatives.jsonl line per query: all its positives, one mined negative."""
    return [{"query_id": q, "query": query(q), "pos_ids": pos, "pos": [DOCS[d] for d in pos],
             "neg_ids": [NEGATIVE[q]], "neg": [DOCS[NEGATIVE[q]]]} for q, pos in POSITIVES.items()]


def dataset() -> Dataset:
    qrels = {"train": {q: {d: 1 for d in pos} for q, pos in POSITIVES.items()}}
    return Dataset(list(DOCS), [""] * len(DOCS), list(DOCS.values()), {q: query(q) for q in POSITIVES}, qrels)


def hand_count(train_ds, batches) -> tuple[int, int, int]:
    """(anchors, anchors meeting an own positive, such meetings), by texts, independently of KnownPositives."""
    positives = {query(q): {DOCS[d] for d in pos} for q, pos in POSITIVES.items()}
    anchors = colliding = hits = 0
    for batch in batches:
        rows_ = [train_ds[i] for i in batch]
        candidates = [r["positive"] for r in rows_] + [r["negative_1"] for r in rows_]
        for i, r in enumerate(rows_):
            n = sum(c in positives[r["anchor"]] for j, c in enumerate(candidates) if j != i)
            anchors, colliding, hits = anchors + 1, colliding + (n > 0), hits + n
    return anchors, colliding, hits


def sampler_batches(train_ds, seed: int, batch_size: int, epochs: int) -> list[list[int]]:
    """The batches of sentence-transformers' no-duplicates sampler, as its trainer seeds it."""
    import torch
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = NoDuplicatesBatchSampler(train_ds, batch_size, drop_last=False, generator=generator, seed=seed)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += [list(b) for b in sampler]
    return out


def test_collisions_counted_against_a_hand_count_over_the_same_batches():
    train_ds, _ = build_train_dataset(rows(), 1)
    known = KnownPositives.build(train_ds, rows())
    batches = sampler_batches(train_ds, 42, 4, 2)
    got = count_collisions(known, batches, "keep")
    anchors, colliding, hits = hand_count(train_ds, batches)
    assert (got.anchors, got.colliding_anchors, got.collisions) == (anchors, colliding, hits)
    assert got.anchors == 20 and got.colliding_anchors > 0 and got.batches == len(batches)
    assert got.rate == pytest.approx(colliding / anchors) and got.mean == pytest.approx(hits / anchors)


def test_mask_layout_follows_mnrl_columns():
    train_ds, _ = build_train_dataset(rows(), 1)
    known = KnownPositives.build(train_ds, rows())
    a, b, c = 0, 3, 4  # rows (q0, d0), (q1, d1), (q2, d2 / negative d0)
    assert [train_ds["positive"][i] for i in (a, b, c)] == [DOCS["d0"], DOCS["d1"], DOCS["d2"]]
    # candidates: the positives of a, b, c (d0 d1 d2), then their negatives (d5 d6 d0)
    assert known.collisions([a, b, c]).tolist() == [[False, True, False, False, False, True],  # q0: d1, d0
                                                    [True, False, False, False, False, True],  # q1: d0, d0
                                                    [False] * 6]  # q2 has only d2: its own target
    assert known.collisions([c, b]).tolist() == [[False] * 4, [False, False, True, False]]  # q1 meets q2's d0


@pytest.mark.parametrize("loss", ["mnrl", "cached-mnrl"])
def test_masked_infonce_equals_the_hand_computation(loss, tiny_model_dir):
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu").eval()  # no dropout: encode == forward
    train_ds, _ = build_train_dataset(rows(), 1)
    known = KnownPositives.build(train_ds, rows())
    batch = list(range(len(train_ds)))[:6]
    texts = {c: [train_ds[c][i] for i in batch] for c in ("anchor", "positive", "negative_1")}
    features = [model.preprocess(texts[c]) for c in texts]

    def st_loss(mode: str) -> float:
        config = TrainConfig(loss=loss, inbatch_positives=mode, mini_batch_size=2)
        fn = build_loss(model, config, 1, known=known)
        with torch.no_grad():
            return float(fn(features, torch.tensor(batch)))

    q = model.encode(texts["anchor"], convert_to_tensor=True, normalize_embeddings=True)
    d = model.encode(texts["positive"] + texts["negative_1"], convert_to_tensor=True, normalize_embeddings=True)
    logits = 20.0 * q @ d.T
    mask = torch.from_numpy(known.collisions(batch))
    assert mask.any()
    target = torch.arange(len(batch))
    by_hand = {"keep": logits, "mask": logits.masked_fill(mask, float("-inf"))}
    by_hand = {k: float(torch.nn.functional.cross_entropy(v, target)) for k, v in by_hand.items()}
    got = {mode: st_loss(mode) for mode in ("keep", "mask")}
    assert got == pytest.approx(by_hand, abs=1e-5)
    assert got["mask"] < got["keep"]  # fewer terms in each colliding anchor's denominator


@pytest.mark.parametrize("loss", ["mnrl", "cached-mnrl"])
def test_hardness_weighting_equals_the_hand_computation(loss, tiny_model_dir):
    """[train] hardness: each chosen negative's logit gains alpha x its cosine (sentence-transformers'
    hardness_mode), masked positives stay out; recomputed here from the embeddings."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu").eval()
    train_ds, _ = build_train_dataset(rows(), 1)
    known = KnownPositives.build(train_ds, rows())
    batch = list(range(len(train_ds)))[:6]
    texts = {c: [train_ds[c][i] for i in batch] for c in ("anchor", "positive", "negative_1")}
    features = [model.preprocess(texts[c]) for c in texts]
    q = model.encode(texts["anchor"], convert_to_tensor=True, normalize_embeddings=True)
    d = model.encode(texts["positive"] + texts["negative_1"], convert_to_tensor=True, normalize_embeddings=True)
    cos, n, target = q @ d.T, len(batch), torch.arange(len(batch))
    own_negative = torch.zeros_like(cos, dtype=torch.bool)
    own_negative[target, target + n] = True
    in_batch = torch.ones_like(own_negative)
    in_batch[target, target] = False
    in_batch[target, target + n] = False
    chosen = {"hard": own_negative, "in-batch": in_batch, "all": in_batch | own_negative}
    for mode, where in chosen.items():
        for mask_mode in ("keep", "mask"):
            config = TrainConfig(loss=loss, mini_batch_size=2, hardness=mode, hardness_strength=3.0,
                                 inbatch_positives=mask_mode)
            fn = build_loss(model, config, 1, known=known)
            assert fn.hardness_mode == config.hardness.st_mode and fn.hardness_strength == 3.0
            with torch.no_grad():
                got = float(fn(features, torch.tensor(batch)))
            logits = 20.0 * cos + 3.0 * cos * where
            if mask_mode == "mask":
                logits = logits.masked_fill(torch.from_numpy(known.collisions(batch)), float("-inf"))
            assert got == pytest.approx(float(torch.nn.functional.cross_entropy(logits, target)), abs=1e-5), mode
    with pytest.raises(HardnegError, match="hardness weighting works with mnrl and cached-mnrl"):
        TrainConfig(loss="gist", hardness="hard")


def test_mask_refused_where_it_does_not_apply():
    for loss in ("gist", "marginmse"):
        with pytest.raises(HardnegError, match="inbatch_positives mask works with mnrl and cached-mnrl"):
            TrainConfig(loss=loss, inbatch_positives="mask")
    with pytest.raises(HardnegError, match="keep, mask"):
        TrainConfig(inbatch_positives="drop")


@pytest.mark.parametrize("loss", ["mnrl", "cached-mnrl"])
def test_training_reports_the_collisions_it_masked(loss, tiny_model_dir, tmp_path):
    import json

    config = TrainConfig(loss=loss, epochs=2, inbatch_positives="mask", mini_batch_size=2, **FAST)
    res = train(dataset(), rows(), str(tiny_model_dir), tmp_path / "m", config)
    train_ds, _ = build_train_dataset(rows(), 1)
    anchors, colliding, hits = hand_count(train_ds, sampler_batches(train_ds, 42, 4, 2))
    c = res.inbatch
    assert (c.mode, c.anchors, c.colliding_anchors, c.collisions) == ("mask", anchors, colliding, hits)
    assert c.masked == c.collisions > 0  # the loss masked what the replay counted: the same batches
    saved = json.loads((tmp_path / "m" / "hardneg_train.json").read_text())["inbatch"]
    assert saved["rate"] == round(colliding / anchors, 6) and saved["masked"] == hits
    assert saved == c.to_dict() and any(line.startswith("in-batch positives: ") for line in res.summary(tmp_path))
    assert f"- In-batch positives: {colliding} of {anchors} anchors" in (tmp_path / "m" / "README.md").read_text()


def test_mask_without_collisions_trains_byte_identically_to_keep(tiny_model_dir, tmp_path):
    from safetensors.numpy import load_file

    distinct = [r for r in rows() if r["query_id"] not in ("q0", "q1", "q2")]  # no shared positives left
    runs = {}
    for mode in ("keep", "mask", None):
        config = TrainConfig(max_steps=3, **FAST, **({"inbatch_positives": mode} if mode else {}))
        runs[mode] = train(dataset(), distinct, str(tiny_model_dir), tmp_path / str(mode), config)
    assert runs["mask"].inbatch.masked == runs["keep"].inbatch.collisions == 0
    assert runs["keep"].inbatch.masked is None and runs["keep"].inbatch.batches == 3
    assert runs["keep"].losses == runs["mask"].losses == runs[None].losses
    weights = {m: load_file(str(tmp_path / str(m) / "model.safetensors")) for m in runs}
    assert all(np.array_equal(weights["keep"][k], weights[m][k]) for m in ("mask", None) for k in weights["keep"])
