"""Positives and skip-above negatives from a click log.

Use this when a team has search logs but no relevance judgements: the log's formats and
validation are :mod:`hardneg.positives.clicklog`'s.

Positives (:class:`ClickPolicy`): a click *counts* when its dwell reaches ``min_dwell``
(a click without a dwell time never passes a dwell threshold) and, with ``last_click_only``,
only when it is the impression's last click. A (query, doc) pair is a positive when its
counted clicks reach ``min_clicks`` and counted clicks / impressions showing it reach
``min_ctr``.

Skip-above negatives (Joachims, 2002): a document shown *above* the lowest clicked position
of an impression and not clicked was probably examined and passed over. They are kept apart
from retrieval candidates: :func:`add_skip_above` adds them to a candidate set as rows of
source ``clicks-skip-above`` with a ``clicks`` scorer and an ``is_skip_above`` flag, so that
selection and the audit can treat them separately (see that function for how
:func:`hardneg.select.select` treats them).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hardneg.candidates import CandidateSet, Column, rank_col, score_col
from hardneg.checks import ids_fit
from hardneg.data import Dataset, _open_lines, find_file, normalize_text, read_corpus
from hardneg.errors import DataError, HardnegError
from hardneg.files import atomic_path, atomic_write_json, atomic_write_text
from hardneg.options import check, option, seed_option
from hardneg.positives.clicklog import ClickLog, read_click_log

__all__ = ["ClickConfig", "ClickPolicy", "ClickResult", "add_skip_above", "clicks_to_beir", "read_skip_above"]

SKIP_ABOVE_SOURCE = "clicks-skip-above"
CLICKS_SCORER = "clicks"


@dataclass(frozen=True)
class ClickPolicy:
    """When a click makes a positive. The defaults take every clicked pair.

    Raise ``min_dwell`` (e.g. 30 s) to drop quick bounces; ``last_click_only`` keeps the click
    that ended the search (the user was satisfied); ``min_clicks`` / ``min_ctr`` demand that a
    pair was clicked repeatedly / often when shown, which filters noise in head queries.
    """

    min_dwell: float | None = option(None, "A click counts only with dwell >= this many seconds (clicks without a "
                                           "dwell time then never count).")
    last_click_only: bool = option(False, "Count only the last click of each impression.",
                                   cli="--last-click/--all-clicks")
    min_clicks: int = option(1, "Counted clicks a (query, doc) pair needs.")
    min_ctr: float = option(0.0, "Counted clicks / impressions showing the pair, at least.")

    def __post_init__(self) -> None:
        if self.min_dwell is not None and not self.min_dwell >= 0:
            raise HardnegError(f"--min-dwell is in seconds and must be >= 0, got {self.min_dwell}")
        if int(self.min_clicks) != self.min_clicks or self.min_clicks < 1:
            raise HardnegError(f"--min-clicks must be an integer >= 1, got {self.min_clicks}")
        if not 0 <= self.min_ctr <= 1:
            raise HardnegError(f"--min-ctr is a click-through rate in [0, 1], got {self.min_ctr}")


def _counted(events: pd.DataFrame, policy: ClickPolicy) -> np.ndarray:
    ok = events["clicked"].to_numpy(bool).copy()
    if policy.last_click_only:
        ok &= events["last_click"].to_numpy(bool)
    if policy.min_dwell is not None:
        with np.errstate(invalid="ignore"):
            ok &= events["dwell"].to_numpy(np.float64) >= policy.min_dwell  # NaN (unknown) fails
    return ok


def _skipped(events: pd.DataFrame) -> np.ndarray:
    """Shown above the impression's lowest click and not clicked (Joachims' skip-above)."""
    clicked = events["clicked"].to_numpy(bool)
    lowest = pd.Series(np.where(clicked, events["position"].to_numpy(np.int64), 0)).groupby(
        events["impression"].to_numpy()).transform("max").to_numpy()
    return ~clicked & (events["position"].to_numpy(np.int64) < lowest)


def pair_table(log: ClickLog, policy: ClickPolicy = ClickPolicy()) -> pd.DataFrame:
    """One row per (query, doc) ever shown: ``impressions`` (times shown), ``clicks`` (raw),
    ``counted`` (clicks passing the policy), ``ctr`` (counted / impressions), ``skips``
    (skip-above count), ``best_position``, ``mean_position`` and ``positive`` (bool)."""
    ev = log.events
    frame = pd.DataFrame({"query_id": ev["query_id"], "doc_id": ev["doc_id"], "impressions": 1,
                          "clicks": ev["clicked"].astype(np.int64), "counted": _counted(ev, policy).astype(np.int64),
                          "skips": _skipped(ev).astype(np.int64), "position": ev["position"]})
    g = frame.groupby(["query_id", "doc_id"], sort=False)
    out = g[["impressions", "clicks", "counted", "skips"]].sum()
    out["best_position"] = g["position"].min()
    out["mean_position"] = g["position"].mean()
    out = out.reset_index()
    out["ctr"] = out["counted"] / out["impressions"]
    out["positive"] = (out["counted"] >= policy.min_clicks) & (out["ctr"] >= policy.min_ctr) & (out["counted"] > 0)
    return out


def click_positives(log: ClickLog, policy: ClickPolicy = ClickPolicy()) -> tuple[dict[str, list[str]], dict[str, int]]:
    """``{query_id: [doc_id, ...]}`` of the pairs passing ``policy`` (queries in log order, docs
    by best position), and the counts each rule removed (clicks, then pairs)."""
    ev = log.events
    clicked = ev["clicked"].to_numpy(bool)
    counts = {"clicks": int(clicked.sum())}
    if policy.last_click_only:
        counts["clicks_not_last"] = int((clicked & ~ev["last_click"].to_numpy(bool)).sum())
    if policy.min_dwell is not None:
        still = clicked & (ev["last_click"].to_numpy(bool) if policy.last_click_only else True)
        dwell = ev["dwell"].to_numpy(np.float64)
        counts["clicks_without_dwell"] = int((still & np.isnan(dwell)).sum())
        with np.errstate(invalid="ignore"):
            counts["clicks_below_min_dwell"] = int((still & (dwell < policy.min_dwell)).sum())
    counts["clicks_counted"] = int(_counted(ev, policy).sum())
    pairs = pair_table(log, policy)
    has = pairs["counted"] > 0
    counts["pairs_clicked"] = int(has.sum())
    below_clicks = has & (pairs["counted"] < policy.min_clicks)
    counts["pairs_below_min_clicks"] = int(below_clicks.sum())
    counts["pairs_below_min_ctr"] = int((has & ~below_clicks & (pairs["ctr"] < policy.min_ctr)).sum())
    pos = pairs[pairs["positive"]].sort_values(["best_position", "doc_id"], kind="stable")
    grouped = {q: list(d) for q, d in pos.groupby("query_id", sort=False)["doc_id"]}
    out = {q: grouped[q] for q in log.queries if q in grouped}
    counts["positives"] = int(len(pos))
    counts["queries_with_positives"] = len(out)
    return out, counts


def skip_above_pairs(log: ClickLog, min_skips: int = 1, exclude: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Skip-above negatives: ``query_id, doc_id, skips, best_position`` for docs skipped at least
    ``min_skips`` times and never clicked for that query (a doc clicked in one impression and
    skipped in another is ambiguous, so it is left out); ``exclude`` drops more pairs (e.g.
    known positives)."""
    if min_skips < 1:
        raise HardnegError(f"--min-skips must be >= 1, got {min_skips}")
    pairs = pair_table(log)
    keep = (pairs["skips"] >= min_skips) & (pairs["clicks"] == 0)
    out = pairs.loc[keep, ["query_id", "doc_id", "skips", "best_position"]]
    if exclude:
        banned = {(q, d) for q, ds_ in exclude.items() for d in ds_}
        keep = np.array([(q, d) not in banned for q, d in zip(out["query_id"], out["doc_id"])], dtype=bool)
        out = out[keep]  # a bool array: an empty list would select no columns
    return out.reset_index(drop=True)


