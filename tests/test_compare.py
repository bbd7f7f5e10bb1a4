"""`hardneg compare` on the toy BEIR folder with the tiny model: every strategy in seconds, resumable per
(row, seed), byte-identical units for the same seeds, refused on a changed config, best row from dev."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hardneg.candidates import CandidateSet
from hardneg.cli import app
from hardneg.compare import STRATEGIES, _ordered, compare
from hardneg.compare.config import Budget
from hardneg.compare.trap import format_trap, trap_of
from hardneg.compare.units import TIMING, training_rows
from hardneg.data import load_dataset
from hardneg.errors import HardnegError
from hardneg.recipe import load_recipe
from hardneg.select import SelectionPolicy
from hardneg.train import ShortRows
from toybeir import write_toy_beir

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()

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
window = "3:10"
percent = "off"
num_negatives = 2

[train]
batch_size = 4
lr = 1e-3
warmup_ratio = 0.0
max_seq_length = 32
eval_corpus = 16
logging_steps = 1
show_progress = false

[eval]
depth = 20
n_resamples = 2000

[audit]
draws = 2

[denoise]
cross_encoder = "{ce}"
window = "1:10"
"""


def _toy(folder: Path) -> Path:
    """The toy folder with a second positive for train queries q0..q7 (d8..d15: shared with q8..q15)."""
    data = write_toy_beir(folder)
    qrels = data / "qrels" / "train.tsv"
    qrels.write_text(qrels.read_text() + "".join(f"q{i}\td{i + 8}\t1\n" for i in range(8)))
    return data


@pytest.fixture(scope="module")
def toy(tiny_model_dir, tmp_path_factory):
    from test_crossencoder import build_tiny_cross_encoder

    tmp = tmp_path_factory.mktemp("compare")
    ce = build_tiny_cross_encoder(tmp / "ce", tiny_model_dir)
    recipe = tmp / "tiny.toml"
    recipe.write_text(RECIPE.format(data=_toy(tmp / "toy"), model=tiny_model_dir, cache=tmp / "cache", ce=ce))
    return recipe


@pytest.fixture(scope="module")
def full(toy, tmp_path_factory):
    """Every strategy, one seed, through the command line."""
    out = tmp_path_factory.mktemp("full") / "out"
    result = runner.invoke(app, ["compare", str(toy), "--out", str(out), "--seeds", "1"])
    assert result.exit_code == 0, result.output
    return out, result.output


def _units(out: Path) -> dict[str, dict]:
    return {f.stem: json.loads(f.read_text()) for f in sorted((out / "units").glob("*.json"))}


def _without_timing(unit: dict) -> str:
    return json.dumps({k: v for k, v in unit.items() if k != TIMING}, sort_keys=True)


def test_every_strategy_runs_once_with_the_same_budget(full):
    out, output = full
    units = _units(out)
    assert sorted(units) == sorted(f"{name}-s0" for name in STRATEGIES)
    trained = [u for u in units.values() if STRATEGIES[u["row"]].trains]
    assert len({json.dumps(u["budget"], sort_keys=True) for u in trained}) == 1
    assert trained[0]["budget"] == {"queries": 12, "epochs": 1, "steps": 3, "batch_size": 4, "k": 2,
                                    "max_seq_length": 32, "lr": 1e-3}
    assert units["in-batch-s0"]["cost"]["encoded_training"] == 3 * 4 * 2  # k = 0: anchor + positive
    assert units["default-s0"]["cost"]["encoded_training"] == 3 * 4 * 4
    assert units["bm25+prior-s0"]["info"]["prior_weight"] in units["bm25+prior-s0"]["info"]["weights_tried"]
    assert units["denoise-s0"]["info"]["policy"]["denoise_above"] == 0.0
    for u in units.values():  # dev and test, every metric a list over the same queries
        assert len(u["metrics"]["test"]["query_ids"]) == 8 and len(u["metrics"]["dev"]["query_ids"]) == 4
        assert u["config_hash"] and u["cpu"] and u["precision"]["train"]
    table = (out / "table.md").read_text()
    assert all(f"| {name}" in table for name in STRATEGIES) and "8 clean" in table
    assert "<table>" in (out / "report.html").read_text()
    assert (out / "plots" / "quality_vs_compute.png").read_bytes()[:4] == b"\x89PNG"
    trap = json.loads((out / "trap.json").read_text())
    assert set(trap["rows"]) == {"random", "bm25-top", "dense-top", "default", "hybrid", "auto", "denoise"}
    assert all(r["queries"] == 6 for r in trap["rows"].values())  # q0..q7 less the held-out dev ones
    assert "wrote" in output


