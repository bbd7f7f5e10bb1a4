"""The hybrids a run reports and the system it says to deploy.

A team that does not fine-tune still has four free systems: BM25, BM25 plus the train-positive
document prior (``bm25+prior``, :func:`prior_rankings`), the untuned model and its reciprocal rank
fusion with BM25, ``hybrid(bm25+base)``. A run therefore also fuses BM25 with the tuned model,
``hybrid(bm25+tuned)``, and reports all six on test. Use :func:`hybrid_rankings` to fuse rankings
the run already made (no retrieval: RRF of the BM25 and dense top-``depth`` lists) with RRF k chosen
on dev from one grid for both hybrids (:func:`choose_rrf_k`), and :func:`choose_deploy` for the
system to deploy: the best of the six on dev NDCG@10, a free one whenever it ties. Test decides
nothing here; it only measures the choices (:data:`PAIRS` are the comparisons tested on it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from hardneg.errors import HardnegError
from hardneg.evaluate import EvalResult, format_p, retrieve_splits
from hardneg.loop.config import EvalConfig
from hardneg.loop.rounds import split_dev
from hardneg.metrics import per_query_scores
from hardneg.retrieve import Kind, RetrieverSpec
from hardneg.retrieve.base import Ranking
from hardneg.retrieve.fusion import rrf
from hardneg.retrieve.prior import choose_prior_weight, train_prior, with_prior

__all__: list[str] = []  # internal: import from hardneg.loop

HYBRID_BASE, HYBRID_TUNED = "hybrid(bm25+base)", "hybrid(bm25+tuned)"
PRIOR = "bm25+prior"  #: BM25 plus the train-positive document prior (:mod:`hardneg.retrieve.prior`)
#: RRF k when no dev split can choose it (Cormack et al., 2009)
RRF_K_WITHOUT_DEV = 60
#: what a team gets without fine-tuning, in the order a tie on dev prefers (the simplest first)
FREE = ("bm25", PRIOR, "base", HYBRID_BASE)
TUNED = ("tuned", HYBRID_TUNED)
#: the systems of the final table, in display order
SYSTEMS = ("bm25", PRIOR, "base", HYBRID_BASE, "tuned", HYBRID_TUNED)
#: the comparisons tested on test (Holm across all of them, per metric): each tuned system vs each free one
PAIRS = tuple((t, f) for t in TUNED for f in FREE)
#: the dev metric that chooses RRF k and the system to deploy
CHOICE_METRIC = "ndcg@10"


@dataclass(frozen=True)
class HybridChoice:
    """One hybrid's RRF k, chosen on dev, and the dev NDCG@10 of every k of the grid."""

    dense: str  # "base" or "tuned": the ranking fused with BM25
    rrf_k: int
    dev: dict[int, float]


def fuse(bm25: Ranking, dense: Ranking, rrf_k: int, depth: int) -> Ranking:
    """RRF of the BM25 and the dense top-``depth`` rankings (the same queries), ``depth`` documents kept."""
    return rrf([bm25, dense], depth, rrf_k=rrf_k, depth=depth)


def choose_rrf_k(dev_qrels: Mapping[str, Mapping[str, int]], bm25: Ranking, dense: Ranking, grid: Sequence[int],
                 depth: int) -> tuple[int, dict[int, float], Ranking]:
    """The k of ``grid`` whose fusion scores best on dev NDCG@10 (the first of the grid on a tie),
    each k's dev score, and the dev fusion at that k."""
    fused = {int(k): fuse(bm25, dense, k, depth) for k in grid}
    scores = {k: mean_ndcg(dev_qrels, ranking) for k, ranking in fused.items()}
    best = max(scores.values())
    k = next(k for k, v in scores.items() if v == best)
    return k, scores, fused[k]


@dataclass(frozen=True)
class PriorChoice:
    """``bm25+prior``: the prior's weight chosen on dev, each weight's dev NDCG@10, the dev and test rankings."""

    weight: float
    dev_scores: dict[float, float]
    dev: Ranking
    test: Ranking

    def record(self) -> dict[str, Any]:
        """``metrics.json``'s ``prior``."""
        return {"system": PRIOR, "weight": self.weight, "chosen_on": f"dev {CHOICE_METRIC}",
                "dev": [{"weight": w, CHOICE_METRIC: v} for w, v in self.dev_scores.items()]}


