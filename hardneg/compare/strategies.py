"""The rows of a comparison, one :class:`Strategy` each in :data:`STRATEGIES` (a new row is one entry here).

A strategy either ranks without training (``rank``), or gives the negatives one trained row learns
from: a hardneg selection on a candidate set (``select``: the trap table reads these too) or negatives
of its own (``negatives``: in-batch only, sentence-transformers' miner). ``recipe`` is the recipe that
reproduces the row with ``hardneg run`` (None: not a hardneg policy), ``skip`` says why a row cannot run
on this recipe and data, ``after`` names the rows whose models it needs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from hardneg.audit import auto_window
from hardneg.candidates import CandidateSet
from hardneg.compare.context import Context
from hardneg.encode import load_model
from hardneg.errors import HardnegError
from hardneg.loop import RunConfig
from hardneg.loop.rounds import remine_config
from hardneg.retrieve.base import Ranking
from hardneg.retrieve.prior import choose_prior_weight, train_prior, with_prior
from hardneg.select import SelectionPolicy, select

__all__: list[str] = []  # internal: import from hardneg.compare

#: negatives per (query id, positive id or None for every positive) -> negative texts
Negatives = Mapping[tuple[str, Any], list[str]]
Selection = tuple[CandidateSet, SelectionPolicy, dict[str, Any]]  # candidates, policy, their cost
TRAIN_POSITIVES = "train_positives"  # a selection's info key: per query the positives its rows may draw


@dataclass(frozen=True)
class Strategy:
    """One row of the table; exactly one of ``rank``, ``select``, ``negatives`` is set."""

    name: str
    doc: str
    rank: Callable[[Context], tuple[dict[str, Ranking], dict[str, Any]]] | None = None
    select: Callable[[Context, int], Selection] | None = None
    negatives: Callable[[Context, int], tuple[Negatives | None, dict[str, Any]]] | None = None
    recipe: Callable[[RunConfig], RunConfig] | None = None
    skip: Callable[[Context], str | None] | None = None
    after: tuple[str, ...] = ()
    fused: bool = True  # its rankings are a dense model's: the unit also scores hybrid(bm25+row)

    @property
    def trains(self) -> bool:
        return self.rank is None


STRATEGIES: dict[str, Strategy] = {}


def _register(s: Strategy) -> None:
    STRATEGIES[s.name] = s


# ---- untrained rows ----------------------------------------------------------------------------
def _base(ctx: Context):
    return ctx.rankings(ctx.base), {}


def _bm25(ctx: Context):
    return ctx.bm25(), {}


def _bm25_prior(ctx: Context):
    """BM25 divided by the query's top score, plus ``w`` x the train-positive prior; ``w`` from dev."""
    prior, base = train_prior(ctx.view), ctx.bm25()  # the bm25 row's rankings: one index, searched once
    w, _ = choose_prior_weight(base["dev"], prior, ctx.config.eval.prior_weights, ctx.dev_ndcg)
    return {s: with_prior(r, prior, w) for s, r in base.items()}, {"prior_weight": w, "weights_tried":
                                                                     list(ctx.config.eval.prior_weights)}


# ---- selected negatives ------------------------------------------------------------------------
def _plain(ctx: Context, **fields: Any) -> SelectionPolicy:
    """No filters, the recipe's k and selection seed: the naive baselines' policy."""
    return SelectionPolicy.unfiltered(num_negatives=ctx.k, seed=ctx.config.policy.seed, **fields)


def _top(retriever: str):
    def choose(ctx: Context, seed: int) -> Selection:
        policy = _plain(ctx)
        cands, cost = ctx.candidates(retriever, policy)
        return cands, policy, cost
    return choose


def _random(ctx: Context, seed: int) -> Selection:
    cands, cost = ctx.candidates("dense", _plain(ctx))
    return cands, _plain(ctx, sampler="random"), {"seconds": cost["seconds"], "encoded": cost["encoded"]}


