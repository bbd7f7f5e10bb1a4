"""What every row of one comparison shares (:class:`Context`): the data and its dev split (``hardneg run``'s
:func:`~hardneg.loop.split_dev`), the base model, the budget, candidate sets mined once per retriever and
model (stored under ``OUT/work/candidates``), and the per-query scores of a ranking on dev and test."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hardneg.candidates import CandidateSet
from hardneg.checkpoint import digest
from hardneg.compare.config import Budget, CompareConfig, budget_of
from hardneg.crossencoder import rescore_with_report
from hardneg.data import Dataset
from hardneg.encode import Encoder
from hardneg.encode.cache import EmbeddingCache
from hardneg.errors import HardnegError
from hardneg.files import atomic_write_json
from hardneg.loop import RunConfig, split_dev
from hardneg.loop.hybrid import bm25_hybrids, hybrid_name
from hardneg.loop.rounds import _bm25_rankings, _Dense
from hardneg.metrics import per_query_scores
from hardneg.mine import dataset_digest, mine_candidates
from hardneg.precision import machine_info, resolved
from hardneg.retrieve import Kind, RetrieverSpec
from hardneg.retrieve.base import Ranking
from hardneg.retrieve.prior import train_prior
from hardneg.select import SelectionPolicy

__all__: list[str] = []  # internal: import from hardneg.compare

#: the table's metrics, every one from :func:`hardneg.metrics.per_query_scores`
METRICS = ("ndcg@10", "recall@100", "mrr@10")
#: recipe keys that decide nothing a unit computes (paths, progress); of [eval] only depth counts
_NOT_DECISIVE = {"data": ("path", "corpus"), "train": ("show_progress", "logging_steps", "checkpoint_dir")}
#: options added after units were stored, at the value that computes what those units computed: left out
#: of the fingerprint at that value, so the stored units stay valid (any other value changes the hash)
_ADDED_AT_OFF = {"train": {"hardness": "off", "hardness_strength": 5.0, "patience": None, "positives": "each",
                           "attention_dropout": None},
                 "policy": {"pos_top": None, "promote_above": None, "promote_near_dup": None}}


class Context:
    """One comparison's shared state; rows ask it for candidates, models and scores."""

    def __init__(self, config: RunConfig, options: CompareConfig, data: Dataset, out: Path,
                 say: Callable[[str], None], warn: Callable[[str], None] | None = None):
        if config.mine.chunk_tokens is not None:
            raise HardnegError("hardneg compare does not mine over chunks yet: unset [mine] chunk_tokens")
        self.config, self.options, self.data, self.out, self.say = config, options, data, out, say
        self.warn = warn or say
        self.view, self.dev_description = split_dev(data, config.data, config.loop.seed)
        self.test = config.data.test_split
        data.split_qrels(self.test)  # fail before any work when the test split is missing
        self.cache = EmbeddingCache(config.cache_dir) if config.cache_dir else EmbeddingCache()
        self.texts = self.view.doc_texts()
        self.base = self.dense(Encoder(config.encoder, cache=self.cache))
        self.k = config.policy.num_negatives
        self.budget: Budget = budget_of(self.view, config.train, self.k)
        self.hubs = hub_documents(self.view, options.hub_share)
        self._cands: dict[str, tuple[CandidateSet, dict[str, Any]]] = {}
        self._bm25: dict[str, Ranking] | None = None
        machine = machine_info()
        self.machine = {"cpu": machine["cpu"], "cuda": machine["cuda"],
                        "precision": resolved(config.encoder, config.train)}

    # ---- models and rankings ----------------------------------------------------------------
    def dense(self, encoder: Encoder) -> _Dense:
        return _Dense(encoder, self.view, self.texts)

    def model(self, folder: Path) -> _Dense:
        """A trained model's exact retriever over the corpus."""
        return self.dense(Encoder(replace(self.config.encoder, model=str(folder)), cache=self.cache))

    def rankings(self, dense: _Dense | None) -> dict[str, Ranking]:
        """Dev and test rankings of a dense model, or of BM25 (``dense`` None)."""
        depth = self.config.eval.depth
        if dense is None:
            test, dev = _bm25_rankings(self.view, self.test, self.view, depth, None, self.texts)
            return {"dev": dev, self.test: test}
        return {s: dense.ranking(self.view, s, depth) for s in ("dev", self.test)}

    def scores(self, rankings: dict[str, Ranking]) -> dict[str, Any]:
        """Per-query metrics of dev and test (test also without the hub documents), as JSON lists."""
        out = {"dev": _split_scores(self.view.split_qrels("dev"), rankings["dev"]),
               "test": _split_scores(self.view.split_qrels(self.test), rankings[self.test])}
        qrels, ranking = without(self.view.split_qrels(self.test), rankings[self.test], self.hubs)
        out["test"]["nohub"] = _split_scores(qrels, ranking, ("ndcg@10",))
        return out

    def bm25(self) -> dict[str, Ranking]:
        """BM25's dev and test rankings, computed once (every hybrid fuses with them)."""
        if self._bm25 is None:
            self._bm25 = self.rankings(None)
        return self._bm25

    def hybrid_scores(self, rankings: dict[str, Ranking]) -> dict[str, Any]:
        """``hybrid(bm25+row)``: RRF of BM25 and the row's dense rankings, its k chosen on dev from
        ``[eval] rrf_k`` (``hardneg run``'s grid and rule); the grid, the k and per-query dev and test scores."""
        grid, bm25, dev_qrels = list(self.config.eval.rrf_k), self.bm25(), self.view.split_qrels("dev")
        choices, dev, test = bm25_hybrids(dev_qrels, {"bm25": bm25["dev"], "row": rankings["dev"]},
                                          {"bm25": bm25[self.test], "row": rankings[self.test]}, ["row"], grid,
                                          self.config.eval.depth)
        name = hybrid_name("row")
        c = choices[name]
        return {"rrf_k_grid": grid, "rrf_k": c.rrf_k, "dev_ndcg@10_by_k": [c.dev[x] for x in grid],
                "dev": _split_scores(dev_qrels, dev[name], ("ndcg@10",)),
                "test": _split_scores(self.view.split_qrels(self.test), test[name])}

    def dev_ndcg(self, ranking: Ranking) -> float:
        """Mean dev NDCG@10 of a ranking (choosing a row's free parameter on dev, never on test)."""
        return float(np.mean(_split_scores(self.view.split_qrels("dev"), ranking, ("ndcg@10",))["ndcg@10"] or [0.0]))

    # ---- candidates ---------------------------------------------------------------------------
    def candidates(self, retriever: str, policy: SelectionPolicy, miner: _Dense | None = None,
                   tag: str = "base") -> tuple[CandidateSet, dict[str, Any]]:
        """The train queries' candidates under ``retriever`` (mined by ``miner``, default the base model),
        with the scorers ``policy`` ranks and scores by; mined once, stored, and their cost."""
        mine = replace(self.config.mine, retriever=retriever, rank_by=policy.rank_by, score_by=policy.score_by)
        name = f"{retriever.split(':')[0].split('=')[0]}-{tag}-{digest(mine.__dict__ | {'tag': tag})[:12]}"
        if name in self._cands:
            return self._cands[name]
        file = self.out / "work" / "candidates" / f"{name}.parquet"
        cost_file = file.with_suffix(".json")
        if file.is_file() and cost_file.is_file():
            found = CandidateSet.read(file), json.loads(cost_file.read_text(encoding="utf-8"))
        else:
            start = time.perf_counter()
            dense = miner or self.base
            cands = mine_candidates(self.view, mine, self.config.encoder, cache=self.cache, model=dense.encoder,
                                    doc_texts=self.texts)
            cost = {"seconds": time.perf_counter() - start, "encoded": self._mining_texts(mine)}
            cands.write(file)
            atomic_write_json(cost_file, cost)
            found = cands, cost
        self._cands[name] = found
        return found

    def rescored(self, cands: CandidateSet, cost: dict[str, Any]) -> tuple[CandidateSet, dict[str, Any]]:
        """``cands`` with the recipe's cross-encoder scores (``[denoise]``) in its window; stored once."""
        cfg = self.config.denoise
        key = f"ce-{digest([cfg.cross_encoder, cfg.window, len(cands.table), cands.meta.get('scorers')])[:12]}"
        if key in self._cands:
            return self._cands[key]
        file = self.out / "work" / "candidates" / f"{key}.parquet"
        if file.is_file() and file.with_suffix(".json").is_file():
            found = CandidateSet.read(file), json.loads(file.with_suffix(".json").read_text(encoding="utf-8"))
        else:
            start = time.perf_counter()
            scored, report = rescore_with_report(cands, self.view, cfg.cross_encoder, window=cfg.window,
                                                 batch_size=cfg.batch_size, cache=self.cache, progress=False)
            found = scored, {"seconds": cost["seconds"] + time.perf_counter() - start,
                             "encoded": cost["encoded"] + int(report.pairs)}
            scored.write(file)
            atomic_write_json(file.with_suffix(".json"), found[1])
        self._cands[key] = found
        return found

    def _mining_texts(self, mine) -> int:
        """Texts a mining embeds (corpus + train queries per dense scorer): a count, not a cache's luck."""
        specs = [mine.retriever, *mine.teachers]
        dense = sum(RetrieverSpec.parse(s).kind is not Kind.BM25 for s in specs)
        return dense * (len(self.texts) + len(self.view.positives("train")))

    # ---- what decides a unit ----------------------------------------------------------------
    def fingerprint(self) -> dict[str, str]:
        """The recipe's decisive keys, the data, the base model's weights and the precision."""
        recipe = self.config.to_dict()
        recipe.pop("cache_dir", None)
        for section, keys in _NOT_DECISIVE.items():
            for key in keys:
                recipe[section].pop(key, None)
        for section, values in _ADDED_AT_OFF.items():
            if all(recipe[section].get(k) == v for k, v in values.items()):
                for key in values:
                    recipe[section].pop(key)
        recipe["loop"] = {"seed": self.config.loop.seed}  # the dev hold-out; the rounds are the rows' business
        recipe["eval"] = {"depth": self.config.eval.depth}  # the rest of [eval] is `hardneg run`'s and the table's
        ds = self.view
        return {"recipe": digest(recipe), "data": dataset_digest(ds, ds.doc_ids, self.texts),
                "base model": self.base.fingerprint,
                "precision": digest(self.machine["precision"])}


