"""The false-negative audit: how often is a mined "negative" actually relevant, by original rank?

Use :func:`label_audit` on any candidate set of a split with queries that have several
positives: it hides a fraction of each such query's positives (seeded, several draws) and
counts, per original-rank bucket, how many of the candidates the miner would see as
unlabeled are in fact hidden positives. That is the false-negative curve the labels can
show: the "cliff" at the top of the ranking. Use :func:`judge_audit` when a judge (a
cross-encoder) is available: for a seeded sample of unlabeled candidates per bucket, the
share the judge calls relevant. :func:`calibrate` turns either curve into a window start
and a percent threshold (``hardneg calibrate``).

Ranks are the candidate set's ORIGINAL ranks (under its ``rank_by``, positives counted),
the same ranks ``--window`` reads. Rates come with Wilson 95% intervals (scipy). Only the
candidate set's own split is read, never an evaluation split's qrels.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from hardneg import sampling
from hardneg.candidates import CandidateSet, Column, rank_col, score_col
from hardneg.crossencoder import load_judge
from hardneg.errors import HardnegError
from hardneg.options import check, option, seed_option
from hardneg.select import SelectionPolicy, select

__all__ = ["AuditConfig", "Calibration", "audit_candidates", "auto_window", "calibrate", "read_audit"]

BUCKETS: tuple[tuple[int, int], ...] = ((1, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, 200))
PERCENT_GRID: tuple[float, ...] = tuple(round(1.0 - 0.01 * i, 2) for i in range(21))  # 1.00 .. 0.80
EVAL_SPLITS = ("test", "dev", "validation")



@dataclass(frozen=True)
class AuditConfig:
    """How ``hardneg run`` audits and calibrates when the recipe says ``window = "auto"``."""

    target: float = option(0.05, "The false-negative rate the chosen window must stay under.", gt=0, lt=1)
    hide: float = option(0.5, "Fraction of a query's positives hidden by the label audit.", gt=0, lt=1)
    draws: int = option(5, "Seeded hiding draws, averaged.", ge=1)
    window_end: int = option(100, "The window's end (the audit chooses its start).", ge=1)
    seed: int = seed_option(0, "Seed of the hiding draws and of the judge's sample.")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class JudgeConfig:
    """How ``hardneg audit --cross-encoder`` judges a sample of unlabeled candidates per bucket."""

    judge_threshold: float = option(0.0, "Judged relevant when the cross-encoder score is above this (a logit of 0 "
                                    "is p = 0.5).", recipe=False)
    judge_sample: int = option(100, "Unlabeled candidates judged per rank bucket.", recipe=False)

    def __post_init__(self) -> None:
        check(self)

    def arguments(self, cross_encoder: str | Path | None, ds: Any) -> dict[str, Any]:
        """The judge keywords of :func:`audit_candidates` (none without a ``cross_encoder``)."""
        if cross_encoder is None:
            return {}
        return dict(judge=load_judge(cross_encoder), texts=ds.doc_text_map(), queries=ds.queries,
                    threshold=self.judge_threshold, sample=self.judge_sample)


# A judge maps (query text, doc text) pairs, with their query ids, to relevance scores.
Judge = Callable[[Sequence[str], Sequence[str], Sequence[str]], np.ndarray]


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of k successes in n trials (None when n == 0)."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def _bucket(k: int | float, n: int | float, lo: int, hi: int) -> dict[str, Any]:
    """One bucket entry of audit.json (``k``/``n`` may be per-draw averages)."""
    ci = wilson(round(k), round(n))
    return {"bucket": f"{lo}-{hi}", "lo": lo, "hi": hi, "n": float(n), "k": float(k),
            "rate": (k / n) if n else None, "ci": list(ci) if ci else None}


def bucket_of(ranks: np.ndarray, buckets: Sequence[tuple[int, int]] = BUCKETS) -> np.ndarray:
    """Index into ``buckets`` per rank; -1 for a null rank or one outside every bucket."""
    out = np.full(len(ranks), -1, dtype=np.int64)
    for i, (lo, hi) in enumerate(buckets):
        out[(ranks >= lo) & (ranks <= hi)] = i
    return out


def _check_split(cands: CandidateSet) -> None:
    split = cands.meta.get("split")
    if split in EVAL_SPLITS:
        raise HardnegError(f"the candidate set was mined on the '{split}' split: the audit never reads an "
                           "evaluation split's labels; mine the train split")


def _frame(cands: CandidateSet) -> pd.DataFrame:
    """query, doc, positive flag, original rank (NaN if unranked), score, of the rows an audit may see."""
    df = cands.table
    drop = df[Column.IS_QUERY_TEXT].to_numpy() | (df[Column.DUP_OF_POSITIVE].to_numpy()
                                                  & ~df[Column.IS_POSITIVE].to_numpy())
    out = pd.DataFrame({
        "q": df[Column.QUERY_ID].to_numpy(), "doc": df[Column.DOC_ID].to_numpy(),
        "pos": df[Column.IS_POSITIVE].to_numpy(bool),
        "rank": df[rank_col(cands.rank_by)].to_numpy("float64", na_value=np.nan),
        "score": df[score_col(cands.score_by)].to_numpy("float64", na_value=np.nan)
        if score_col(cands.score_by) in df else np.nan,
    })
    return out[~drop].reset_index(drop=True)


def _hide(frame: pd.DataFrame, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Mask of positive rows hidden in this draw: per query with >= 2 positives, round(fraction * p)
    of them, at least 1 and at most p - 1 (one always stays visible). The draw follows the positives
    sorted by (query, document), so it does not depend on the table's row order (a candidate set
    mined in memory and the same set read back from Parquet hide the same positives)."""
    pos = frame[frame["pos"]].sort_values(["q", "doc"], kind="stable")
    n_pos = pos.groupby("q")["doc"].transform("size").to_numpy()
    order = pd.Series(rng.random(len(pos)), index=pos.index).groupby(pos["q"]).rank(method="first").to_numpy()
    n_hide = np.clip(np.rint(fraction * n_pos), 1, n_pos - 1)
    hidden = np.zeros(len(frame), dtype=bool)
    hidden[pos.index[(n_pos >= 2) & (order <= n_hide)]] = True
    return hidden


