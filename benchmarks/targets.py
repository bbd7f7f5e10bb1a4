"""Issue 19's targets: `hardneg run` with nothing set but ``[data] path``, on full data, 3 training seeds.

    python benchmarks/targets.py                                   # SciFact and NFCorpus, seeds 0-2
    python benchmarks/targets.py --data ../shared/data/scifact --seeds 1
    python benchmarks/targets.py --table-only                      # the table from the stored units

Each (dataset, seed) is one real `hardneg run` of the default recipe (``--set train.seed=SEED``, the only
thing that varies) into ``benchmarks/results/targets/<dataset>/<cpu>/work/s<SEED>/`` (not committed; an
interrupted run resumes there, as `hardneg run` does). Its unit, committed, is
``.../s<SEED>/``: ``metrics.json``, ``report.md`` and ``per_query.tsv`` (the test split's per-query
scores). A unit whose recipe (``metrics.json``'s ``config``, but for the seed) differs from today's
default is refused: move it aside.

The table: each system's test NDCG@10 mean ± sd over seeds (all queries, clean ones), the wall time,
then every tuned-vs-free pair (the run's own :data:`hardneg.loop.hybrid.PAIRS`) on the seed-averaged
per-query NDCG@10: difference, 95% bootstrap interval over queries and seeds, paired randomization p,
Holm-corrected across the pairs; and each target of issue 19 met or not.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from train_memory import cpu_slug

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "targets"
KEPT = ("metrics.json", "report.md", "eval/per_query.tsv")
#: issue 19's thresholds on 3-seed means (SciFact only)
LEVELS = {"scifact": {"tuned": 0.72, "hybrid(bm25+tuned)": 0.74}}
ALPHA = 0.05


def run_unit(data: Path, seed: int, folder: Path) -> None:
    """One `hardneg run` of the default recipe on ``data`` at training seed ``seed``; keeps its unit files."""
    work = folder.parent / "work" / f"s{seed}"
    with tempfile.TemporaryDirectory(prefix="hardneg-targets-") as tmp:
        recipe = Path(tmp) / "recipe.toml"
        recipe.write_text(f'[data]\npath = "{data}"\n', encoding="utf-8")
        subprocess.run([sys.executable, "-m", "hardneg.cli", "run", str(recipe), "--out", str(work),
                        "--set", f"train.seed={seed}"], check=True)
    staged = folder.with_name(folder.name + ".part")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    for name in KEPT:
        shutil.copyfile(work / name, staged / Path(name).name)
    staged.replace(folder)  # the unit appears whole or not at all


def _recipe(metrics: dict) -> dict:
    """The run's recipe without what varies per unit (the training seed, the data path's spelling)."""
    config = json.loads(json.dumps(metrics["config"]))
    config["train"].pop("seed", None)
    config.get("data", {}).pop("path", None)
    return config


def read_units(dataset: str, seeds: int) -> list[dict]:
    """The stored units of ``dataset`` (seed order), each its metrics and per-query test NDCG@10."""
    from hardneg.recipe import load_recipe

    units = []
    for seed in range(seeds):
        folder = RESULTS / dataset / cpu_slug() / f"s{seed}"
        if not (folder / "metrics.json").is_file():
            continue
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        per_query: dict[str, dict[str, float]] = {}
        lines = (folder / "per_query.tsv").read_text(encoding="utf-8").splitlines()
        col = lines[0].split("\t").index("ndcg@10")
        for line in lines[1:]:
            parts = line.split("\t")
            per_query.setdefault(parts[1], {})[parts[0]] = float(parts[col])
        units.append({"seed": seed, "metrics": metrics, "per_query": per_query})
    today = _recipe({"config": load_recipe(None, {"data": {"path": str(DATA / dataset)}}).to_dict()})
    stale = [u["seed"] for u in units if _recipe(u["metrics"]) != today]
    if stale:
        raise SystemExit(f"{RESULTS / dataset / cpu_slug()}: the units of seeds {stale} ran another recipe than "
                         "today's default; move them aside")
    return units


def dataset_table(dataset: str, units: list[dict]) -> list[str]:
    """Systems (mean ± sd over seeds), then the tuned-vs-free pairs pooled over seeds, then the targets."""
    from hardneg.compare.table import bootstrap_diff
    from hardneg.evaluate import format_p, holm, paired_randomization_test
    from hardneg.loop.hybrid import PAIRS, SYSTEMS

    m0 = units[0]["metrics"]
    ids = sorted(units[0]["per_query"]["bm25"])
    values = {s: np.array([[u["per_query"][s][q] for q in ids] for u in units]) for s in SYSTEMS}
    clean = m0.get("clean", {}).get("n_queries")
    lines = [f"### {dataset}: {len(units)} seed(s), {len(ids)} test queries ({clean or 0} clean), "
             f"{m0['machine']['cpu']}, training precision {m0['precision']['train']}", "",
             "| system | NDCG@10 (test) | clean queries | deploy chosen on dev (seeds) |", "|---|---|---|---|"]
    for s in SYSTEMS:
        means = values[s].mean(axis=1)
        cl = [u["metrics"]["clean"]["systems"][s]["ndcg@10"] for u in units if "clean" in u["metrics"]]
        deploys = sum(u["metrics"]["deploy"]["system"] == s for u in units)
        lines.append(f"| {s} | {means.mean():.4f} ± {means.std(ddof=1) if len(units) > 1 else 0:.4f} | "
                     + (f"{np.mean(cl):.4f}" if cl else "n/a") + f" | {deploys} |")
    n = m0["config"]["eval"]["n_resamples"]
    p_of = dict(zip(PAIRS, holm([paired_randomization_test(values[a].mean(axis=0), values[b].mean(axis=0), n, 0)
                                 for a, b in PAIRS])))
    lines += ["", "| pair | diff | 95% CI (queries x seeds) | p (Holm) |", "|---|---|---|---|"]
    for (a, b), p in p_of.items():
        lo, hi = bootstrap_diff(values[a], values[b])
        lines.append(f"| {a} - {b} | {values[a].mean() - values[b].mean():+.4f} | [{lo:+.4f}, {hi:+.4f}] | "
                     f"{format_p(p, n)} |")
    targets = [(f"hybrid(bm25+tuned) > hybrid(bm25+base), p < {ALPHA}",
                _beats(values, p_of, "hybrid(bm25+tuned)", "hybrid(bm25+base)"))]
    targets += [(f"tuned > {f}, p < {ALPHA}", _beats(values, p_of, "tuned", f))
                for f in ("bm25", "base") + (("bm25+prior",) if dataset == "nfcorpus" else ())]
    targets += [(f"{s} >= {level} (mean over seeds)", bool(values[s].mean() >= level))
                for s, level in LEVELS.get(dataset, {}).items()]
    walls = [u["metrics"]["timings"]["total"] for u in units]  # the run's own clock
    lines += ["", "Targets: " + "; ".join(f"{t}: {'met' if ok else 'NOT met'}" for t, ok in targets) + ".",
              f"Wall time of one `hardneg run`: {np.mean(walls) / 60:.1f} min (min {min(walls) / 60:.1f}, "
              f"max {max(walls) / 60:.1f}), {m0['machine']['cpu']}."]
    return lines


def _beats(values: dict, p_of: dict, a: str, b: str) -> bool:
    return bool(values[a].mean() > values[b].mean() and p_of[(a, b)] < ALPHA)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, action="append", default=None,
                    help="a BEIR folder (repeatable; default: scifact and nfcorpus)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    from hardneg.files import atomic_write_text

    folders = args.data or [DATA / "scifact", DATA / "nfcorpus"]
    for data in folders if not args.table_only else []:
        for seed in range(args.seeds):
            unit = RESULTS / data.name / cpu_slug() / f"s{seed}"
            if not unit.is_dir():
                run_unit(data.resolve(), seed, unit)
    lines = ["Issue 19's targets: `hardneg run` with nothing set but `[data] path` (the training seed varies).", ""]
    for dataset in sorted(d.name for d in (RESULTS.iterdir() if RESULTS.is_dir() else []) if d.is_dir()):
        units = read_units(dataset, args.seeds)
        lines += dataset_table(dataset, units) + [""] if units else []
    atomic_write_text(RESULTS / f"table-{cpu_slug()}.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
