"""The report's sections as HTML, each from the run folder (:mod:`hardneg.report.run_folder`)
and its figures (``plots/*.png``, embedded)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from hardneg import sampling
from hardneg.candidates import Column, rank_col, score_col
from hardneg.data import Dataset
from hardneg.errors import HardnegError
from hardneg.evaluate import format_p
from hardneg.files import atomic_path
from hardneg.report import plots
from hardneg.report.htmlpage import details, esc, img, markdown, table, truncate
from hardneg.report.run_folder import RoundFiles, RunFolder, _read_json

__all__: list[str] = []  # internal: the report's sections

SAMPLE_QUERIES = 20  # train queries in the per-query view
QUERY_CHARS, DOC_CHARS = 300, 240  # texts are cut there (the files hold them whole)
OTHERS_SHOWN = 50  # not-chosen candidates listed per query, best ranked first
#: display order of a run's systems (hardneg.loop.hybrid.SYSTEMS: the report reads folders, not the loop)
SYSTEMS = ("bm25", "bm25+prior", "base", "hybrid(bm25+base)", "tuned", "hybrid(bm25+tuned)")
ALPHA = 0.05  # p below this is marked significant
HIDDEN = ("selected", "known_positive")  # decisions not listed among "not chosen"


class _Plots:
    """Writes each figure to ``plots/NAME.png`` and returns it as an embedded image."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.written: set[str] = set()

    def add(self, name: str, png: bytes, alt: str) -> str:
        with atomic_path(self.folder / f"{name}.png") as tmp:
            tmp.write_bytes(png)
        self.written.add(f"{name}.png")
        return img(png, alt)

    def prune(self) -> None:
        """Remove figures an earlier report wrote that this one did not (e.g. an audit since removed)."""
        for file in sorted(self.folder.glob("*.png")) if self.folder.is_dir() else []:
            if file.name not in self.written:
                file.unlink()


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def _f(x: Any, fmt: str = ".4f") -> str:
    """A number for a cell; '-' for None/NaN."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return format(x, fmt)


def _p(p: float | None, n: int) -> str:
    """A p-value cell, bold green below ``ALPHA`` (HTML)."""
    if p is None:
        return "-"
    text = esc(format_p(float(p), n))
    return f'<span class="sig">{text} *</span>' if p < ALPHA else text


def _with_ci(value: float, ci: Sequence[float] | None, fmt: str = ".4f") -> str:
    """A mean with its interval in small type below (HTML)."""
    band = f'<span class="ci">[{_f(ci[0], fmt)}, {_f(ci[1], fmt)}]</span>' if ci else ""
    return f"{esc(_f(value, fmt))}{band}"


def metrics_section(run: RunFolder, figures: _Plots) -> str:
    """What to deploy (its first sentence), the systems with bootstrap CIs, a chart, and the lift of
    each tuned system over each free one with Holm-corrected p-values."""
    m, n = run.metrics, run.n_resamples
    metrics = list(m.get("metrics", []))
    systems = sorted(m.get("systems", {}), key=lambda s: (SYSTEMS.index(s) if s in SYSTEMS else len(SYSTEMS), s))
    kept = m.get("tuned_kept_on_dev")
    verdict = (f"The tuned model is round {m.get('tuned_from')}, kept because it beat the starting model on dev."
               if kept else f"No round beat the starting model on dev: the run's model is the base model; the tuned "
                            f"row shows round {m.get('tuned_from')} for the record.")
    rows = [[s] + [_with_ci(m["systems"][s][x], m.get("ci95", {}).get(s, {}).get(x)) for x in metrics]
            for s in systems]
    idx = range(1, len(metrics) + 1)
    deploy = [f"<p><strong>{esc(m['deploy']['sentence'])}</strong></p>"] if "deploy" in m else []
    parts = [*deploy, f"<p>{esc(verdict)}</p>", table(["system"] + metrics, rows, numeric=idx, raw=idx)]
    if "ndcg@10" in metrics and systems:
        parts.append(figures.add("metrics", plots.system_bars(
            {s: m["systems"][s]["ndcg@10"] for s in systems}, {s: m["ci95"][s]["ndcg@10"] for s in systems}),
            "NDCG@10 per system with 95% intervals"))
    pairs = m.get("comparisons") or [{"system": "tuned", "vs": ref, **lift} for ref, lift in
                                     ((k[len("over_"):], v) for k, v in m.get("lift", {}).items())]
    lift_rows = []
    for c in pairs:
        lift_rows.append([f"{c['system']} − {c['vs']}"] + [_with_ci(c[x]["diff"], c[x].get("ci95"), "+.4f") for x in metrics])
        lift_rows.append([f"p vs {c['vs']} (Holm)"] + [_p(c[x].get("p"), n) for x in metrics])
    if lift_rows:
        parts += ["<h3>Lift of the tuned systems</h3>", table(["", *metrics], lift_rows, numeric=idx, raw=idx)]
    if "hybrid" in m:
        h = m["hybrid"]
        chosen = "; ".join(f"{k}: k = {v['rrf_k']}" for k, v in h.items() if isinstance(v, dict) and "rrf_k" in v)
        parts.append(_note(f"Hybrids: {h['fusion']}, RRF k chosen on dev NDCG@10 from {h['rrf_k_grid']}: {chosen}."))
    parts.append(_note(f"Significance: {m.get('significance', 'not recorded')}. * p < {ALPHA}."))
    if "clean" in m:
        c = m["clean"]
        parts += [f"<h3>Test queries whose positives were never train positives ({c['n_queries']})</h3>",
                  table(["system"] + metrics, [[s] + [_f(c["systems"][s][x]) for x in metrics] for s in systems],
                        numeric=idx)]
    parts += [_note(f"Note: {x}.") for x in m.get("notes", [])]
    if m.get("timings"):
        parts.append(_note("Timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in m["timings"].items())))
    return "\n".join(parts)


def rounds_section(run: RunFolder) -> str:
    """Each round: who mined, what was trained, dev NDCG@10, gain over the incumbent, p, kept."""
    m, n = run.metrics, run.n_resamples
    dev = m.get("dev", {})
    head = ["round", "mined by", "retriever", "trained from", "negatives", "steps", "dev ndcg@10", "vs", "gain",
            "p (dev)", "kept"]
    rows = []
    for r in run.rounds:
        i = r.info
        negs = i.get("negatives", {})
        rows.append([r.name, i.get("miner"), i.get("retriever"), i.get("init"),
                     f"{negs.get('negatives', '-')} ({negs.get('sampler', '-')})", i.get("train", {}).get("steps", "-"),
                     _f(i.get("dev", {}).get("ndcg@10")), i.get("vs"), _f(i.get("gain"), "+.4f"), _p(i.get("p"), n),
                     "yes" if i.get("kept") else f"no: {i.get('reason', '')}"])
    if not rows:
        return _note("metrics.json records no rounds.")
    base = dev.get("base", {}).get("ndcg@10")
    return (f"<p>Dev: {esc(dev.get('description', '?'))}. Base model on dev: NDCG@10 {esc(_f(base))}. "
            f"A round is kept when it beats the incumbent on dev; p is the unadjusted paired test of that gain.</p>"
            + table(head, rows, numeric=(4, 5, 6, 8, 9), raw=(9,)))


def filters_section(run: RunFolder, figures: _Plots) -> str:
    """Per round, how many candidates each filter removed (table and bars), and the output sizes."""
    have = [r for r in run.rounds if r.stats]
    if not have:
        return _note("No rounds/r<i>/stats.json in this folder: no filter counts to show.")
    counts = {r.name: {f["filter"]: int(f["removed"]) for f in r.stats.get("filters", []) if f["filter"] != "per_pair"}
              for r in have}
    names = list(dict.fromkeys(f["filter"] for r in have for f in r.stats.get("filters", [])))
    rows = [["candidates"] + [r.stats.get("candidates", "-") for r in have]]
    for name in names:
        cells = []
        for r in have:
            hit = next((f for f in r.stats.get("filters", []) if f["filter"] == name), None)
            cells.append("-" if hit is None else f"{hit['removed']} → {hit['remaining']} left")
        rows.append([name] + cells)
    rows.append(["survived, not sampled"] + [_decision_count(r, "not_sampled") for r in have])
    for label, get in (("output rows", lambda s: s["output"]["rows"]), ("negatives", lambda s: s["output"]["negatives"]),
                       ("rows short of k", lambda s: f"{s['short']['rows']} ({s['short']['action']})"),
                       ("rows without negatives", lambda s: s["output"]["rows_without_negatives"])):
        rows.append([label] + [_safe(get, r.stats) for r in have])
    cols = range(1, len(have) + 1)
    tuned = run.tuned_round()
    shown = tuned if tuned is not None and tuned.stats else have[-1]
    return ("<p>Candidates each selection stage removed, in pipeline order (a candidate counts at the first "
            "stage that removes it).</p>"
            + table(["stage"] + [r.name for r in have], rows, numeric=cols)
            + figures.add("filters", plots.filter_drops(counts), "candidates removed per filter and round")
            + _note(f"Policy of round {shown.name}: {_policy_text(shown.stats.get('policy', {}))}"))


def _decision_count(rnd: RoundFiles, decision: str) -> str:
    if rnd.sel is None:
        return "-"
    return str(int((rnd.decisions()["decision"] == decision).sum()))


def _safe(get, stats: Mapping[str, Any]) -> Any:
    try:
        return get(stats)
    except (KeyError, TypeError):
        return "-"


def _policy_text(policy: Mapping[str, Any]) -> str:
    keys = ("window", "percent", "margin", "max_score", "denoise_above", "near_dup_cosine", "sampler", "num_negatives",
            "on_short", "pos_ref", "pos_quantile", "seed")
    shown = [k for k in keys if k in policy and policy[k] is not None
             and (k != "pos_quantile" or policy.get("pos_ref") == "quantile")]  # read only then
    return ", ".join(f"{k}={policy[k]}" for k in shown)


def scores_section(run: RunFolder, figures: _Plots) -> str:
    """Per round, histograms of positive vs selected-negative scores and the stored score summaries."""
    parts = []
    for r in run.rounds:
        if r.stats is None and r.sel is None:
            continue
        score_by = (r.stats or {}).get("score_by") or (r.sel.meta["score_by"] if r.sel else "?")
        parts.append(f"<h3>{esc(r.name)} (scores under {esc(score_by)})</h3>")
        if r.sel is not None:
            d = r.decisions()
            others = d.loc[~d["decision"].isin(HIDDEN), "score"]
            pos = r.sel.positives.drop_duplicates(["query_id", "doc_id"])["score"]
            png = plots.score_histogram(pos, r.sel.negatives["score"], f"{r.name}: {score_by} scores", others,
                                        xlabel=f"{score_by} score")
            parts.append(figures.add(f"scores_{r.name}", png, f"{r.name}: score histograms"))
        else:
            parts.append(_note(f"No histogram: {r.why_not}."))
        summaries = (r.stats or {}).get("scores", {})
        if summaries:
            rows = [[name, s.get("count"), _f(s.get("mean")), _f(s.get("q05")), _f(s.get("q50")), _f(s.get("q95")),
                     _f(s.get("min")), _f(s.get("max"))] for name, s in summaries.items()]
            parts.append(table(["scores", "n", "mean", "q05", "median", "q95", "min", "max"], rows,
                               numeric=range(1, 8)))
    if not parts:
        return _note("No round has stats.json or candidates.parquet: no scores to show.")
    return ("<p>gap = the reference positive's score (the one the filters compare with: by default the query's "
            "highest) minus the negative's score: small gaps are hard "
            "negatives, negative gaps score above the positive.</p>" + "\n".join(parts))


def sample_queries(query_ids: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` of the queries, drawn with ``seed``, in their original order (all when fewer)."""
    return sampling.sample(list(query_ids), n, seed)