def label_audit(cands: CandidateSet, fraction: float = 0.5, draws: int = 5, seed: int = 0,
                buckets: Sequence[tuple[int, int]] = BUCKETS,
                percents: Sequence[float] = PERCENT_GRID) -> dict[str, Any]:
    """The labels' false-negative curve: hide positives, count hidden ones per rank bucket.

    Only queries with two or more positives take part. In each of ``draws`` seeded draws a
    ``fraction`` of their positives is hidden; the unlabeled candidates are then the
    non-positives plus the hidden positives, and a bucket's rate is hidden / unlabeled.
    Counts are averaged over draws, so the Wilson intervals are those of one draw's sample
    size (pooling draws would overstate it). ``percent_grid`` gives, per bucket and percent
    P, the hidden and unlabeled counts among the candidates whose score is <= P x the query's
    lowest VISIBLE positive score (what ``--percent`` would keep).
    """
    _check_split(cands)
    if not 0 < fraction < 1:
        raise HardnegError(f"--hide must be in (0, 1), got {fraction}")
    if draws < 1:
        raise HardnegError(f"--draws must be >= 1, got {draws}")
    frame = _frame(cands)
    multi = frame[frame["pos"]].groupby("q").size()
    multi = set(multi[multi >= 2].index)
    frame = frame[frame["q"].isin(multi)].reset_index(drop=True)
    if frame.empty:
        raise HardnegError("no query has two or more positives: the labels cannot show false negatives "
                           "(use a judge: --cross-encoder)")
    rng = np.random.default_rng(seed)
    bidx = bucket_of(frame["rank"].to_numpy(), buckets)
    k = np.zeros(len(buckets))
    n = np.zeros(len(buckets))
    grid = np.zeros((len(buckets), len(percents), 2))
    hidden_total = hidden_ranked = 0
    for _ in range(draws):
        hidden = _hide(frame, fraction, rng)
        unlabeled = ~frame["pos"].to_numpy() | hidden
        hidden_total += int(hidden.sum())
        hidden_ranked += int((hidden & (bidx >= 0)).sum())
        in_b = unlabeled & (bidx >= 0)
        n += np.bincount(bidx[in_b], minlength=len(buckets))
        k += np.bincount(bidx[in_b & hidden], minlength=len(buckets))
        grid += _percent_grid(frame, hidden, unlabeled, bidx, len(buckets), percents)
    grid /= draws
    return {
        "kind": "labels", "queries": len(multi), "hidden_fraction": fraction, "draws": draws, "seed": seed,
        "hidden_per_draw": hidden_total / draws, "hidden_ranked_per_draw": hidden_ranked / draws,
        "rank_by": cands.rank_by, "score_by": cands.score_by,
        "buckets": [_bucket(k[i] / draws, n[i] / draws, lo, hi) for i, (lo, hi) in enumerate(buckets)],
        "percent_grid": {"percents": list(percents), "buckets": [f"{lo}-{hi}" for lo, hi in buckets],
                         "k": grid[:, :, 0].round(4).tolist(), "n": grid[:, :, 1].round(4).tolist()},
    }


