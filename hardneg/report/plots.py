"""The report's figures as PNG bytes: matplotlib, Agg canvas, no pyplot, no global state.

Use these when you want a picture of a run's data in a file or an HTML page: each function
takes plain numbers (no run folder, no file I/O) and returns the PNG bytes, so it is testable
alone and safe to call from a server or a loop (figures are never registered with pyplot,
nothing is left open). The same inputs give the same bytes (no timestamp in the PNG).
"""
from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__: list[str] = []  # internal: the reports' figures

DPI = 100
POSITIVE, NEGATIVE, OTHER = "#2a7ab9", "#d9662b", "#7a7a7a"  # colour-blind-safe pair + grey
SERIES = {"labels": "#2a7ab9", "judge": "#c23b7a"}


def _figure(width: float, height: float):
    """A fresh figure on its own Agg canvas (not pyplot's: nothing to close, thread-safe)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    """The figure as PNG bytes, without the Software stamp (same figure, same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def score_histogram(positives: Sequence[float], negatives: Sequence[float], title: str,
                    others: Sequence[float] | None = None, xlabel: str = "score") -> bytes:
    """Overlaid histograms of positive scores and selected-negative scores (optionally the
    candidates not chosen, as a grey outline), on shared bins.

    Use it to see how close the chosen negatives sit to the positives: overlap means hard
    negatives, or false negatives the filters let through.
    """
    pos, neg = _finite(positives), _finite(negatives)
    rest = _finite(others) if others is not None else np.zeros(0)
    fig = _figure(6.4, 3.2)
    ax = fig.add_subplot()
    every = np.concatenate([pos, neg, rest])
    if every.size == 0:
        ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
    else:
        bins = np.histogram_bin_edges(every, bins=min(40, max(5, int(math.sqrt(every.size)))))
        if rest.size:
            ax.hist(rest, bins=bins, density=True, histtype="step", color=OTHER, label=f"not chosen (n={rest.size})")
        ax.hist(pos, bins=bins, density=True, alpha=0.55, color=POSITIVE, label=f"positives (n={pos.size})")
        ax.hist(neg, bins=bins, density=True, alpha=0.55, color=NEGATIVE, label=f"selected negatives (n={neg.size})")
        ax.legend(fontsize=8, frameon=False)
    ax.set(title=title, xlabel=xlabel, ylabel="density")
    return _png(fig)


def filter_drops(counts: Mapping[str, Mapping[str, int]], title: str = "candidates removed per filter") -> bytes:
    """Horizontal grouped bars: per filter (rows), the candidates it removed in each round (series).

    ``counts`` is ``{round: {filter: removed}}``; filters keep their pipeline order (first
    seen first). Use it to see which filter does the work and whether that changes by round.
    """
    filters = list(dict.fromkeys(f for per in counts.values() for f in per))
    rounds = list(counts)
    fig = _figure(6.4, 0.5 + 0.45 * max(1, len(filters)) * max(1, len(rounds)) ** 0.5)
    ax = fig.add_subplot()
    if not filters:
        ax.text(0.5, 0.5, "no filters recorded", ha="center", va="center", transform=ax.transAxes)
    height = 0.8 / max(1, len(rounds))
    y = np.arange(len(filters))
    for i, name in enumerate(rounds):
        values = [counts[name].get(f, 0) for f in filters]
        bars = ax.barh(y + i * height, values, height=height, label=name)
        ax.bar_label(bars, fontsize=7, padding=2)
    ax.set_yticks(y + height * (len(rounds) - 1) / 2, filters)
    ax.invert_yaxis()
    ax.set(title=title, xlabel="candidates removed")
    if len(rounds) > 1:
        ax.legend(fontsize=8, frameon=False, loc="lower right")
    return _png(fig)


def false_negative_curve(curves: Mapping[str, Sequence[Mapping[str, Any]]], window: Sequence[int] | None,
                         title: str = "false negatives by original rank") -> bytes:
    """Rate of false negatives per original-rank bucket, one series per kind, with the window shaded.

    ``curves`` is ``{kind: buckets}`` with audit.json's bucket entries (``lo``, ``hi``,
    ``rate``, ``ci``); each bucket is drawn as a horizontal segment over its ranks (log axis),
    its Wilson interval as an error bar. ``window`` ``[lo, hi]`` (1-based, inclusive) is
    shaded: the ranks the selection may take negatives from.
    """
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot()
    kinds = [k for k, b in curves.items() if b]
    top = 0.0
    for j, kind in enumerate(kinds):
        colour = SERIES.get(kind, f"C{j + 2}")
        shift = 1.0 + 0.06 * (j - (len(kinds) - 1) / 2)  # side by side, so error bars do not hide each other
        for i, b in enumerate(curves[kind]):
            if b.get("rate") is None:
                continue
            lo, hi, rate = float(b["lo"]), float(b["hi"]), float(b["rate"])
            mid = math.sqrt(lo * hi) * shift
            ax.hlines(rate, lo - 0.5, hi + 0.5, colors=colour, linewidth=2, label=kind if i == 0 else None)
            ci = b.get("ci")
            if ci:
                ax.errorbar([mid], [rate], yerr=[[rate - ci[0]], [ci[1] - rate]], fmt="o", color=colour,
                            markersize=4, capsize=3, label=None)
                top = max(top, float(ci[1]))
            top = max(top, rate)
    if window:
        ax.axvspan(window[0] - 0.5, window[1] + 0.5, color="#3a9d4a", alpha=0.12, label=f"window {window[0]}:{window[1]}")
        for edge in (window[0] - 0.5, window[1] + 0.5):
            ax.axvline(edge, color="#3a9d4a", linewidth=1, linestyle="--")
    if not kinds:
        ax.text(0.5, 0.5, "no buckets with candidates", ha="center", va="center", transform=ax.transAxes)
    ax.set_xscale("log")
    spans = [(int(b["lo"]), int(b["hi"])) for k in kinds for b in curves[k]]
    edges = sorted({lo for lo, _ in spans} | {max(hi for _, hi in spans)}) if spans else []  # bucket starts
    if edges:
        from matplotlib.ticker import NullLocator

        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(edges, [str(e) for e in edges], fontsize=8)
        ax.set_xlim(edges[0] - 0.5 if edges[0] > 1 else 0.5, edges[-1] * 1.15)
    ax.set_ylim(0, max(0.05, top * 1.15))
    ax.set(title=title, xlabel="original rank (log scale)", ylabel="false-negative rate")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=8, frameon=False)
    return _png(fig)


