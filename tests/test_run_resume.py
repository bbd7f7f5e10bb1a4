"""`hardneg run` resumes: killed at any stage (in process, or a real process killed with SIGKILL)
and started again with the same command, it continues from its last finished stage and ends
with the files of an uninterrupted run; another recipe over its folder is refused unless
``--restart``; an unfinished folder holds no final files and `hardneg report` refuses it.

Every run here goes into the same ``out`` path, with a fresh embedding cache, so that paths
recorded in the files and the cache's hit counts are those of the uninterrupted reference
(moved aside to ``reference`` once written). Compared byte for byte: everything but the wall
times: ``metrics.json`` and ``rounds/r*/round.json`` without ``timings`` and the rounds' and their
trainings' ``seconds``; ``report.md`` / ``report.html`` without their ``Timings:`` line; not compared:
each model's ``README.md`` / ``hardneg_train.json`` (training time, the memory free at the time),
the trainers' ``train.log`` and the run's own ``.run/`` state (stage seconds).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.errors import HardnegError
from hardneg.loop import run
from hardneg.recipe import dump_recipe, load_recipe
from hardneg.report.run_folder import read_run
from test_loop import RECIPE
from toybeir import write_toy_beir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

runner = CliRunner()

#: the progress line each stage prints once it is recorded, in run order (the last: the kept model's copy, the
#: first final file, after the test stage)
BOUNDARIES = ("baselines on", "r0: mined", "r0: trained", "r0: dev NDCG", "r1: mined", "r1: trained",
              "r1: dev NDCG", "kept r1")
STAGES = ("baselines", "r0 mine", "r0 train", "r0 gate", "r1 mine", "r1 train", "r1 gate", "test")
FINAL = ("metrics.json", "report.md", "report.html", "eval", "model", "plots")
#: wall times and the machine's free memory, which differ between any two runs
NOT_COMPARED = ("train.log", "README.md", "hardneg_train.json")


#: one torch thread, as in process (``one_torch_thread``): the same floating-point sums
ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


class Killed(Exception):
    pass


class Setup:
    def __init__(self, root: Path, recipe: Path):
        self.root, self.recipe = root, recipe
        self.out, self.cache, self.reference = root / "out", root / "cache", root / "reference"
        self.config = load_recipe(recipe)
        self.reference_seconds = 0.0

    def run(self, out: Path, **kwargs):
        """:func:`hardneg.loop.run` as `hardneg run` calls it (it writes ``recipe.toml``)."""
        return run(self.config, out, recipe=dump_recipe(self.config), **kwargs)

    def command(self, out: Path) -> list[str]:
        return [sys.executable, "-m", "hardneg.cli", "run", str(self.recipe), "--out", str(out)]

    def fresh(self) -> Path:
        """An empty ``out`` and a cold cache, as the reference had."""
        for path in (self.out, self.cache):
            shutil.rmtree(path, ignore_errors=True)
        return self.out


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("run-resume")
    data = write_toy_beir(root / "toy")
    recipe = root / "tiny.toml"
    # 10 steps a round (not 3): long enough for the SIGKILL test to land inside training
    recipe.write_text(RECIPE.format(data=data, model=tiny_model_dir, cache=root / "cache")
                      .replace("max_steps = 3", "max_steps = 10"))
    s = Setup(root, recipe)
    start = time.perf_counter()  # a real `hardneg run`, as the SIGKILL test runs it
    result = subprocess.run(s.command(s.fresh()), env=ENV, capture_output=True, text=True, timeout=600)
    s.reference_seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    s.out.rename(s.reference)
    return s


def killer(lines: list[str], prefix: str):
    """A progress callback that raises once a line starting with ``prefix`` is printed."""
    def progress(line: str) -> None:
        lines.append(line)
        if line.startswith(prefix):
            raise Killed(line)
    return progress


def stage_lines(lines: list[str]) -> list[str]:
    """The lines of stages done by this start (not the data line, nor the resuming one)."""
    return [x for x in lines if x.startswith(BOUNDARIES)]


def state(out: Path) -> dict:
    return json.loads((out / ".run" / "state.json").read_text())


# ---- comparing two run folders --------------------------------------------------------------
def _without_timings(doc: dict) -> dict:
    doc.pop("timings", None)
    for r in doc.get("rounds", [doc] if "train" in doc else []):
        r.pop("seconds")
        r["train"].pop("seconds")
    return doc


def _comparable(path: Path) -> bytes | dict | list:
    if path.name in ("metrics.json", "round.json") and path.parent.name != "eval":
        return _without_timings(json.loads(path.read_text()))
    if path.name in ("report.md", "report.html"):
        return [x for x in path.read_text().splitlines() if "Timings:" not in x]
    return path.read_bytes()


def assert_same_run(a: Path, b: Path) -> None:
    """The two folders hold the same files, identical but for the wall times (module docstring)."""
    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    names = files(a)
    assert names == files(b)
    compared = [n for n in names if not n.startswith(".run/") and Path(n).name not in NOT_COMPARED]
    assert {"metrics.json", "eval/per_query.tsv", "eval/runs/tuned.trec", "rounds/r0/negatives.jsonl",
            "rounds/r0/model/model.safetensors", "report.md"} <= set(compared)
    differ = [n for n in compared if _comparable(a / n) != _comparable(b / n)]
    assert differ == []


# ---- the tests ------------------------------------------------------------------------------
def test_killed_at_every_stage_boundary_resumes_to_the_uninterrupted_files(setup):
    """Eight starts, each killed right after one more stage is recorded, then one to the end:
    each start does exactly the next stage; the unfinished folder has no final files."""
    out = setup.fresh()
    for i, prefix in enumerate(BOUNDARIES):
        lines: list[str] = []
        with pytest.raises(Killed):
            setup.run(out, progress=killer(lines, prefix))
        done_now = stage_lines(lines)
        assert len(done_now) == 1 and done_now[0].startswith(prefix), lines  # one new stage
        assert (f"done before: {', '.join(STAGES[:i])}" in lines[1]) if i else not lines[1].startswith("resuming")
        assert list(state(out)["stages"]) == list(STAGES[:i + 1]) and not state(out)["finished"]
        assert [name for name in FINAL if (out / name).exists()] == (["model"] if prefix == "kept r1" else [])
        with pytest.raises(HardnegError, match="run not finished"):
            read_run(out)
    lines = []
    setup.run(out, progress=lines.append)
    assert stage_lines(lines) == [lines[-1]] and lines[-1].startswith("kept r1")  # only the final files were left
    assert state(out)["finished"] and list(state(out)["stages"]) == list(STAGES)
    assert_same_run(setup.reference, out)
    assert (out / "rounds" / "r1" / "model" / "model.safetensors").is_file() and (out / "model" / "model.safetensors").is_file()
    read_run(out)  # finished: the report reads it

    lines = []  # the same command on a finished folder: nothing is redone, the final files are written again
    setup.run(out, progress=lines.append)
    assert f"done before: {', '.join(STAGES)}" in lines[1] and stage_lines(lines) == [lines[-1]]
    assert_same_run(setup.reference, out)


def test_report_refuses_a_half_finished_run(setup):
    out = setup.fresh()
    with pytest.raises(Killed):
        setup.run(out, progress=killer([], "r0: trained"))
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code != 0
    assert "run not finished (done: baselines, r0 mine, r0 train)" in result.output
    assert "run the same `hardneg run` command again to resume it" in result.output


def test_another_recipe_is_refused_unless_restart_and_never_mixed(setup):
    out = setup.fresh()
    with pytest.raises(Killed):
        setup.run(out, progress=killer([], "r1: mined"))
    recipe_toml = (out / "recipe.toml").read_text()
    result = runner.invoke(app, ["run", str(setup.recipe), "--out", str(out), "--rounds", "0"])
    assert result.exit_code != 0
    assert "holds another run (changed: recipe); rerun with --restart" in " ".join(result.output.split())
    assert (out / "recipe.toml").read_text() == recipe_toml  # the folder still describes its own run
    assert list(state(out)["stages"]) == list(STAGES[:5])

    result = runner.invoke(app, ["run", str(setup.recipe), "--out", str(out), "--rounds", "0", "--restart"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "rounds").iterdir()) == ["r0"]  # the old run's r1 is gone
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["rounds"]) == 1 and metrics["config"]["loop"]["rounds"] == 0
    assert (out / "recipe.toml").read_text() == dump_recipe(load_recipe(setup.recipe, {"loop": {"rounds": 0}}))
    assert list(state(out)["stages"]) == ["baselines", "r0 mine", "r0 train", "r0 gate", "test"]


def test_an_earlier_runs_files_without_a_state_are_refused_unless_restart(setup, tmp_path):
    out = tmp_path / "old"
    (out / "rounds" / "r0").mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(HardnegError, match=r"holds files of an earlier run \(metrics.json, rounds\).*--restart"):
        setup.run(out)
    assert (out / "metrics.json").is_file() and not (out / "recipe.toml").exists()
    with pytest.raises(Killed):
        setup.run(out, progress=killer([], "baselines on"), restart=True)
    assert not (out / "metrics.json").exists() and not (out / "rounds").exists()
    assert (out / "notes.txt").read_text() == "mine"  # not a run file: left alone


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before the kill"
        assert time.monotonic() < deadline, "no kill point reached"
        time.sleep(0.005)


def test_a_run_killed_in_training_resumes_to_the_uninterrupted_files(setup, tmp_path):
    """A real `hardneg run` process, SIGKILLed once round 1's trainer has logged its first loss;
    the same command again redoes only round 1's training and what follows."""
    out = setup.fresh()
    command, env = setup.command(out), ENV
    log = out / "rounds" / "r1" / "train.log"
    start = time.perf_counter()
    with open(tmp_path / "killed.txt", "w") as stdout:
        proc = subprocess.Popen(command, env=env, stdout=stdout, stderr=subprocess.STDOUT)
        try:
            _wait_for(proc, lambda: log.is_file() and '"loss"' in log.read_text())
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
    killed_after = time.perf_counter() - start
    assert proc.returncode == -signal.SIGKILL
    assert list(state(out)["stages"]) == list(STAGES[:5])  # killed inside r1's training
    assert not (out / "rounds" / "r1" / "round.json").exists()
    assert [name for name in FINAL if (out / name).exists()] == []

    start = time.perf_counter()
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    resumed_seconds = time.perf_counter() - start
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    said = resumed.stdout
    assert f"done before: {', '.join(STAGES[:5])}" in " ".join(said.split())
    assert "r0:" not in said and "r1: mined" not in said and "baselines on" not in said  # not redone
    assert "r1: trained 10 steps" in said and "r1: dev NDCG@10" in said
    assert_same_run(setup.reference, out)
    skipped = sum(state(out)["stages"][name]["seconds"] for name in STAGES[:5])
    print(f"\nSIGKILL in r1 training after {killed_after:.1f}s; the same command then took {resumed_seconds:.1f}s "
          f"(skipping {skipped:.1f}s of finished stages); an uninterrupted one {setup.reference_seconds:.1f}s")


def test_a_chunked_run_resumes_to_the_uninterrupted_files(setup, tmp_path):
    """[mine] chunk_tokens: stored rankings index documents (each scoring its best chunk); the
    rounds mine and train on chunks. Killed after r0's training, resumed: the same files."""
    config = load_recipe(setup.recipe, {"loop": {"rounds": 0}, "mine": {"chunk_tokens": 6, "chunk_overlap": 2}})
    text = dump_recipe(config)
    out = setup.fresh()
    run(config, out, recipe=text)
    out.rename(tmp_path / "reference")
    out = setup.fresh()
    with pytest.raises(Killed):
        run(config, out, recipe=text, progress=killer([], "r0: trained"))
    lines: list[str] = []
    run(config, out, recipe=text, progress=lines.append)
    assert len(stage_lines(lines)) == 1 and stage_lines(lines)[0].startswith("r0: dev")  # only the gate was left
    assert_same_run(tmp_path / "reference", out)
