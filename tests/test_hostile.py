"""Hostile input (issue 17): every bad input is one line, exit 2 (ours) or 1 (the machine's),
no traceback, and nothing written into --out. In-process through typer's CliRunner, plus one
subprocess smoke case; BM25 only and failures before any model loads, so the suite takes seconds.

Each case builds its arguments from the ``world`` (a toy BEIR folder, variants of it, a mined
candidate set) and names a fragment the error line must hold: the file, the line and the field,
or the option.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.data import load_pairs
from toybeir import write_toy_beir

runner = CliRunner()
H = "query-id\tcorpus-id\tscore\n"


class World:
    """Inputs shared by the cases: the toy folder, its broken variants and a BM25 mine of it."""

    def __init__(self, root: Path):
        self.root = root
        self.toy = write_toy_beir(root / "toy")
        res = runner.invoke(app, ["mine", "--data", str(self.toy), "--retriever", "bm25", "--out", str(root / "mined")])
        assert res.exit_code == 0, res.output
        self.mined = root / "mined"

    def variant(self, name: str) -> str:
        """A copy of the toy folder with the files of ``VARIANTS[name]`` replaced."""
        folder = self.root / name
        if not folder.exists():
            shutil.copytree(self.toy, folder)
            for rel, text in VARIANTS[name].items():
                (folder / rel).write_text(text(self) if callable(text) else text, encoding="utf-8")
        return str(folder)

    def file(self, name: str, data: str | bytes) -> str:
        path = self.root / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return str(path)

    def recipe(self, name: str, body: str) -> str:
        return self.file(name, f'[data]\npath = "{self.toy}"\n' + body if "[data]" not in body else body)

    def readonly(self) -> str:
        """A folder we may not write in: /sys as root (chmod binds no root), else a chmod 555 folder."""
        if os.geteuid() == 0:
            return "/sys/hardneg-hostile"
        folder = self.root / "ro"
        folder.mkdir(exist_ok=True)
        folder.chmod(0o555)
        return str(folder / "out")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("hostile"))


@dataclass
class Case:
    id: str
    args: Callable[[World, str], list[str]]  # (world, out) -> the command line
    expect: str  # a fragment of the error line: file:line, field or --option
    code: int = 2


SURROGATE = '{"_id": "d0", "title": "Apple", "text": "bad \\ud800 text"}\n'
NESTED = "[" * 100_000 + "]" * 100_000 + "\n"
TEST, TRAIN, CORPUS = "qrels/test.tsv", "qrels/train.tsv", "corpus.jsonl"
#: toy folders with some files replaced (a callable builds the text from the world)
VARIANTS = {
    "empty": {TEST: ""}, "header": {TEST: H}, "score0": {TEST: H + "q16\td16\t0\n"}, "empty-train": {TRAIN: H},
    **{f"score-{s}": {TEST: H + f"q16\td16\t{s}\n"} for s in ("inf", "-inf", "nan", "0.5", "high", "1e30")},
    "nested": {CORPUS: NESTED}, "surrogate": {CORPUS: SURROGATE},
    "spaced-id": {CORPUS: lambda w: (w.toy / CORPUS).read_text().replace('"_id": "f0"', '"_id": "f 0"')},
    "bom": {TEST: "\ufeff" + H + "".join(f"q{i}\td{i}\t1\n" for i in range(16, 24))},
    "float": {TEST: H + "q16\td16\t2.0\n"},
    "retexted": {CORPUS: lambda w: (w.toy / CORPUS).read_text().replace('"text": "', '"text": "changed ', 1)},
}


def mine(*extra: str):
    return lambda w, o: ["mine", "--data", str(w.toy), "--retriever", "bm25", "--out", o, *extra]


def eval_on(folder: Callable[[World], str], *extra: str):
    return lambda w, o: ["eval", "--data", folder(w), "-r", "bm25", "--out", o, *extra]


CASES = [
    # ---- empty splits
    Case("validate-empty-test", lambda w, o: ["validate", "--data", w.variant("empty")],
         "qrels/test.tsv: split 'test' has no positive rows"),
    Case("validate-header-only-test", lambda w, o: ["validate", "--data", w.variant("header")],
         "qrels/test.tsv: split 'test' has no positive rows"),
    Case("validate-score0-only-test", lambda w, o: ["validate", "--data", w.variant("score0")],
         "qrels/test.tsv: split 'test' has no positive rows"),
    Case("eval-empty-test", eval_on(lambda w: w.variant("empty")), "split 'test' has no positive rows"),
    Case("eval-score0-test", eval_on(lambda w: w.variant("score0")), "split 'test' has no positive rows"),
    Case("mine-empty-train (no .mine-checkpoint left)",
         lambda w, o: ["mine", "--data", w.variant("empty-train"), "--retriever", "bm25", "--out", o],
         "qrels/train.tsv: split 'train' has no positive rows"),
    # ---- scores
    *[Case(f"validate-score-{s}", lambda w, o, s=s: ["validate", "--data", w.variant(f"score-{s}")],
           f"qrels/test.tsv:2: score must be an integer") for s in ("inf", "-inf", "nan", "0.5", "high")],
    Case("validate-score-1e30", lambda w, o: ["validate", "--data", w.variant("score-1e30")],
         "qrels/test.tsv:2: score must be an integer of magnitude at most 2147483647"),
    Case("eval-score-1e30", eval_on(lambda w: w.variant("score-1e30")), "qrels/test.tsv:2: score"),
    # ---- options checked before any output
    Case("mine-format-bogus", mine("--format", "bogus"), "--format expects one of"),
    Case("mine-seed-negative", mine("--seed", "-1"), "--seed: must be in [0, 4294967295], not -1"),
    Case("mine-seed-too-big", mine("--seed", str(2**32)), "--seed: must be in [0, 4294967295]"),
    Case("mine-margin-nan", mine("--margin", "nan"), "--margin: must be a number, not nan"),
    Case("mine-near-dup-with-bm25", mine("--near-dup", "0.9"), "--near-dup needs embeddings"),
    Case("select-near-dup-on-bm25-candidates",
         lambda w, o: ["select", str(w.mined / "candidates.parquet"), "--near-dup", "0.9", "--out", o],
         "near_dup: these candidates hold no pos_cosine"),
    Case("eval-depth-0", eval_on(lambda w: str(w.toy), "--depth", "0"), "--depth: must be an integer >= 10, not 0"),
    Case("mine-depth-0", mine("--depth", "0"), "--depth: must be an integer >= 1, not 0"),
    Case("train-seed-negative", lambda w, o: ["train", "--data", str(w.toy), "--out", o, "--seed", "-5"],
         "--seed: must be in [0, 4294967295]"),
    # ---- `run`: everything before recipe.toml
    Case("run-missing-data", lambda w, o: ["run", w.recipe("r1.toml", '[data]\npath = "/nonexistent/data"\n'), "--out", o],
         "/nonexistent/data: no such file or folder"),
    Case("run-model-not-a-model", lambda w, o: ["run", w.recipe("r2.toml", f'[model]\npath = "{w.toy}"\n'), "--out", o],
         "[model] path: "),
    Case("run-bogus-mine-retriever", lambda w, o: ["run", w.recipe("r3.toml", '[mine]\nretriever = "bogus"\n'), "--out", o],
         "[mine] retriever must be one of bm25, dense, hybrid"),
    Case("run-missing-cross-encoder",
         lambda w, o: ["run", w.recipe("r4.toml", '[denoise]\ncross_encoder = "/nonexistent/ce"\n'), "--out", o],
         "[denoise] cross_encoder: /nonexistent/ce: no such model folder"),
    Case("run-train-seed-1e20", lambda w, o: ["run", w.recipe("r5.toml", "[train]\nseed = 1e20\n"), "--out", o],
         "[train] seed must be in [0, 4294967295]"),
    Case("run-empty-test-split", lambda w, o: ["run", w.recipe("r6.toml", f'[data]\npath = "{w.variant("empty")}"\n'),
                                               "--out", o], "split 'test' has no positive rows"),
    Case("run-retriever-name-path", lambda w, o: ["run", w.recipe("r7.toml", '[mine]\nretriever = "bm25:../x"\n'),
                                                  "--out", o], "is not a plain name"),
    # ---- model folders that are not models
    Case("mine-model-not-a-model", lambda w, o: ["mine", "--data", str(w.toy), "--model", str(w.toy), "--out", o],
         "--model: "),
    Case("eval-model-not-a-model", lambda w, o: ["eval", "--data", str(w.toy), "--model", str(w.toy), "--out", o],
         "--model: "),
    Case("eval-retriever-model-missing", lambda w, o: ["eval", "--data", str(w.toy), "-r", "dense=./no/model",
                                                       "--out", o], "./no/model: no such model folder"),
    Case("train-model-not-a-model", lambda w, o: ["train", "--data", str(w.toy), "--model", str(w.toy), "--out", o],
         "--model: "),
    Case("train-model-is-a-file", lambda w, o: ["train", "--data", str(w.toy), "--model", str(w.toy / "corpus.jsonl"),
                                                "--out", o], "a file, not a model folder"),
    # ---- unreadable inputs
    Case("select-data-texts-changed",
         lambda w, o: ["select", str(w.mined / "candidates.parquet"), "--data", w.variant("retexted"), "--out", o],
         "the corpus differs from the one these candidates were mined on"),
    Case("select-corrupt-parquet", lambda w, o: ["select", w.file("bad.parquet", b"PAR1 not really"), "--out", o],
         "bad.parquet: not a readable Parquet file"),
    Case("select-empty-parquet", lambda w, o: ["select", w.file("empty.parquet", b""), "--out", o],
         "empty.parquet: not a readable Parquet file"),
    Case("train-corrupt-negatives-meta", lambda w, o: ["train", "--data", str(w.toy), "--negatives",
                                                       _negatives_with_meta(w, "{not json"), "--out", o],
         "negatives.meta.json:1: malformed JSON"),
    Case("validate-deeply-nested-json", lambda w, o: ["validate", "--data", w.variant("nested")],
         "corpus.jsonl:1: JSON nested too deeply"),
    Case("validate-lone-surrogate", lambda w, o: ["validate", "--data", w.variant("surrogate")],
         "corpus.jsonl:1: field 'text' holds a lone surrogate"),
    Case("mine-lone-surrogate", lambda w, o: ["mine", "--data", w.variant("surrogate"), "--retriever", "bm25", "--out", o],
         "corpus.jsonl:1: field 'text' holds a lone surrogate"),
    Case("synth-crop-lone-surrogate", lambda w, o: ["synth", "--corpus", w.file("sur.jsonl", SURROGATE), "--method",
                                                    "crop", "--out", o], "sur.jsonl:1: field 'text' holds a lone surrogate"),
    Case("validate-missing-data", lambda w, o: ["validate", "--data", str(w.root / "nope")], "nope: no such file or folder"),
    # ---- output folders
    Case("mine-out-is-a-file", lambda w, o: ["mine", "--data", str(w.toy), "--retriever", "bm25", "--out",
                                             w.file("afile.txt", "x")], "--out: ", 2),
    Case("mine-out-read-only", lambda w, o: ["mine", "--data", str(w.toy), "--retriever", "bm25", "--out", w.readonly()],
         "--out: "),
    Case("eval-out-read-only", lambda w, o: ["eval", "--data", str(w.toy), "-r", "bm25", "--out", w.readonly()], "--out: "),
    Case("synth-out-read-only", lambda w, o: ["synth", "--corpus", str(w.toy), "--out", w.readonly()], "--out: "),
    Case("eval-cache-read-only", lambda w, o: ["eval", "--data", str(w.toy), "-r", "bm25", "--cache-dir", w.readonly(),
                                               "--out", o], "--cache-dir: "),
    Case("run-out-read-only", lambda w, o: ["run", w.recipe("r8.toml", ""), "--out", w.readonly()], "--out: "),
    # ---- paths and formats
    Case("eval-retriever-name-escapes-out", eval_on(lambda w: str(w.toy), "-r", "bm25:../../name"),
         "'../../name' is not a plain name"),
    Case("eval-doc-id-with-space (TREC)", eval_on(lambda w: w.variant("spaced-id")),
         "corpus-id: id 'f 0' cannot be written to a TREC run"),
    Case("synth-id-with-tab (qrels TSV)", lambda w, o: ["synth", "--corpus", w.file("tab.jsonl", json.dumps(
        {"_id": "a\tb", "title": "T", "text": " ".join(["word"] * 60)}) + "\n"), "--method", "crop", "--out", o],
         "tab.jsonl: _id: id 'a\\tb' cannot be written to a qrels TSV"),
    Case("validate-pairs-missing-corpus", lambda w, o: ["validate", "--data", w.file("p.jsonl", "{}\n")],
         "p.jsonl: a pairs file needs --corpus"),
]


def _negatives_with_meta(w: World, meta: str) -> str:
    folder = w.root / "neg"
    folder.mkdir(exist_ok=True)
    shutil.copy(w.mined / "negatives.jsonl", folder / "negatives.jsonl")
    (folder / "negatives.meta.json").write_text(meta)
    return str(folder / "negatives.jsonl")


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.is_dir() else []


def assert_one_line_error(result, expect: str, code: int) -> str:
    assert not (result.exception and not isinstance(result.exception, SystemExit)), result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == code, result.output
    assert len(errors) == 1 and expect in errors[0], result.output
    return errors[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_one_line_and_writes_nothing(world, tmp_path, case):
    out = tmp_path / "out"
    result = runner.invoke(app, case.args(world, str(out)))
    assert_one_line_error(result, case.expect, case.code)
    assert _files(out) == []


def test_no_name_trec_escapes_out(world, tmp_path):
    result = runner.invoke(app, eval_on(lambda w: str(w.toy), "-r", "bm25:../../name")(world, str(tmp_path / "a" / "b")))
    assert result.exit_code == 2 and not list(tmp_path.rglob("name.trec"))


def test_full_disk_is_one_line_exit_1_and_no_partial_file(world, tmp_path, monkeypatch):
    """ENOSPC when the candidates land: exit 1 naming the file; no candidates.parquet, no temporary
    file; the query-chunk checkpoint stays (a rerun resumes once there is room)."""
    real = os.replace

    def full(src, dst):
        if Path(dst).name == "candidates.parquet":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "out"
    line = assert_one_line_error(runner.invoke(app, mine()(world, str(out))), "No space left on device", 1)
    assert "candidates.parquet" in line
    assert [f for f in _files(out) if not f.startswith(".mine-checkpoint")] == []
    monkeypatch.setattr(os, "replace", real)
    # the checkpoint's chunk corrupted while the disk was full: one line, pointing at --restart
    chunk = next((out / ".mine-checkpoint").glob("chunk_*.parquet"))
    chunk.write_bytes(b"garbage")
    line = assert_one_line_error(runner.invoke(app, mine()(world, str(out))), "corrupt checkpoint chunk", 2)
    assert chunk.name in line and "--restart" in line
    assert not (out / "candidates.parquet").exists()
    assert runner.invoke(app, [*mine()(world, str(out)), "--restart"]).exit_code == 0  # and --restart recovers


def test_a_metric_ranx_gets_wrong_is_one_line_exit_1_and_no_file(world, tmp_path, monkeypatch):
    """A kernel gone wrong (as numba's racing cache left one, issue 17): `eval` refuses to write."""
    from hardneg import metrics

    real = metrics._ranx_scores

    def corrupted(*args):
        out = real(*args)
        out["ndcg@10"][0] = 1.0 - out["ndcg@10"][0]
        return out

    monkeypatch.setattr(metrics, "_ranx_scores", corrupted)
    out = tmp_path / "out"
    line = assert_one_line_error(runner.invoke(app, eval_on(lambda w: str(w.toy))(world, str(out))),
                                 "numpy reference", 1)
    assert "ndcg@10 of query" in line
    assert _files(out) == []


# ---- rightly accepted -------------------------------------------------------------------------
def test_bom_is_decoded_not_reported(world):
    """A UTF-8 BOM (Excel's, Notepad's) is an encoding mark, not the header's first character."""
    folder = world.variant("bom")
    result = runner.invoke(app, ["validate", "--data", folder])
    assert result.exit_code == 0, result.output
    assert "test: 8 queries, 8 positives" in result.output


def test_integral_float_scores_still_read(world):
    """``2.0`` is the integer 2 (some exports write floats); only fractions are refused."""
    folder = world.variant("float")
    assert runner.invoke(app, ["validate", "--data", folder]).exit_code == 0


def test_query_id_0_is_an_id_not_missing(world, tmp_path):
    """``"query_id": 0`` is the id "0" (it used to be dropped as falsy, hashing the text instead)."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query_id": 0, "query": "the apple", "positive_id": "d0"}) + "\n")
    ds = load_pairs(pairs, world.toy / "corpus.jsonl")
    assert list(ds.queries) == ["0"] and ds.positives("train") == {"0": ["d0"]}


def test_subprocess_smoke_one_line_on_stderr(world):
    folder = world.variant("header")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "hardneg.cli", "validate", "--data", folder],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "qrels/test.tsv: split 'test' has no positive rows" in proc.stderr
