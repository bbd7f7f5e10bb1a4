"""The files of ``hardneg diagnose``: one page in Markdown and HTML, JSON, and TSVs to review.

Use :func:`write_diagnosis` after :func:`hardneg.diagnose.diagnose`. It writes, into ``out``:
``diagnosis.md``, ``diagnosis.html`` (self-contained: inline CSS, the figure as a data URI,
nothing fetched), ``diagnosis.json`` (every number), ``diagnosis.png`` (ranks of positives
under BM25 vs the model, and query-term overlap), ``suspicious_positives.tsv`` (the pairs to
review, with their texts) and ``positive_pairs.tsv`` (ranks, cosine and overlap of every
analysed pair). :func:`diagnosis_section` gives the HTML body alone, to place in another page.
Markdown and HTML are rendered from the same blocks, so they always say the same thing.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hardneg.data import Dataset
from hardneg.diagnose import DiagnoseConfig, Diagnosis, click_bias_of, diagnose
from hardneg.encode import Encoder
from hardneg.evaluate import format_p
from hardneg.files import atomic_path, atomic_write_json, atomic_write_text
from hardneg.report.htmlpage import esc, img, page, table, truncate

__all__ = ["diagnosis_markdown", "write_diagnosis"]

SHOWN = 20  # suspicious pairs listed on the page (the TSV has all)
TEXT_CHARS = 300
TSV_COLUMNS = ("reason", "split", "query_id", "doc_id", "other_doc_id", "bm25_rank", "dense_rank", "cosine",
               "term_overlap", "other", "query", "document", "other_document")
PAIR_COLUMNS = ("split", "query_id", "doc_id", "bm25_rank", "dense_rank", "cosine", "cosine_average_doc",
                "term_overlap", "suspicious")

#: One piece of a page section, its kind first, rendered alike in Markdown and HTML:
#: ("p", text) | ("list", [text]) | ("table", header, rows, numeric) | ("img", png, alt)
PageBlock = tuple[Any, ...]


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.1%}"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _rank(x: Any) -> str:
    return "" if x is None or x == "" else f"{float(x):g}"


def diagnosis_blocks(diag: "Diagnosis", png: bytes | None = None) -> list[tuple[str, str, list[PageBlock]]]:
    """The page as ``(anchor, heading, blocks)`` sections, shared by the Markdown and HTML forms."""
    g, v, cfg = diag.gap, diag.vocab, diag.config
    sections: list[tuple[str, str, list[PageBlock]]] = []
    vd = diag.verdict
    sections.append(("verdict", f"Verdict: tuning {vd.outlook.phrase}",
                     [("p", vd.headline), ("list", vd.reasons)] + [("p", f"Note: {n}.") for n in diag.notes]))

    means, ci, pv = g["means"], g["ci_ndcg@10"], g["p_vs_bm25"]
    names = {"bm25": "BM25", "dense": "untuned model", "hybrid": "hybrid (RRF)"}
    rows = [[names.get(s, s), _num(means[s]["ndcg@10"]), f"[{ci[s][0]:.3f}, {ci[s][1]:.3f}]",
             _num(means[s]["recall@100"]), _num(means[s]["mrr@10"]),
             "-" if s == "bm25" else format_p(pv[s]["ndcg@10"], g["n_resamples"])] for s in means]
    w = g["per_query_ndcg@10"]
    gap_blocks: list[PageBlock] = [
        ("table", ["system", "NDCG@10", "95% CI", "Recall@100", "MRR@10", "p (NDCG@10) vs BM25"], rows, [1, 3, 4, 5]),
        ("p", f"Per query (NDCG@10): BM25 better on {w['bm25_better']}, the model better on {w['dense_better']}, "
              f"tied on {w['ties']} of {g['n_queries']}."),
        ("p", f"p: two-sided paired randomization test ({g['n_resamples']} sign flips, seeded), Holm-corrected "
              "across the two systems; CI: percentile bootstrap over queries."),
    ] + [("p", f"Note: {n}.") for n in g["notes"]]
    sections.append(("gap", f"The gap on {g['split']} ({g['n_queries']} queries)", gap_blocks))

    c, r = v["corpus"], v["reference"]
    vocab_blocks: list[PageBlock] = [
        ("table", ["words", "pieces per word", "split in 2+", "split in 3+", "distinct words"],
         [["corpus", _num(c["pieces_per_word"]), _pct(c["share_split"]), _pct(c["share_3plus"]), f"{c['words']:,}"],
          ["everyday English (reference)", _num(r["pieces_per_word"]), _pct(r["share_split"]), _pct(r["share_3plus"]),
           f"{r['words']:,}"]], [1, 2, 3, 4]),
        ("p", f"Corpus words take {v['ratio']:.2f}x the pieces of everyday English; {_pct(v['out_of_reference'])} "
              f"of word occurrences are outside the 5,000 most frequent English words "
              f"({v['docs_read']:,} documents read)."),
    ]
    if v["terms"]:
        vocab_blocks += [("p", "The most fragmented frequent domain terms:"),
                         ("table", ["word", "occurrences", "pieces", "as the tokenizer splits it"],
                          [[t["word"], f"{t['count']:,}", str(t["pieces"]), t["split"]] for t in v["terms"]], [1, 2])]
    sections.append(("vocab", "Vocabulary fit", vocab_blocks))

    orows = [[s, f"{o['pairs']:,}", _pct(o["mean_term_overlap"]), _pct(o["no_shared_term"]), _pct(o["bm25_top10"]),
              _pct(o["bm25_top100"]), _pct(o["dense_top10"]), _pct(o["dense_top100"]), _num(o["cosine_positive"]),
              _num(o["cosine_average_doc"])] for s, o in diag.overlap.items()]
    sections.append(("overlap", "What BM25 can see: queries vs their positives", [
        ("table", ["split", "pairs", "query terms in positive", "no shared term", "BM25 top-10", "BM25 top-100",
                   "model top-10", "model top-100", "cosine to positive", "cosine to average doc"], orows,
         list(range(1, 10))),
        ("p", "Terms as BM25 sees them (bm25s tokens, English stopwords removed, stemmed). A positive sharing no "
              "term with its query scores 0 under BM25: only a dense model can retrieve it. Ranks are over the "
              "whole corpus."),
    ] + ([("img", png, "positives: BM25 rank vs model rank, and query-term overlap")] if png else [])))

    low = [s for s in diag.suspicious if s["reason"] == "low_rank"]
    dup = diag.near_dup_summary
    n_pairs = len(diag.pairs)
    sus_blocks: list[PageBlock] = [
        ("p", f"{len(low)} of {n_pairs:,} pairs ({_pct(len(low) / n_pairs if n_pairs else float('nan'))}) are ranked "
              f"worse than {diag.low_rank_cut:g} by both BM25 and the model: likely wrong labels, or positives only "
              "an expert could connect. Review them before training."),
    ]
    if low:
        sus_blocks.append(("table", ["split", "query", "positive", "BM25 rank", "model rank", "cosine"],
                           [[s["split"], s["query_id"], s["doc_id"], _rank(s["bm25_rank"]), _rank(s["dense_rank"]),
                             _num(s["cosine"])] for s in low[:SHOWN]], [3, 4, 5]))
    sus_blocks.append(("p", f"Near-duplicate positives (cosine > {cfg.near_dup:g} to another document): "
                            f"{dup['pairs']} pairs, {dup['same_text']} with identical text; the other document is "
                            f"unlabelled in {dup['other_unlabelled']} (a false negative waiting to be mined), a "
                            f"positive of the same query in {dup['other_positive_same_query']}, of another query in "
                            f"{dup['other_positive_elsewhere']}."))
    sus_blocks.append(("p", "All of them, with texts: suspicious_positives.tsv; every analysed pair: "
                            "positive_pairs.tsv."))
    sections.append(("suspicious", "Suspicious positives", sus_blocks))
    if diag.clicks:
        c = diag.clicks
        sections.append(("clicks", "Click log: position bias", [
            ("table", ["position", "impressions", "clicks", "CTR", "CTR / CTR@1"],
             [[str(r["position"]), f"{r['impressions']:,}", f"{r['clicks']:,}", f"{r['ctr']:.4f}",
               _num(r.get("ctr_relative"))] for r in c["positions"]], [0, 1, 2, 3, 4]),
            ("p", f"{c['note'][0].upper()}{c['note'][1:]}. Source: {c['source']}."),
        ]))
    return sections


def diagnosis_markdown(diag: "Diagnosis", sections: Sequence[tuple[str, str, list[PageBlock]]] | None = None) -> str:
    sections = diagnosis_blocks(diag) if sections is None else sections
    lines = [f"# Diagnosis of {diag.source}", ""]
    for _, heading, blocks in sections:
        lines += [f"## {heading}", ""]
        for b in blocks:
            if b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "list":
                lines += [f"- {x}" for x in b[1]] + ([""] if b[1] else [])
            elif b[0] == "table":
                lines += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in b[2]] + [""]
            elif b[0] == "img":
                lines += [f"![{b[2]}](diagnosis.png)", ""]
    return "\n".join(lines).rstrip() + "\n"


def _html_blocks(blocks: list[PageBlock]) -> str:
    out = []
    for b in blocks:
        if b[0] == "p":
            out.append(f"<p>{esc(b[1])}</p>")
        elif b[0] == "list" and b[1]:
            out.append("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in b[1]) + "</ul>")
        elif b[0] == "table":
            out.append(table(b[1], b[2], numeric=b[3]))
        elif b[0] == "img":
            out.append(img(b[1], b[2]))
    return "\n".join(out)


def diagnosis_section(diag: "Diagnosis", png: bytes | None = None) -> str:
    """The diagnosis as HTML sections (no ``<html>`` wrapper), for a page of one's own."""
    return "\n".join(f'<section id="{esc(a)}"><h2>{esc(h)}</h2>\n{_html_blocks(b)}\n</section>'
                     for a, h, b in diagnosis_blocks(diag, png))


