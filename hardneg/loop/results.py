"""What a run reports: ``metrics.json`` (every figure, as data), ``report.md`` and the test
table the command prints (:func:`format_run_table`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hardneg.evaluate import EvalResult, bootstrap_ci, format_p
from hardneg.loop.config import RunConfig
from hardneg.loop.rounds import RoundResult, _Clock, _means
from hardneg.precision import machine_info, resolve_encode, resolve_train
from hardneg.train.config import TRAIN_LOG

__all__: list[str] = []  # internal: import from hardneg.loop

SYSTEMS = ("bm25", "base", "tuned")  # rows of the final table, in display order


@dataclass
class RunResult:
    """The run's outcome: the final test evaluation (systems tuned, base, bm25) and the rounds."""

    out: str
    evaluation: EvalResult
    rounds: list[RoundResult]
    selected: str  # "r<i>" of the kept model, or "base" when no round beat the starting model
    tuned_from: str  # the round whose model is the "tuned" row
    dev: str
    dev_base: dict[str, float]
    metrics: dict[str, Any]
    seconds: float

    def summary(self, out: str | Path) -> list[str]:
        """The lines `hardneg run` prints under its table: the notes and the files written."""
        kept = self.metrics["tuned_kept_on_dev"]
        notes = [] if kept else ["no round beat the base model on dev; 'tuned' is round r0, shown for the record"]
        return [f"note: {n}" for n in notes + list(self.metrics["notes"])] + [
            f"wrote {out}/report.html, report.md, metrics.json, recipe.toml, eval/, rounds/ (the trainer's logs: "
            f"rounds/r<i>/{TRAIN_LOG}){', model/' if kept else ''} ({self.seconds:.0f}s)"]


def _metrics(result: EvalResult, rounds: Sequence[RoundResult], selected: str, tuned_from: str, dev: str,
             dev_base: Mapping[str, np.ndarray], dev_ids: Sequence[str], config: RunConfig, clock: _Clock,
             seconds: float, base_fp: str) -> dict[str, Any]:
    """The content of ``metrics.json`` (every figure of the report, as data)."""
    seed = config.eval.seed
    means = result.means()
    systems = {s: means[s] for s in SYSTEMS}
    ci = {s: {m: list(bootstrap_ci(result.per_query[s][m], seed=seed)) for m in result.metrics} for s in SYSTEMS}
    lift = {}
    for ref in ("base", "bm25"):
        lift[f"over_{ref}"] = {
            m: {"diff": means["tuned"][m] - means[ref][m],
                "ci95": list(bootstrap_ci(result.per_query["tuned"][m] - result.per_query[ref][m], seed=seed)),
                "p": result.pvalues[ref][m]}
            for m in result.metrics}
    out: dict[str, Any] = {
        "split": result.split, "n_queries": len(result.query_ids), "metrics": result.metrics,
        "systems": systems, "ci95": ci, "lift": lift,
        "significance": (f"two-sided paired randomization test ({result.n_resamples} sign flips, seed {seed}) of "
                         "tuned against base and against bm25, Holm-corrected per metric; CIs: percentile "
                         "bootstrap over queries (2000 resamples)"),
        "selected": selected, "tuned_from": tuned_from, "tuned_kept_on_dev": selected != "base",
        "dev": {"description": dev, "base": _means(dev_base), "query_ids": list(dev_ids)},
        "base_fingerprint": base_fp,
        "machine": machine_info(),
        "precision": {"encode": resolve_encode(config.encoder.precision, config.encoder.backend),
                      "train": resolve_train(config.train.mixed_precision, machine_info()["cuda"] is not None)},
        "rounds": [asdict(r) for r in rounds],
        "timings": {k: round(v, 2) for k, v in clock.timings.items()} | {"total": round(seconds, 2)},
        "config": config.to_dict(),
    }
    if result.clean_ids:
        clean = result.means(result.clean_ids)
        out["clean"] = {"n_queries": len(result.clean_ids), "systems": {s: clean[s] for s in SYSTEMS}}
    out["notes"] = list(result.notes)
    return out


