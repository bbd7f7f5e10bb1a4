"""The loop: gating on hand-made dev scores, round plans, the dev hold-out, and a tiny `hardneg run`.

The end-to-end run uses the 32-d random model of ``tiny_model_dir`` on the toy BEIR folder
(32 documents, 16 train / 8 test queries): two rounds of a few steps each, in seconds.
"""
from __future__ import annotations

import csv
import importlib
import json
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.data import load_dataset
from hardneg.errors import HardnegError
from hardneg.evaluate import format_p, run_file
from hardneg.loop import DataConfig, RoundGate, gate, plan_round, split_dev
from hardneg.loop.hybrid import FREE, HYBRID_BASE, HYBRID_TUNED, PAIRS, SYSTEMS, choose_deploy, choose_rrf_k, fuse
from hardneg.loop.rounds import remine_config
from hardneg.mine import MineConfig
from hardneg.select import SelectionPolicy
from toybeir import write_toy_beir

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- gating (pure) ------------------------------------------------------------------------
def test_gate_keeps_gains_and_refuses_ties_and_losses():
    inc = np.array([0.5, 0.2, 0.9, 0.0, 0.4] * 4)  # 20 queries
    better = inc + 0.1  # every query up: gain 0.1, p at the permutation floor
    d = gate(better, inc)
    assert d.keep and d.gain == pytest.approx(0.1) and d.p == pytest.approx(1 / 10001)
    assert gate(better, inc, RoundGate.SIGNIFICANT).keep
    tie = gate(inc.copy(), inc)
    assert not tie.keep and tie.gain == 0 and tie.p == 1.0 and "no gain" in tie.reason
    worse = gate(inc - 0.05, inc)
    assert not worse.keep and worse.gain == pytest.approx(-0.05)


def test_gate_significant_needs_a_small_p_and_min_gain_is_a_bar():
    inc = np.zeros(10)
    one_lucky = inc.copy()
    one_lucky[0] = 1.0  # mean gain 0.1 from a single query: p = P(that one sign) ~ 1
    d = gate(one_lucky, inc, "gain")
    assert d.keep and d.gain == pytest.approx(0.1)
    d = gate(one_lucky, inc, "significant", alpha=0.05)
    assert not d.keep and d.p > 0.5 and "not significant" in d.reason
    assert not gate(one_lucky, inc, "gain", min_gain=0.1).keep  # must exceed the bar, not reach it
    assert gate(one_lucky - 0.01, inc, "gain", min_gain=-0.5).keep  # a negative bar tolerates a small loss
    with pytest.raises(HardnegError, match="equal-length"):
        gate(np.zeros(3), np.zeros(4))


def test_round_plans():
    assert plan_round(0, "base", "previous") == plan_round(0, "base", "base")
    p0 = plan_round(0, "base", "base")
    assert (p0.miner, p0.init, p0.remine) == ("base", "base", False)
    p2 = plan_round(2, "r1", "base")
    assert (p2.miner, p2.init, p2.remine) == ("r1", "base", True)  # mines with the new model, trains from base
    assert plan_round(2, "r1", "previous").init == "r1"


def test_remining_a_bm25_recipe_uses_the_new_dense_model():
    mine, policy = remine_config(MineConfig(retriever="bm25", rank_by="bm25"), SelectionPolicy.unfiltered(rank_by="bm25"))
    assert mine.retriever == "dense" and mine.rank_by is None and policy.rank_by is None
    mine, _ = remine_config(MineConfig(retriever="hybrid", teachers=["bm25"]), SelectionPolicy.unfiltered())
    assert mine.retriever == "hybrid" and mine.teachers == ["bm25"]