def _percent_grid(frame: pd.DataFrame, hidden: np.ndarray, unlabeled: np.ndarray, bidx: np.ndarray,
                  n_buckets: int, percents: Sequence[float]) -> np.ndarray:
    """(bucket, percent, [hidden, unlabeled]) counts of the candidates each percent keeps."""
    visible_pos = frame["pos"].to_numpy() & ~hidden
    ref = frame["score"].where(visible_pos).groupby(frame["q"]).transform("min").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):  # a 0 reference: inf/NaN fail every percent
        ratio = frame["score"].to_numpy() / ref
    out = np.zeros((n_buckets, len(percents), 2))
    for b in range(n_buckets):
        rows = unlabeled & (bidx == b)
        for j, p in enumerate(percents):
            keep = rows & (ratio <= p)  # NaN ratios (unscored) fail the filter, as in select
            out[b, j] = (int((keep & hidden).sum()), int(keep.sum()))
    return out


def selection_trap(cands: CandidateSet, policy: SelectionPolicy | None = None, hide: float = 0.5,
                   draws: int = 5, seed: int = 0,
                   buckets: Sequence[tuple[int, int]] = BUCKETS) -> dict[str, Any]:
    """How often a policy selects a positive nobody labeled, measured without training.

    Use it to compare policies (``hardneg compare``) on a train split with multi-positive
    queries: only those take part. In each of ``draws`` seeded draws a ``hide`` fraction of
    their positives is hidden as in :func:`label_audit`; a hidden positive the retriever ranked
    becomes an unlabeled candidate, one it did not rank leaves the set. ``policy`` (default
    :class:`SelectionPolicy`) then selects, its filters comparing with the VISIBLE positives.
    ``share`` is hidden positives / selected negatives (a per-pair policy counts a negative once
    per row it is in), overall and per original-rank bucket; ``kept_queries`` the queries with
    a row of at least k negatives. Counts are averaged over draws. A policy that promotes
    (``promote_above`` / ``promote_near_dup``) also gets ``promoted``: how many candidates became
    positives, how many of them are hidden positives (``precision``, a lower bound: unlabeled
    positives count as wrong) and the share of the ranked hidden positives promoted (``recall``).
    """
    policy = policy or SelectionPolicy()
    _check_split(cands)
    if not 0 < hide < 1 or draws < 1:
        raise HardnegError(f"hide must be in (0, 1) and draws >= 1, got {hide}, {draws}")
    t = cands.table
    n_pos = t[Column.IS_POSITIVE].groupby(t[Column.QUERY_ID]).transform("sum").to_numpy()
    t = t[n_pos >= 2].reset_index(drop=True)
    if t.empty:
        raise HardnegError("no query has two or more positives: hidden labels cannot show the trap")
    frame = pd.DataFrame({"q": t[Column.QUERY_ID].to_numpy(), "doc": t[Column.DOC_ID].to_numpy(),
                          "pos": t[Column.IS_POSITIVE].to_numpy(bool)})
    ranked = t[rank_col(policy.rank_by or cands.rank_by)].notna().to_numpy()
    rng = np.random.default_rng(seed)
    k = policy.num_negatives
    counts = np.zeros((len(buckets) + 1, 2))  # [selected, hidden]: per bucket, then overall
    kept = 0.0
    promo = np.zeros(3)  # promoted, promoted that are hidden positives, ranked hidden positives
    for _ in range(draws):
        hidden = _hide(frame, hide, rng)
        table = t.assign(**{str(Column.IS_POSITIVE): frame["pos"].to_numpy() & ~hidden})[~hidden | ranked]
        mined = select(replace(cands, table=table.reset_index(drop=True)), policy)
        negs = mined.negatives
        hidden_keys = pd.MultiIndex.from_arrays([frame["q"][hidden], frame["doc"][hidden]])
        trapped = pd.MultiIndex.from_arrays([negs["query_id"], negs["doc_id"]]).isin(hidden_keys)
        bidx = bucket_of(negs["rank"].to_numpy("float64", na_value=np.nan), buckets)
        for i in range(len(buckets)):
            counts[i] += ((bidx == i).sum(), (trapped & (bidx == i)).sum())
        counts[-1] += (len(negs), trapped.sum())
        kept += mined.rows.loc[mined.rows["n_negatives"] >= k, "query_id"].nunique()
        if policy.promotes:
            up = mined.positives[mined.positives["promoted"]]
            promo += (len(up), pd.MultiIndex.from_arrays([up["query_id"], up["doc_id"]]).isin(hidden_keys).sum(),
                      (hidden & ranked).sum())
    counts /= draws
    promo /= draws
    share = lambda c: float(c[1] / c[0]) if c[0] else None  # noqa: E731
    return {"kind": "selection_trap", "policy": policy.to_dict(), "queries": int(frame["q"].nunique()),
            "hidden_fraction": hide, "draws": draws, "seed": seed, "k": k, "kept_queries": kept / draws,
            "selected": float(counts[-1, 0]), "hidden": float(counts[-1, 1]), "share": share(counts[-1]),
            "buckets": [{"bucket": f"{lo}-{hi}", "lo": lo, "hi": hi, "selected": float(c[0]), "hidden": float(c[1]),
                         "share": share(c)} for (lo, hi), c in zip(buckets, counts)],
            **({"promoted": {"promoted": float(promo[0]), "hidden": float(promo[1]),
                             "precision": float(promo[1] / promo[0]) if promo[0] else None,
                             "recall": float(promo[1] / promo[2]) if promo[2] else None}} if policy.promotes else {})}