def queries_section(run: RunFolder, ds_note: str, sample: int, seed: int) -> str:
    """A seeded sample of the tuned round's train queries, each collapsible: positives, chosen
    negatives (rank, scores, sampler) and the candidates not chosen with the filter that dropped them."""
    rnd = run.tuned_round()
    if rnd is None:
        return _note("metrics.json records no rounds: no per-query view.")
    if rnd.sel is None:
        return _note(f"No per-query view for {rnd.name}: {rnd.why_not}.")
    mined, cands = rnd.sel, rnd.cands
    qids = sample_queries(cands.query_ids(), sample, seed)
    wanted = set(qids)
    rank_by, score_by = mined.meta["rank_by"], mined.meta["score_by"]
    table_ = cands.table[cands.table[Column.QUERY_ID].isin(wanted)]
    pos = table_[table_[Column.IS_POSITIVE].to_numpy(bool)]
    pos = pd.DataFrame({"query_id": pos[Column.QUERY_ID], "doc_id": pos[Column.DOC_ID], "rank": pos[rank_col(rank_by)],
                        "score": pos[score_col(score_by)]})
    negatives = mined.negatives
    negs = negatives[negatives["query_id"].isin(wanted)]
    dec = rnd.decisions()
    dec = dec[dec["query_id"].isin(wanted) & ~dec["decision"].isin(HIDDEN)]
    groups = {name: dict(tuple(frame.groupby("query_id", sort=False))) for name, frame in
              (("pos", pos), ("neg", negs), ("dec", dec))}
    view = _QueryView(rnd.ds, rank_by, score_by, [s for s in mined.meta["scorers"] if s != score_by])
    blocks = [view.block(q, *(groups[k].get(q) for k in ("pos", "neg", "dec"))) for q in qids]
    intro = (f"<p>{len(qids)} of {len(cands.query_ids())} train queries of round {esc(rnd.name)} (seed {seed}), "
             f"the negatives that trained its model. Ranks are original ranks under {esc(rank_by)}; scores under "
             f"{esc(score_by)}. Texts are cut at {DOC_CHARS} characters.</p>")
    return intro + (_note(ds_note) if ds_note else "") + "\n".join(blocks)