# ---- the dev hold-out ---------------------------------------------------------------------
def test_split_dev_holds_out_train_queries_once(tmp_path):
    ds = load_dataset(write_toy_beir(tmp_path / "toy"))
    view, text = split_dev(ds, DataConfig(dev_holdout=0.25), seed=3)
    dev, train = set(view.positives("dev")), set(view.positives("train"))
    assert len(dev) == 4 and len(train) == 12 and not dev & train and dev | train == set(ds.positives("train"))
    assert view.qrels["test"] == ds.qrels["test"] and text.startswith("4 of 16 train queries held out (seed 3)")
    again, _ = split_dev(ds, DataConfig(dev_holdout=0.25), seed=3)
    assert set(again.positives("dev")) == dev  # seeded
    assert ds.positives("train").keys() == {f"q{i}" for i in range(16)}  # the dataset itself is unchanged
    named, text = split_dev(ds, DataConfig(dev_split="test"))
    assert named.qrels["dev"] == ds.qrels["test"] and named.qrels["train"] == ds.qrels["train"]
    with pytest.raises(HardnegError, match="no 'valid' split"):
        split_dev(ds, DataConfig(dev_split="valid"))
    with pytest.raises(HardnegError, match="need at least 2 dev queries"):
        split_dev(ds, DataConfig(dev_holdout=0.05))


# ---- a tiny run, end to end through `hardneg run` -----------------------------------------
RECIPE = """
[data]
path = "{data}"
dev_holdout = 0.25

[model]
path = "{model}"
cache_dir = "{cache}"
batch_size = 16

[mine]
depth = 10

[select]
window = "off"
percent = "off"
num_negatives = 2

[train]
batch_size = 4
lr = 1e-3
warmup_ratio = 0.0
max_seq_length = 32
max_steps = 3
eval_corpus = 16
logging_steps = 1
show_progress = false

[loop]
rounds = 1
min_gain = -1.0   # keep every round, so that round 1 always re-mines with round 0's model

[eval]
depth = 20
n_resamples = 2000
"""


#: what the tiny run did, counted: model loads, fingerprint passes, the negatives handed to training
SEEN: dict[str, Any] = {}


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    from collections import Counter

    from sentence_transformers import SentenceTransformer

    import hardneg.encode.fingerprint
    import hardneg.encode

    rounds_module = importlib.import_module("hardneg.loop.rounds")  # the rounds call its `train`

    tmp = tmp_path_factory.mktemp("run")
    data = write_toy_beir(tmp / "toy")
    recipe = tmp / "tiny.toml"
    recipe.write_text(RECIPE.format(data=data, model=tiny_model_dir, cache=tmp / "cache"))
    out = tmp / "out"
    counts, trained_on = Counter(), []
    init, memory, files, train = (SentenceTransformer.__init__, hardneg.encode.fingerprint.model_fingerprint,
                                  hardneg.encode.fingerprint._read_folder, rounds_module.train)

    def count(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    def recording_train(data, negatives, *args, **kwargs):
        trained_on.append(negatives)
        return train(data, negatives, *args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(SentenceTransformer, "__init__", count("loads", init))
        m.setattr(hardneg.encode, "model_fingerprint", count("memory fingerprints", memory))
        m.setattr(hardneg.encode.fingerprint, "_read_folder", count("file fingerprints", files))
        m.setattr(rounds_module, "train", recording_train)
        result = runner.invoke(app, ["run", str(recipe), "--out", str(out)])
    SEEN.update(counts=dict(counts), trained_on=trained_on)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "metrics.json").read_text()), result.output


def test_run_writes_metrics_report_and_model(tiny_run):
    out, metrics, output = tiny_run
    for name in ("metrics.json", "report.md", "recipe.toml", "eval/per_query.tsv", "eval/runs/tuned.trec",
                 "rounds/r0/negatives.jsonl", "rounds/r0/stats.json", "rounds/r0/round.json", "rounds/r1/model"):
        assert (out / name).exists(), name
    assert {"systems", "ci95", "lift", "comparisons", "hybrid", "deploy", "rounds", "selected", "dev", "timings",
            "config"} <= set(metrics)
    assert set(metrics["systems"]) == set(SYSTEMS) == set(metrics["ci95"]) and metrics["n_queries"] == 8
    assert metrics["machine"]["cpu"] and metrics["precision"] == {"encode": "fp32", "train": "no"}  # tests pin fp32
    assert metrics["selected"] == "r1" and metrics["tuned_from"] == "r1" and metrics["tuned_kept_on_dev"]
    assert (out / "model" / "model.safetensors").is_file()
    report = (out / "report.md").read_text()
    assert "## Lift of the tuned systems over the free ones" in report and "| r1 | r0 | dense | base |" in report
    for s in SYSTEMS:
        assert f"\n| {s} | " in report and f"\n  {s} " in output, s  # a row of report.md and of the printed table
    for system, vs in PAIRS:
        assert f"| {system} | {vs} | " in report and f"{system} -" in output  # a long label wraps after " -"
    assert "p (Holm)" in output