def position_bias(log: ClickLog, policy: ClickPolicy | None = None) -> pd.DataFrame:
    """Click-through rate by displayed position: ``position, impressions, clicks, ctr,
    ctr_relative`` (to position 1), plus ``counted, counted_ctr`` under ``policy``.

    A steep fall of ``ctr`` with position while relevance falls less is position bias: clicks
    on low positions are rarer than their relevance warrants, so missing clicks there are weak
    evidence of non-relevance.
    """
    ev = log.events
    frame = pd.DataFrame({"position": ev["position"], "impressions": 1, "clicks": ev["clicked"].astype(np.int64),
                          "counted": _counted(ev, policy or ClickPolicy()).astype(np.int64)})
    out = frame.groupby("position").sum().reset_index()
    out["ctr"] = out["clicks"] / out["impressions"]
    out["counted_ctr"] = out["counted"] / out["impressions"]
    first = out["ctr"].iloc[0] if len(out) and out["position"].iloc[0] == 1 else np.nan
    out["ctr_relative"] = out["ctr"] / first if first and np.isfinite(first) else np.nan
    return out[["position", "impressions", "clicks", "ctr", "ctr_relative", "counted", "counted_ctr"]]


def format_position_bias(table: pd.DataFrame) -> str:
    """The :func:`position_bias` table as Markdown."""
    lines = ["| position | impressions | clicks | CTR | CTR / CTR@1 | counted CTR |", "|---:|---:|---:|---:|---:|---:|"]
    for r in table.itertuples(index=False):
        rel = "-" if pd.isna(r.ctr_relative) else f"{r.ctr_relative:.3f}"
        lines.append(f"| {r.position} | {r.impressions:,} | {r.clicks:,} | {r.ctr:.4f} | {rel} | {r.counted_ctr:.4f} |")
    return "\n".join(lines) + "\n"