@dataclass
class _QueryView:
    """Renders one query's block; texts from the dataset when there is one."""

    ds: "Dataset | None"
    rank_by: str
    score_by: str
    extra_scorers: list[str]

    def text(self, doc_id: str) -> str:
        if self.ds is None:
            return ""
        try:
            return truncate(self.ds.doc_text(doc_id), DOC_CHARS)
        except (KeyError, IndexError):
            return "(not in the dataset)"

    def block(self, qid: str, pos: pd.DataFrame | None, negs: pd.DataFrame | None, dec: pd.DataFrame | None) -> str:
        query = truncate(self.ds.queries.get(qid, ""), QUERY_CHARS) if self.ds is not None else ""
        pos, negs, dec = (x if x is not None else pd.DataFrame() for x in (pos, negs, dec))
        summary = (f"<code>{esc(qid)}</code> {esc(truncate(query, 90))} "
                   f'<span class="muted">· {len(pos)} positive(s) · {len(negs)} chosen · {len(dec)} not chosen</span>')
        body = [f'<p class="text">{esc(query)}</p>' if query else "",
                "<h3>Positives</h3>", self.positives(pos),
                "<h3>Chosen negatives</h3>", self.chosen(negs),
                self.others(dec)]
        return details(summary, "\n".join(body), "query")

    def positives(self, pos: pd.DataFrame) -> str:
        if pos.empty:
            return _note("none")
        pos = _by_rank(pos)
        return table(["rank", "doc", f"score ({self.score_by})", "text"],
                     [[_rank(r), d, _f(s), self.text(d)] for r, d, s in zip(pos["rank"], pos["doc_id"], pos["score"])],
                     numeric=(0, 2))

    def chosen(self, negs: pd.DataFrame) -> str:
        if negs.empty:
            return _note("none: no candidate survived the filters (or the policy selects none)")
        per_pair = negs["pos_id"].notna().any()
        head = ["rank", "doc", f"score ({self.score_by})"] + self.extra_scorers + ["chosen by"]
        head += ["for positive"] if per_pair else []
        rows = []
        for _, n in negs.iterrows():
            row = [_rank(n["rank"]), n["doc_id"], _f(n["score"])]
            row += [_f(n.get(f"score_{s}")) for s in self.extra_scorers] + [n["reason"]]
            rows.append(row + ([n["pos_id"]] if per_pair else []) + [self.text(n["doc_id"])])
        return table(head + ["text"], rows, numeric=(0, 2, *range(3, 3 + len(self.extra_scorers))))

    def others(self, dec: pd.DataFrame) -> str:
        if dec.empty:
            return _note("every candidate was chosen or is a positive")
        dec = _by_rank(dec)
        counts = dec["decision"].astype(str).value_counts(sort=False)
        tally = ", ".join(f"{_reason(name)} {int(c)}" for name, c in counts.items() if c)
        shown = dec.head(OTHERS_SHOWN)
        per_pair = shown["pos_id"].notna().any()
        head = ["rank", "doc", f"score ({self.score_by})", "dropped by"] + (["for positive"] if per_pair else [])
        rows = [[_rank(r.rank), r.doc_id, _f(r.score), _reason(str(r.decision))]
                + ([r.pos_id if isinstance(r.pos_id, str) else "all"] if per_pair else [])
                + [self.text(r.doc_id)] for r in shown.itertuples(index=False)]
        more = _note(f"… and {len(dec) - OTHERS_SHOWN} more, ranked lower") if len(dec) > OTHERS_SHOWN else ""
        return details(f"{len(dec)} candidates not chosen: {esc(tally)}",
                       table(head + ["text"], rows, numeric=(0, 2)) + more)


