"""One-factor sweeps of the training settings and levers, judged on dev only (issue 19).

    python benchmarks/levers.py --list                       # the settings and what each changes
    python benchmarks/levers.py --data ../shared/data/scifact --settings incumbent,lr=2e-5
    python benchmarks/levers.py --table-only                 # the dev table from the stored units

Every setting is the incumbent recipe (hardneg's default recipe at the progression's budget: one row
per train query per epoch, 256 tokens, batch 32, k 3, no attention dropout, bf16 where the CPU has AMX)
with ONE thing changed,
trained as ``hardneg compare``'s ``default`` row (same queries, same dev split, 1 seed). Each
(dataset, setting) is a compare folder ``benchmarks/results/levers/<dataset>/<cpu>/<setting>/`` whose
unit is committed; a rerun skips it. The table pools the dev queries of every dataset run (SciFact:
its held-out train queries; NFCorpus: its dev split) and tests each setting against the incumbent on
that pool (paired randomization test, 10,000 sign flips; a percentile bootstrap interval): a default
changes only on a paired gain there. Test figures are in the units but never printed here: test is
looked at once, at the end, with the recipe the dev table chose.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from train_memory import cpu_slug

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "levers"
#: the incumbent: the progression's budget (benchmarks/progression.py), k 3, no attention dropout. That last
#: one is not hardneg's default yet: with the model's 0.1 a bf16 CPU step is 3.4x slower (docs/training.md),
#: which puts NFCorpus' dev runs at ~45 minutes each and a default `hardneg run` there over issue 19's 2-hour
#: budget; its cost in quality is the setting attention-dropout=model (SciFact dev: -0.0008, p 0.89)
INCUMBENT = {"select": {"num_negatives": 3},
             "train": {"batch_size": 32, "max_seq_length": 256, "attention_dropout": 0.0, "show_progress": False}}
#: setting name -> (what it changes, the recipe sections it overrides): the incumbent, the one-factor sweeps of
#: the training settings (epochs with patience, lr, k, max length, batch), then the levers (hardness, mask,
#: positive consistency, promotion)
SETTINGS: dict[str, tuple[str, dict]] = {
    "incumbent": ("the default recipe at the progression's budget, no attention dropout", {}),
    "epochs=2": ("two passes (each query's positive redrawn per pass), patience 2 on dev",
                 {"train": {"epochs": 2, "patience": 2}}),
    "epochs=3": ("three passes, patience 2 on dev", {"train": {"epochs": 3, "patience": 2}}),
    "attention-dropout=model": ("the model's own attention dropout (0.1; 3.4x slower bf16 CPU steps)",
                                {"train": {"attention_dropout": None}}),
    "lr=2e-5": ("sentence-transformers' usual learning rate", {"train": {"lr": 2e-5}}),
    "lr=1e-4": ("twice the default learning rate", {"train": {"lr": 1e-4}}),
    "k=7": ("seven mined negatives per row (the recipe's own k)", {"select": {"num_negatives": 7}}),
    "len=128": ("128 training tokens", {"train": {"max_seq_length": 128}}),
    "batch=128-cached": ("GradCache, batch 128: 4x the in-batch negatives, the same texts (one epoch) in a quarter of the steps",
                         {"train": {"loss": "cached-mnrl", "batch_size": 128}}),
    "hardness=hard": ("sentence-transformers' hardness_mode hard_negatives, alpha 5",
                      {"train": {"hardness": "hard", "hardness_strength": 5.0}}),
    "hardness=in-batch": ("hardness_mode in_batch_negatives, alpha 9",
                          {"train": {"hardness": "in-batch", "hardness_strength": 9.0}}),
    "mask": ("labeled positives masked out of the in-batch softmax", {"train": {"inbatch_positives": "mask"}}),
    "pos-top=100": ("positive consistency: positives the base model ranks below 100 give no row",
                    {"select": {"pos_top": 100}}),
    "promote-near-dup=0.95": ("candidates with cosine > 0.95 to a positive become extra positives",
                              {"select": {"promote_near_dup": 0.95}}),
}


def merged(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        for section, values in part.items():
            out.setdefault(section, {}).update(values)
    return out


def run_setting(data: Path, setting: str, table_only: bool) -> dict | None:
    """The setting's compare (row default, 1 seed) on ``data``; its unit, None when not run yet."""
    from hardneg.compare import compare
    from hardneg.recipe import load_recipe

    out = RESULTS / data.name / cpu_slug() / setting
    unit = out / "units" / "default-s0.json"
    if table_only:
        return json.loads(unit.read_text()) if unit.is_file() else None
    config = load_recipe(None, merged({"data": {"path": str(data)}}, INCUMBENT, SETTINGS[setting][1]),
                         override_source=f"benchmarks/levers.py {setting}")
    compare(config, out, ["default"], 1, progress=lambda s: print(f"{data.name} {setting}: {s}", file=sys.stderr,
                                                                   flush=True))
    return json.loads(unit.read_text())