def test_run_prints_a_line_per_stage_and_keeps_the_trainer_logs_in_the_rounds(tiny_run):
    out, _, output = tiny_run
    assert "{'loss'" not in output and "%|" not in output and "Loading weights" not in output
    for line in ("r0: mined with base", "r0: trained 3 steps", "r0: dev NDCG@10", "r1: trained"):
        assert line in output, line
    for r in ("r0", "r1"):
        log = (out / "rounds" / r / "train.log").read_text()
        assert '"loss"' in log and "Running training" in log, r
    assert not (out / "model" / "train.log").exists()  # beside the round's model, not copied with it


def test_run_metrics_agree_with_the_per_query_file(tiny_run):
    out, metrics, _ = tiny_run
    rows = list(csv.DictReader((out / "eval" / "per_query.tsv").open(), delimiter="\t"))
    assert {r["query_id"] for r in rows} == {f"q{i}" for i in range(16, 24)}
    for system in SYSTEMS:
        for metric in metrics["metrics"]:
            values = [float(r[metric]) for r in rows if r["system"] == system]
            assert len(values) == 8
            assert metrics["systems"][system][metric] == pytest.approx(np.mean(values), abs=1e-6)
            lo, hi = metrics["ci95"][system][metric]
            assert min(values) - 1e-9 <= lo <= hi <= max(values) + 1e-9
    for ref in FREE:
        lift = metrics["lift"][f"over_{ref}"]["ndcg@10"]
        assert lift["diff"] == pytest.approx(metrics["systems"]["tuned"]["ndcg@10"] - metrics["systems"][ref]["ndcg@10"])
        assert 0 < lift["p"] <= 1
        assert lift["ci95"][0] <= lift["diff"] + 1e-9 and lift["diff"] - 1e-9 <= lift["ci95"][1]


def _stored(out, name: str, doc_ids):
    from hardneg.run_state import load_rankings

    return load_rankings(out / ".run" / name, doc_ids)


def test_the_hybrids_fuse_the_stored_rankings_at_the_k_dev_chose(tiny_run, tmp_path):
    """Each hybrid is RRF of the run's stored BM25 and dense rankings at its RRF k, and that k is the
    argmax of dev NDCG@10 over the grid (recomputed here from the stored dev rankings), not test's."""
    from hardneg.metrics import per_query_scores

    out, metrics, _ = tiny_run
    data = load_dataset(out.parent / "toy")
    view, _ = split_dev(data, DataConfig(dev_holdout=0.25), 0)
    base, tuned = _stored(out, "baselines.npz", data.doc_ids), _stored(out, "test.npz", data.doc_ids)
    dev = {"bm25": base["dev bm25"], "base": base["dev"],
           "tuned": _stored(out, f"{metrics['tuned_from']}.dev.npz", data.doc_ids)["dev"]}
    test = {"bm25": base["bm25"], "base": base["base"], "tuned": tuned["tuned"]}
    grid, depth = metrics["hybrid"]["rrf_k_grid"], metrics["config"]["eval"]["depth"]
    assert grid == [10, 30, 60, 100]

    def ndcg(split_ds, split, ranking):
        return float(per_query_scores(split_ds.split_qrels(split), ranking, ["ndcg@10"])["ndcg@10"].mean())

    for name, dense in ((HYBRID_BASE, "base"), (HYBRID_TUNED, "tuned")):
        record = metrics["hybrid"][name]
        on_dev = {k: ndcg(view, "dev", fuse(dev["bm25"], dev[dense], k, depth)) for k in grid}
        on_test = {k: ndcg(data, "test", fuse(test["bm25"], test[dense], k, depth)) for k in grid}
        assert record["dev"] == [{"rrf_k": k, "ndcg@10": pytest.approx(v, abs=1e-12)} for k, v in on_dev.items()]
        dev_best = next(k for k in grid if on_dev[k] == max(on_dev.values()))
        assert record["rrf_k"] == dev_best == choose_rrf_k(view.split_qrels("dev"), dev["bm25"], dev[dense], grid,
                                                           depth)[0]
        assert metrics["systems"][name]["ndcg@10"] == pytest.approx(on_test[record["rrf_k"]], abs=1e-12)
        fused = fuse(test["bm25"], test[dense], record["rrf_k"], depth)
        fused.subset(list(data.positives("test"))).write_trec(tmp_path / f"{dense}.trec", name)
        assert (tmp_path / f"{dense}.trec").read_bytes() == (out / "eval" / "runs" / run_file(name)).read_bytes()
        assert metrics["dev"]["ndcg@10"][name] == pytest.approx(on_dev[record["rrf_k"]], abs=1e-12)