def _recipe_policy(retriever: str | None = None):
    def choose(ctx: Context, seed: int) -> Selection:
        policy = ctx.config.policy
        cands, cost = ctx.candidates(retriever or ctx.config.mine.retriever, policy)
        return cands, policy, cost
    return choose


def _auto(ctx: Context, seed: int) -> Selection:
    cands, policy, cost = _recipe_policy()(ctx, seed)
    cal, _ = auto_window(cands, ctx.config.audit)
    return cands, replace(policy, window=cal.window, percent=cal.percent), cost | {"window": list(cal.window),
                                                                                   "percent": cal.percent}


def _round(ctx: Context, seed: int) -> Selection:
    folder = ctx.out / "work" / "models" / f"default-s{seed}"
    if not folder.is_dir():
        raise HardnegError(f"default+round needs the default row's model of seed {seed} ({folder}): remove "
                           f"units/default-s{seed}.json to train it again")
    mine, policy = remine_config(ctx.config.mine, ctx.config.policy)
    cands, cost = ctx.candidates(mine.retriever, policy, ctx.model(folder), tag=f"default-s{seed}")
    return cands, policy, cost


def _denoise(ctx: Context, seed: int) -> Selection:
    cands, policy, cost = _recipe_policy()(ctx, seed)
    scored, cost = ctx.rescored(cands, cost)
    above = 0.0 if policy.denoise_above is None else policy.denoise_above
    return scored, replace(policy, denoise_above=above), cost


def selected_negatives(ctx: Context, selection: Selection) -> tuple[Negatives, dict[str, Any]]:
    """Select on the candidates: negative texts per (query, positive or None), and the selection's counts."""
    cands, policy, cost = selection
    mined = select(cands, policy, corpus_doc_ids=ctx.view.doc_ids)
    rows = mined.per_row()
    negatives = {(q, None if p is None or p != p else p): [ctx.view.doc_text(d) for d in negs]
                 for q, p, negs in zip(rows["query_id"], rows["pos_id"], rows["neg_ids"])}
    out = mined.stats["output"]
    info = {"policy": policy.to_dict(), "mine_seconds": cost["seconds"], "encoded": cost["encoded"],
            "selected": {"rows": int(out["rows"]), "negatives": int(out["negatives"])},
            **{k: v for k, v in cost.items() if k not in ("seconds", "encoded")}}
    if policy.pos_top is not None:  # positive consistency: the rows draw only the positives the ranker found
        allowed: dict[str, list[str]] = {}
        for q, p in zip(rows["query_id"], rows["pos_ids"]):
            allowed.setdefault(q, []).extend(p)
        info[TRAIN_POSITIVES] = allowed
        info["selected"]["inconsistent_positives"] = int(mined.stats["inconsistent_positives"])
    return negatives, info


# ---- negatives of their own --------------------------------------------------------------------
def _in_batch(ctx: Context, seed: int):
    return None, {"mine_seconds": 0.0, "encoded": 0}


def _st(extra: Mapping[str, Any]):
    def mine(ctx: Context, seed: int):
        """sentence-transformers' ``mine_hard_negatives`` on the train (query, positive) pairs, the same
        corpus and base model; its n-tuples become the negatives of each (query, positive)."""
        import time

        from datasets import Dataset as HFDataset
        from sentence_transformers.util import mine_hard_negatives

        start = time.perf_counter()
        view, pos = ctx.view, ctx.view.positives("train")
        pairs = [(q, p) for q in pos for p in pos[q]]
        data = HFDataset.from_dict({"anchor": [view.queries[q] for q, _ in pairs],
                                    "positive": [view.doc_text(p) for _, p in pairs]})
        out = mine_hard_negatives(data, load_model(ctx.config.encoder), corpus=ctx.texts, num_negatives=ctx.k,
                                  sampling_strategy="top", output_format="n-tuple", batch_size=64, verbose=False,
                                  query_prompt=ctx.config.encoder.query_prompt or None,
                                  corpus_prompt=ctx.config.encoder.passage_prompt or None, **extra)
        by_text: dict[tuple[str, str], list[str]] = {}
        columns = [c for c in out.column_names if c.startswith("negative")]
        for r in out:
            by_text.setdefault((r["anchor"], r["positive"]), [r[c] for c in columns])
        negatives = {(q, p): by_text[key] for q, p in pairs
                     if (key := (view.queries[q], view.doc_text(p))) in by_text}
        return negatives, {"mine_seconds": time.perf_counter() - start, "st_options": dict(extra),
                           "encoded": len(ctx.texts) + len(pairs)}
    return mine