def test_every_dense_row_is_also_fused_with_bm25_k_chosen_on_dev(full, toy, tmp_path):
    out, _ = full
    units = _units(out)
    grid = load_recipe(toy).eval.rrf_k
    for name, u in units.items():
        if u["row"] in ("bm25", "bm25+prior"):
            assert "hybrid" not in u["metrics"]
            continue
        h = u["metrics"]["hybrid"]
        assert h["rrf_k_grid"] == grid and h["rrf_k"] in grid
        chosen = h["dev_ndcg@10_by_k"][grid.index(h["rrf_k"])]
        assert chosen == max(h["dev_ndcg@10_by_k"])  # k is dev's choice
        assert abs(sum(h["dev"]["ndcg@10"]) / len(h["dev"]["ndcg@10"]) - chosen) < 1e-12
        assert h["test"]["query_ids"] == u["metrics"]["test"]["query_ids"]
    doc = json.loads((out / "compare.json").read_text())["table"]
    rows = {r["row"]: r for r in doc["rows"]}
    assert rows["bm25"]["hybrid ndcg@10"] is None and rows["base"]["hybrid ndcg@10"] is not None
    vs = rows["default"]["hybrid vs hybrid base"]
    assert vs["p"] >= vs["p_raw"] and vs["ref"] == "hybrid(bm25+base)"
    assert "hybrid(bm25+row) NDCG@10" in (out / "table.md").read_text()
    # a unit stored before hybrids were scored (or with another grid) leaves its row's cells empty
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    file = copy / "units" / "random-s0.json"
    unit = json.loads(file.read_text())
    del unit["metrics"]["hybrid"]
    file.write_text(json.dumps(unit))
    table = compare(load_recipe(toy), copy, strategies=list(STRATEGIES), seeds=1, table_only=True).table
    rows = {r["row"]: r for r in table["rows"]}
    assert rows["random"]["hybrid ndcg@10"] is None and "hybrid vs hybrid base" not in rows["random"]
    assert rows["default"]["hybrid ndcg@10"] is not None


def test_best_row_is_chosen_on_dev_and_recommended(full):
    out, _ = full
    doc = json.loads((out / "compare.json").read_text())["table"]
    recipe_rows = [r for r in doc["rows"] if STRATEGIES[r["row"]].recipe is not None]
    assert doc["best"] == max(recipe_rows, key=lambda r: r["dev ndcg@10"])["row"]
    config = load_recipe(out / "recommended.toml")
    assert config.policy.num_negatives == 2


def test_the_best_row_comes_from_dev_not_from_test(full, toy, tmp_path):
    """A fixture where dev and test disagree: random best on dev and worst on test, default the reverse."""
    out = tmp_path / "out"
    shutil.copytree(full[0], out)
    for row, dev, test in (("random", 1.0, 0.0), ("default", 0.0, 1.0)):
        file = out / "units" / f"{row}-s0.json"
        unit = json.loads(file.read_text())
        unit["metrics"]["dev"]["ndcg@10"] = [dev] * 4
        unit["metrics"]["test"]["ndcg@10"] = [test] * 8
        file.write_text(json.dumps(unit))
    ran = []
    result = compare(load_recipe(toy), out, strategies=list(STRATEGIES), seeds=1, table_only=True, on_unit=ran.append)
    assert ran == [] and result.best == "random"
    rows = {r["row"]: r for r in result.table["rows"]}
    recipe_rows = [n for n in rows if STRATEGIES[n].recipe is not None]
    assert max(recipe_rows, key=lambda n: rows[n]["ndcg@10"]) == "default" and rows["default"]["ndcg@10"] == 1.0
    assert rows["random"]["ndcg@10"] == 0.0
    assert load_recipe(out / "recommended.toml").policy.sampler.value == "random"
    assert "| random (best on dev)" in (out / "table.md").read_text()