def format_run_table(result: RunResult, title: str | None = None):
    """A rich table: bm25, base and tuned on the test split, NDCG@10 CI, lift and p of tuned."""
    from rich.table import Table

    m = result.metrics
    table = Table(title=title or f"{m['split']}: {m['n_queries']} queries (tuned = {result.tuned_from}"
                                 f"{'' if m['tuned_kept_on_dev'] else ', NOT kept on dev'})")
    table.add_column("system")
    for metric in m["metrics"]:
        table.add_column(metric, justify="right")
    table.add_column("ndcg@10 95% CI", justify="right")
    for s in SYSTEMS:
        lo, hi = m["ci95"][s]["ndcg@10"]
        table.add_row(s, *[f"{m['systems'][s][x]:.4f}" for x in m["metrics"]], f"[{lo:.3f}, {hi:.3f}]")
    table.add_section()
    for ref in ("base", "bm25"):
        lift = m["lift"][f"over_{ref}"]
        lo, hi = lift["ndcg@10"]["ci95"]
        table.add_row(f"tuned - {ref}", *[f"{lift[x]['diff']:+.4f}" for x in m["metrics"]], f"[{lo:+.3f}, {hi:+.3f}]")
        table.add_row(f"  p vs {ref}", *[format_p(lift[x]["p"], result.evaluation.n_resamples) for x in m["metrics"]], "")
    return table


def report_markdown(result: RunResult) -> str:
    """``report.md``: the test table with lift and significance, the rounds, and what was kept."""
    m, n = result.metrics, result.evaluation.n_resamples
    metrics = m["metrics"]
    lines = [f"# hardneg run: tuned vs base vs BM25 on `{m['split']}` ({m['n_queries']} queries)", ""]
    verdict = (f"The tuned model is round `{result.tuned_from}`, kept because it beat the starting model on dev."
               if m["tuned_kept_on_dev"] else
               "No round beat the starting model on dev, so the run's model is the base model; the `tuned` row "
               "shows round `r0` anyway, for the record (no `model/` folder is written).")
    lines += [verdict, "", "| system | " + " | ".join(metrics) + " | ndcg@10 95% CI |", "|---" * (len(metrics) + 2) + "|"]
    for s in SYSTEMS:
        lo, hi = m["ci95"][s]["ndcg@10"]
        lines.append(f"| {s} | " + " | ".join(f"{m['systems'][s][x]:.4f}" for x in metrics) + f" | [{lo:.3f}, {hi:.3f}] |")
    lines += ["", "## Lift of the tuned model", "", "| vs | " + " | ".join(f"Δ {x}" for x in metrics)
              + " | Δ ndcg@10 95% CI | p(ndcg@10) |", "|---" * (len(metrics) + 3) + "|"]
    for ref in ("base", "bm25"):
        lift = m["lift"][f"over_{ref}"]
        lo, hi = lift["ndcg@10"]["ci95"]
        lines.append(f"| {ref} | " + " | ".join(f"{lift[x]['diff']:+.4f}" for x in metrics)
                     + f" | [{lo:+.4f}, {hi:+.4f}] | {format_p(lift['ndcg@10']['p'], n)} |")
    lines += ["", f"Significance: {m['significance']}. p-values of every metric are in `metrics.json`; "
              "per-query scores in `eval/per_query.tsv`.", ""]
    lines += [f"## Rounds (dev: {m['dev']['description']})", "",
              f"Base model on dev: NDCG@10 {m['dev']['base']['ndcg@10']:.4f}.", "",
              "| round | mined by | retriever | trained from | negatives | rows | steps | dev ndcg@10 | vs | gain | p | kept |",
              "|---" * 12 + "|"]
    for r in result.rounds:
        lines.append(f"| r{r.round} | {r.miner} | {r.retriever} | {r.init} | {r.negatives['negatives']} "
                     f"({r.negatives['sampler']}) | {r.train['rows']} | {r.train['steps']} | {r.dev['ndcg@10']:.4f} "
                     f"| {r.vs} | {r.gain:+.4f} | {format_p(r.p, n)} | {'yes' if r.kept else 'no: ' + r.reason} |")
    lines += ["", "Each round's candidates, negatives (`negatives.jsonl`, `stats.json`: what every filter "
              "removed) and model are in `rounds/r<i>/`."]
    if "clean" in m:
        c = m["clean"]
        lines += ["", f"## Test queries whose positives were never train positives ({c['n_queries']})", "",
                  "| system | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {s} | " + " | ".join(f"{c['systems'][s][x]:.4f}" for x in metrics) + " |" for s in SYSTEMS]
    for note in m["notes"]:
        lines += ["", f"Note: {note}."]
    timings = ", ".join(f"{k} {v:.0f}s" for k, v in m["timings"].items())
    lines += ["", f"Timings: {timings}."]
    return "\n".join(lines) + "\n"