def test_every_tuned_system_is_tested_against_every_free_one_with_holm(tiny_run):
    """The family is PAIRS (tuned and its hybrid vs bm25, base and their hybrid): per metric the
    adjusted p's are Holm's of the raw ones: each >= its raw p and monotone in the raw order."""
    from hardneg.evaluate import holm

    _, metrics, _ = tiny_run
    assert [(c["system"], c["vs"]) for c in metrics["comparisons"]] == list(PAIRS) and len(PAIRS) == 8
    for m in metrics["metrics"]:
        raw = [c[m]["p_raw"] for c in metrics["comparisons"]]
        adjusted = [c[m]["p"] for c in metrics["comparisons"]]
        assert adjusted == pytest.approx(holm(raw))
        assert all(a >= r - 1e-15 for a, r in zip(adjusted, raw))
        by_raw = [a for _, a in sorted(zip(raw, adjusted))]
        assert by_raw == sorted(by_raw)
        for c in metrics["comparisons"]:
            assert c[m]["diff"] == pytest.approx(metrics["systems"][c["system"]][m] - metrics["systems"][c["vs"]][m])
    for ref in FREE:  # the tuned model's lift is its pairs' figures
        pair = next(c for c in metrics["comparisons"] if c["system"] == "tuned" and c["vs"] == ref)
        assert metrics["lift"][f"over_{ref}"] == {m: pair[m] for m in metrics["metrics"]}


def test_the_first_sentence_names_the_system_dev_chose(tiny_run):
    out, metrics, output = tiny_run
    deploy, dev = metrics["deploy"], metrics["dev"]["ndcg@10"]
    assert deploy["system"] == choose_deploy(dev, metrics["tuned_kept_on_dev"])
    best_dev = max(dev.values())
    free_best = next(s for s in FREE if dev[s] == max(dev[f] for f in FREE))
    if max(dev[t] for t in ("tuned", HYBRID_TUNED)) > max(dev[f] for f in FREE):  # a tuned system wins on dev
        assert dev[deploy["system"]] == best_dev and deploy["system"] not in FREE
        best_free = max(FREE, key=lambda s: metrics["systems"][s]["ndcg@10"])
        pair = next(c for c in metrics["comparisons"] if c["system"] == deploy["system"] and c["vs"] == best_free)
        assert deploy["best_free"] == best_free and deploy["p"] == pair["ndcg@10"]["p"]
        assert deploy["sentence"].startswith(f"Deploy {deploy['system']}: test NDCG@10 "
                                             f"{metrics['systems'][deploy['system']]['ndcg@10']:.4f}, "
                                             f"{pair['ndcg@10']['diff']:+.4f} over the best free system {best_free} (p = ")
    else:
        assert deploy["system"] == free_best
        assert deploy["sentence"].startswith(f"No tuned system beats the best free system {free_best} on dev: "
                                             f"deploy {free_best}")
    report = (out / "report.md").read_text().splitlines()
    assert report[0].startswith("# hardneg run") and report[2].startswith(deploy["sentence"])
    assert deploy["sentence"] in output and deploy["sentence"] in (out / "report.html").read_text()