# ---- recipes that reproduce a row ------------------------------------------------------------
def _once(config: RunConfig, **changes: Any) -> RunConfig:
    return replace(config, loop=replace(config.loop, rounds=0), **changes)


def _policy_recipe(retriever: str | None, sampler: str | None = None, unfiltered: bool = False):
    def recipe(config: RunConfig) -> RunConfig:
        p = config.policy
        policy = (SelectionPolicy.unfiltered(num_negatives=p.num_negatives, seed=p.seed,
                                             **({"sampler": sampler} if sampler else {})) if unfiltered else p)
        mine = replace(config.mine, retriever=retriever) if retriever else config.mine
        return _once(config, mine=mine, policy=policy, auto_window=False)
    return recipe


def _needs_multi(ctx: Context) -> str | None:
    if not any(len(docs) >= 2 for docs in ctx.view.positives("train").values()):
        return "no train query has two or more positives: the label audit cannot calibrate a window"
    return None


def _needs_ce(ctx: Context) -> str | None:
    return None if ctx.config.denoise.cross_encoder else "the recipe names no [denoise] cross_encoder"


for _s in (
    Strategy("base", "the starting model, untuned", rank=_base),
    Strategy("bm25", "BM25 itself", rank=_bm25, fused=False),
    Strategy("bm25+prior", "BM25 (per-query normalised) + w x the train-positive document prior, w chosen on dev: "
                           "a free alternative", rank=_bm25_prior, fused=False),
    Strategy("in-batch", "MNRL with in-batch negatives only (k = 0)", negatives=_in_batch,
             recipe=_policy_recipe(None, "none", unfiltered=True)),
    Strategy("random", "k documents drawn uniformly from the corpus (minus the positives)", select=_random,
             recipe=_policy_recipe("dense", "random", unfiltered=True)),
    Strategy("bm25-top", "BM25's top k after excluding known positives, no other filter", select=_top("bm25"),
             recipe=_policy_recipe("bm25", unfiltered=True)),
    Strategy("dense-top", "the base model's top k after excluding known positives, no other filter",
             select=_top("dense"), recipe=_policy_recipe("dense", unfiltered=True)),
    Strategy("default", "the recipe's own mining and policy", select=_recipe_policy(),
             recipe=lambda c: _once(c)),
    Strategy("hybrid", "the recipe's policy on a hybrid (RRF of BM25 and the base model) teacher",
             select=_recipe_policy("hybrid"), recipe=_policy_recipe("hybrid")),
    Strategy("auto", "the recipe's policy with the window (and percent) calibrated by the label audit",
             select=_auto, recipe=lambda c: _once(c, auto_window=True), skip=_needs_multi),
    Strategy("default+round", "default, re-mined once with its own trained model, trained again from base",
             select=_round, recipe=lambda c: replace(c, loop=replace(c.loop, rounds=1, min_gain=-1.0)),
             after=("default",)),
    Strategy("denoise", "the recipe's policy plus cross-encoder denoising (drops candidates it scores above "
                        "denoise_above, default 0)", select=_denoise, recipe=lambda c: _once(c), skip=_needs_ce),
    Strategy("st-default", "sentence-transformers' mine_hard_negatives, its defaults (top k, n-tuple)",
             negatives=_st({})),
    Strategy("st-margin", "the same with relative_margin=0.05 (its positive-aware recipe)",
             negatives=_st({"relative_margin": 0.05})),
):
    _register(_s)


def describe() -> str:
    """One line per strategy: the CLI's and the docs' list."""
    return "\n".join(f"{s.name}: {s.doc}" for s in STRATEGIES.values())