def prior_rankings(view, dev_qrels: Mapping[str, Mapping[str, int]], dev_bm25: Ranking, test_bm25: Ranking,
                   weights: Sequence[float]) -> PriorChoice:
    """``bm25+prior`` on dev and test: the train-positive prior of ``view``'s train split, its weight
    chosen on dev NDCG@10 (:func:`~hardneg.retrieve.prior.choose_prior_weight`)."""
    prior = train_prior(view, dev_bm25.doc_ids)
    w, scores = choose_prior_weight(dev_bm25, prior, weights, lambda r: mean_ndcg(dev_qrels, r))
    return PriorChoice(w, scores, with_prior(dev_bm25, prior, w), with_prior(test_bm25, prior, w))


def hybrid_name(dense: str) -> str:
    """The name of BM25 fused with the ranking ``dense``: ``hybrid(bm25+dense)``."""
    return f"hybrid(bm25+{dense})"


def bm25_hybrids(dev_qrels: Mapping[str, Mapping[str, int]] | None, dev: Mapping[str, Ranking] | None,
                 test: Mapping[str, Ranking], dense: Sequence[str], grid: Sequence[int], depth: int,
                 bm25: str = "bm25") -> tuple[dict[str, HybridChoice], dict[str, Ranking], dict[str, Ranking]]:
    """``hybrid(bm25+NAME)`` for each ``NAME`` of ``dense``: its RRF k chosen on ``dev`` (rankings by the
    same names as ``test``) from the one ``grid``, then fused at that k on dev and on test. Without dev
    (``dev`` None) every hybrid takes :data:`RRF_K_WITHOUT_DEV`. Returns the choices and the fused dev
    and test rankings, by hybrid name."""
    choices, dev_fused, test_fused = {}, {}, {}
    for name in dense:
        hybrid = hybrid_name(name)
        if dev is None:
            k, scores = RRF_K_WITHOUT_DEV, {}
        else:
            k, scores, dev_fused[hybrid] = choose_rrf_k(dev_qrels or {}, dev[bm25], dev[name], grid, depth)
        choices[hybrid] = HybridChoice(name, k, scores)
        test_fused[hybrid] = fuse(test[bm25], test[name], k, depth)
    return choices, dev_fused, test_fused


def with_eval_hybrids(ds, split: str, specs: Sequence[str], data_config, evaluation: EvalConfig, encoder, docs=None,
                      cache_dir=None, working=None, say=None) -> tuple[Any, dict[str, Ranking], list[str]]:
    """`hardneg eval`'s rankings of ``split`` (:func:`~hardneg.evaluate.retrieve_splits` of ``specs``
    over ``docs``, chunks of ``ds``, or ``ds``) plus ``hybrid(bm25+NAME)`` for each dense retriever when
    one is BM25, each hybrid's RRF k chosen on dev from ``evaluation.rrf_k`` (the dev split, else the
    train queries `hardneg run` holds out with ``evaluation.seed``; none when ``split`` is dev itself,
    then k = :data:`RRF_K_WITHOUT_DEV`). Returns the dataset the split was scored on, the rankings and
    notes on the choice."""
    docs = None if docs is ds else docs  # unchunked: each split's dataset is its own corpus
    extra = {k: v for k, v in (("working", working), ("say", say)) if v is not None}

    def retrieve(dataset, splits):
        return retrieve_splits(dataset, splits, specs, encoder, docs, evaluation.depth, cache_dir, **extra)

    grid, depth, seed = evaluation.rrf_k, evaluation.depth, evaluation.seed
    parsed = [RetrieverSpec.parse(s) for s in specs]
    lexical = [p.name for p in parsed if p.kind is Kind.BM25]
    dense = [p.name for p in parsed if p.kind is Kind.DENSE]
    if not lexical or not dense:
        return ds, retrieve(ds, [split])[split], []
    view, source = None, ""
    if split != "dev":
        try:
            view, source = split_dev(ds, data_config, seed)
        except HardnegError as exc:
            source = str(exc)
    ranked = retrieve(view or ds, [split] + (["dev"] if view is not None else []))
    dev_qrels = view.split_qrels("dev") if view is not None else None
    choices, _, fused = bm25_hybrids(dev_qrels, ranked.get("dev"), ranked[split], dense, grid, depth, lexical[0])
    if view is None:
        notes = [f"RRF k {RRF_K_WITHOUT_DEV} for every hybrid: no dev split to choose it on ({source or split})"]
    else:
        notes = [f"RRF k of each hybrid chosen on dev ({source}) from {list(grid)}: "
                 + ", ".join(f"{h} k = {c.rrf_k}" for h, c in choices.items())]
    return view or ds, {**ranked[split], **fused}, notes


