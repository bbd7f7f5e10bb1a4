"""Held-out evaluation: metrics (:mod:`hardneg.metrics`: ranx, cross-checked), a seeded paired test with Holm correction, bootstrap CIs.

This is the only judge of a mining strategy: run it against the baselines a user would
otherwise pick (BM25 and the untuned model) on a split that training never saw.
"""
from __future__ import annotations

import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hardneg.chunking import search_documents
from hardneg.data import Dataset, leakage
from hardneg.files import atomic_write_json, atomic_write_text
from hardneg.metrics import METRICS, per_query_scores
from hardneg.retrieve import build_retrievers
from hardneg.retrieve.base import Ranking

__all__ = ["EvalResult", "evaluate", "paired_randomization_test", "write_eval"]

N_RESAMPLES = 10_000


def paired_randomization_test(a: np.ndarray, b: np.ndarray, n_resamples: int = N_RESAMPLES,
                              seed: int = 0) -> float:
    """Two-sided paired sign-flip permutation test of mean(a - b); reproducible for a seed.

    Written here because ranx's Fisher test is not reproducible even with a seed.
    Returns (count + 1) / (n_resamples + 1), so the smallest value is 1 / (n_resamples + 1).
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if not d.any():
        return 1.0
    rng = np.random.default_rng(seed)
    observed = abs(d.mean())
    count = 0
    for start in range(0, n_resamples, 1000):  # chunks keep memory at 1000 x n_queries
        n = min(1000, n_resamples - start)
        signs = rng.integers(0, 2, size=(n, d.size), dtype=np.int8) * 2 - 1
        count += int((np.abs(signs @ d) / d.size >= observed - 1e-12).sum())
    return (count + 1) / (n_resamples + 1)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p) - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


def bootstrap_ci(x: np.ndarray, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over queries."""
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def format_p(p: float, n_resamples: int = N_RESAMPLES) -> str:
    """A p-value as text; the floor of a permutation test is shown as ``< 1/(n+1)``, never 0."""
    floor = 1 / (n_resamples + 1)
    return f"< {floor:.1g}" if p <= floor * (1 + 1e-9) else f"{p:.3g}"


@dataclass(frozen=True)
class Comparison:
    """One tested pair on one metric: ``system`` minus ``vs`` (mean over queries), the percentile
    bootstrap CI of that per-query difference, its paired p raw and Holm-adjusted across the family
    of pairs it was tested with (:func:`compare`)."""

    system: str
    vs: str
    metric: str
    diff: float
    ci95: tuple[float, float]
    p_raw: float
    p: float


def compare(per_query: Mapping[str, Mapping[str, np.ndarray]], pairs: Sequence[tuple[str, str]],
            metrics: Sequence[str], n_resamples: int = N_RESAMPLES, seed: int = 0) -> list[Comparison]:
    """Test every ``(system, vs)`` pair: a paired randomization test, Holm across all the pairs (per
    metric), a bootstrap CI of the difference. Use when one report makes several claims at once (the
    tuned model and its hybrid against each free system): the pairs are the family corrected for."""
    out = []
    for m in metrics:
        raw = [paired_randomization_test(per_query[s][m], per_query[v][m], n_resamples, seed) for s, v in pairs]
        for (s, v), p_raw, p in zip(pairs, raw, holm(raw)):
            d = np.asarray(per_query[s][m], np.float64) - np.asarray(per_query[v][m], np.float64)
            out.append(Comparison(s, v, m, float(d.mean()), bootstrap_ci(d, seed=seed), p_raw, p))
    return out