def dev_table(units: dict[str, dict[str, dict]]) -> str:
    """Per setting: dev NDCG@10 per dataset, and on the pooled dev queries its paired difference from
    the incumbent (only datasets where both ran), bootstrap 95% interval and p."""
    from hardneg.compare.table import bootstrap_diff
    from hardneg.evaluate import format_p, paired_randomization_test
    from hardneg.precision import train_label

    datasets = sorted({d for per in units.values() for d in per})
    lines = ["| setting | changes | " + " | ".join(f"{d} dev NDCG@10" for d in datasets)
             + " | pooled diff vs incumbent [95% CI] | p | train s | CPU / precision |",
             "|" + "---|" * (len(datasets) + 6)]
    base = units.get("incumbent", {})
    for name, (doc, _) in SETTINGS.items():
        per = units.get(name, {})
        if not per:
            continue
        cells = [f"{np.mean(per[d]['metrics']['dev']['ndcg@10']):.4f}" if d in per else "-" for d in datasets]
        shared = [d for d in datasets if d in per and d in base]
        diff = ci = p = "-"
        if name != "incumbent" and shared:
            x = np.concatenate([per[d]["metrics"]["dev"]["ndcg@10"] for d in shared])
            y = np.concatenate([base[d]["metrics"]["dev"]["ndcg@10"] for d in shared])
            lo, hi = bootstrap_diff(x[None], y[None])
            diff, ci = f"{x.mean() - y.mean():+.4f}", f"[{lo:+.4f}, {hi:+.4f}]"
            p = format_p(paired_randomization_test(x, y, 10000, 0), 10000)
        seconds = sum(per[d]["timing"].get("train_seconds", 0.0) for d in per)
        any_unit = next(iter(per.values()))
        lines.append(f"| {name} | {doc} | " + " | ".join(cells) + f" | {diff} {ci} | {p} | {seconds:.0f} "
                     f"| {any_unit['cpu']} / {train_label(any_unit['precision']['train'])} |")
    return "\n".join(lines) + ("\n\nDev only (SciFact: held-out train queries; NFCorpus: its dev split); pooled: "
                               "the dev queries of the datasets where both the setting and the incumbent ran.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, action="append", default=None,
                    help="a BEIR folder (repeatable; default: scifact and nfcorpus)")
    ap.add_argument("--settings", default=None, help="comma-separated (default: every one)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    if args.list:
        return print("\n".join(f"{k}: {v[0]}" for k, v in SETTINGS.items())) or 0
    from hardneg.files import atomic_write_text
    from hardneg.output import configure

    configure(False)
    names = args.settings.split(",") if args.settings else list(SETTINGS)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        ap.error(f"unknown settings {unknown}; --list shows them")
    folders = args.data or [DATA / "scifact", DATA / "nfcorpus"]
    units: dict[str, dict[str, dict]] = {}
    for data in folders:
        for name in (names if not args.table_only else list(SETTINGS)):
            unit = run_setting(data, name, args.table_only)
            if unit is not None:
                units.setdefault(name, {})[data.name] = unit
    table = dev_table(units)
    atomic_write_text(RESULTS / f"table-{cpu_slug()}.md", table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