def split_queries(query_ids: list[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split by query: ``round(n * test_fraction)`` queries go to test (order kept)."""
    if not 0 <= test_fraction < 1:
        raise HardnegError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    n_test = int(round(len(query_ids) * test_fraction))
    order = np.random.default_rng(seed).permutation(len(query_ids))
    test = set(sorted(query_ids)[i] for i in order[:n_test])  # sorted: independent of log order
    return [q for q in query_ids if q not in test], [q for q in query_ids if q in test]


@dataclass(frozen=True)
class ClickConfig:
    """Everything `hardneg clicks` does: the positive policy, the held-out split and outputs."""

    policy: ClickPolicy = option(ClickPolicy(), "When a click makes a positive.", cli=False)
    test_fraction: float = option(0.0, "Fraction of queries held out as qrels/test.tsv (seeded split by query).",
                                  ge=0, lt=1)
    seed: int = seed_option(42, "Seed of the train/test split.")
    min_skips: int = option(1, "Skips a skip-above negative needs.", ge=1)
    skip_unknown: bool = option(False, "Drop shown ids missing from the corpus (counted) instead of failing.",
                                cli="--skip-unknown")
    link_corpus: bool = option(False, "Symlink the corpus instead of copying it.", cli="--link")

    def __post_init__(self) -> None:
        check(self)


@dataclass
class ClickResult:
    """What `hardneg clicks` wrote and the numbers behind it (also in ``clicks_stats.json``)."""

    out: Path
    stats: dict[str, Any]
    position_bias: pd.DataFrame
    files: list[str]

    def summary(self) -> list:
        """What `hardneg clicks` prints: the click-through rate by position (a rich table), the
        counts and the files written."""
        from rich.table import Table

        s, c = self.stats, self.stats["counts"]
        table = Table(title="click-through rate by position")
        for name in ("position", "impressions", "clicks", "CTR", "CTR / CTR@1", "counted CTR"):
            table.add_column(name, justify="right")
        for r in self.position_bias.itertuples(index=False):
            rel = "-" if r.ctr_relative != r.ctr_relative else f"{r.ctr_relative:.3f}"
            table.add_row(str(r.position), f"{r.impressions:,}", f"{r.clicks:,}", f"{r.ctr:.4f}", rel,
                          f"{r.counted_ctr:.4f}")
        return [table, f"{s['impressions']:,} impressions of {s['queries']:,} queries; {c['clicks']:,} clicks, "
                f"{c['clicks_counted']:,} counted -> {c['positives']:,} positives for {c['queries_with_positives']:,} "
                f"queries ({s['train_queries']:,} train, {s['test_queries']:,} test); "
                f"{s['skip_above_pairs']:,} skip-above pairs", f"wrote {self.out} ({', '.join(self.files)})"]


def clicks_to_beir(log_path: str | Path, corpus: str | Path, out: str | Path,
                   config: ClickConfig | None = None) -> ClickResult:
    """Build a BEIR folder from a click log: the corpus (copied, or symlinked), ``queries.jsonl``,
    ``qrels/train.tsv`` (and ``qrels/test.tsv`` with ``test_fraction``), ``skip_above.tsv``,
    ``clicks_stats.json`` and ``position_bias.md``. Everything is read and validated first;
    nothing is written when the log or corpus has a problem or no pair passes the policy."""
    out, config = Path(out), config or ClickConfig()
    corpus_path = find_file(Path(corpus), "corpus") if Path(corpus).is_dir() else Path(corpus)
    doc_ids, _, _ = read_corpus(corpus_path)
    log = read_click_log(log_path, set(doc_ids), skip_unknown=config.skip_unknown)
    positives, counts = click_positives(log, config.policy)
    if not positives:
        detail = ", ".join(f"{k}={v}" for k, v in counts.items())
        raise HardnegError(f"{log_path}: no (query, document) pair passes the click policy ({detail})")
    ids_fit([i for q, docs in positives.items() for i in (q, *docs)], "qrels TSV", f"{log_path}: id")
    train, test = split_queries(list(positives), config.test_fraction, config.seed)
    skips = skip_above_pairs(log, config.min_skips, exclude=positives)
    skips = skips[skips["query_id"].isin(set(positives))]
    bias = position_bias(log, config.policy)
    n_shown = log.events.groupby("impression").size()
    stats = {
        "log": str(log_path), "corpus": str(corpus_path), "policy": asdict(config.policy),
        "test_fraction": config.test_fraction, "seed": config.seed, "min_skips": config.min_skips,
        "impressions": log.n_impressions, "queries": len(log.queries), "query_aliases": len(log.aliases),
        "impressions_without_click": int((~log.events.groupby("impression")["clicked"].any()).sum()),
        "mean_shown": float(n_shown.mean()), "dwell_known": int(log.events["dwell"].notna().sum()),
        "counts": counts, "train_queries": len(train), "test_queries": len(test),
        "skip_above_pairs": int(len(skips)), "warnings": list(log.warnings),
        "position_bias": json.loads(bias.to_json(orient="records")),
    }
    files = _write_beir(out, corpus_path, log, positives, train, test, skips, stats, bias, config.link_corpus)
    return ClickResult(out, stats, bias, files)


def _write_beir(out: Path, corpus_path: Path, log: ClickLog, positives: dict[str, list[str]], train: list[str],
                test: list[str], skips: pd.DataFrame, stats: dict, bias: pd.DataFrame, link: bool) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    corpus_name = "corpus.jsonl.gz" if corpus_path.name.endswith(".gz") else "corpus.jsonl"
    target = out / corpus_name
    if target.resolve() != corpus_path.resolve():
        with atomic_path(target) as tmp:
            if link:
                tmp.unlink()
                os.symlink(corpus_path.resolve(), tmp)
            else:
                shutil.copyfile(corpus_path, tmp)
    other = out / ("corpus.jsonl" if corpus_name.endswith(".gz") else "corpus.jsonl.gz")
    other.unlink(missing_ok=True)  # a stale corpus of an earlier run would shadow this one
    qids = train + test
    atomic_write_text(out / "queries.jsonl", "".join(
        json.dumps({"_id": q, "text": log.queries[q]}, ensure_ascii=False) + "\n" for q in qids))
    files = [corpus_name, "queries.jsonl"]
    for split, ids in (("train", train), ("test", test)):
        path = out / "qrels" / f"{split}.tsv"
        if not ids:
            path.unlink(missing_ok=True)  # never leave an earlier run's split behind
            continue
        rows = "".join(f"{q}\t{d}\t1\n" for q in ids for d in positives[q])
        atomic_write_text(path, "query-id\tcorpus-id\tscore\n" + rows)
        files.append(f"qrels/{split}.tsv")
    (out / "qrels" / "dev.tsv").unlink(missing_ok=True)
    atomic_write_text(out / "skip_above.tsv", "query-id\tcorpus-id\tskips\tbest-position\n" + "".join(
        f"{r.query_id}\t{r.doc_id}\t{r.skips}\t{r.best_position}\n" for r in skips.itertuples(index=False)))
    atomic_write_json(out / "clicks_stats.json", stats)
    atomic_write_text(out / "position_bias.md", "# Click-through rate by position\n\n" + format_position_bias(bias))
    return files + ["skip_above.tsv", "clicks_stats.json", "position_bias.md"]


def read_skip_above(path: str | Path) -> pd.DataFrame:
    """Read ``skip_above.tsv`` (``query-id, corpus-id, skips, best-position``), FILE:LINE errors."""
    path = Path(path)
    rows: list[tuple[str, str, int, int]] = []
    for n, line in _open_lines(path):
        if not line.strip() or (n == 1 and line.lower().startswith("query-id")):
            continue
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != 4:
            raise DataError(path, n, f"expected 4 tab-separated fields (query-id, corpus-id, skips, best-position), "
                                     f"got {len(parts)}")
        try:
            skips, best = int(parts[2]), int(parts[3])
        except ValueError:
            raise DataError(path, n, "skips and best-position must be integers") from None
        if not parts[0].strip() or not parts[1].strip() or skips < 1 or best < 1:
            raise DataError(path, n, "empty id, or skips / best-position below 1")
        rows.append((parts[0].strip(), parts[1].strip(), skips, best))
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "skips", "best_position"])


def add_skip_above(cands: CandidateSet, skips: pd.DataFrame, ds: Dataset | None = None) -> CandidateSet:
    """A copy of ``cands`` with skip-above negatives as a separate, flagged candidate source.

    ``skips`` has ``query_id, doc_id, skips, best_position`` (:func:`skip_above_pairs`,
    :func:`read_skip_above`). Only queries of the candidate set are used, and never a known
    positive of the query. A skipped doc that was also retrieved keeps its row, ranks, scores
    and ``source``; one that was not gets a new row with ``source="clicks-skip-above"``, null
    ranks and NaN scores under every retriever. Both get ``is_skip_above=True`` and the
    ``clicks`` scorer: ``rank_clicks`` = best displayed position, ``score_clicks`` = skips.
    With ``ds`` the new rows also get the duplicate / query-text / known-negative flags.

    How :func:`hardneg.select.select` treats the new (unranked, unscored) rows:

    * never as positives: ``is_positive`` is False and positives are never added;
    * with a ``window`` on the retriever's ranks they are dropped by the window (a null rank
      lies outside every window);
    * without a window, a score filter (``max_score``, ``margin``, ``percent``) drops them (a
      NaN score cannot be shown to lie below a threshold); the ``top``, ``simans`` and
      ``softmax`` samplers take them only when no scored candidate is left; ``uniform``
      samples them like any other survivor;
    * opt in with ``rank_by="clicks"`` (and ``score_by="clicks"``): selection then ranks by
      displayed position and picks the most-skipped docs; retrieved candidates that were never
      skipped have no ``clicks`` rank and drop out of any window.

    ``meta["skip_above"]`` records the counts: pairs given, not mined, positives refused,
    retrieved rows flagged and rows added.
    """
    if CLICKS_SCORER in cands.scorers:
        raise HardnegError(f"the candidate set already has a '{CLICKS_SCORER}' scorer (skip-above added twice?)")
    table = cands.table.copy()
    scorers = cands.scorers + [CLICKS_SCORER]
    mined = set(table[Column.QUERY_ID])
    given = skips.drop_duplicates(["query_id", "doc_id"])
    in_set = given[given["query_id"].isin(mined)]
    key = pd.MultiIndex.from_arrays([table[Column.QUERY_ID].astype(str), table[Column.DOC_ID].astype(str)])
    row_of = pd.Series(np.arange(len(table)), index=key)
    row_of = row_of[~row_of.index.duplicated()]
    where = row_of.reindex(pd.MultiIndex.from_arrays([in_set["query_id"], in_set["doc_id"]])).to_numpy()
    existing = ~np.isnan(where)
    hit_rows = where[existing].astype(np.int64)
    is_pos = table[Column.IS_POSITIVE].to_numpy(bool)
    refused = is_pos[hit_rows]
    flag_rows = hit_rows[~refused]
    flagged = in_set[existing][~refused]
    new = in_set[~existing]

    table[Column.IS_SKIP_ABOVE] = False
    table[rank_col(CLICKS_SCORER)] = pd.array([pd.NA] * len(table), dtype="Int32")
    table[score_col(CLICKS_SCORER)] = np.full(len(table), np.nan, np.float32)
    col = table.columns.get_loc
    table.iloc[flag_rows, col(Column.IS_SKIP_ABOVE)] = True
    table.iloc[flag_rows, col(rank_col(CLICKS_SCORER))] = flagged["best_position"].to_numpy(np.int64)
    table.iloc[flag_rows, col(score_col(CLICKS_SCORER))] = flagged["skips"].to_numpy(np.float32)

    rows = pd.DataFrame({Column.QUERY_ID: new["query_id"].astype(str).to_numpy(),
                         Column.DOC_ID: new["doc_id"].astype(str).to_numpy()})
    rows[Column.SOURCE] = SKIP_ABOVE_SOURCE
    rows[Column.IS_POSITIVE] = False
    flags = _new_row_flags(rows, table, cands, ds)
    rows[Column.DUP_OF_POSITIVE], rows[Column.IS_QUERY_TEXT], rows[Column.IS_KNOWN_NEGATIVE] = flags
    rows[Column.POS_COSINE] = np.nan
    rows[Column.IS_SKIP_ABOVE] = True
    for s in cands.scorers:
        rows[rank_col(s)] = pd.NA
        rows[score_col(s)] = np.nan
    rows[rank_col(CLICKS_SCORER)] = new["best_position"].to_numpy(np.int64)
    rows[score_col(CLICKS_SCORER)] = new["skips"].to_numpy(np.float32)
    for c in table.columns.difference(rows.columns):  # any extra column of the set: left empty
        rows[c] = pd.NA
    merged = pd.concat([table, rows[table.columns]], ignore_index=True) if len(rows) else table
    meta = {k: v for k, v in cands.meta.items() if k not in ("scorers", "rank_by", "score_by", "negative_scores")}
    meta["skip_above"] = {"pairs": int(len(given)), "not_mined": int(len(given) - len(in_set)),
                          "positives_refused": int(refused.sum()), "flagged_retrieved": int(len(flag_rows)),
                          "added": int(len(rows))}
    negative = dict(cands.meta.get("negative_scores") or {}) | {CLICKS_SCORER: False}
    return CandidateSet.from_frame(merged, scorers=scorers, rank_by=cands.rank_by, score_by=cands.score_by,
                                   negative_scores=negative, **meta)


def skip_above_summary(cands: CandidateSet, out: str | Path) -> str:
    """The line `hardneg skip-above` prints of a set :func:`add_skip_above` returned."""
    n = cands.meta["skip_above"]
    return (f"{n['pairs']:,} skip-above pairs: {n['added']:,} rows added, {n['flagged_retrieved']:,} retrieved rows "
            f"flagged, {n['not_mined']:,} for queries not in the set, {n['positives_refused']:,} known positives "
            f"refused -> {out}")


def _new_row_flags(rows: pd.DataFrame, table: pd.DataFrame, cands: CandidateSet,
                   ds: Dataset | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(rows)
    if ds is None or n == 0:
        return np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    pos = table.loc[table[Column.IS_POSITIVE].to_numpy(bool), [Column.QUERY_ID, Column.DOC_ID]]
    pos_norm: dict[str, set[str]] = {}
    for q, d in zip(pos[Column.QUERY_ID], pos[Column.DOC_ID]):
        if d in ds._doc_index:
            pos_norm.setdefault(q, set()).add(normalize_text(ds.doc_text(d)))
    split = cands.meta.get("split", "train")
    known = {(q, d) for q, docs in (ds.known_negatives(split) if split in ds.qrels else {}).items() for d in docs}
    dup, qtext, kneg = [], [], []
    for q, d in zip(rows[Column.QUERY_ID], rows[Column.DOC_ID]):
        text = normalize_text(ds.doc_text(d)) if d in ds._doc_index else None
        dup.append(text is not None and text in pos_norm.get(q, ()))
        qtext.append(text is not None and q in ds.queries and text == normalize_text(ds.queries[q]))
        kneg.append((q, d) in known)
    return np.asarray(dup, bool), np.asarray(qtext, bool), np.asarray(kneg, bool)