class Killed(Exception):
    pass


def test_a_killed_compare_resumes_to_byte_identical_units(full, toy, tmp_path):
    out, config, seen = tmp_path / "out", load_recipe(toy), []

    def kill_after_first(unit):
        seen.append(unit["row"])
        raise Killed

    with pytest.raises(Killed):
        compare(config, out, ["default", "random"], 1, on_unit=kill_after_first)
    assert seen == ["base"] and [f.name for f in (out / "units").iterdir()] == ["base-s0.json"]
    compare(config, out, ["default", "random"], 1, on_unit=lambda u: seen.append(u["row"]))
    assert seen == ["base", "default", "random"]  # base was not computed again
    again, reference = _units(out), _units(full[0])
    assert sorted(again) == ["base-s0", "default-s0", "random-s0"]
    for name, unit in again.items():
        assert _without_timing(unit) == _without_timing(reference[name]), name


def test_trap_only_trains_nothing_and_gives_the_full_compares_trap(full, toy, tmp_path):
    out = tmp_path / "trap"
    result = runner.invoke(app, ["compare", str(toy), "--out", str(out), "--trap-only"])
    assert result.exit_code == 0, result.output
    assert not (out / "units").exists() and not (out / "table.md").exists()
    assert (out / "trap.json").read_bytes() == (full[0] / "trap.json").read_bytes()
    assert "| row | queries |" in (out / "trap.md").read_text() and "| row | queries |" in result.output


def test_a_unit_of_another_config_is_refused(toy, tmp_path):
    out = tmp_path / "out"
    compare(load_recipe(toy), out, ["base"], 1)
    changed = load_recipe(toy, {"train": {"lr": 2e-3}})
    with pytest.raises(HardnegError, match="computed with another recipe"):
        compare(changed, out, ["base"], 1)


def test_a_row_dropping_most_queries_warns_loudly(toy, tmp_path):
    said = []
    config = load_recipe(toy, {"select": {"num_negatives": 5, "window": "3:6"}})  # 4 ranks: never 5 negatives
    result = compare(config, tmp_path / "out", ["default"], 1, progress=said.append)
    warning = [s for s in said if s.startswith("WARNING: default drops")]
    assert warning and "of the train queries" in warning[0]
    row = next(r for r in result.table["rows"] if r["row"] == "default")
    assert row["warning"] and row["dropped_share"] == 1.0 and row["queries kept"] == 0
    assert "no training row" in " ".join(said)  # nothing to train on: the base model's figures
    assert "dropped" in (tmp_path / "out" / "table.md").read_text()


# ---- the parts, alone ----------------------------------------------------------------------
def test_the_trap_counts_hidden_positives_selected_as_negatives():
    """Two queries, positives at ranks 1-2, others at 3-5: hiding one positive of each, top-2 picks the
    hidden one (rank 1 or 2) and rank 3; a window from rank 3 never does."""
    rows = [(q, f"{q}-d{r}", r <= 2, r) for q in ("a", "b") for r in range(1, 6)]
    df = pd.DataFrame(rows, columns=["query_id", "doc_id", "is_positive", "rank_dense"])
    df["score_dense"] = 1.0 - 0.1 * df["rank_dense"]
    cands = CandidateSet.from_frame(df, scorers=["dense"])
    top = trap_of(cands, SelectionPolicy.unfiltered(num_negatives=2), [], draws=3)
    assert top["queries"] == 2 and top["selected"] == 4 and top["hidden"] == 2 and top["share"] == 0.5
    assert top["buckets"] == [{"bucket": "1-5", "selected": 4.0, "hidden": 2.0, "share": 0.5}]
    window = trap_of(cands, SelectionPolicy.unfiltered(num_negatives=2, window=(3, 5)), [], draws=3)
    assert window["hidden"] == 0 and window["share"] == 0.0