def audit_candidates(cands: CandidateSet, hide: float = 0.5, draws: int = 5, seed: int = 0, *,
                     judge: Judge | None = None, texts: Mapping[str, str] | None = None,
                     queries: Mapping[str, str] | None = None, threshold: float = 0.0,
                     sample: int = 100) -> dict[str, Any]:
    """What ``hardneg audit`` writes: the labels' curve and, with a ``judge``, the judge's.

    A candidate set with no query of two or more positives has no label curve: with a judge
    the audit goes on without it (``labels`` None, the reason in ``labels_note``); without
    one it is an error.
    """
    doc: dict[str, Any] = {"labels": None, "judge": None}
    try:
        doc["labels"] = label_audit(cands, hide, draws, seed)
    except HardnegError as e:
        if judge is None:
            raise
        doc["labels_note"] = str(e)
    if judge is not None:
        if texts is None or queries is None:
            raise HardnegError("a judged audit needs the texts: pass texts and queries (e.g. ds.doc_text_map(), "
                               "ds.queries)")
        doc["judge"] = judge_audit(cands, texts, queries, judge, threshold, sample, seed)
    return doc


def judge_audit(cands: CandidateSet, texts: Mapping[str, str], queries: Mapping[str, str], judge: Judge,
                threshold: float = 0.0, sample: int = 100, seed: int = 0,
                buckets: Sequence[tuple[int, int]] = BUCKETS) -> dict[str, Any]:
    """The judge's curve: per bucket, the share of a seeded sample of unlabeled candidates that
    ``judge`` scores above ``threshold`` (a cross-encoder logit > 0 means p > 0.5).

    ``sample`` candidates per bucket keep the cost bounded (scoring all of them costs hours on
    CPU); the Wilson interval is that of the sample. ``positives`` is the same share on a sample
    of the labeled positives: the judge's recall, so a reader can tell a low curve from a judge
    that calls little relevant at all.

    A judge errs both ways, so each bucket also gets ``corrected``: the Rogan-Gladen estimate
    (r - f) / (s - f) of the true share, clipped to [0, 1], with s the judge's recall on the
    labeled positives and f its share in the deepest bucket, taken as its false-alarm rate
    (deep candidates are almost never relevant: the labels' curve checks that). Its interval is a
    seeded percentile bootstrap that resamples all three shares (the bucket's, the recall's and
    the false alarms'), so a judge checked on few positives gets a wide corrected interval.
    """
    _check_split(cands)
    frame = _frame(cands)
    is_pos = frame["pos"].to_numpy(bool)
    bidx = np.where(is_pos, -1, bucket_of(frame["rank"].to_numpy(), buckets))
    rng = np.random.default_rng(seed)
    picked = [sampling.sample(np.flatnonzero(bidx == b), sample, rng) for b in range(len(buckets))]
    picked.append(sampling.sample(np.flatnonzero(is_pos), sample, rng))
    rows = np.concatenate(picked)
    qids, docs = frame["q"].to_numpy()[rows], frame["doc"].to_numpy()[rows]
    scores = np.asarray(judge(list(qids), [queries[q] for q in qids], [texts[d] for d in docs]), dtype=np.float64)
    relevant = scores > threshold
    starts = np.cumsum([0] + [len(p) for p in picked])
    out = [_bucket(int(relevant[starts[b]:starts[b + 1]].sum()), len(picked[b]), lo, hi)
           | {"available": int((bidx == b).sum())} for b, (lo, hi) in enumerate(buckets)]
    k_pos, n_pos = int(relevant[starts[-2]:].sum()), len(picked[-1])
    ci = wilson(k_pos, n_pos)
    positives = {"n": n_pos, "k": k_pos, "rate": k_pos / n_pos if n_pos else None, "ci": list(ci) if ci else None}
    _correct(out, positives, seed=seed)
    return {"kind": "judge", "threshold": threshold, "sampled": int(starts[-2]), "per_bucket": sample,
            "seed": seed, "buckets": out, "positives": positives}