def test_the_rrf_k_grid_is_one_checked_option():
    from hardneg.loop import EvalConfig

    assert EvalConfig().rrf_k == [10, 30, 60, 100]
    with pytest.raises(HardnegError, match="rrf_k must be an integer >= 1, not 0"):
        EvalConfig(rrf_k=[10, 0])
    with pytest.raises(HardnegError, match="rrf_k needs at least one value"):
        EvalConfig(rrf_k=[])


def test_choose_deploy_needs_a_tuned_system_to_beat_every_free_one():
    dev = {"bm25": 0.5, "bm25+prior": 0.5, "base": 0.4, HYBRID_BASE: 0.6, "tuned": 0.6, HYBRID_TUNED: 0.55}
    assert choose_deploy(dev, True) == HYBRID_BASE  # a tie is not a win
    assert choose_deploy(dev | {"bm25+prior": 0.7}, True) == "bm25+prior"  # the prior is free too
    assert choose_deploy(dev | {HYBRID_TUNED: 0.61}, True) == HYBRID_TUNED
    assert choose_deploy(dev | {HYBRID_TUNED: 0.61}, False) == HYBRID_BASE  # no round kept: no tuned model
    assert choose_deploy({s: 0.3 for s in SYSTEMS}, True) == "bm25"  # all tied: the simplest


def test_a_tuned_deploy_states_its_margin_over_the_best_free_system_on_test():
    """Dev chose a tuned system: the sentence gives its test NDCG@10 and its margin over the free system
    best on test (not the one best on dev), with that pair's Holm-adjusted p and interval."""
    from hardneg.evaluate import EvalResult, compare
    from hardneg.loop.hybrid import deploy_record

    rng = np.random.default_rng(0)
    per_query = {s: {"ndcg@10": rng.uniform(size=30)} for s in SYSTEMS}
    per_query[HYBRID_TUNED]["ndcg@10"] = np.minimum(per_query[HYBRID_BASE]["ndcg@10"] + 0.1, 1.0)
    result = EvalResult("test", [f"q{i}" for i in range(30)], per_query, {},
                        comparisons=compare(per_query, PAIRS, ["ndcg@10"], 2000), custom_pairs=True)
    dev = {"bm25": 0.7, "bm25+prior": 0.65, "base": 0.4, HYBRID_BASE: 0.5, "tuned": 0.6, HYBRID_TUNED: 0.8}
    record = deploy_record(choose_deploy(dev, True), dev, result, True)
    test = {s: float(v["ndcg@10"].mean()) for s, v in per_query.items()}
    best_free = max(FREE, key=test.get)
    pair = result.comparison(HYBRID_TUNED, best_free)
    assert record["system"] == HYBRID_TUNED and record["best_free"] == best_free and record["p"] == pair.p
    assert record["sentence"] == (f"Deploy {HYBRID_TUNED}: test NDCG@10 {test[HYBRID_TUNED]:.4f}, {pair.diff:+.4f} "
                                  f"over the best free system {best_free} (p = {format_p(pair.p, 2000)}, 95% CI "
                                  f"[{pair.ci95[0]:+.4f}, {pair.ci95[1]:+.4f}]).")


def test_rounds_are_recorded_and_gated_on_dev(tiny_run):
    out, metrics, _ = tiny_run
    r0, r1 = metrics["rounds"]
    assert (r0["miner"], r0["init"], r1["miner"], r1["init"]) == ("base", "base", "r0", "base")
    assert r0["vs"] == "base" and r1["vs"] == "r0" and r0["kept"] and r1["kept"]
    assert r0["dev"]["ndcg@10"] - metrics["dev"]["base"]["ndcg@10"] == pytest.approx(r0["gain"])
    assert r1["dev"]["ndcg@10"] - r0["dev"]["ndcg@10"] == pytest.approx(r1["gain"])
    assert r0["train"]["steps"] == r1["train"]["steps"] == 3
    assert r0["negatives"]["rows"] == 12  # 16 train queries, 4 held out for dev, never mined or trained
    dev_ids = set(metrics["dev"]["query_ids"])
    negatives = (out / "rounds" / "r0" / "negatives.jsonl").read_text().splitlines()
    mined = {json.loads(line)["query_id"] for line in negatives}
    assert len(dev_ids) == 4 and len(mined) == 12 and not mined & dev_ids