def test_the_trap_does_not_depend_on_the_candidate_tables_row_order():
    """A set mined in memory and the same set read back from Parquet (sorted by query, rank, doc) differ
    only in row order; the hidden positives, hence the trap, must not."""
    rows = [(q, f"{q}-d{r}", r % 2 == 1, r) for q in ("a", "b", "c") for r in range(1, 13)]
    df = pd.DataFrame(rows, columns=["query_id", "doc_id", "is_positive", "rank_dense"])
    df["score_dense"] = 1.0 - 0.05 * df["rank_dense"]
    cands = CandidateSet.from_frame(df, scorers=["dense"])
    shuffled = CandidateSet.from_frame(df.sample(frac=1.0, random_state=3).reset_index(drop=True), scorers=["dense"])
    policy = SelectionPolicy.unfiltered(num_negatives=3)
    traps = [trap_of(c, policy, [], draws=4, seed=s) for c in (cands, shuffled) for s in (0, 1)]
    assert traps[0] == traps[2] and traps[1] == traps[3]
    assert traps[0]["hidden"] > 0


def test_the_trap_table_lists_buckets_in_rank_order_whichever_row_names_them_first():
    trap = {"hide": 0.5, "draws": 1, "seed": 0, "rows": {
        "window": {"queries": 2, "selected": 2.0, "hidden": 0.0, "share": 0.0,
                   "buckets": [{"bucket": "21-50", "selected": 2.0, "hidden": 0.0, "share": 0.0}]},
        "top": {"queries": 2, "selected": 3.0, "hidden": 1.0, "share": 1 / 3,
                "buckets": [{"bucket": "1-5", "selected": 2.0, "hidden": 1.0, "share": 0.5},
                            {"bucket": "unranked", "selected": 1.0, "hidden": 0.0, "share": 0.0}]}}}
    header = format_trap(trap).splitlines()[0]
    assert header.index("| 1-5 |") < header.index("| 21-50 |") < header.index("| unranked |")
    assert "| top | 2 | 3.0 | 33.3% | 50.0% | - | 0.0% |" in format_trap(trap)


def test_one_training_row_per_query_per_epoch_with_a_seeded_positive(tmp_path):
    view = load_dataset(_toy(tmp_path / "toy"))
    budget = Budget(queries=16, epochs=3, steps=12, batch_size=4, k=1, max_seq_length=32, lr=1e-3)
    rows = training_rows(view, None, budget, 0, 0, ShortRows.DROP)
    assert len(rows) == 48 and all(len(r["pos"]) == 1 for r in rows)
    per_epoch = [[r["query_id"] for r in rows[i * 16:(i + 1) * 16]] for i in range(3)]
    assert per_epoch[0] == per_epoch[1] == sorted(view.positives("train"))
    chosen = {s: [r["pos_ids"][0] for r in training_rows(view, None, budget, s, 0, ShortRows.DROP)] for s in (0, 1)}
    assert chosen[0] == [r["pos_ids"][0] for r in rows] and chosen[0] != chosen[1]
    assert len({tuple(chosen[0][i::16]) for i in range(16)} - {(x, x, x) for x in chosen[0]}) > 0  # epochs differ
    negatives = {("q0", None): ["n1"], ("q1", "d1"): ["n1", "n2"]}
    kept = training_rows(view, negatives, budget, 0, 2, ShortRows.DROP)
    assert {r["query_id"] for r in kept} == {"q1"}
    assert {r["query_id"] for r in training_rows(view, negatives, budget, 0, 2, ShortRows.REPEAT)} == {"q0", "q1"}
    # positive consistency: only the allowed positives are drawn; a query with none gives no row
    allowed = {"q0": ["d8"], "q1": ["d1"]}
    consistent = training_rows(view, None, budget, 0, 0, ShortRows.DROP, allowed)
    assert {(r["query_id"], r["pos_ids"][0]) for r in consistent} == {("q0", "d8"), ("q1", "d1")}
    assert len(consistent) == 2 * 3


def test_rows_run_after_the_rows_they_need_and_base_first():
    assert [s.name for s in _ordered(["default+round", "bm25"])] == ["base", "default", "default+round", "bm25"]
    with pytest.raises(HardnegError, match="unknown strategies"):
        compare(None, "nowhere", ["bogus"])
