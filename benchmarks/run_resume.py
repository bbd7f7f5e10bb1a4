"""A real `hardneg run` killed with SIGKILL and started again: what it redoes, what it saves, and
whether it ends with the files of an uninterrupted run.

    python benchmarks/run_resume.py                      # the demo recipe, killed 10 s into r0's training
    python benchmarks/run_resume.py --kill-at "r1: mined" --after 5

Three runs of the same command into the same folder, each with the embedding cache of a first run
(a fresh one for the reference, one shared by the killed run and its resumption, as a user's would
be): the reference, uninterrupted; a run killed ``--after`` seconds after the progress line starting
with ``--kill-at``; the same command again. numba's cache is warmed first, so no run pays ranx's
compilation. The folders are compared as tests/test_run_resume.py does: every file byte for byte
except the wall times (``metrics.json`` / ``round.json`` without timings and seconds, the reports
without their ``Timings:`` line; the models' ``README.md`` / ``hardneg_train.json``, the trainers'
``train.log`` and ``.run/`` not compared). The result lands in
``benchmarks/results/run_resume/<cpu>/<recipe>-<kill point>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_memory import RESULTS as _MEM_RESULTS, _write, cpu_slug

RESULTS = _MEM_RESULTS.parent / "run_resume"
NOT_COMPARED = ("train.log", "README.md", "hardneg_train.json")
TIMING_KEYS = ("timings", "seconds", "train_seconds", "wall_seconds")


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _comparable(path: Path):
    if path.name in ("metrics.json", "round.json") and path.parent.name != "eval":
        return _without_timings(json.loads(path.read_text()))
    if path.name in ("report.md", "report.html"):
        return [x for x in path.read_text().splitlines() if "Timings:" not in x]
    return path.read_bytes()


def differing(a: Path, b: Path) -> list[str]:
    """Files present in one folder only, or not equal but for the wall times."""
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    fa, fb = files(a), files(b)
    both = sorted(n for n in fa & fb if not n.startswith(".run/") and Path(n).name not in NOT_COMPARED)
    return sorted(fa ^ fb) + [n for n in both if _comparable(a / n) != _comparable(b / n)]


def _run(cmd: list[str], env: dict, kill_at: str | None = None, after: float = 0.0) -> tuple[float, list[str], int]:
    """Run ``cmd``; with ``kill_at``, SIGKILL it ``after`` seconds past the first line starting so."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if kill_at and deadline is None and line.strip().startswith(kill_at):
            deadline = time.perf_counter() + after
            break
    if deadline is not None:
        time.sleep(max(0.0, deadline - time.perf_counter()))
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return time.perf_counter() - start, lines, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, help="A recipe TOML (default: `hardneg demo`'s)")
    parser.add_argument("--kill-at", default="r0: mined", help="The progress line after which to kill")
    parser.add_argument("--after", type=float, default=10.0, help="Seconds after that line")
    args = parser.parse_args()
    from hardneg.recipe import demo_recipe, dump_recipe

    work = Path(tempfile.mkdtemp(prefix="hardneg-run-resume-"))
    recipe = args.recipe or work / "demo.toml"
    if args.recipe is None:
        recipe.write_text(dump_recipe(demo_recipe()[0]))
    env = os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "200", "NUMBA_CACHE_DIR": str(work / "numba"),
                        "PYTHONPATH": str(Path(__file__).parents[1])}
    warm = "from hardneg.metrics import per_query_scores as p; from hardneg.retrieve.base import Ranking as R; " \
           "import numpy as n; p({'q': {'a': 1}}, R(['q'], ['a'], n.zeros((1, 1), 'int64'), n.ones((1, 1), 'float32')))"
    subprocess.run([sys.executable, "-c", warm], env=env, check=True)
    out = work / "out"
    cmd = [sys.executable, "-m", "hardneg.cli", "run", str(recipe), "--out", str(out)]
    ref_s, _, rc = _run(cmd, env | {"HARDNEG_CACHE": str(work / "cache-ref")})
    assert rc == 0, "the reference run failed"
    shutil.move(out, work / "reference")
    env = env | {"HARDNEG_CACHE": str(work / "cache")}
    kill_s, killed_lines, rc_kill = _run(cmd, env, args.kill_at, args.after)
    resume_s, lines, rc = _run(cmd, env)
    assert rc == 0, "\n".join(lines[-5:])
    result = {
        "recipe": str(recipe.name), "kill_at": args.kill_at, "after_s": args.after, "killed_rc": rc_kill,
        "resumed_line": next((x for x in lines if "resuming" in x), None),
        "reference_s": round(ref_s, 1), "killed_s": round(kill_s, 1), "resumed_s": round(resume_s, 1),
        "saved_s": round(ref_s - resume_s, 1), "differing_files": differing(work / "reference", out),
        "cpu": cpu_slug(), "threads": os.environ.get("OMP_NUM_THREADS", "all"),
    }
    folder = RESULTS / cpu_slug()
    folder.mkdir(parents=True, exist_ok=True)
    kill = "".join(c if c.isalnum() else "-" for c in args.kill_at).strip("-")
    _write(folder / f"{Path(result['recipe']).stem}-{kill}.json", result)
    print(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
