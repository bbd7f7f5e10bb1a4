"""The HTML report of a run folder: one self-contained ``report.html`` a person can read.

Use :func:`write_report` (``hardneg report RUN_DIR``; ``hardneg run`` calls it at its end)
after a run, or again after adding an audit or a benchmark table to the folder. It reads only
what the folder holds and writes ``RUN_DIR/report.html`` (images embedded as data URIs, CSS
inline, no script, nothing fetched) and the same figures as PNG files under ``RUN_DIR/plots/``:

* the system to deploy (chosen on dev) first, then test metrics of bm25 / base / their hybrid /
  tuned / the tuned hybrid with bootstrap intervals, the lift of each tuned system over each free
  one with Holm-corrected paired p-values, and the rounds with their dev verdicts (``metrics.json``);
* per-filter drop counts of every round (``rounds/r<i>/stats.json``);
* score histograms of positives vs selected negatives, and a per-query view of a seeded
  sample of train queries: the query, its positives, the chosen negatives with their original
  rank and score, and for the others the filter that dropped them. Both read the round's
  ``rounds/r<i>/decisions.parquet`` (every candidate's fate, stored when the round selected);
  for a folder without one, or whose ``stats.json`` policy was edited since, they re-run
  :func:`hardneg.select.select` on ``candidates.parquet`` with the round's policy (deterministic,
  the same page); texts come from the run's dataset, ids only when it is unreadable;
* the false-negative curve with the chosen window, when an ``audit.json`` is there;
* the progression table, when a ``progression.md`` is there (or one is passed).

A section whose input is absent says so in one line. The same folder gives the same bytes.

The parts: :mod:`~hardneg.report.run_folder` (what the report reads), :mod:`~hardneg.report.sections`
(each section's HTML), :mod:`~hardneg.report.plots` (the figures), :mod:`~hardneg.report.htmlpage`
(the page).
"""
from __future__ import annotations

from pathlib import Path

from hardneg.data import Dataset
from hardneg.errors import HardnegError
from hardneg.files import atomic_write_text
from hardneg.report.htmlpage import page
from hardneg.report.run_folder import _dataset, _load_round, find_audit, find_progression, read_run
from hardneg.report.sections import (SAMPLE_QUERIES, SYSTEMS, _Plots, audit_section, filters_section, metrics_section,
                                     progression_section, queries_section, rounds_section, scores_section)

__all__ = ["write_report"]


def write_report(run_dir: str | Path, *, progression: str | Path | None = None, audit: str | Path | None = None,
                 data: "Dataset | None" = None, sample: int = SAMPLE_QUERIES, seed: int = 0) -> Path:
    """Write ``RUN_DIR/report.html`` and ``RUN_DIR/plots/*.png``; return the HTML file's path.

    ``progression`` / ``audit`` name files outside the folder (see :func:`find_progression`,
    :func:`find_audit`); ``data`` passes the run's already loaded dataset (else it is loaded
    from the recipe's path); ``sample`` train queries (seeded by ``seed``) get a per-query view.
    """
    if sample < 0:
        raise HardnegError(f"sample must be >= 0 queries, not {sample}")
    run = read_run(run_dir)
    audit_file, progression_file = find_audit(run, audit), find_progression(run, progression)
    ds, ds_note = _dataset(run, data)
    for rnd in run.rounds:
        _load_round(rnd, ds)
    figures = _Plots(run.path / "plots")
    sections = [
        ("metrics", "Test metrics", metrics_section(run, figures)),
        ("rounds", "Rounds", rounds_section(run)),
        ("filters", "Per-filter drop counts", filters_section(run, figures)),
        ("scores", "Scores: positives vs selected negatives", scores_section(run, figures)),
        ("queries", "Per-query view", queries_section(run, ds_note, sample, seed)),
        ("audit", "False negatives by rank", audit_section(run, audit_file, figures)),
        ("progression", "Progression", progression_section(progression_file)),
    ]
    m = run.metrics
    title = (f"hardneg run {run.path.name}: {' vs '.join(s for s in SYSTEMS if s in m.get('systems', {}))} on {m.get('split', '?')} "
             f"({m.get('n_queries', '?')} queries)")
    out = run.path / "report.html"
    atomic_write_text(out, page(title, sections))
    figures.prune()
    return out
