"""Before spending money: will fine-tuning pay on this data, and are its positives sound?

Use :func:`diagnose` (``hardneg diagnose``) once, on the data a team would tune on, with the
model it would start from. It measures, without training anything:

* **the gap**: BM25, the untuned model and their hybrid (RRF) on the held-out split, with
  bootstrap intervals and the paired randomization test of :func:`hardneg.evaluate.evaluate`
  (vectors come from the embedding cache when they are there);
* **vocabulary fit**: subword pieces per word on the corpus vs everyday English
  (:mod:`hardneg.diagnose.vocab`), and the most fragmented frequent domain terms;
* **what BM25 can see**: the share of each query's terms (as BM25 sees them: bm25s tokens,
  English stopwords removed, PyStemmer-stemmed) found in its positive, the pairs sharing no
  term at all, and the dense cosine of query and positive against the query's cosine with an
  average document;
* **suspicious positives**: (query, positive) pairs that both BM25 and the model rank below
  ``low_rank`` (likely wrong labels), and positives with a near duplicate (cosine above
  ``near_dup``) elsewhere in the corpus; both go to ``suspicious_positives.tsv`` for review;
* **a verdict** from the rules of :func:`verdict`, with the numbers behind it.

Ranks are 1-based over the whole corpus; a tie shares the mean of the ranks it spans (a
query with no BM25 term ties every document at 0 and so sits mid-corpus under BM25).
Pairs are taken from every split (train, dev, test); past ``max_pairs`` a seeded sample.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hardneg.data import Dataset, normalize_text
from hardneg.diagnose.vocab import vocab_fit
from hardneg.encode import Encoder
from hardneg.errors import HardnegError
from hardneg.evaluate import N_RESAMPLES, EvalResult, evaluate, format_p
from hardneg.options import check, option, seed_option
from hardneg.positives.clicklog import read_click_log
from hardneg.positives.clicks import position_bias
from hardneg.retrieve.base import Ranking
from hardneg.retrieve.bm25 import BM25Config, BM25Retriever, _make_stemmer
from hardneg.retrieve.dense import DenseRetriever
from hardneg.retrieve.fusion import rrf
from hardneg.retrieve.search import exact_topk, pair_scores, scores_block
from hardneg.sampling import sample

__all__ = ["DiagnoseConfig", "Diagnosis", "Outlook", "Verdict", "diagnose", "verdict"]

SYSTEMS = ("bm25", "dense", "hybrid")
FRAG_HIGH = 1.2  # corpus words take >= 20% more pieces than everyday English: a misfit
HEADROOM = 0.9  # an untuned NDCG@10 at or above this leaves little to gain
BLIND_HIGH = 0.2  # share of eval positives sharing no term with their query
SUSPICIOUS_HIGH = 0.05  # share of pairs every scorer ranks low
FEW_QUERIES = 30


@dataclass(frozen=True)
class DiagnoseConfig:
    """What :func:`diagnose` measures and where it draws lines.

    ``low_rank``: a positive is suspicious when BM25 and the model both rank it below this;
    on a corpus of fewer than ``10 * low_rank`` documents the cut is a tenth of the corpus
    instead (at least 1), so a small sample still has a "low". ``near_dup``: cosine above
    which two distinct documents count as near duplicates. ``depth``: documents retrieved
    per eval query (metrics use @10 and @100); the hybrid fuses each retriever's top
    ``fusion_depth``, as ``hardneg eval -r hybrid`` does.
    """

    split: str = option("test", "Held-out split the gap is measured on.")
    depth: int = option(100, "Documents retrieved per eval query (metrics use @10 and @100).", ge=1)
    fusion_depth: int = option(1000, "The hybrid fuses each retriever's top this many.", ge=1)
    low_rank: int = option(100, "A positive both BM25 and the model rank worse than this is suspicious (a tenth "
                                "of the corpus on corpora under 10x this).", ge=1)
    near_dup: float = option(0.98, "Cosine above which two documents are near duplicates.", gt=0, le=1)
    max_pairs: int = option(5000, "Pairs analysed for overlap and ranks (seeded sample).", ge=1)
    vocab_docs: int = option(20000, "Documents sampled for the vocabulary fit.", ge=1)
    top_terms: int = option(20, "The worst-fragmented domain terms listed.", ge=1)
    n_resamples: int = option(N_RESAMPLES, "Sign flips per randomization test.", ge=1)
    alpha: float = option(0.05, "Significance level of the verdict.", gt=0, lt=1)
    seed: int = seed_option(0, "Seed of the significance test, intervals and samples.")

    def __post_init__(self) -> None:
        check(self)


# ---- pure pieces: overlap, ranks, duplicates ---------------------------------------------------
def term_overlap(query_terms: Sequence[str], doc_terms: Sequence[str]) -> float:
    """Share of the query's distinct terms that occur in the document; NaN for a query with none.

    Known answer: query terms {learn, thunder, storm}, document {thunder, storm, cloud} -> 2/3.
    """
    q = set(query_terms)
    return len(q & set(doc_terms)) / len(q) if q else float("nan")


def score_rank(scores: np.ndarray, j: int) -> float:
    """1-based rank of document ``j`` under ``scores`` (N,); ties share their mean rank."""
    s = scores[j]
    return 1.0 + float(np.count_nonzero(scores > s)) + (float(np.count_nonzero(scores == s)) - 1.0) / 2.0


def dense_ranks(query_embs: np.ndarray, doc_embs: np.ndarray, doc_idx: np.ndarray,
                query_chunk: int = 256, corpus_chunk: int = 16384) -> np.ndarray:
    """Rank of document ``doc_idx[i]`` for query ``query_embs[i]`` by dot product over the corpus; (P,).

    Scores are float64 products rounded to float32, as :func:`hardneg.retrieve.search.exact_topk`
    computes them; ties share their mean rank. Memory: ``query_chunk x corpus_chunk`` scores.
    """
    doc_idx = np.asarray(doc_idx, dtype=np.int64)
    ranks = np.empty(doc_idx.size, dtype=np.float64)
    for q0 in range(0, doc_idx.size, query_chunk):
        q = np.asarray(query_embs[q0 : q0 + query_chunk], dtype=np.float64)  # (qc, d)
        own = pair_scores(q, doc_embs, doc_idx[q0 : q0 + query_chunk])[:, None]  # (qc, 1) float32
        above = np.zeros(q.shape[0], dtype=np.int64)
        tied = np.zeros(q.shape[0], dtype=np.int64)
        for c0 in range(0, doc_embs.shape[0], corpus_chunk):
            block = scores_block(q, doc_embs[c0 : c0 + corpus_chunk])
            above += np.count_nonzero(block > own, axis=1)
            tied += np.count_nonzero(block == own, axis=1)
        ranks[q0 : q0 + q.shape[0]] = 1.0 + above + (tied - 1) / 2.0
    return ranks


def suspicious_mask(bm25_rank: np.ndarray, dense_rank: np.ndarray, cut: float) -> np.ndarray:
    """Pairs that every scorer ranks below ``cut`` (rank > cut under both): likely wrong labels."""
    return (np.asarray(bm25_rank) > cut) & (np.asarray(dense_rank) > cut)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1; ``x`` itself (no copy, memory maps stay maps) when they already are."""
    norms = np.sqrt(np.einsum("nd,nd->n", x, x))[:, None]  # no (N, d) temporary
    if np.allclose(norms, 1.0, atol=1e-3):
        return x
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def near_duplicates(doc_embs: np.ndarray, doc_indices: Sequence[int], threshold: float,
                    neighbours: int = 10) -> list[tuple[int, int, float]]:
    """Pairs ``(a, b, cosine)`` with cosine > ``threshold``, ``a`` among ``doc_indices`` and ``b`` any
    other document (its ``neighbours`` nearest are looked at), each unordered pair once, ``a < b``,
    sorted by cosine descending, then indices."""
    doc_indices = np.unique(np.asarray(doc_indices, dtype=np.int64))
    if doc_indices.size == 0 or doc_embs.shape[0] < 2:
        return []
    unit = _unit(doc_embs)
    idx, scores = exact_topk(unit[doc_indices], unit, min(neighbours + 1, unit.shape[0]))
    found: dict[tuple[int, int], float] = {}
    for a, row_i, row_s in zip(doc_indices.tolist(), idx, scores):
        for b, s in zip(row_i.tolist(), row_s.tolist()):
            if b != a and s > threshold:
                key = (min(a, b), max(a, b))
                found[key] = max(found.get(key, -1.0), float(s))
    return sorted(((a, b, s) for (a, b), s in found.items()), key=lambda t: (-t[2], t[0], t[1]))