def hub_documents(view: Dataset, share: float) -> set[str]:
    """Documents positive for more than ``share`` of the train queries (NFCorpus' hubs)."""
    return {view.doc_ids[i] for i in np.flatnonzero(train_prior(view) > share)}


def without(qrels: dict[str, dict[str, int]], ranking: Ranking, docs: set[str]
            ) -> tuple[dict[str, dict[str, int]], Ranking]:
    """Qrels and ranking with ``docs`` removed: they leave the qrels, and move (in order) behind every
    other document of each ranked list; queries left without a positive leave both."""
    qrels = {q: {d: g for d, g in rel.items() if d not in docs} for q, rel in qrels.items()}
    kept = [q for q in ranking.query_ids if any(g > 0 for g in qrels.get(q, {}).values())]
    ranking = ranking.subset(kept)
    is_out = np.array([d in docs for d in ranking.doc_ids], dtype=bool)
    order = np.argsort(is_out[ranking.indices], axis=1, kind="stable")
    indices = np.take_along_axis(ranking.indices, order, axis=1)
    scores = np.broadcast_to(-np.arange(indices.shape[1], dtype=np.float32), indices.shape).copy()
    return {q: qrels[q] for q in kept}, Ranking(kept, ranking.doc_ids, indices, scores)


def _split_scores(qrels, ranking: Ranking, metrics=METRICS) -> dict[str, list]:
    if not ranking.query_ids:
        return {"query_ids": [], **{m: [] for m in metrics}}
    scores = per_query_scores(qrels, ranking, list(metrics))
    return {"query_ids": list(ranking.query_ids), **{m: [float(x) for x in scores[m]] for m in metrics}}
