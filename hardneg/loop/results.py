"""What a run reports: ``metrics.json`` (every figure, as data), ``report.md`` and the test
table the command prints (:func:`format_run_table`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hardneg.evaluate import EvalResult, bootstrap_ci, format_p
from hardneg.loop.config import RunConfig
from hardneg.loop.hybrid import FREE, HYBRID_BASE, SYSTEMS
from hardneg.loop.rounds import RoundResult, _Clock, _means
from hardneg.precision import machine_info, resolve_encode, resolve_train
from hardneg.train.config import TRAIN_LOG

__all__: list[str] = []  # internal: import from hardneg.loop

@dataclass
class RunResult:
    """The run's outcome: the final test evaluation (the six systems of :data:`~hardneg.loop.hybrid.SYSTEMS`),
    the rounds and the system to deploy (``metrics["deploy"]``)."""

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
        """The lines `hardneg run` prints under its table: what to deploy, the notes and the files written."""
        kept = self.metrics["tuned_kept_on_dev"]
        notes = [] if kept else ["no round beat the base model on dev; 'tuned' is round r0, shown for the record"]
        return [self.metrics["deploy"]["sentence"]] + [f"note: {n}" for n in notes + list(self.metrics["notes"])] + [
            f"wrote {out}/report.html, report.md, metrics.json, recipe.toml, eval/, rounds/ (the trainer's logs: "
            f"rounds/r<i>/{TRAIN_LOG}){', model/' if kept else ''} ({self.seconds:.0f}s)"]


def _metrics(result: EvalResult, rounds: Sequence[RoundResult], selected: str, tuned_from: str, dev: str,
             dev_base: Mapping[str, np.ndarray], dev_ids: Sequence[str], config: RunConfig, clock: _Clock,
             seconds: float, base_fp: str, choice: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``metrics.json`` (every figure of the report, as data); ``choice`` holds its
    ``hybrid`` (RRF k chosen on dev) and ``deploy`` (:mod:`hardneg.loop.hybrid`)."""
    seed = config.eval.seed
    means = result.means()
    systems = {s: means[s] for s in SYSTEMS}
    ci = {s: {m: list(bootstrap_ci(result.per_query[s][m], seed=seed)) for m in result.metrics} for s in SYSTEMS}
    pairs = list(dict.fromkeys((c.system, c.vs) for c in result.comparisons))
    comparisons = [{"system": s, "vs": v, **{m: _pair(result, s, v, m) for m in result.metrics}} for s, v in pairs]
    lift = {f"over_{ref}": {m: _pair(result, "tuned", ref, m) for m in result.metrics} for ref in FREE}
    out: dict[str, Any] = {
        "split": result.split, "n_queries": len(result.query_ids), "metrics": result.metrics,
        "deploy": dict(choice["deploy"]), "systems": systems, "ci95": ci, "lift": lift, "comparisons": comparisons,
        "hybrid": dict(choice["hybrid"]), "prior": dict(choice["prior"]),
        "significance": (f"two-sided paired randomization test ({result.n_resamples} sign flips, seed {seed}) of "
                         f"each tuned system (tuned, {SYSTEMS[-1]}) against each free one ({', '.join(FREE)}), "
                         f"Holm-corrected across those {len(pairs)} comparisons per metric; CIs: percentile "
                         "bootstrap over queries (2000 resamples)"),
        "selected": selected, "tuned_from": tuned_from, "tuned_kept_on_dev": selected != "base",
        "dev": {"description": dev, "base": _means(dev_base), "ndcg@10": choice["deploy"]["dev"],
                "query_ids": list(dev_ids)},
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


def _pair(result: EvalResult, system: str, vs: str, metric: str) -> dict[str, Any]:
    """One tested pair's figures: the difference, its CI, the Holm-adjusted and the raw p."""
    c = result.comparison(system, vs, metric)
    return {"diff": c.diff, "ci95": list(c.ci95), "p": c.p, "p_raw": c.p_raw}


def format_run_table(result: RunResult, title: str | None = None):
    """A rich table: the six systems on the test split with the NDCG@10 CI, then each tested pair's
    difference, the CI of the NDCG@10 difference and its Holm-adjusted p."""
    from rich.table import Table

    m = result.metrics
    table = Table(title=title or f"{m['split']}: {m['n_queries']} queries (tuned = {result.tuned_from}"
                                 f"{'' if m['tuned_kept_on_dev'] else ', NOT kept on dev'})")
    table.add_column("system")  # a long pair's label wraps after its " -"
    for metric in m["metrics"]:
        table.add_column(metric, justify="right")
    table.add_column("ndcg@10 95% CI", justify="right", no_wrap=True)
    table.add_column("p (Holm)", justify="right", no_wrap=True)
    for s in SYSTEMS:
        lo, hi = m["ci95"][s]["ndcg@10"]
        table.add_row(s, *[f"{m['systems'][s][x]:.4f}" for x in m["metrics"]], f"[{lo:.3f}, {hi:.3f}]", "")
    table.add_section()
    for c in m["comparisons"]:
        lo, hi = c["ndcg@10"]["ci95"]
        table.add_row(f"{c['system']} - {c['vs']}", *[f"{c[x]['diff']:+.4f}" for x in m["metrics"]],
                      f"[{lo:+.3f}, {hi:+.3f}]", format_p(c["ndcg@10"]["p"], result.evaluation.n_resamples))
    return table


def report_markdown(result: RunResult) -> str:
    """``report.md``: what to deploy (its first sentence), the test table, every tested pair with
    its difference and significance, the hybrids' RRF k, the rounds, and what was kept."""
    m, n = result.metrics, result.evaluation.n_resamples
    metrics = m["metrics"]
    lines = [f"# hardneg run: the tuned model vs BM25, base and {HYBRID_BASE} on `{m['split']}` "
             f"({m['n_queries']} queries)", "", m["deploy"]["sentence"] + " " + _deploy_basis(m), ""]
    verdict = (f"The tuned model is round `{result.tuned_from}`, kept because it beat the starting model on dev."
               if m["tuned_kept_on_dev"] else
               "No round beat the starting model on dev, so the run's model is the base model; the `tuned` row "
               "shows round `r0` anyway, for the record (no `model/` folder is written).")
    lines += [verdict, "", "| system | " + " | ".join(metrics) + " | ndcg@10 95% CI | dev ndcg@10 |",
              "|---" * (len(metrics) + 3) + "|"]
    for s in SYSTEMS:
        lo, hi = m["ci95"][s]["ndcg@10"]
        lines.append(f"| {s} | " + " | ".join(f"{m['systems'][s][x]:.4f}" for x in metrics)
                     + f" | [{lo:.3f}, {hi:.3f}] | {m['dev']['ndcg@10'][s]:.4f} |")
    lines += ["", "## Lift of the tuned systems over the free ones", "",
              "| system | vs | " + " | ".join(f"Δ {x}" for x in metrics) + " | Δ ndcg@10 95% CI | p(ndcg@10) | raw p |",
              "|---" * (len(metrics) + 5) + "|"]
    for c in m["comparisons"]:
        (lo, hi), p = c["ndcg@10"]["ci95"], [format_p(c["ndcg@10"][x], n) for x in ("p", "p_raw")]
        lines.append(f"| {c['system']} | {c['vs']} | " + " | ".join(f"{c[x]['diff']:+.4f}" for x in metrics)
                     + f" | [{lo:+.4f}, {hi:+.4f}] | {p[0]} | {p[1]} |")
    lines += ["", hybrid_text(m["hybrid"]) + prior_text(m.get("prior"))]
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


def _deploy_basis(m: Mapping[str, Any]) -> str:
    """How the system to deploy was chosen, in one sentence."""
    among = "the six systems" if m["deploy"]["tuned_candidates"] else "the free systems (no round was kept)"
    return (f"It is the best of {among} on dev NDCG@10 (a tuned system must beat every free one there); test "
            "only measures the choice.")


def prior_text(prior: Mapping[str, Any] | None) -> str:
    """bm25+prior's weight, chosen on dev, as a sentence after the hybrids' (empty without one)."""
    if not prior:
        return ""
    tried = ", ".join(f"{d['weight']:g}" for d in prior["dev"])
    return (f" {prior['system']}: BM25 (per query / its top score) + w x the share of train queries a document "
            f"is positive for, w = {prior['weight']:g} chosen on dev from {tried}.")


def hybrid_text(hybrid: Mapping[str, Any]) -> str:
    """The hybrids' RRF k, chosen on dev, in one sentence."""
    names = [k for k, v in hybrid.items() if isinstance(v, dict) and "rrf_k" in v]
    chosen = "; ".join(f"{name}: k = {hybrid[name]['rrf_k']}" for name in names)
    return (f"Hybrids: {hybrid['fusion']}, RRF k chosen on dev NDCG@10 from {hybrid['rrf_k_grid']} (the same grid "
            f"for both): {chosen}.")