# ---- the verdict -------------------------------------------------------------------------------
class Outlook(str, Enum):
    """Whether tuning the model is expected to pay; ``phrase`` completes "tuning ..."."""

    LIKELY = "likely to pay"
    POSSIBLE = "may pay"
    UNLIKELY = "unlikely to pay much"

    @property
    def phrase(self) -> str:
        return self.value if self is Outlook.POSSIBLE else f"is {self.value}"


@dataclass(frozen=True)
class Verdict:
    outlook: Outlook
    headline: str
    reasons: list[str]


def verdict(bm25: float, dense: float, hybrid: float, p_dense: float, n_queries: int, frag_ratio: float,
            blind_share: float, suspicious_share: float, alpha: float = 0.05,
            n_resamples: int = N_RESAMPLES) -> Verdict:
    """Rule-based verdict on whether tuning the model is likely to pay. ``bm25``/``dense``/``hybrid``
    are NDCG@10 on the eval split, ``p_dense`` the Holm-adjusted paired p of dense vs BM25.

    The outlook, first matching rule wins:

    1. BM25 significantly above the untuned model (``p_dense < alpha``): **likely to pay**. The
       model has not learned the domain yet; tuning on in-domain pairs with hard negatives is
       what closes such gaps. Said plainly: until a tuned model beats BM25, use BM25 (or hybrid).
    2. The model significantly above BM25 and already at NDCG@10 >= ``HEADROOM`` (0.9):
       **unlikely to pay much** (little headroom).
    3. The model significantly above BM25 and the tokenizer fragments the corpus (pieces per
       word at least ``FRAG_HIGH`` (1.2) times everyday English's): **may pay** (the gains are
       smaller where the model already wins, but it reads the domain in fragments).
    4. The model significantly above BM25 otherwise: **unlikely to pay much**: the model
       already fits the domain; expect smaller gains than where BM25 wins.
    5. No significant difference: **may pay**; more so with vocabulary misfit.

    Facts added as reasons whatever the outlook: fragmentation (high when >= ``FRAG_HIGH``),
    positives sharing no term with their query (>= ``BLIND_HIGH`` (20%): only a dense model
    can reach them), a hybrid above both (the cheap baseline to beat), pairs every scorer ranks
    low (>= ``SUSPICIOUS_HIGH`` (5%): review labels first), and fewer than ``FEW_QUERIES`` (30)
    eval queries (small differences are not reliable).
    """
    diff = dense - bm25
    sig = p_dense < alpha
    misfit = math.isfinite(frag_ratio) and frag_ratio >= FRAG_HIGH
    p_fmt = format_p(p_dense, n_resamples)
    p_text = f"p {p_fmt}" if p_fmt.startswith("<") else f"p = {p_fmt}"
    if sig and diff < 0:
        outlook = Outlook.LIKELY
        headline = (f"BM25 beats the untuned model ({bm25:.3f} vs {dense:.3f} NDCG@10, {p_text}). Tuning is "
                    "likely to pay; until a tuned model beats BM25, use BM25 (or the hybrid).")
    elif sig and dense >= HEADROOM:
        outlook = Outlook.UNLIKELY
        headline = (f"The untuned model already scores {dense:.3f} NDCG@10 (BM25 {bm25:.3f}, {p_text}): little "
                    "headroom; tuning is unlikely to pay much.")
    elif sig and misfit:
        outlook = Outlook.POSSIBLE
        headline = (f"The untuned model beats BM25 ({dense:.3f} vs {bm25:.3f}, {p_text}), but its tokenizer "
                    "fragments the domain's words: tuning may pay, with smaller gains than where BM25 wins.")
    elif sig:
        outlook = Outlook.UNLIKELY
        headline = (f"The untuned model beats BM25 ({dense:.3f} vs {bm25:.3f}, {p_text}) and reads the domain's "
                    "words about as well as everyday English: expect smaller gains from tuning.")
    else:
        outlook = Outlook.POSSIBLE
        headline = (f"No significant difference between BM25 ({bm25:.3f}) and the untuned model ({dense:.3f}, "
                    f"{p_text}): tuning may pay" + (", and the vocabulary misfit argues for it." if misfit else "."))
    reasons = []
    if math.isfinite(frag_ratio):
        reasons.append(f"vocabulary: {frag_ratio:.2f}x the pieces per word of everyday English"
                       + (" (a misfit: high)" if misfit else " (a fit: normal)"))
    if math.isfinite(blind_share):
        reasons.append(f"{blind_share:.0%} of eval positives share no term with their query"
                       + (": BM25 cannot reach them, only a dense model can" if blind_share >= BLIND_HIGH else ""))
    if hybrid > max(bm25, dense):
        reasons.append(f"the hybrid (no training) scores {hybrid:.3f}: the cheapest baseline a tuned model must beat")
    if math.isfinite(suspicious_share) and suspicious_share >= SUSPICIOUS_HIGH:
        reasons.append(f"{suspicious_share:.0%} of positives are ranked low by every scorer: review "
                       "suspicious_positives.tsv first, wrong labels cap what tuning can learn")
    if n_queries < FEW_QUERIES:
        reasons.append(f"only {n_queries} eval queries: differences of a few points are not reliable")
    return Verdict(outlook, headline, reasons)