def diagnosis_figure(diag: "Diagnosis") -> bytes | None:
    """Positives' BM25 rank vs model rank (log-log, the suspicious corner shaded) and query-term
    overlap by split, as PNG bytes; None without pairs."""
    if not diag.pairs:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    splits = list(dict.fromkeys(r["split"] for r in diag.pairs))
    n_docs = diag.dataset["documents"]
    for i, s in enumerate(splits):
        rs = [r for r in diag.pairs if r["split"] == s]
        ax1.scatter([r["bm25_rank"] for r in rs], [r["dense_rank"] for r in rs], s=8, alpha=0.5, color=f"C{i}",
                    label=f"{s} (n={len(rs)})")
        ov = np.array([r["term_overlap"] for r in rs], dtype=np.float64)
        ax2.hist(np.nan_to_num(ov, nan=0.0), bins=np.linspace(0, 1, 11), alpha=0.5, color=f"C{i}",
                 weights=np.full(ov.size, 1.0 / ov.size), label=s)
    cut = diag.low_rank_cut
    ax1.fill_between([cut, n_docs], cut, n_docs, color="#d9662b", alpha=0.12, label=f"both worse than rank {cut:g}")
    ax1.set(xscale="log", yscale="log", xlim=(0.8, n_docs * 1.2), ylim=(0.8, n_docs * 1.2),
            xlabel="BM25 rank of the positive", ylabel="model rank of the positive", title="positives' ranks")
    ax1.legend(fontsize=7, frameon=False)
    ax2.set(xlabel="share of query terms in the positive", ylabel="share of pairs", title="query-term overlap")
    ax2.legend(fontsize=7, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def _cell(x: Any) -> str:
    if isinstance(x, float):
        return "" if not math.isfinite(x) else f"{x:.6g}"
    return " ".join(str("" if x is None else x).split())


def _tsv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    lines = ["\t".join(columns)] + ["\t".join(_cell(r.get(c, "")) for c in columns) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_diagnosis(diag: "Diagnosis", out: str | Path, ds: "Dataset | None" = None) -> Path:
    """Write the diagnosis files into ``out`` (see the module docstring); return ``out/diagnosis.md``.

    ``ds`` (the diagnosed dataset) adds query and document texts to ``suspicious_positives.tsv``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = diagnosis_figure(diag)
    if png is not None:
        with atomic_path(out / "diagnosis.png") as tmp:
            tmp.write_bytes(png)
    sections = diagnosis_blocks(diag, png)
    atomic_write_text(out / "diagnosis.md", diagnosis_markdown(diag, sections))
    atomic_write_text(out / "diagnosis.html", page(f"Diagnosis of {diag.source}",
                                                   [(a, h, _html_blocks(b)) for a, h, b in sections]))
    atomic_write_json(out / "diagnosis.json", diag.to_dict())
    rows = []
    for s in diag.suspicious:
        r = dict(s)
        if ds is not None:
            r["query"] = truncate(ds.queries[s["query_id"]], TEXT_CHARS)
            r["document"] = truncate(ds.doc_text(s["doc_id"]), TEXT_CHARS)
            r["other_document"] = truncate(ds.doc_text(s["other_doc_id"]), TEXT_CHARS) if s["other_doc_id"] else ""
        rows.append(r)
    _tsv(out / "suspicious_positives.tsv", TSV_COLUMNS, rows)
    _tsv(out / "positive_pairs.tsv", PAIR_COLUMNS, diag.pairs)
    return out / "diagnosis.md"


def diagnose_to_folder(ds: Dataset, encoder_config: Any, config: DiagnoseConfig, out: str | Path, *,
                       cache_dir: str | Path | None = None, data_path: str | Path = "",
                       clicks: str | Path | None = None) -> Diagnosis:
    """What ``hardneg diagnose`` does: :func:`diagnose` ``ds`` (a missing split fails before the model loads),
    add the position bias of ``clicks`` (:func:`click_bias_of`) and write the files into ``out``."""
    ds.split_qrels(config.split)
    enc = Encoder(encoder_config) if cache_dir is None else Encoder(encoder_config, cache=cache_dir)
    diag = diagnose(ds, enc, config)
    diag.clicks = click_bias_of(data_path, ds, clicks)
    write_diagnosis(diag, out, ds)
    return diag
