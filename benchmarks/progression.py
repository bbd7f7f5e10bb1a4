"""The progression of negative-mining strategies on SciFact: a thin wrapper of :func:`hardneg.compare.compare`.

Every trained row starts from the same model (the bundled MiniLM by default) with the same budget (one
row per train query per epoch, the same steps, batch, k, max length and learning rate); only the
negatives differ. The rows and their one-line descriptions are :data:`hardneg.compare.STRATEGIES`
(``python benchmarks/progression.py --list``). The table, the trap table, ``recommended.toml`` (the best
row on dev) and ``report.html`` go to ``--out`` (default ``benchmarks/results/progression/<dataset>/<cpu>/``);
each finished (row, seed) is a unit JSON there, so an interrupted run resumes.

    python benchmarks/progression.py                                        # every row, 3 seeds (GPU: minutes)
    python benchmarks/progression.py --reduced --train-max-length 128 --seeds 1   # the CPU table
    python benchmarks/progression.py --table-only                           # rebuild from the units
    python benchmarks/progression.py --trap-only                            # the trap table alone (minutes)

The rows of the old script that need other positives, a trained reranker, another short-row rule or
another loss (ict, clicks, ce-denoise, auto-judge, default-pad, default-gist) are recipes of their own:
run ``hardneg compare`` on a recipe with those settings (``denoise`` is the cross-encoder row).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train_memory import cpu_slug

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
REDUCED_ROWS = ["base", "bm25", "st-default", "default", "st-margin", "hybrid"]
RENAMED = {"hybrid-percent": "hybrid"}  # the old script's row names


def main() -> int:
    from hardneg.compare import STRATEGIES, compare, measure_trap
    from hardneg.compare.strategies import describe
    from hardneg.output import configure
    from hardneg.recipe import load_recipe

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/progression/<data>/<cpu>")
    ap.add_argument("--recipe", type=Path, default=None, help="a recipe (default: hardneg's default recipe)")
    ap.add_argument("--model", default=None, help="starting model folder (default: the bundled MiniLM)")
    ap.add_argument("--rows", default=None, help="comma-separated rows (default: all, or the reduced set)")
    ap.add_argument("--reduced", action="store_true", help="only " + ", ".join(REDUCED_ROWS))
    ap.add_argument("--list", action="store_true", help="print the rows and exit")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--k", type=int, default=3, help="negatives per query for every row")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-max-length", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=None, help="default: one epoch of one row per train query")
    ap.add_argument("--lr", type=float, default=None, help="learning rate of every trained row (default: the recipe's)")
    ap.add_argument("--attention-dropout", type=float, default=None,
                    help="[train] attention_dropout of every trained row (default: the model's own)")
    ap.add_argument("--table-only", action="store_true", help="train nothing: rebuild from the stored units")
    ap.add_argument("--trap-only", action="store_true", help="train nothing: only the trap table (trap.json, "
                                                            "trap.md) of the rows asked")
    ap.add_argument("--primary", default=None, metavar="A,B",
                    help="also the pre-stated primary test: row A minus row B on test NDCG@10 (every seed of "
                         "each), its 90%% bootstrap interval over queries and seeds, written to primary.json")
    args = ap.parse_args()
    if args.list:
        return print(describe()) or 0
    configure(False)  # quiet as `hardneg compare` is: one line a unit; the trainers' logs go to work/*.train.log
    rows = [RENAMED.get(r, r) for r in args.rows.split(",")] if args.rows else (
        REDUCED_ROWS if args.reduced else list(STRATEGIES))
    overrides = {"data": {"path": str(args.data)}, "select": {"num_negatives": args.k},
                 "train": {"batch_size": args.batch_size, "max_seq_length": args.train_max_length,
                           "max_steps": args.max_steps, "show_progress": False}}
    if args.lr is not None:
        overrides["train"]["lr"] = args.lr
    if args.attention_dropout is not None:
        overrides["train"]["attention_dropout"] = args.attention_dropout
    if args.model:
        overrides["model"] = {"path": args.model}
    config = load_recipe(args.recipe, overrides, override_source="benchmarks/progression.py")
    out = args.out or ROOT / "benchmarks" / "results" / "progression" / args.data.name / cpu_slug()
    if args.trap_only:
        measure_trap(config, out, rows, progress=lambda s: print(s, file=sys.stderr, flush=True))
        return print((out / "trap.md").read_text(encoding="utf-8")) or 0
    result = compare(config, out, rows, args.seeds, table_only=args.table_only,
                     progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(result.files["table"].read_text(encoding="utf-8"))
    if args.primary:
        print(primary_test(result.units, *args.primary.split(","), out, n_resamples=config.eval.n_resamples))
    return 0


#: the primary test's target (issue 18): A - B >= 0.01 NDCG@10 with the 90% interval's lower end above 0
TARGET_DIFF, LEVEL = 0.01, 0.90


def primary_test(units, a: str, b: str, out: Path, n_resamples: int) -> str:
    """Row ``a`` minus row ``b`` on test NDCG@10 over all their seeds: the difference of means, its
    percentile bootstrap interval at :data:`LEVEL` (queries resampled jointly, each row's seeds
    resampled) and the paired randomization p on seed-averaged per-query values; primary.json."""
    from hardneg.compare.table import bootstrap_diff, per_query
    from hardneg.evaluate import format_p, paired_randomization_test
    from hardneg.files import atomic_write_json

    missing = [r for r in (a, b) if r not in units]
    if missing:
        return f"primary test {a} - {b}: no units of {', '.join(missing)} yet"
    x, y = per_query(units[a]), per_query(units[b])
    diff = float(x.mean() - y.mean())
    lo, hi = bootstrap_diff(x, y, n=10000, level=LEVEL)
    p = paired_randomization_test(x.mean(axis=0), y.mean(axis=0), n_resamples, 0)
    met = diff >= TARGET_DIFF and lo > 0
    record = {"a": a, "b": b, "seeds": {a: len(units[a]), b: len(units[b])}, "queries": int(x.shape[1]),
              "diff": diff, "level": LEVEL, "ci": [lo, hi], "p": p, "target": {"diff": TARGET_DIFF, "lower": 0.0},
              "met": met, "mean": {a: float(x.mean()), b: float(y.mean())}}
    atomic_write_json(out / "primary.json", record)
    return (f"primary test (stated before running): {a} - {b} on test NDCG@10, {len(units[a])} / {len(units[b])} "
            f"seeds, {x.shape[1]} queries: {diff:+.4f}, {LEVEL:.0%} bootstrap interval [{lo:+.4f}, {hi:+.4f}], "
            f"paired p {format_p(p, n_resamples)}; target >= {TARGET_DIFF} with the lower end above 0: "
            f"{'met' if met else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