# ---- the whole diagnosis ----------------------------------------------------------------------
@dataclass
class Diagnosis:
    """Everything :func:`diagnose` measured; ``pairs`` and ``suspicious`` are row dicts (TSV-ready)."""

    source: str
    config: DiagnoseConfig
    dataset: dict[str, Any]
    gap: dict[str, Any]
    vocab: dict[str, Any]
    overlap: dict[str, dict[str, Any]]  # split -> summary
    low_rank_cut: float
    pairs: list[dict[str, Any]]
    suspicious: list[dict[str, Any]]
    near_dup_summary: dict[str, int]
    verdict: Verdict
    notes: list[str] = field(default_factory=list)
    clicks: dict[str, Any] | None = None  # :func:`click_bias` of the team's click log, when given

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (NaN as null); per-pair rows stay in the TSV files."""
        out = {
            "source": self.source, "config": asdict(self.config), "dataset": self.dataset, "gap": self.gap,
            "vocab": self.vocab, "overlap": self.overlap, "low_rank_cut": self.low_rank_cut,
            "suspicious": {"low_rank": sum(r["reason"] == "low_rank" for r in self.suspicious),
                           "near_duplicate": self.near_dup_summary},
            "verdict": {"outlook": self.verdict.outlook.value, "headline": self.verdict.headline,
                        "reasons": self.verdict.reasons},
            "notes": self.notes,
            "clicks": self.clicks,
        }
        return _json_safe(out)

    def summary(self, out: str | Path, seconds: float) -> list:
        """What `hardneg diagnose` prints: NDCG@10 of the three systems, the verdict and its reasons,
        the click note and the files written in ``seconds``. Verdict texts are rich ``Text`` (no markup)."""
        from rich.text import Text

        m = self.gap["means"]
        return ([f"NDCG@10 on {self.config.split} ({self.gap['n_queries']} queries): bm25 {m['bm25']['ndcg@10']:.4f}, "
                 f"untuned {m['dense']['ndcg@10']:.4f}, hybrid {m['hybrid']['ndcg@10']:.4f}",
                 Text(f"verdict: tuning {self.verdict.outlook.phrase}. {self.verdict.headline}")]
                + [Text(f"  - {reason}") for reason in self.verdict.reasons]
                + ([Text(f"clicks: {self.clicks['note']}")] if self.clicks else [])
                + [f"wrote {out}/diagnosis.md, diagnosis.html, diagnosis.json, suspicious_positives.tsv ({seconds:.1f}s)"])


def click_bias_of(data: str | Path, ds: Any, log: str | Path | None = None) -> dict[str, Any] | None:
    """The diagnosis' position bias: from the click ``log``, else from the ``clicks_stats.json``
    of a folder ``hardneg clicks`` wrote (``data``); None when there is neither."""
    if log is not None:
        table = position_bias(read_click_log(log, set(ds.doc_ids), skip_unknown=True))
        return click_bias(table.to_dict("records"), str(log))
    stats = Path(data) / "clicks_stats.json"
    if stats.is_file():
        return click_bias(json.loads(stats.read_text())["position_bias"], str(stats))
    return None


def click_bias(rows: Sequence[Mapping[str, Any]], source: str) -> dict[str, Any]:
    """Position bias of a click log for the diagnosis, from :func:`hardneg.positives.clicks.position_bias` rows.

    ``decay`` is CTR at the last shown position over CTR at position 1. Below 0.5 the log is
    strongly position-biased: low positions get few clicks whatever their relevance, so a
    missing click there says little (keep skip-above negatives to positions above a click, and
    prefer dwell-filtered clicks as positives).
    """
    rows = [dict(r) for r in sorted(rows, key=lambda r: int(r["position"]))]
    if not rows:
        raise HardnegError(f"{source}: the click log has no impressions")
    first, last = float(rows[0]["ctr"]), float(rows[-1]["ctr"])
    decay = last / first if first > 0 else float("nan")
    if not math.isfinite(decay):
        note = "no clicks at position 1: the position bias cannot be measured"
    elif decay < 0.5:
        note = (f"strong position bias: CTR falls from {first:.3f} at position 1 to {last:.3f} at position "
                f"{rows[-1]['position']} ({decay:.2f}x). Clicks follow position as much as relevance; an unclicked "
                "low position is weak evidence of non-relevance")
    else:
        note = f"mild position bias: CTR at position {rows[-1]['position']} is {decay:.2f}x that at position 1"
    return {"source": source, "positions": rows, "ctr_first": first, "ctr_last": last, "decay": decay, "note": note}


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _pairs(ds: "Dataset", max_pairs: int, seed: int) -> tuple[list[tuple[str, str, str]], int]:
    """(split, query id, doc id) of every positive of every split; a seeded sample past ``max_pairs``."""
    pairs = [(s, q, d) for s in ds.splits for q, docs in ds.positives(s).items() for d in docs]
    return sample(pairs, max_pairs, seed), len(pairs)


def _cut(r: Ranking, k: int) -> Ranking:
    return Ranking(r.query_ids, r.doc_ids, r.indices[:, :k], r.scores[:, :k])


def _gap(result: EvalResult, seed: int) -> dict[str, Any]:
    """Means, NDCG@10 intervals, Holm p vs BM25 and per-query wins of BM25 vs the model."""
    b, d = result.per_query["bm25"]["ndcg@10"], result.per_query["dense"]["ndcg@10"]
    return {
        "split": result.split, "n_queries": len(result.query_ids), "means": result.means(),
        "ci_ndcg@10": {s: list(result.ci(s, seed=seed)) for s in result.systems},
        "p_vs_bm25": {s: result.pvalues[s] for s in result.systems if s != "bm25"},
        "n_resamples": result.n_resamples,
        "per_query_ndcg@10": {"bm25_better": int((b > d).sum()), "dense_better": int((d > b).sum()),
                              "ties": int((b == d).sum())},
        "notes": list(result.notes),
    }


def _bm25_terms(texts: Sequence[str]) -> list[list[str]]:
    """Terms as :class:`~hardneg.retrieve.bm25.BM25Retriever` indexes them (stopwords out, stemmed)."""
    import bm25s

    cfg = BM25Config()
    return bm25s.tokenize(list(texts), stopwords=cfg.stopwords or [], stemmer=_make_stemmer(cfg.stemmer),
                          show_progress=False, return_ids=False)


def _overlap_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ov = np.array([r["term_overlap"] for r in rows], dtype=np.float64)
    b = np.array([r["bm25_rank"] for r in rows], dtype=np.float64)
    d = np.array([r["dense_rank"] for r in rows], dtype=np.float64)
    blind = np.isnan(ov) | (ov == 0)
    return {
        "pairs": len(rows),
        "mean_term_overlap": float(np.nanmean(ov)) if np.isfinite(ov).any() else float("nan"),
        "no_shared_term": float(blind.mean()),
        "bm25_top10": float((b <= 10).mean()), "bm25_top100": float((b <= 100).mean()),
        "dense_top10": float((d <= 10).mean()), "dense_top100": float((d <= 100).mean()),
        "cosine_positive": float(np.mean([r["cosine"] for r in rows])),
        "cosine_average_doc": float(np.mean([r["cosine_average_doc"] for r in rows])),
    }


def diagnose(ds: "Dataset", encoder: "Encoder", config: DiagnoseConfig = DiagnoseConfig()) -> Diagnosis:
    """Measure the gap, vocabulary fit, overlap and suspicious positives; return a :class:`Diagnosis`.

    Cost: one BM25 index, one pass of the encoder over the corpus (cached) and the queries,
    one full-corpus scoring per sampled pair under each scorer (``max_pairs`` bounds it).
    """
    eval_qids = list(ds.positives(config.split))
    if not eval_qids:
        raise HardnegError(f"{ds.source}: split '{config.split}' has no query with a positive")
    n_docs = len(ds.doc_ids)
    doc_texts = ds.doc_texts()
    bm25 = BM25Retriever(ds.doc_ids, doc_texts)
    dense = DenseRetriever(encoder, ds.doc_ids, doc_texts)
    pairs, n_pairs_total = _pairs(ds, config.max_pairs, config.seed)
    query_ids = list(dict.fromkeys([*eval_qids, *(q for _, q, _ in pairs)]))
    row = {q: i for i, q in enumerate(query_ids)}
    q_embs = encoder.encode_queries([ds.queries[q] for q in query_ids])
    doc_embs = dense.doc_embeddings

    # the gap
    deep = min(max(config.depth, config.fusion_depth), n_docs)
    eval_rows = np.array([row[q] for q in eval_qids], dtype=np.int64)
    r_bm25 = bm25.search(eval_qids, [ds.queries[q] for q in eval_qids], deep)
    r_dense = dense.search_embeddings(eval_qids, q_embs[eval_rows], deep)
    rankings = {"bm25": _cut(r_bm25, config.depth), "dense": _cut(r_dense, config.depth),
                "hybrid": rrf([r_bm25, r_dense], min(config.depth, n_docs))}
    gap = _gap(evaluate(ds, config.split, rankings, n_resamples=config.n_resamples, seed=config.seed), config.seed)

    # vocabulary fit on (a seeded sample of) the corpus
    vocab_texts = sample(doc_texts, config.vocab_docs, config.seed)
    vocab = vocab_fit(encoder.model.tokenizer, vocab_texts, top=config.top_terms).to_dict()

    # per-pair overlap, cosine and ranks
    p_rows = np.array([row[q] for _, q, _ in pairs], dtype=np.int64)
    p_docs = np.array([ds.doc_index(d) for _, _, d in pairs], dtype=np.int64)
    unit_q, unit_d = _unit(q_embs), _unit(doc_embs)
    cosine = pair_scores(unit_q[p_rows], unit_d, p_docs) if pairs else np.zeros(0, np.float32)
    centroid = unit_d.mean(axis=0, dtype=np.float64)
    cos_avg = np.asarray(unit_q, dtype=np.float64)[p_rows] @ centroid if pairs else np.zeros(0)
    d_rank = dense_ranks(q_embs[p_rows], doc_embs, p_docs) if pairs else np.zeros(0)
    q_terms = dict(zip(query_ids, _bm25_terms([ds.queries[q] for q in query_ids])))
    uniq_docs = sorted(set(p_docs.tolist()))
    d_terms = dict(zip(uniq_docs, _bm25_terms([doc_texts[i] for i in uniq_docs])))
    b_rank = np.empty(len(pairs), dtype=np.float64)
    by_query: dict[str, list[int]] = {}
    for i, (_, q, _) in enumerate(pairs):
        by_query.setdefault(q, []).append(i)
    everything = np.arange(n_docs, dtype=np.int64)
    for q, members in by_query.items():
        scores = bm25.score_docs(ds.queries[q], everything)
        for i in members:
            b_rank[i] = score_rank(scores, int(p_docs[i]))
    cut = float(min(config.low_rank, max(1, n_docs // 10)))
    flagged = suspicious_mask(b_rank, d_rank, cut)
    rows = [{
        "split": s, "query_id": q, "doc_id": d, "bm25_rank": float(b_rank[i]), "dense_rank": float(d_rank[i]),
        "cosine": float(cosine[i]), "cosine_average_doc": float(cos_avg[i]),
        "term_overlap": term_overlap(q_terms[q], d_terms[int(p_docs[i])]), "suspicious": bool(flagged[i]),
    } for i, (s, q, d) in enumerate(pairs)]
    overlap = {s: _overlap_summary([r for r in rows if r["split"] == s]) for s in ds.splits
               if any(r["split"] == s for r in rows)}

    suspicious = [{"reason": "low_rank", "other_doc_id": "", **r} for r in rows if r["suspicious"]]
    suspicious.sort(key=lambda r: (-min(r["bm25_rank"], r["dense_rank"]), r["split"], r["query_id"], r["doc_id"]))
    dup_rows, dup_summary = _near_duplicate_rows(ds, doc_embs, config.near_dup)
    suspicious += dup_rows

    means = gap["means"]
    eval_overlap = overlap.get(config.split, {})
    vd = verdict(means["bm25"]["ndcg@10"], means["dense"]["ndcg@10"], means["hybrid"]["ndcg@10"],
                 gap["p_vs_bm25"]["dense"]["ndcg@10"], gap["n_queries"], vocab["ratio"],
                 eval_overlap.get("no_shared_term", float("nan")),
                 float(flagged.mean()) if pairs else float("nan"), config.alpha, config.n_resamples)
    dataset = {"documents": n_docs, "queries": len(ds.queries),
               "splits": {s: {"queries": len(ds.positives(s)), "positives": sum(map(len, ds.positives(s).values()))}
                          for s in ds.splits},
               "pairs_analysed": len(pairs), "pairs_total": n_pairs_total}
    notes = list(ds.warnings)
    if len(pairs) < n_pairs_total:
        notes.append(f"overlap and suspicious positives on a seeded sample of {len(pairs)} of {n_pairs_total} pairs")
    if len(vocab_texts) < n_docs:
        notes.append(f"vocabulary fit on a seeded sample of {len(vocab_texts)} of {n_docs} documents")
    if config.split == "train":
        notes.append("the gap is measured on the train split: not held out")
    return Diagnosis(ds.source, config, dataset, gap, vocab, overlap, cut, rows, suspicious, dup_summary, vd, notes)


def _near_duplicate_rows(ds: "Dataset", doc_embs: np.ndarray, threshold: float
                         ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows for positives with a near duplicate, and counts by what the other document is."""
    owners: dict[str, set[tuple[str, str]]] = {}  # doc id -> {(split, query id)} it is a positive of
    for s in ds.splits:
        for q, docs in ds.positives(s).items():
            for d in docs:
                owners.setdefault(d, set()).add((s, q))
    pos_idx = [ds.doc_index(d) for d in owners]
    rows, summary = [], {"pairs": 0, "same_text": 0, "other_unlabelled": 0, "other_positive_same_query": 0,
                         "other_positive_elsewhere": 0}
    for a, b, cos in near_duplicates(doc_embs, pos_idx, threshold):
        da, db = ds.doc_ids[a], ds.doc_ids[b]
        if da not in owners:  # report from the positive's side
            da, db = db, da
        qa, qb = owners[da], owners.get(db, set())
        kind = ("other_positive_same_query" if qa & qb else "other_positive_elsewhere" if qb else "other_unlabelled")
        summary["pairs"] += 1
        summary[kind] += 1
        same = normalize_text(ds.doc_text(da)) == normalize_text(ds.doc_text(db))
        summary["same_text"] += same
        for s, q in sorted(qa):
            rows.append({"reason": "near_duplicate", "split": s, "query_id": q, "doc_id": da, "other_doc_id": db,
                         "cosine": cos, "same_text": same, "other": kind})
    return rows, summary