@dataclass
class EvalResult:
    """Metrics of several systems on the same queries; the first system is the reference.

    ``comparisons`` are the pairs tested (by default each system against the first), Holm-corrected
    across them per metric; ``pvalues`` holds the adjusted p of each system compared with the first.
    """

    split: str
    query_ids: list[str]
    per_query: dict[str, dict[str, np.ndarray]]  # system -> metric -> (n_queries,)
    pvalues: dict[str, dict[str, float]]  # system -> metric -> Holm-adjusted p vs the first system
    clean_ids: list[str] | None = None  # queries whose positives were never train positives
    notes: list[str] = field(default_factory=list)
    n_resamples: int = N_RESAMPLES
    comparisons: list[Comparison] = field(default_factory=list)
    custom_pairs: bool = False  # the pairs were given (not each system vs the first)

    @property
    def systems(self) -> list[str]:
        return list(self.per_query)

    @property
    def metrics(self) -> list[str]:
        return list(next(iter(self.per_query.values())))

    def means(self, subset: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """``{system: {metric: mean}}`` over all queries, or over ``subset``."""
        rows = slice(None) if subset is None else _positions(self.query_ids, subset)
        return {s: {m: float(v[rows].mean()) for m, v in ms.items()} for s, ms in self.per_query.items()}

    def ci(self, system: str, metric: str = "ndcg@10", seed: int = 0) -> tuple[float, float]:
        return bootstrap_ci(self.per_query[system][metric], seed=seed)

    def comparison(self, system: str, vs: str, metric: str = "ndcg@10") -> Comparison | None:
        """The tested pair ``system`` vs ``vs`` (either order: the test is two-sided), or None."""
        for c in self.comparisons:
            if c.metric == metric and {c.system, c.vs} == {system, vs}:
                return c
        return None

    def family(self) -> str:
        """What the p-values were corrected across, in words."""
        if not self.custom_pairs:
            return f"of each system against `{self.systems[0]}`, Holm-corrected across systems per metric"
        pairs = list(dict.fromkeys((c.system, c.vs) for c in self.comparisons))
        return (f"of {len(pairs)} pairs ({'; '.join(f'{s} vs {v}' for s, v in pairs)}), Holm-corrected across "
                "those pairs per metric")


def _positions(query_ids: Sequence[str], subset: Sequence[str]) -> np.ndarray:
    pos = {q: i for i, q in enumerate(query_ids)}
    return np.array([pos[q] for q in subset], dtype=np.int64)


def retrieve_splits(ds: Dataset, splits: Sequence[str], specs: Sequence[str], encoder: Any, docs: Any = None,
                    depth: int = 100, cache_dir: Any = None,
                    working: Callable[[str], Any] = lambda text: nullcontext(),
                    say: Callable[[str], None] = lambda text: None) -> dict[str, dict[str, Ranking]]:
    """The rankings `hardneg eval` scores, per split of ``splits``: each retriever of ``specs`` on the
    queries of that split, over ``docs`` (chunks of ``ds``: a document ranks by its best chunk) or
    ``ds`` itself. The retrievers (and their corpus vectors) are built once for every split."""
    docs = ds if docs is None else docs
    out: dict[str, dict[str, Ranking]] = {s: {} for s in splits}
    for name, r in build_retrievers(specs, docs.doc_ids, docs.doc_texts(), encoder, cache=cache_dir).items():
        start = time.perf_counter()
        for split in splits:
            qids = list(ds.positives(split)) if split in ds.qrels else ds.split_qrels(split)
            texts = [ds.queries[q] for q in qids]
            with working(f"{name}: retrieving for {len(qids)} {split} queries"):
                out[split][name] = (r.search(qids, texts, depth) if docs is ds
                                    else search_documents(r, docs, qids, texts, depth))
        say(f"{name}: retrieved in {time.perf_counter() - start:.1f}s")
    return out


def evaluate(ds: Dataset, split: str, rankings: Mapping[str, Ranking], metrics: Sequence[str] = METRICS,
             n_resamples: int = N_RESAMPLES, seed: int = 0, train_split: str = "train",
             pairs: Sequence[tuple[str, str]] | None = None, notes: Sequence[str] = ()) -> EvalResult:
    """Score every ranking on ``split`` and test each against the first (Holm across systems), or
    test the ``(system, vs)`` ``pairs`` given (Holm across those pairs: :func:`compare`); ``notes``
    go to the report."""
    qrels = ds.split_qrels(split)
    qids = list(ds.positives(split))
    per_query = {name: per_query_scores(qrels, r.subset(qids), metrics) for name, r in rankings.items()}
    names = list(per_query)
    tested = [(s, names[0]) for s in names[1:]] if pairs is None else list(pairs)
    comparisons = compare(per_query, tested, metrics, n_resamples, seed)
    pvalues: dict[str, dict[str, float]] = {names[0]: {m: 1.0 for m in metrics}}
    for c in comparisons:
        if names[0] in (c.system, c.vs):
            pvalues.setdefault(c.vs if c.system == names[0] else c.system, {})[c.metric] = c.p
    leak = leakage(ds, split, train_split)
    result = EvalResult(split, qids, per_query, pvalues, n_resamples=n_resamples, comparisons=comparisons,
                        custom_pairs=pairs is not None)
    result.notes.extend(notes)
    if leak is not None and leak.any:
        result.clean_ids = leak.clean
        result.notes.append(f"leakage between {train_split} and {split}: {leak.summary()}")
    return result


# ---- presentation and files -------------------------------------------------------------------
def format_table(result: EvalResult, title: str | None = None):
    """A rich table: mean metrics, NDCG@10 95% CI, p vs the first system."""
    from rich.table import Table

    table = Table(title=title or f"{result.split}: {len(result.query_ids)} queries")
    table.add_column("system")
    for m in result.metrics:
        table.add_column(m, justify="right")
    table.add_column("ndcg@10 95% CI", justify="right")
    table.add_column(f"p vs {result.systems[0]}", justify="right")
    means = result.means()
    for s in result.systems:
        lo, hi = result.ci(s) if "ndcg@10" in result.metrics else (float("nan"),) * 2
        p = result.pvalues.get(s, {}).get("ndcg@10") if s != result.systems[0] else None
        p = "-" if p is None else format_p(p, result.n_resamples)
        table.add_row(s, *[f"{means[s][m]:.4f}" for m in result.metrics], f"[{lo:.3f}, {hi:.3f}]", p)
    return table


def format_eval(result: EvalResult) -> list:
    """What `hardneg eval` prints: :func:`format_table`, the table of the queries whose positives
    were never train positives (when some were) and the notes."""
    from rich.table import Table

    out: list = [format_table(result)]
    if result.clean_ids:
        table = Table(title=f"queries whose positives were never train positives ({len(result.clean_ids)})")
        table.add_column("system")
        for m in result.metrics:
            table.add_column(m, justify="right")
        for s, ms in result.means(result.clean_ids).items():
            table.add_row(s, *[f"{ms[m]:.4f}" for m in result.metrics])
        out.append(table)
    return out + [f"note: {note}" for note in result.notes]


def report_markdown(result: EvalResult) -> str:
    """The evaluation as Markdown: metrics, significance vs the first system, leakage subset."""
    lines = [f"# Evaluation on `{result.split}` ({len(result.query_ids)} queries)", ""]
    lines += _md_table(result, result.means(), with_p=True)
    lines += ["", f"p: two-sided paired randomization test ({result.n_resamples} sign flips, seeded) "
              f"{result.family()}."]
    for note in result.notes:
        lines += ["", f"Note: {note}."]
    if result.clean_ids:
        lines += ["", f"## Queries whose positives were never train positives ({len(result.clean_ids)})", ""]
        lines += _md_table(result, result.means(result.clean_ids), with_p=False)
    return "\n".join(lines) + "\n"


def _md_table(result: EvalResult, means: dict[str, dict[str, float]], with_p: bool) -> list[str]:
    head = ["system", *result.metrics] + ([f"p({m}) vs {result.systems[0]}" for m in result.metrics] if with_p else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in result.systems:
        cells = [s, *[f"{means[s][m]:.4f}" for m in result.metrics]]
        if with_p:
            cells += ["-" if s == result.systems[0] or m not in result.pvalues.get(s, {})
                      else format_p(result.pvalues[s][m], result.n_resamples) for m in result.metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def run_file(system: str) -> str:
    """The TREC file of ``system``: its name with what a shell would need quoted made ``-``
    (``hybrid(bm25+base)`` -> ``hybrid-bm25+base.trec``)."""
    return re.sub(r"[^\w.+-]+", "-", system).strip("-") + ".trec"


def write_eval(result: EvalResult, out: str | Path, rankings: Mapping[str, Ranking]) -> None:
    """``metrics.json``, ``metrics_clean.json`` (on leakage), ``per_query.tsv``, ``runs/*.trec``, ``report.md``."""
    out = Path(out)
    atomic_write_json(out / "metrics.json", result.means())
    if result.clean_ids:
        atomic_write_json(out / "metrics_clean.json", result.means(result.clean_ids))
    head = "\t".join(["query_id", "system", *result.metrics])
    rows = [
        "\t".join([q, s, *[f"{result.per_query[s][m][i]:.6f}" for m in result.metrics]])
        for s in result.systems for i, q in enumerate(result.query_ids)
    ]
    atomic_write_text(out / "per_query.tsv", "\n".join([head, *rows]) + "\n")
    for name, ranking in rankings.items():
        ranking.subset(result.query_ids).write_trec(out / "runs" / run_file(name), name)
    atomic_write_text(out / "report.md", report_markdown(result))