def hybrid_rankings(dev_qrels: Mapping[str, Mapping[str, int]], dev: Mapping[str, Ranking],
                    test: Mapping[str, Ranking], grid: Sequence[int], depth: int
                    ) -> tuple[dict[str, HybridChoice], dict[str, Ranking], dict[str, Ranking]]:
    """``hardneg run``'s two hybrids (:func:`bm25_hybrids` of ``base`` and ``tuned``). Returns the choices
    and the dev and test rankings of all six systems, in :data:`SYSTEMS` order."""
    choices, dev_fused, test_fused = bm25_hybrids(dev_qrels, dev, test, ("base", "tuned"), grid, depth)
    dev_all, test_all = {**dev, **dev_fused}, {**test, **test_fused}
    return choices, {s: dev_all[s] for s in SYSTEMS}, {s: test_all[s] for s in SYSTEMS}


def choose_deploy(dev_means: Mapping[str, float], tuned_kept: bool) -> str:
    """The system to deploy: the best on dev NDCG@10 of the free systems and (when a round was kept:
    only then is a tuned model written) the tuned ones. A tuned system must beat every free one:
    a tie deploys the free one, and among free ones the simplest."""
    candidates = FREE + (TUNED if tuned_kept else ())
    best = candidates[0]
    for s in candidates[1:]:
        if dev_means[s] > dev_means[best]:
            best = s
    return best


def deploy_record(deploy: str, dev_means: Mapping[str, float], result: EvalResult, tuned_kept: bool) -> dict[str, Any]:
    """``metrics.json``'s ``deploy``: the choice, the dev scores that made it, its test NDCG@10 and,
    for a tuned system, its margin over the best free system on test (the strongest alternative),
    with that pair's Holm-adjusted p and the CI of the difference; ``sentence`` states it."""
    means = {s: v[CHOICE_METRIC] for s, v in result.means().items()}
    record: dict[str, Any] = {"system": deploy, "chosen_on": f"dev {CHOICE_METRIC}", "tuned_candidates": tuned_kept,
                              "dev": {s: dev_means[s] for s in SYSTEMS}, "test": means[deploy]}
    if deploy in FREE:
        record["sentence"] = (f"No tuned system beats the best free system {deploy} on dev: deploy {deploy} "
                              f"(test NDCG@10 {means[deploy]:.4f}).")
        return record
    best_free = max(FREE, key=lambda s: (means[s], -FREE.index(s)))
    c = result.comparison(deploy, best_free, CHOICE_METRIC)
    record |= {"best_free": best_free, "diff": c.diff, "ci95": list(c.ci95), "p": c.p}
    record["sentence"] = (f"Deploy {deploy}: test NDCG@10 {means[deploy]:.4f}, {c.diff:+.4f} over the best free "
                          f"system {best_free} (p = {format_p(c.p, result.n_resamples)}, 95% CI "
                          f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}]).")
    return record


def hybrid_record(choices: Mapping[str, HybridChoice], grid: Sequence[int]) -> dict[str, Any]:
    """``metrics.json``'s ``hybrid``: the grid, and each hybrid's chosen k and dev score per k (in grid order)."""
    return {"fusion": "reciprocal rank fusion of the BM25 and dense top-depth rankings",
            "rrf_k_grid": [int(k) for k in grid], "chosen_on": f"dev {CHOICE_METRIC}",
            **{name: {"dense": c.dense, "rrf_k": c.rrf_k,
                      "dev": [{"rrf_k": k, CHOICE_METRIC: v} for k, v in c.dev.items()]} for name, c in choices.items()}}


def mean_ndcg(qrels: Mapping[str, Mapping[str, int]], ranking: Ranking) -> float:
    """A ranking's mean NDCG@10 (:data:`CHOICE_METRIC`) on ``qrels``."""
    return float(per_query_scores(qrels, ranking, [CHOICE_METRIC])[CHOICE_METRIC].mean())


def dev_means(qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Ranking],
              choices: Mapping[str, HybridChoice]) -> dict[str, float]:
    """Dev NDCG@10 of each of :data:`SYSTEMS`: the hybrids' from their choice of k (scored there)."""
    scored = {name: c.dev[c.rrf_k] for name, c in choices.items()}
    return {s: scored[s] if s in scored else mean_ndcg(qrels, rankings[s]) for s in SYSTEMS}