def _correct(buckets: list[dict[str, Any]], positives: Mapping[str, Any], seed: int = 0,
             n_resamples: int = 2000) -> None:
    """Add the Rogan-Gladen ``corrected`` rate and its bootstrap interval to each judged bucket
    (see :func:`judge_audit`); ``positives`` holds the judge's hits ``k`` of ``n`` labeled positives."""
    from scipy.stats import bootstrap

    if not buckets or not buckets[-1]["n"] or not positives.get("n"):
        return
    deep = buckets[-1]
    recall, floor = positives["k"] / positives["n"], deep["rate"]
    if recall <= floor:
        return  # a judge no better on positives than on deep candidates cannot be corrected

    def fix(r, s, f):  # vectorised over bootstrap resamples; s <= f (a useless resampled judge) gives 0
        gap = s - f
        return np.clip(np.divide(r - f, gap, out=np.zeros(np.broadcast(r, gap).shape), where=gap > 0), 0.0, 1.0)

    def hits(b: Mapping[str, Any]) -> np.ndarray:  # the 0/1 judgements behind a count; order is immaterial
        k, n = int(round(b["k"])), int(round(b["n"]))
        return np.r_[np.ones(k), np.zeros(n - k)]

    for i, b in enumerate(buckets):
        if not b["n"]:
            continue
        rate = float(fix(np.float64(b["rate"]), np.float64(recall), np.float64(floor)))
        if i == len(buckets) - 1:
            ci = [0.0, 0.0]  # the false-alarm bucket is the reference: 0 by construction
        else:
            boot = bootstrap((hits(b), hits(positives), hits(deep)), lambda r, s, f, axis: fix(
                r.mean(axis), s.mean(axis), f.mean(axis)), vectorized=True, n_resamples=n_resamples,
                method="percentile", rng=np.random.default_rng(seed + i))
            ci = [float(boot.confidence_interval.low), float(boot.confidence_interval.high)]
        b["corrected"] = {"rate": rate, "ci": ci, "recall": recall, "false_alarm": floor}