def _by_rank(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by original rank (unranked last), then doc id: a stable order for the page."""
    key = frame["rank"].astype("Float64").fillna(np.inf).to_numpy(np.float64)
    order = np.lexsort((frame["doc_id"].astype(str).to_numpy(), key))
    return frame.iloc[order]


def _rank(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else str(int(value))


def _reason(decision: str) -> str:
    """A decision as a person reads it."""
    return {"not_sampled": "survived, not sampled", "window": "rank window", "query_text": "is the query text",
            "dup_of_positive": "duplicate of a positive", "near_duplicate": "near-duplicate of a positive",
            "max_score": "max score", "margin": "margin below positive", "percent": "percent of positive",
            "denoise": "denoise (cross-encoder)", "no_positive": "query has no positive"}.get(decision, decision)


def audit_window(audit: Mapping[str, Any], run: RunFolder) -> tuple[list[int] | None, str]:
    """The window to mark: the audit's own choice, else the tuned round's policy window."""
    if audit.get("window"):
        return [int(x) for x in audit["window"]], "chosen by the audit"
    rnd = run.tuned_round()
    window = ((rnd.stats or {}).get("policy") or {}).get("window") if rnd else None
    if window:
        return [int(x) for x in window], f"the policy window of round {rnd.name}"
    return None, ""


def audit_section(run: RunFolder, file: Path | None, figures: _Plots) -> str:
    """The false-negative curve (labels and/or judge) with Wilson intervals and the window marked."""
    if file is None:
        return _note("No audit.json in this folder (run `hardneg audit`, or pass --audit FILE): no false-negative curve.")
    audit = _read_json(file)
    curves = {k: (audit.get(k) or {}).get("buckets") or [] for k in ("labels", "judge")}
    # corrected rates are estimates, not counts: no "relevant" count beside them
    corrected = [b | b["corrected"] | {"k": None} for b in curves["judge"] if b.get("corrected")]
    if corrected:  # the judge's share, corrected for its recall and false alarms (hardneg.audit.judge_audit)
        curves["judge corrected"] = corrected
    if not any(curves.values()):
        return _note(f"{file} holds no buckets to plot.")
    window, source = audit_window(audit, run)
    parts = [f"<p>From <code>{esc(file)}</code>. Rate of candidates that are in fact relevant, per original-rank "
             f"bucket, with Wilson 95% intervals. "
             + (f"Shaded: the window {window[0]}:{window[1]} ({esc(source)}).</p>" if window else
                "No window was set: every rank was eligible.</p>"),
             figures.add("false_negatives", plots.false_negative_curve(curves, window), "false-negative rate per rank bucket")]
    labels, judge = audit.get("labels") or {}, audit.get("judge") or {}
    if curves["labels"]:
        parts.append(f"<h3>labels: {_f(labels.get('hidden_fraction'), 'g')} of the positives hidden, "
                     f"{esc(labels.get('queries', '?'))} queries with several positives</h3>" + _bucket_table(curves["labels"]))
    if curves["judge"]:
        parts.append(f"<h3>judge: relevant above {_f(judge.get('threshold'), 'g')}, {esc(judge.get('sampled', '?'))} "
                     "unlabeled candidates sampled</h3>" + _bucket_table(curves["judge"]))
        pos = judge.get("positives") or {}
        if pos.get("n"):
            parts.append(_note(f"The judge calls {_f(pos['rate'], '.1%')} of {esc(pos['n'])} sampled labeled "
                               "positives relevant (its recall at this threshold)."))
        if corrected:
            parts.append("<h3>judge, corrected for its recall and for its false alarms (its share in the deepest "
                         "bucket): (rate - false alarms) / (recall - false alarms)</h3>" + _bucket_table(corrected))
    reason = (audit.get("calibration") or {}).get("reason")
    if reason:
        parts.append(_note(f"Calibration: {reason}."))
    return "\n".join(parts)


def _bucket_table(buckets: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for b in buckets:
        ci = b.get("ci")
        rows.append([b.get("bucket", f"{b.get('lo')}-{b.get('hi')}"), _f(b.get("n"), "g"), _f(b.get("k"), "g"),
                     _f(b.get("rate")), f"[{_f(ci[0])}, {_f(ci[1])}]" if ci else "-"])
    return table(["ranks", "candidates", "relevant", "rate", "95% CI"], rows, numeric=(1, 2, 3, 4))


def progression_section(file: Path | None) -> str:
    """The benchmark progression table (Markdown, as benchmarks/progression.py writes) as HTML."""
    if file is None:
        return _note("No progression.md in this folder (pass --progression FILE): no progression table.")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise HardnegError(f"{file}: cannot read ({e})") from None
    return f"<p>From <code>{esc(file)}</code>.</p>" + markdown(text)