def test_remining_uses_the_freshly_trained_weights(tiny_run):
    """Round 1 mines with round 0's model: a new weights fingerprint, so the cache cannot serve base vectors."""
    out, metrics, _ = tiny_run
    r0, r1 = metrics["rounds"]
    base = metrics["base_fingerprint"]
    assert r0["miner_fingerprint"] == base
    assert r1["miner_fingerprint"] == r0["model_fingerprint"] != base
    assert r1["mining_cache"]["misses"] >= 1  # the train queries were never embedded with these weights
    from hardneg.candidates import CandidateSet

    models = CandidateSet.read(out / "rounds" / "r1" / "candidates.parquet").meta["models"]
    assert set(models.values()) == {r0["model_fingerprint"]}
    # the saved round-0 folder embeds with the same fingerprint as the model that mined round 1
    from sentence_transformers import SentenceTransformer

    from hardneg.encode.fingerprint import model_fingerprint

    saved = SentenceTransformer(r0["model_dir"], device="cpu", local_files_only=True)
    assert model_fingerprint(saved) == r0["model_fingerprint"]
    from hardneg.encode.fingerprint import folder_fingerprint  # the same, read from the folder's files (a warm eval)

    assert folder_fingerprint(r0["model_dir"]).fingerprint == r0["model_fingerprint"]


def test_one_encoder_per_model_and_negatives_handed_over_in_memory(tiny_run):
    """Each model is loaded and fingerprinted once: the base is fingerprinted from its files (and
    loaded once, to embed: the cache is cold), each round loads one fresh copy to train and keeps
    the trained model in memory, fingerprinted once. Training gets the exported rows themselves."""
    out, metrics, _ = tiny_run
    rounds = len(metrics["rounds"])
    counts = SEEN["counts"]
    # the base folder, at most once (0 when an earlier test of this process already read it: memoised)
    assert counts.get("file fingerprints", 0) <= 1
    assert counts["memory fingerprints"] == rounds  # each trained model, once
    # base encoder (cold cache) + one training copy per round (+ the trainer's own best-checkpoint reload)
    assert counts["loads"] <= 1 + 2 * rounds
    from hardneg.train import read_negatives

    for r, negatives in enumerate(SEEN["trained_on"]):
        assert isinstance(negatives, list)
        on_disk, _ = read_negatives(out / "rounds" / f"r{r}" / "negatives.jsonl")
        assert json.loads(json.dumps(negatives)) == on_disk