def system_bars(means: Mapping[str, float], ci: Mapping[str, Sequence[float]], metric: str = "ndcg@10") -> bytes:
    """One bar per system with its 95% bootstrap interval: the headline comparison at a glance."""
    names = list(means)
    values = np.array([means[n] for n in names], dtype=np.float64)
    lows = np.array([ci[n][0] for n in names], dtype=np.float64)
    highs = np.array([ci[n][1] for n in names], dtype=np.float64)
    fig = _figure(max(4.8, 1.3 * len(names)), 2.8)  # room for five systems' names
    ax = fig.add_subplot()
    bars = ax.bar(names, values, yerr=[values - lows, highs - values], capsize=4,
                  color=[f"C{i}" for i in range(len(names))], alpha=0.85)
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=8, label_type="center")
    ax.tick_params(axis="x", labelsize=7)
    ax.set(title=f"{metric} on the test split (95% CI)", ylabel=metric, ylim=(0, max(1.0, float(highs.max(initial=0)))))
    return _png(fig)


def _finite(values: Sequence[float] | None) -> np.ndarray:
    x = np.asarray(list(values) if values is not None else [], dtype=np.float64)
    return x[np.isfinite(x)]


def quality_vs_compute(points: Mapping[str, Sequence[float]], metric: str = "NDCG@10",
                       hybrids: Mapping[str, float] | None = None) -> bytes:
    """``hardneg compare``'s rows: each trained row's quality (mean, sd over seeds as error bars) against
    its compute (mining + training seconds, log scale), named; rows that cost nothing (base, BM25: what
    the user has for free) are dashed horizontal lines to beat. ``hybrids``: a trained row's model fused
    with BM25, drawn hollow beside it."""
    hybrids = hybrids or {}
    free = {n: v for n, v in points.items() if v[0] <= 0}
    trained = [n for n in points if n not in free]
    fig = _figure(5.6, 3.6)
    ax = fig.add_subplot()
    x = np.array([points[n][0] for n in trained], dtype=np.float64)
    y = np.array([points[n][1] for n in trained], dtype=np.float64)
    ax.errorbar(x, y, yerr=[points[n][2] for n in trained], fmt="o", capsize=3, color=POSITIVE)
    for name, xi, yi in zip(trained, x, y):
        ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
    fused = [n for n in trained if n in hybrids]
    if fused:
        ax.scatter([points[n][0] for n in fused], [hybrids[n] for n in fused], marker="s", facecolors="none",
                   edgecolors=POSITIVE, label="hybrid(bm25+row)")
    for i, (name, v) in enumerate(free.items()):
        ax.axhline(v[1], color=f"C{i + 1}", linestyle="--", linewidth=1, label=f"{name} (free) {v[1]:.3f}")
    if free or fused:
        ax.legend(fontsize=7, loc="best")
    ax.set(xlabel="mining + training seconds (log)", ylabel=f"{metric} (test)",
           title=f"{metric} against compute (error bars: sd over seeds)")
    if trained:
        ax.set_xscale("log")
    return _png(fig)