# ---- calibration -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """The window and percent threshold chosen from an audit, and why."""

    window: tuple[int, int]
    percent: float | None
    curve: str  # "judge" or "labels"
    target: float
    estimated_rate: float | None  # of the unlabeled candidates the chosen window keeps
    reason: str

    def recipe_toml(self) -> str:
        """The choice as recipe keys, ready to paste into (or include in) a recipe."""
        percent = "\"off\"" if self.percent is None else f"{self.percent}"
        rate = "n/a" if self.estimated_rate is None else f"{self.estimated_rate:.4f}"
        return (f"# hardneg calibrate: target false-negative rate {self.target} on the {self.curve} curve\n"
                f"# {self.reason}\n# estimated false-negative rate of the kept candidates: {rate}\n"
                f"[select]\nwindow = \"{self.window[0]}:{self.window[1]}\"\npercent = {percent}\n")

    def to_dict(self) -> dict[str, Any]:
        return {"window": list(self.window), "percent": self.percent, "curve": self.curve, "target": self.target,
                "estimated_rate": self.estimated_rate, "reason": self.reason}


def read_audit(path: str | Path) -> dict[str, Any]:
    """An ``audit.json`` written by ``hardneg audit``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HardnegError(f"{path}: cannot read the audit ({e})") from None


def calibrate(audit: Mapping[str, Any], target: float = 0.05, window_end: int = 100,
              use: str = "auto") -> Calibration:
    """The smallest window start (a bucket start) at which every bucket up to ``window_end``
    has a false-negative rate <= ``target``: with no percent filter if that suffices, else
    with the largest percent (1.00 down to 0.80) that brings every such bucket under the
    target (from the labels' percent grid). Empty buckets pass. ``use``: ``judge``,
    ``labels`` or ``auto`` (the judge curve when the audit has one: it estimates the real
    rate; else the labels curve). The judge curve is read through its ``corrected`` rates when
    it has them (its raw share counts its false alarms too). The percent grid exists for the
    labels curve only.
    """
    if not 0 < target < 1:
        raise HardnegError(f"--target must be in (0, 1), got {target}")
    name = _curve_name(audit, use)
    buckets = [b for b in audit[name]["buckets"] if b["lo"] <= window_end]
    grid = (audit.get("labels") or {}).get("percent_grid") if name == "labels" else None
    corrected = name == "judge" and all("corrected" in b for b in buckets)
    options = [(None, [(b["corrected"]["rate"] * b["n"] if corrected else b["k"], b["n"]) for b in buckets])]
    if grid:
        options += [(p, [(grid["k"][b][j], grid["n"][b][j]) for b in range(len(grid["k"]))])
                    for j, p in enumerate(grid["percents"])]
    for i, b in enumerate(buckets):
        for percent, counts in options:
            tail = counts[i:len(buckets)]
            if all(n == 0 or k / n <= target for k, n in tail):
                k, n = sum(c[0] for c in tail), sum(c[1] for c in tail)
                how = "no percent filter needed" if percent is None else f"with percent {percent}"
                kind = f"{name} curve{' (corrected for its false alarms)' if corrected else ''}"
                return Calibration((b["lo"], window_end), percent, name, target, (k / n if n else None),
                                   f"smallest bucket start whose buckets up to rank {window_end} are all "
                                   f"<= {target} on the {kind}, {how}")
    last = buckets[-1]
    return Calibration((last["lo"], window_end), None, name, target, last["rate"],
                       f"no start up to rank {window_end} meets {target}, even with percent 0.80: the deepest "
                       "bucket is used")


def _curve_name(audit: Mapping[str, Any], use: str) -> str:
    if use not in ("auto", "judge", "labels"):
        raise HardnegError(f"--use must be auto, judge or labels, not {use!r}")
    name = ("judge" if audit.get("judge") else "labels") if use == "auto" else use
    if not audit.get(name):
        raise HardnegError(f"the audit has no '{name}' curve")
    return name


def auto_window(cands: CandidateSet, config: AuditConfig = AuditConfig()) -> tuple[Calibration, dict[str, Any]]:
    """Audit ``cands`` with its labels and calibrate: ``hardneg run``'s ``window = "auto"``.

    Returns the calibration and the audit document (``audit.json``: the curve, the chosen
    window and the calibration), ready to be written beside the round's candidates.
    """
    audit = {"labels": label_audit(cands, config.hide, config.draws, config.seed), "judge": None}
    cal = calibrate(audit, config.target, config.window_end)
    return cal, audit | {"window": list(cal.window), "calibration": cal.to_dict()}


def format_audit(doc: Mapping[str, Any]) -> list:
    """What `hardneg audit` prints of an audit document: the labels note, the false-negative curve
    (a rich table) and the judge's recall and corrected rates."""
    from rich.table import Table

    lines: list = [f"labels: {doc['labels_note']}"] if doc.get("labels_note") else []
    table = Table(title="false-negative curve (share of unlabeled candidates that are relevant)")
    table.add_column("ranks")
    kinds = [k for k in ("labels", "judge") if doc.get(k)]
    for kind in kinds:
        table.add_column(f"{kind}: rate [95% CI]", justify="right")
        table.add_column("n", justify="right")
    for i, b in enumerate(doc[kinds[0]]["buckets"]):
        cells = [b["bucket"]]
        for kind in kinds:
            c = doc[kind]["buckets"][i]
            ci = f" [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]" if c["ci"] else ""
            cells += ["-" if c["rate"] is None else f"{c['rate']:.3f}{ci}", f"{c['n']:.0f}"]
        table.add_row(*cells)
    lines.append(table)
    pos = (doc.get("judge") or {}).get("positives") or {}
    if pos.get("n"):
        lines.append(f"the judge calls {pos['rate']:.1%} of {pos['n']} sampled labeled positives relevant "
                     f"[{pos['ci'][0]:.3f}, {pos['ci'][1]:.3f}]: its recall at this threshold")
    fixed = [b.get("corrected") for b in (doc.get("judge") or {}).get("buckets", [])]
    if fixed and all(fixed):
        lines.append(f"judge corrected for recall {fixed[0]['recall']:.3f} and false alarms "
                     f"{fixed[0]['false_alarm']:.3f} (its deepest bucket): "
                     + ", ".join(f"{b['bucket']} {c['rate']:.3f}" for b, c in zip(doc["judge"]["buckets"], fixed)))
    return lines
