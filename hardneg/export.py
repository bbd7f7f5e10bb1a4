"""Write a mined set as training files: FlagEmbedding JSONL and sentence-transformers Parquet.

* :func:`write_flag_jsonl`: ``negatives.jsonl``, one line per output row of the mined set
  (per query, or per (query, positive) with ``pos_ref="per-pair"``):
  ``{"query_id", "query", "pos_ids", "pos", "neg_ids", "neg", "neg_ranks", ...scores}``,
  a superset of FlagEmbedding's ``{query, pos, neg, pos_scores, neg_scores}``, plus a
  sidecar ``negatives.meta.json`` saying which scorer produced which field.
* :func:`write_sentence_transformers`: ``train.parquet`` with exactly the columns the
  sentence-transformers trainer and loss take, and ``train.ids.parquet`` (same rows, same
  order) with the ids, ranks and scores. The trainer feeds every column except a label to
  the model, so ids never go into ``train.parquet``.

Scores and FlagEmbedding: FlagEmbedding reads ``pos_scores``/``neg_scores`` as TEACHER
scores for knowledge distillation (reranker logits). Mining scores from a bi-encoder are
not that: distilling a model from its own cosines teaches nothing and mis-scales the loss.
So ``pos_scores``/``neg_scores`` are written only when a cross-encoder teacher (the ``ce``
scorer by default) scored every exported positive and negative. The score the policy used
is always written under a name that says which scorer it is (``pos_scores_dense``,
``neg_scores_dense``), which FlagEmbedding ignores. Without teacher scores, FlagEmbedding
with ``--knowledge_distillation`` fails loudly ("pos_scores and neg_scores not found")
instead of silently distilling from cosines; without distillation it needs no scores.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from hardneg.candidates import score_col, write_parquet
from hardneg.errors import HardnegError
from hardneg.files import atomic_path, atomic_write_json
from hardneg.options import as_enum, check, option
from hardneg.select import MinedSet, SelectionPolicy, select
from hardneg.select.stats import format_stats_table

__all__ = ["ExportConfig", "StFormat", "export", "select_and_export"]

FLAG_FILE, FLAG_META = "negatives.jsonl", "negatives.meta.json"
ST_FILE, ST_IDS, ST_META = "train.parquet", "train.ids.parquet", "train.meta.json"


class StFormat(str, Enum):
    """sentence-transformers dataset shapes, and the losses that take them."""

    TRIPLET = "st-triplet"  # (anchor, positive, negative): MNRL, CachedMNRL, GISTEmbed, TripletLoss
    NTUPLE = "st-ntuple"  # (anchor, positive, negative_1..negative_k): MNRL / CachedMNRL with k negatives
    LABELED = "st-labeled"  # (sentence1, sentence2, label|score): ContrastiveLoss, cross-encoder BCE / MSE


@dataclass(frozen=True)
class ExportConfig:
    """The training files written beside ``negatives.jsonl`` (FlagEmbedding's format, always)."""

    format: StFormat | None = option(None, "Also write sentence-transformers data: st-triplet | st-ntuple | "
                                           "st-labeled.")

    def __post_init__(self) -> None:
        check(self)


def export(mined: MinedSet, docs: Mapping[str, str], queries: Mapping[str, str], out_dir: str | Path,
           fmt: StFormat | str | None = None, *, teacher: str | None = "ce",
           label_scorer: str | None = None, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``negatives.jsonl`` (+ meta) and, if ``fmt`` is given, the sentence-transformers
    files into ``out_dir``; return what was written and what was dropped, per file. ``rows``
    (a list) receives the lines of ``negatives.jsonl`` as dicts, e.g. to train on them in memory."""
    out_dir = Path(out_dir)
    report = {FLAG_FILE: write_flag_jsonl(mined, docs, queries, out_dir / FLAG_FILE, teacher=teacher, rows=rows)}
    if fmt is not None:
        report[ST_FILE] = write_sentence_transformers(mined, docs, queries, out_dir, fmt,
                                                      label_scorer=label_scorer)
    return report


def select_and_export(cands: Any, ds: Any, out_dir: str | Path, policy: SelectionPolicy | None = None,
                      fmt: StFormat | str | None = None) -> tuple[MinedSet, dict[str, Any]]:
    """What ``hardneg mine`` / ``select`` write: select with ``policy``, export the training files
    and ``stats.json`` (the selection's statistics, the files written and the policy)."""
    policy = policy or SelectionPolicy()
    mined = select(cands, policy, corpus_doc_ids=ds.doc_ids)
    report = export(mined, ds.doc_text_map(), ds.queries, out_dir, fmt)
    atomic_write_json(Path(out_dir) / "stats.json", mined.stats | {"files": report, "policy": policy.to_dict()})
    return mined, report


def selection_summary(mined: MinedSet, report: Mapping[str, Any], out_dir: str | Path, seconds: float) -> list:
    """What ``hardneg mine`` / ``select`` print after :func:`select_and_export`: the stats table, the files."""
    return [format_stats_table(mined.stats), f"selected in {seconds:.3f}s; wrote {', '.join(sorted(report))} and "
            f"stats.json to {out_dir}"]


# ---- FlagEmbedding JSONL ---------------------------------------------------------------------
def write_flag_jsonl(mined: MinedSet, docs: Mapping[str, str], queries: Mapping[str, str],
                     path: str | Path, *, teacher: str | None = "ce",
                     rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One JSON line per output row that has negatives; the sidecar explains every field.

    FlagEmbedding cannot read a row whose ``neg`` is empty (it divides by its length), so
    such rows are left out and counted (``rows_dropped_no_negatives``). The ``none``
    baseline therefore writes an empty file: use a sentence-transformers format for it.
    """
    path = Path(path)
    view = mined.per_row()
    has_neg = view["neg_ids"].map(len).to_numpy() > 0
    view = view[has_neg]
    score_by = mined.meta["score_by"]
    teacher_ok, teacher_note = _teacher_complete(mined, teacher, mined.rows["row"][has_neg])
    own = not (teacher_ok and score_by == teacher)  # the policy's scores, under their own name
    pos_own, neg_own = _scores_by_row(mined, score_by) if own else ({}, {})
    pos_t, neg_t = _scores_by_row(mined, teacher) if teacher_ok else ({}, {})
    lines = []
    for r in view.itertuples(index=False):
        line = {"query_id": r.query_id, "query": _text(queries, r.query_id, "query"),
                "pos_ids": r.pos_ids, "pos": [_text(docs, d, "document") for d in r.pos_ids],
                "neg_ids": r.neg_ids, "neg": [_text(docs, d, "document") for d in r.neg_ids],
                "neg_ranks": r.neg_ranks}
        if teacher_ok:
            line |= {"pos_scores": pos_t[r.row], "neg_scores": neg_t[r.row]}
        if own:
            line |= {f"pos_scores_{score_by}": pos_own[r.row], f"neg_scores_{score_by}": neg_own[r.row]}
        lines.append(json.dumps(line, ensure_ascii=False))
        if rows is not None:
            rows.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    report = {
        "file": path.name,
        "rows_in_mined_set": int(len(mined.rows)),
        "rows_written": len(lines),
        "rows_dropped_no_negatives": int((~has_neg).sum()),
        "unit": "query-positive" if mined.meta.get("pos_ref") == "per-pair" else "query",
        "neg_ranks": f"1-based original rank under '{mined.meta['rank_by']}'; null for corpus draws",
        "score_fields": _score_fields(mined, teacher_ok, teacher, own, score_by),
        "teacher_scores": {"scorer": teacher, "written": teacher_ok, "why": teacher_note},
    }
    atomic_write_json(path.with_name(FLAG_META), report)
    return report


def _teacher_complete(mined: MinedSet, teacher: str | None, rows: pd.Series) -> tuple[bool, str]:
    """Whether ``teacher`` scored every positive and negative of the exported rows."""
    if not teacher:
        return False, "no teacher scorer named"
    if teacher not in mined.meta["scorers"]:
        return False, f"no '{teacher}' scorer in the candidate set (rescore with a cross-encoder first)"
    wanted = set(rows.tolist())
    values = [t.loc[t["row"].isin(wanted), score_col(teacher)] for t in (mined.positives, mined.negatives)]
    missing = int(sum(v.isna().sum() for v in values))
    if missing:
        return False, f"{missing} exported positive/negative score(s) lack a '{teacher}' score"
    return True, f"every exported positive and negative has a '{teacher}' score"


def _scores_by_row(mined: MinedSet, scorer: str) -> tuple[dict[int, list], dict[int, list]]:
    """Per output row, the positives' and negatives' scores under ``scorer`` (NaN -> None)."""
    out = []
    for t in (mined.positives, mined.negatives):
        vals = _json_floats(t[score_col(scorer)])
        rows = t["row"].to_numpy()
        by_row: dict[int, list] = {int(r): [] for r in mined.rows["row"]}
        for r, v in zip(rows, vals):
            by_row[int(r)].append(v)
        out.append(by_row)
    return out[0], out[1]


def _score_fields(mined: MinedSet, teacher_ok: bool, teacher: str | None, own: bool,
                  score_by: str) -> dict[str, Any]:
    kinds = mined.meta.get("negative_scores", {})
    fields: dict[str, Any] = {}
    if teacher_ok:
        fields["pos_scores"] = fields["neg_scores"] = {
            "scorer": teacher, "teacher": True,
            "meaning": "cross-encoder (reranker) scores: FlagEmbedding distils from these"}
    if own:
        meaning = ("the mining scorer's similarity (a bi-encoder or lexical score, not a reranker "
                   "score): for inspection and filtering, not for knowledge distillation")
        for key in (f"pos_scores_{score_by}", f"neg_scores_{score_by}"):
            fields[key] = {"scorer": score_by, "teacher": False, "meaning": meaning,
                           "can_be_negative": kinds.get(score_by)}
    return fields


# ---- sentence-transformers Parquet -----------------------------------------------------------
def write_sentence_transformers(mined: MinedSet, docs: Mapping[str, str], queries: Mapping[str, str],
                                out_dir: str | Path, fmt: StFormat | str, *,
                                label_scorer: str | None = None) -> dict[str, Any]:
    """Write ``train.parquet`` (text + label columns only) and ``train.ids.parquet``.

    * ``st-triplet``: one row per (query, positive, negative).
    * ``st-ntuple``: one row per (query, positive) with exactly k negatives
      (``negative_1..negative_k``); rows with fewer are dropped and counted, since a
      dataset column cannot be missing in some rows. k = 0 gives (anchor, positive) pairs,
      the input of MNRL with in-batch negatives only.
    * ``st-labeled``: ``(sentence1, sentence2, label)`` with 1 for positives and 0 for
      negatives (each (query, doc) once). With ``label_scorer``, the label column is
      ``score`` holding that scorer's scores instead (as sentence-transformers'
      ``output_scores`` does): the collator takes one label column, a second would be
      fed to the model as text. Pairs the scorer did not score are dropped and counted.
    """
    out_dir = Path(out_dir)
    fmt = as_enum(StFormat, fmt, "format")
    if fmt == StFormat.TRIPLET:
        train, ids, dropped = _triplets(mined, docs, queries)
    elif fmt == StFormat.NTUPLE:
        train, ids, dropped = _ntuples(mined, docs, queries)
    else:
        train, ids, dropped = _labeled(mined, docs, queries, label_scorer)
    write_parquet(train, out_dir / ST_FILE)
    write_parquet(ids, out_dir / ST_IDS)
    report = {"file": ST_FILE, "ids_file": ST_IDS, "format": fmt.value, "columns": train.column_names,
              "rows": train.num_rows, **dropped}
    atomic_write_json(out_dir / ST_META, report)
    return report


def _triplets(mined: MinedSet, docs: Mapping[str, str], queries: Mapping[str, str]):
    pairs = _pos_neg_pairs(mined)
    train = pa.table({
        "anchor": pa.array([_text(queries, q, "query") for q in pairs["query_id"]], pa.string()),
        "positive": pa.array([_text(docs, d, "document") for d in pairs["pos_id"]], pa.string()),
        "negative": pa.array([_text(docs, d, "document") for d in pairs["neg_id"]], pa.string()),
    })
    ids = pa.table({
        "query_id": pa.array(pairs["query_id"].tolist(), pa.string()),
        "pos_id": pa.array(pairs["pos_id"].tolist(), pa.string()),
        "neg_id": pa.array(pairs["neg_id"].tolist(), pa.string()),
        "neg_rank": pa.array(_none_ranks(pairs["rank"]), pa.int32()),
        "pos_score": pa.array(_json_floats(pairs["pos_score"]), pa.float32()),
        "neg_score": pa.array(_json_floats(pairs["score"]), pa.float32()),
    })
    no_neg = int((mined.rows["n_negatives"] == 0).sum())
    return train, ids, {"rows_without_negatives_skipped": no_neg}


def _pos_neg_pairs(mined: MinedSet) -> pd.DataFrame:
    """Every (positive, negative) combination within each output row, in output order."""
    pos = mined.positives[["row", "query_id", "doc_id", "score"]].rename(
        columns={"doc_id": "pos_id", "score": "pos_score"})
    pos["pos_ord"] = np.arange(len(pos))
    neg = mined.negatives[["row", "doc_id", "rank", "score"]].rename(columns={"doc_id": "neg_id"})
    neg["neg_ord"] = np.arange(len(neg))
    pairs = pos.merge(neg, on="row", how="inner")
    return pairs.sort_values(["pos_ord", "neg_ord"], kind="stable").reset_index(drop=True)


def _ntuples(mined: MinedSet, docs: Mapping[str, str], queries: Mapping[str, str]):
    k = mined.num_negatives
    full = set(mined.rows.loc[mined.rows["n_negatives"] >= k, "row"].tolist())
    view = mined.per_row()
    view = view[view["row"].isin(full)]
    pos = mined.positives[mined.positives["row"].isin(full)]
    neg_of_row = dict(zip(view["row"], view["neg_ids"]))
    ranks_of_row = dict(zip(view["row"], view["neg_ranks"]))
    scores_of_row = dict(zip(view["row"], view["neg_scores"]))
    cols: dict[str, list] = {"anchor": [], "positive": []} | {f"negative_{j + 1}": [] for j in range(k)}
    ids: dict[str, list] = {"query_id": [], "pos_id": [], "neg_ids": [], "neg_ranks": [], "neg_scores": []}
    for r, q, p in zip(pos["row"], pos["query_id"], pos["doc_id"]):
        negs = neg_of_row[r][:k]
        cols["anchor"].append(_text(queries, q, "query"))
        cols["positive"].append(_text(docs, p, "document"))
        for j, d in enumerate(negs):
            cols[f"negative_{j + 1}"].append(_text(docs, d, "document"))
        ids["query_id"].append(q)
        ids["pos_id"].append(p)
        ids["neg_ids"].append(list(negs))
        ids["neg_ranks"].append(ranks_of_row[r][:k])
        ids["neg_scores"].append(scores_of_row[r][:k])
    train = pa.table({c: pa.array(v, pa.string()) for c, v in cols.items()})
    ids_table = pa.table({
        "query_id": pa.array(ids["query_id"], pa.string()), "pos_id": pa.array(ids["pos_id"], pa.string()),
        "neg_ids": pa.array(ids["neg_ids"], pa.list_(pa.string())),
        "neg_ranks": pa.array(ids["neg_ranks"], pa.list_(pa.int32())),
        "neg_scores": pa.array(ids["neg_scores"], pa.list_(pa.float32())),
    })
    short = mined.rows[~mined.rows["row"].isin(full)]
    dropped = {"rows_dropped_short": int(len(short)),
               "pairs_dropped_short": int(mined.positives["row"].isin(set(short["row"])).sum()),
               "negatives_per_row": k}
    return train, ids_table, dropped


def _labeled(mined: MinedSet, docs: Mapping[str, str], queries: Mapping[str, str], label_scorer: str | None):
    cols = ["query_id", "doc_id", "rank", "score"]
    pos = mined.positives.assign(rank=pd.NA, label=1)
    neg = mined.negatives.assign(label=0)
    extra = [score_col(label_scorer)] if label_scorer else []
    if label_scorer and label_scorer not in mined.meta["scorers"]:
        raise HardnegError(f"label scorer '{label_scorer}' is not one of {mined.meta['scorers']}")
    both = pd.concat([pos[cols + ["label"] + extra], neg[cols + ["label"] + extra]], ignore_index=True)
    both["order"] = np.r_[pos["row"].to_numpy() * 2, neg["row"].to_numpy() * 2 + 1]
    both = both.iloc[np.argsort(both["order"].to_numpy(), kind="stable")]
    n_before = len(both)
    both = both.drop_duplicates(["query_id", "doc_id"], keep="first")
    dropped = {"duplicate_pairs_merged": int(n_before - len(both))}
    label_name, label_values = "label", pa.array(both["label"].to_numpy(np.int64), pa.int64())
    if label_scorer:
        ok = both[score_col(label_scorer)].notna().to_numpy()
        dropped["pairs_dropped_unscored"] = int((~ok).sum())
        both = both[ok]
        label_name = "score"
        label_values = pa.array(both[score_col(label_scorer)].to_numpy(np.float32), pa.float32())
    train = pa.table({
        "sentence1": pa.array([_text(queries, q, "query") for q in both["query_id"]], pa.string()),
        "sentence2": pa.array([_text(docs, d, "document") for d in both["doc_id"]], pa.string()),
        label_name: label_values,
    })
    ids = pa.table({
        "query_id": pa.array(both["query_id"].tolist(), pa.string()),
        "doc_id": pa.array(both["doc_id"].tolist(), pa.string()),
        "label": pa.array(both["label"].to_numpy(np.int64), pa.int64()),
        "rank": pa.array(_none_ranks(both["rank"]), pa.int32()),
        "score": pa.array(_json_floats(both["score"]), pa.float32()),
    })
    return train, ids, dropped


# ---- helpers ---------------------------------------------------------------------------------
def _text(lookup: Mapping[str, str], key: str, what: str) -> str:
    try:
        return lookup[key]
    except KeyError:
        raise HardnegError(f"no text for {what} id {key!r}: the texts given do not match the mined set") from None


def _json_floats(values: Any) -> list[float | None]:
    """float32 scores as the shortest decimal that round-trips (0.9, not 0.8999999762); NaN -> None."""
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=np.float32)
    return [None if np.isnan(v) else float(str(v)) for v in x]


def _none_ranks(values: Any) -> list[int | None]:
    return [None if pd.isna(v) else int(v) for v in values]