def test_run_and_demo_options_fail_fast(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\npath = "nowhere"\n')
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "o"), "--round-gate", "maybe"])
    assert result.exit_code == 2
    assert "command line: [loop] round_gate: expected one of 'gain', 'significant', got \"maybe\"" in result.output
    result = runner.invoke(app, ["demo", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "not found; the demo reads the repository's examples/" in result.output


def test_run_denoises_with_a_cross_encoder(tiny_model_dir, tmp_path):
    """[denoise] cross_encoder + [select] denoise_above: each round scores its window with the
    cross-encoder before selecting, and the denoise filter drops what it scores above T."""
    from hardneg.candidates import CandidateSet
    from test_crossencoder import build_tiny_cross_encoder

    ce = build_tiny_cross_encoder(tmp_path / "ce", tiny_model_dir)
    data = write_toy_beir(tmp_path / "toy")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE.format(data=data, model=tiny_model_dir, cache=tmp_path / "cache"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(recipe), "--out", str(out), "--set", "loop.rounds=0",
                                 "--set", f'denoise.cross_encoder="{ce}"', "--set", 'denoise.window="1:5"',
                                 "--set", "select.denoise_above=0.0"])
    assert result.exit_code == 0, result.output
    r0 = out / "rounds" / "r0"
    report = json.loads((r0 / "rescore.json").read_text())
    assert report["report"]["pairs"] > 0 and report["check"] is None  # a hand-built CE has no recorded check
    table = CandidateSet.read(r0 / "candidates.parquet").table
    scored = table["score_ce"].notna()
    assert scored.any() and (table.loc[scored & ~table["is_positive"], "rank_dense"] <= 5).all()
    stats = json.loads((r0 / "stats.json").read_text())
    denoise = next(f for f in stats["filters"] if f["filter"] == "denoise")
    above = int(((table["score_ce"] > 0) & ~table["is_positive"]).sum())
    assert 0 < denoise["removed"] <= above


def test_run_mines_and_trains_on_chunks_and_evaluates_documents(tiny_model_dir, tmp_path):
    """[mine] chunk_tokens: rounds mine and train on chunks (a positive's other chunks are never
    negatives); dev and test rank whole documents by their best chunk."""
    from hardneg.candidates import CandidateSet

    data = write_toy_beir(tmp_path / "toy")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE.format(data=data, model=tiny_model_dir, cache=tmp_path / "cache"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(recipe), "--out", str(out), "--set", "loop.rounds=0",
                                 "--set", "mine.chunk_tokens=6", "--set", "mine.chunk_overlap=2"])
    assert result.exit_code == 0, result.output
    r0 = out / "rounds" / "r0"
    cands = CandidateSet.read(r0 / "candidates.parquet")
    assert cands.meta["chunks"]["max_tokens"] == 6 and cands.meta["chunks"]["documents_split"] > 0
    table = cands.table
    assert table["doc_id"].str.contains("#c").any()
    rows = [json.loads(line) for line in (r0 / "negatives.jsonl").read_text().splitlines()]
    parents = dict(zip(table["doc_id"], table["parent_id"]))
    for row in rows:  # no negative is a chunk of one of the query's positive documents
        pos_docs = {parents[d] for d in row["pos_ids"]}
        assert not pos_docs & {parents[d] for d in row["neg_ids"]}
    docs = {json.loads(line)["_id"] for line in (data / "corpus.jsonl").read_text().splitlines()}
    for name in SYSTEMS:
        ranked = {line.split()[2] for line in (out / "eval" / "runs" / run_file(name)).read_text().splitlines()}
        assert ranked and ranked <= docs, name  # evaluation ranks documents, not chunks
    assert (out / "report.html").is_file()


def test_denoise_above_without_a_cross_encoder_is_a_recipe_error(tmp_path, tiny_model_dir):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(data=tmp_path, model=tiny_model_dir, cache=tmp_path / "cache"))
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "o"), "--set", "select.denoise_above=1"])
    assert result.exit_code == 2 and "needs [denoise] cross_encoder" in result.output


def test_bm25_prior_weight_is_chosen_on_dev_and_scored_on_test(tiny_run):
    """bm25+prior (free): the prior recomputed here from the train positives the run trained on, its
    weight the argmax of dev NDCG@10 over the grid, its test score that weight's."""
    from collections import Counter

    from hardneg.metrics import per_query_scores
    from hardneg.retrieve.prior import with_prior

    out, metrics, _ = tiny_run
    data = load_dataset(out.parent / "toy")
    view, _ = split_dev(data, DataConfig(dev_holdout=0.25), 0)
    base = _stored(out, "baselines.npz", data.doc_ids)
    train = view.positives("train")
    counts = Counter(d for docs in train.values() for d in set(docs))
    prior = np.array([counts[d] / len(train) for d in data.doc_ids])

    def ndcg(ds, split, ranking):
        return float(per_query_scores(ds.split_qrels(split), ranking, ["ndcg@10"])["ndcg@10"].mean())

    grid = metrics["config"]["eval"]["prior_weights"]
    on_dev = {w: ndcg(view, "dev", with_prior(base["dev bm25"], prior, w)) for w in grid}
    w = next(x for x in grid if on_dev[x] == max(on_dev.values()))
    record = metrics["prior"]
    assert record["weight"] == w and [d["weight"] for d in record["dev"]] == grid
    assert metrics["systems"]["bm25+prior"]["ndcg@10"] == pytest.approx(
        ndcg(data, "test", with_prior(base["bm25"], prior, w)), abs=1e-12)
    assert ("tuned", "bm25+prior") in [(c["system"], c["vs"]) for c in metrics["comparisons"]]
