"""The whole loop: baselines -> mine -> select -> train -> re-mining rounds -> held-out evaluation.

Use :func:`run` (or ``hardneg run RECIPE.toml``) to take a dataset from "the general model
loses to BM25" to a fine-tuned model whose lift over the base model and BM25 is measured
on the test split, with paired significance and bootstrap intervals.

Rounds follow ANCE: round 0 mines with the starting model; each later round mines again
with the last kept model (the weight-keyed embedding cache then misses: new weights, new
vectors) and trains again from ``round_init`` (the base model or the previous one). A round
is kept only if it beats the incumbent on dev NDCG@10 (:func:`gate`); round 0 is judged
against the starting model itself, so a fine-tune that does not help is never reported as
the result. The loop stops after ``rounds`` re-mining rounds or at the first round not kept.
Dev is the dataset's dev split, or train queries held out once for every round
(:func:`split_dev`), never the test split.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from hardneg.audit import AuditConfig
from hardneg.data import Dataset, load_dataset
from hardneg.encode import EncoderConfig
from hardneg.errors import HardnegError
from hardneg.options import as_enum, check, option
from hardneg.evaluate import N_RESAMPLES, EvalResult, bootstrap_ci, evaluate, format_p, paired_randomization_test
from hardneg.files import atomic_write_json, atomic_write_text
from hardneg.mine import MineConfig
from hardneg.precision import machine_info, resolve_encode, resolve_train
from hardneg.crossencoder import DenoiseConfig
from hardneg.sampling import holdout, holdout_size
from hardneg.retrieve.base import Ranking
from hardneg.select import SelectionPolicy
from hardneg.train import TrainConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from hardneg.encode import Encoder

__all__ = ["DataConfig", "EvalConfig", "GateDecision", "LoopConfig", "RoundGate", "RoundInit", "RoundPlan",
           "RoundResult", "RunConfig", "RunResult", "format_run_table", "gate", "plan_round", "run", "split_dev"]

log = logging.getLogger(__name__)

GATE_METRIC = "ndcg@10"
SYSTEMS = ("bm25", "base", "tuned")  # rows of the final table, in display order


class RoundInit(str, Enum):
    """Where each re-mining round starts training from."""

    BASE = "base"  # the starting model: rounds differ only by their negatives (default)
    PREVIOUS = "previous"  # the last kept model: training continues


class RoundGate(str, Enum):
    """When a round is kept: any dev NDCG@10 gain, or only a significant one."""

    GAIN = "gain"
    SIGNIFICANT = "significant"


@dataclass(frozen=True)
class DataConfig:
    """The dataset and its splits. ``path`` is a BEIR folder or a pairs JSONL (with ``corpus``).

    ``dev_split`` None: the ``dev`` split if there is one, else ``dev_holdout`` of the train
    queries (at most ``dev_max_queries``) are held out once, for every round, and never
    trained on. ``test_split`` is only ever used for the final evaluation.
    """

    path: str = option("", "A BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/*.tsv), or a pairs JSONL "
                           "together with corpus.", cli="--data")
    corpus: str | None = option(None, "Corpus JSONL when the data is a pairs file.")
    skip_unknown: bool = option(False, "Drop qrels rows naming unknown queries/documents (counted in a warning) "
                                       "instead of failing.", cli="--skip-unknown")
    dev_split: str | None = option(None, "Split evaluated while training and judging rounds; none: dev if present, "
                                         "else held-out train queries.")
    dev_holdout: float = option(0.2, "Without a dev split: this fraction of the train queries is held out, never "
                                     "trained on.", ge=0, lt=1)
    dev_max_queries: int = option(500, "... at most this many.", ge=1)
    test_split: str = option("test", "Only ever used for the final evaluation.")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class LoopConfig:
    """Re-mining rounds and how each is judged on dev.

    ``rounds`` counts re-mining rounds after the first fine-tune (0: train once). A round is
    kept when its dev NDCG@10 beats the incumbent's by more than ``min_gain`` and, with
    ``round_gate = significant``, the paired randomization test gives p < ``alpha``.
    ``seed`` draws the held-out dev queries and seeds the dev tests.
    """

    rounds: int = option(1, "Re-mining rounds after the first fine-tune (ANCE-style); 0: train once.", ge=0)
    round_init: RoundInit = option(RoundInit.BASE, "Each round trains from: base (the starting model) | previous "
                                                   "(the last kept model).")
    round_gate: RoundGate = option(RoundGate.GAIN, "Keep a round when dev NDCG@10 improves: gain (any) | "
                                                   "significant (paired p < alpha).")
    alpha: float = option(0.05, "Significance level of round_gate significant.", gt=0, lt=1)
    min_gain: float = option(0.0, "The dev NDCG@10 gain a round must exceed.")
    seed: int = option(0, "Seed of the held-out dev draw and of the dev tests.")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class EvalConfig:
    """The final evaluation: documents retrieved per query, seed of the tests and intervals."""

    depth: int = option(100, "Documents retrieved per query (metrics use @10 and @100).", ge=10)
    seed: int = option(0, "Seed of the paired randomization tests and bootstrap intervals.")
    n_resamples: int = option(N_RESAMPLES, "Sign flips per randomization test.", ge=100)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; :mod:`hardneg.recipe` builds it from a TOML file.

    ``encoder`` embeds for mining and evaluation (its ``model`` is the base model);
    ``policy.rank_by`` / ``policy.score_by`` also name the mining scorers, as on the CLI.
    ``auto_window``: each round audits its candidates and takes the window (and percent)
    that :func:`hardneg.audit.calibrate` picks under ``audit.target`` (recipe ``window = "auto"``).
    """

    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    cache_dir: str | None = None
    mine: MineConfig = field(default_factory=MineConfig)
    policy: SelectionPolicy = field(default_factory=SelectionPolicy)
    fmt: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    auto_window: bool = False

    def to_dict(self) -> dict[str, Any]:
        def plain(x: Any) -> Any:
            if isinstance(x, Enum):
                return x.value
            if isinstance(x, (list, tuple)):
                return [plain(v) for v in x]
            if isinstance(x, dict):
                return {k: plain(v) for k, v in x.items()}
            return x

        names = ("data", "encoder", "mine", "loop", "eval", "audit", "denoise")
        out = {name: plain(asdict(getattr(self, name))) for name in names}
        out |= {"policy": self.policy.to_dict(), "train": self.train.to_dict(), "cache_dir": self.cache_dir,
                "fmt": self.fmt, "auto_window": self.auto_window}
        return out


# ---- pure decisions -----------------------------------------------------------------------
@dataclass(frozen=True)
class GateDecision:
    """Whether a round's model replaces the incumbent, and why."""

    keep: bool
    gain: float  # mean dev NDCG@10 of the candidate minus the incumbent's
    p: float  # two-sided paired randomization test, unadjusted
    reason: str


def gate(candidate: np.ndarray, incumbent: np.ndarray, rule: RoundGate | str = RoundGate.GAIN,
         alpha: float = 0.05, min_gain: float = 0.0, seed: int = 0,
         n_resamples: int = N_RESAMPLES) -> GateDecision:
    """Judge per-query dev scores of a new model against the incumbent's (same queries, same order).

    Kept when the mean gain exceeds ``min_gain`` and, for ``significant``, p < ``alpha``. A
    tie is not a gain: the incumbent (first of all the starting model) stays.
    """
    cand, inc = np.asarray(candidate, np.float64), np.asarray(incumbent, np.float64)
    if cand.shape != inc.shape or cand.ndim != 1 or cand.size == 0:
        raise HardnegError(f"gate needs two equal-length, non-empty score vectors, got {cand.shape} and {inc.shape}")
    rule = as_enum(RoundGate, rule, "round_gate")
    gain = float(cand.mean() - inc.mean())
    p = paired_randomization_test(cand, inc, n_resamples, seed)
    if not gain > min_gain:
        return GateDecision(False, gain, p, f"no gain: {gain:+.4f} <= {min_gain:g}")
    if rule is RoundGate.SIGNIFICANT and not p < alpha:
        return GateDecision(False, gain, p, f"gain {gain:+.4f} not significant (p={format_p(p, n_resamples)} >= {alpha:g})")
    return GateDecision(True, gain, p, f"gain {gain:+.4f} (p={format_p(p, n_resamples)})")


@dataclass(frozen=True)
class RoundPlan:
    """Which model mines a round's negatives and which one its training starts from."""

    round: int
    miner: str  # "base" or "r<i>": the incumbent
    init: str  # "base" or "r<i>"
    remine: bool  # False for round 0 (the configured retriever as is)


def plan_round(r: int, incumbent: str, round_init: RoundInit | str) -> RoundPlan:
    """Round ``r`` mines with the incumbent and starts from the base or the incumbent.

    Round 0's incumbent is the base model, so it mines with the retriever as configured.
    """
    init = "base" if r == 0 or as_enum(RoundInit, round_init, "round_init") is RoundInit.BASE else incumbent
    return RoundPlan(r, incumbent, init, r > 0)


def remine_config(mine: MineConfig, policy: SelectionPolicy) -> tuple[MineConfig, SelectionPolicy]:
    """The mining of a re-mining round: a BM25-only retriever becomes dense (with the new model)."""
    from hardneg.retrieve import Kind, RetrieverSpec

    if RetrieverSpec.parse(mine.retriever).kind is Kind.BM25:
        stale = {"bm25"}
        mine = replace(mine, retriever="dense", rank_by=_none_if_stale(mine.rank_by, stale),
                       score_by=_none_if_stale(mine.score_by, stale))
        policy = replace(policy, rank_by=_none_if_stale(policy.rank_by, stale),
                         score_by=_none_if_stale(policy.score_by, stale))
    return mine, policy


def _none_if_stale(value: str | None, stale: set[str]) -> str | None:
    """A ``rank_by`` / ``score_by`` scorer, or None (the default) when it is one no longer mined."""
    return None if value in stale else value


# ---- data ---------------------------------------------------------------------------------
def split_dev(ds: Dataset, config: DataConfig, seed: int = 0) -> tuple[Dataset, str]:
    """A view of ``ds`` whose ``dev`` split is the one the rounds are judged on, and its description.

    With a dev split it is used as is; otherwise ``dev_holdout`` of the train queries with
    positives (seeded, at most ``dev_max_queries``) move from ``train`` to ``dev``: mining
    and training then never see them. Other splits are unchanged.
    """
    if "train" not in ds.splits:
        raise HardnegError(f"{ds.source}: no 'train' split to mine and train on (have: {', '.join(ds.splits)})")
    name = config.dev_split or ("dev" if "dev" in ds.splits else None)
    qrels = dict(ds.qrels)
    if name is not None:
        if name not in ds.splits:
            raise HardnegError(f"{ds.source}: no '{name}' split for dev (have: {', '.join(ds.splits)})")
        qrels["dev"] = ds.qrels[name]
        n = len(ds.positives(name))
        description = f"the '{name}' split ({n} queries)"
    else:
        pool = ds.positives("train")
        held = set(holdout(pool, config.dev_holdout, seed, config.dev_max_queries))
        if len(held) < 2:
            n = holdout_size(len(pool), config.dev_holdout, config.dev_max_queries)
            raise HardnegError(
                f"{ds.source}: no dev split, and holding out {config.dev_holdout:g} of {len(pool)} train queries "
                f"gives {n}: the rounds need at least 2 dev queries and some left to train on (set dev_holdout)")
        n = len(held)
        qrels["train"] = {q: docs for q, docs in ds.qrels["train"].items() if q not in held}
        qrels["dev"] = {q: docs for q, docs in ds.qrels["train"].items() if q in held}
        description = f"{n} of {len(pool)} train queries held out (seed {seed}), never trained on"
    view = Dataset(ds.doc_ids, ds.titles, ds.texts, ds.queries, qrels, ds.aliases, ds.warnings, ds.source)
    return view, description


# ---- results ------------------------------------------------------------------------------
@dataclass
class RoundResult:
    """One round: what mined, what was selected, how training went, and the dev verdict."""

    round: int
    miner: str
    init: str
    retriever: str
    miner_fingerprint: str | None  # weights fingerprint of the dense model that mined (None: BM25 only)
    mining_cache: dict[str, int]  # embedding-cache hits / misses while mining
    negatives: dict[str, Any]  # selection output counts
    train: dict[str, Any]  # rows, steps, losses, seconds
    model_dir: str
    model_fingerprint: str
    dev: dict[str, float]  # mean dev metrics of this round's model
    vs: str  # the incumbent it was judged against
    gain: float
    p: float
    kept: bool
    reason: str
    seconds: float


@dataclass
class RunResult:
    """The run's outcome: the final test evaluation (systems tuned, base, bm25) and the rounds."""

    out: str
    evaluation: EvalResult
    rounds: list[RoundResult]
    selected: str  # "r<i>" of the kept model, or "base" when no round beat the starting model
    tuned_from: str  # the round whose model is the "tuned" row
    dev: str
    dev_base: dict[str, float]
    metrics: dict[str, Any]
    seconds: float


# ---- helpers around models ----------------------------------------------------------------
class _Dense:
    """One model for the whole run: its Encoder (one loaded model, one fingerprint) and one exact
    retriever over the run's corpus, shared by mining, the dev gate and the test evaluation, so
    the corpus is embedded (or read from the cache) once per model."""

    def __init__(self, encoder: "Encoder", corpus: Dataset, corpus_texts: Sequence[str]):
        from hardneg.retrieve.dense import DenseRetriever

        self.encoder = encoder
        self.retriever = DenseRetriever(encoder, corpus.doc_ids, corpus_texts)

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint

    def ranking(self, ds: Dataset, split: str, depth: int, chunks: Dataset | None = None) -> Ranking:
        """``split``'s queries ranked over the corpus (over ``chunks``, a document scoring its best chunk)."""
        return _search(self.retriever, ds, split, depth, chunks)


def _bm25_ranking(ds: Dataset, split: str, depth: int, chunks: Dataset | None = None,
                  texts: Sequence[str] | None = None) -> Ranking:
    from hardneg.retrieve.bm25 import BM25Retriever

    corpus = chunks or ds
    return _search(BM25Retriever(corpus.doc_ids, texts if texts is not None else corpus.doc_texts()), ds, split,
                   depth, chunks)


def _search(retriever, ds: Dataset, split: str, depth: int, chunks: Dataset | None) -> Ranking:
    from hardneg.chunking import search_documents

    qids = list(ds.positives(split))
    texts = [ds.queries[q] for q in qids]
    return retriever.search(qids, texts, depth) if chunks is None else search_documents(retriever, chunks, qids,
                                                                                         texts, depth)


def _dev_scores(ds: Dataset, ranking: Ranking) -> dict[str, np.ndarray]:
    from hardneg.evaluate import per_query_scores

    return per_query_scores(ds.split_qrels("dev"), ranking)


def _means(scores: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {m: float(v.mean()) for m, v in scores.items()}


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def time(self, name: str):
        clock = self

        class _Span:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                clock.timings[name] = clock.timings.get(name, 0.0) + time.perf_counter() - self.start

        return _Span()


# ---- the run ------------------------------------------------------------------------------
def run(config: RunConfig, out: str | Path, *, progress: Callable[[str], None] | None = None,
        data: Dataset | None = None) -> RunResult:
    """Run the recipe into ``out``; return the final evaluation, the rounds and the metrics.

    Writes ``out/metrics.json``, ``out/report.md`` and ``out/report.html`` (lift over base and BM25 with
    Holm-corrected paired p-values and bootstrap CIs), ``out/eval/`` (per-query scores and
    TREC runs of the three systems), ``out/rounds/r<i>/`` (candidates, negatives, stats,
    model, dev verdict, ``train.log``: the trainer's own log) and ``out/model`` (the kept model;
    absent when none beat the base).
    ``data`` passes an already loaded dataset instead of ``config.data.path``.

    Each model (the base, each round's) has one encoder for the whole run: loaded once (the
    base only if something is to be encoded), fingerprinted once, its corpus vectors read once;
    the corpus texts are hashed once. Each round hands its selected negatives to training in
    memory (the files are still written) and stores every candidate's fate in
    ``rounds/r<i>/decisions.parquet``, which the report reads.
    """
    from hardneg.encode.cache import memoised_texts_hashes

    with memoised_texts_hashes():
        return _run(config, Path(out), progress or log.info, data)


def _run(config: RunConfig, out: Path, say: Callable[[str], None], data: Dataset | None) -> RunResult:
    from hardneg import output
    from hardneg.encode.cache import EmbeddingCache
    from hardneg.encode import Encoder
    from hardneg.mine import chunked_for

    start = time.perf_counter()
    clock = _Clock()
    if data is None:
        if not config.data.path:
            raise HardnegError("no data: set [data] path in the recipe")
        data = load_dataset(config.data.path, corpus=config.data.corpus, skip_unknown=config.data.skip_unknown)
    test = config.data.test_split
    data.split_qrels(test)  # fail before any work when the test split is missing
    view, dev_description = split_dev(data, config.data, config.loop.seed)
    cache = EmbeddingCache(config.cache_dir) if config.cache_dir else EmbeddingCache()
    enc, depth = config.encoder, config.eval.depth
    # [mine] chunk_tokens: rounds mine and train on chunks; evaluation ranks documents by their best chunk
    chunks = None if config.mine.chunk_tokens is None else chunked_for(view, config.mine, enc)
    corpus = chunks or data  # view and data share their documents
    corpus_texts = corpus.doc_texts()  # one list for every retriever: its hash is computed once

    def dense(encoder: "Encoder") -> _Dense:
        return _Dense(encoder, corpus, corpus_texts)

    say(f"data: {len(data.doc_ids)} documents; train {len(view.positives('train'))} queries, "
        f"dev: {dev_description}; test '{test}' {len(data.positives(test))} queries")

    _clear_previous(out)
    output.status(f"baselines: bm25 and the base model on {test} and dev")
    with clock.time("baselines"):
        base = dense(Encoder(enc, cache=cache))  # loaded from its folder only if something must be encoded
        base_fp = base.fingerprint
        test_runs = {"bm25": _bm25_ranking(data, test, depth, chunks, corpus_texts),
                     "base": base.ranking(data, test, depth, chunks)}
        dev_base = _dev_scores(view, base.ranking(view, "dev", depth, chunks))
    say(f"baselines on {test}: " + ", ".join(
        f"{name} NDCG@10 {_quick_ndcg(data, test, r):.4f}" for name, r in test_runs.items())
        + f"; base on dev NDCG@10 {dev_base[GATE_METRIC].mean():.4f} ({clock.timings['baselines']:.0f}s)")

    rounds, models = _rounds(config, view, chunks, base, dev_base, cache, out, say, clock, dense, corpus_texts)
    kept = [r for r in rounds if r.kept]
    selected = f"r{kept[-1].round}" if kept else "base"
    tuned_from = selected if kept else "r0"
    if kept:
        _copy_model(Path(kept[-1].model_dir), out / "model")
        say(f"kept {selected}: copied to {out / 'model'}")
    else:
        say("no round beat the starting model on dev: the base model stays (r0 is still evaluated below)")

    output.status(f"test evaluation: tuned ({tuned_from}), base, bm25 on {test}")
    with clock.time("test evaluation"):
        test_runs["tuned"] = models[tuned_from].ranking(data, test, depth, chunks)
        ordered = {name: test_runs[name] for name in ("tuned", "base", "bm25")}  # tuned is the reference
        result = evaluate(data, test, ordered, n_resamples=config.eval.n_resamples, seed=config.eval.seed)
    from hardneg.evaluate import write_eval

    write_eval(result, out / "eval", ordered)
    seconds = time.perf_counter() - start
    metrics = _metrics(result, rounds, selected, tuned_from, dev_description, dev_base, list(view.positives("dev")),
                       config, clock, seconds, base_fp)
    run_result = RunResult(str(out), result, rounds, selected, tuned_from, dev_description, _means(dev_base),
                           metrics, seconds)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", report_markdown(run_result))
    output.status("writing report.html")
    try:  # the HTML report is a view of the files above: its failure must not fail the run
        from hardneg.report import write_report

        write_report(out, data=data)
    except Exception as e:  # noqa: BLE001 - any plotting/rendering error becomes a warning
        log.warning(f"report.html not written: {type(e).__name__}: {e} (retry with `hardneg report {out}`)")
    return run_result


def _quick_ndcg(ds: Dataset, split: str, ranking: Ranking) -> float:
    from hardneg.evaluate import per_query_scores

    return float(per_query_scores(ds.split_qrels(split), ranking, ["ndcg@10"])["ndcg@10"].mean())


def _rounds(config: RunConfig, view: Dataset, chunks: Dataset | None, base: _Dense,
            dev_base: dict[str, np.ndarray], cache, out: Path, say, clock: _Clock,
            dense: Callable[["Encoder"], _Dense],
            corpus_texts: Sequence[str]) -> tuple[list[RoundResult], dict[str, _Dense]]:
    """Round 0 and up to ``rounds`` re-mining rounds; stops at the first round not kept. With
    ``chunks`` the rounds mine and train on chunks and the dev gate ranks documents. Each
    round's model stays in memory as trained (the saved folder holds the same weights) and
    gets one encoder (``dense``) for its dev gate, the next round's mining and the test."""
    from hardneg import output
    from hardneg.encode import Encoder

    models: dict[str, _Dense] = {"base": base}
    dirs: dict[str, str | None] = {"base": config.encoder.model}
    incumbent, inc_scores = "base", dev_base
    results: list[RoundResult] = []
    for r in range(config.loop.rounds + 1):
        plan = plan_round(r, incumbent, config.loop.round_init)
        t0 = time.perf_counter()
        rdir = out / "rounds" / f"r{r}"
        mine_cfg, policy = (remine_config(config.mine, config.policy) if plan.remine
                            else (config.mine, config.policy))
        output.status(f"r{r}: mining with {plan.miner} ({mine_cfg.retriever})")
        with clock.time("mining"):
            negatives, neg_stats, miner_fp, cache_delta = _mine_round(
                chunks or view, mine_cfg, policy, config, models[plan.miner], cache, rdir, plan, corpus_texts)
        say(f"r{r}: mined with {plan.miner} ({mine_cfg.retriever}): {neg_stats['rows']} rows, "
            f"{neg_stats['negatives']} negatives; cache {cache_delta['hits']} hits, {cache_delta['misses']} misses "
            f"({time.perf_counter() - t0:.0f}s)")
        output.status(f"r{r}: training from {plan.init}")
        with clock.time("training"):
            card = {"policy": neg_stats["policy"], "mined_by": f"{plan.miner} ({mine_cfg.retriever})",
                    "round": f"r{r} of `hardneg run`, trained from {plan.init}"}
            trained, student = _train_round(chunks or view, negatives, dirs[plan.init], rdir / "model",
                                            config.train, card)
        say(f"r{r}: {_trained_line(trained)}")
        tuned = dense(Encoder(config.encoder, model=student, cache=cache))  # the best checkpoint, as saved
        models[f"r{r}"], dirs[f"r{r}"] = tuned, str(rdir / "model")
        output.status(f"r{r}: dev evaluation")
        with clock.time("dev evaluation"):
            scores = _dev_scores(view, tuned.ranking(view, "dev", config.eval.depth, chunks))
        loop = config.loop
        decision = gate(scores[GATE_METRIC], inc_scores[GATE_METRIC], loop.round_gate, loop.alpha, loop.min_gain,
                        loop.seed, config.eval.n_resamples)
        result = RoundResult(
            r, plan.miner, plan.init, mine_cfg.retriever, miner_fp, cache_delta, neg_stats, trained,
            str(rdir / "model"), tuned.fingerprint, _means(scores), incumbent, decision.gain, decision.p,
            decision.keep, decision.reason, time.perf_counter() - t0)
        atomic_write_json(rdir / "round.json", asdict(result))
        results.append(result)
        say(f"r{r}: dev NDCG@10 {scores[GATE_METRIC].mean():.4f} vs {incumbent} "
            f"{inc_scores[GATE_METRIC].mean():.4f}: {'kept' if decision.keep else 'not kept'} ({decision.reason}); "
            f"{result.seconds:.0f}s")
        if not decision.keep:
            break
        if incumbent != "base":
            models.pop(incumbent, None)  # free a superseded model (r0 is kept for the "tuned" row)
        incumbent, inc_scores = f"r{r}", scores
    return results, models


def _trained_line(trained: Mapping[str, Any]) -> str:
    """One progress line of a round's training: steps, loss, the step kept, seconds."""
    loss = (f", loss {trained['first_loss']:.3f} -> {trained['last_loss']:.3f}"
            if trained["first_loss"] is not None else "")
    kept = f", kept step {trained['best_step']}" if trained["best_step"] is not None else ""
    return f"trained {trained['steps']} steps on {trained['rows']} rows{loss}{kept} ({trained['seconds']:.0f}s)"


def _mine_round(view: Dataset, mine_cfg: MineConfig, policy: SelectionPolicy, config: RunConfig, miner: _Dense,
                cache, rdir: Path, plan: RoundPlan, doc_texts: Sequence[str]):
    """Mine (with the miner's encoder), select and export into ``rdir``; write every candidate's
    fate (``decisions.parquet``). Returns the negatives (file, rows in memory, sidecar) too."""
    from hardneg.export import FLAG_FILE, export
    from hardneg.mine import mine_candidates
    from hardneg.retrieve import RetrieverSpec
    from hardneg.select import select, write_decisions
    from hardneg.select.decisions import DECISIONS_FILE

    mine_cfg = replace(mine_cfg, rank_by=policy.rank_by, score_by=policy.score_by)
    spec = RetrieverSpec.parse(mine_cfg.retriever)
    # round 0 keeps a model named in the retriever spec; re-mining rounds always use the incumbent
    model = miner.encoder if (plan.remine or spec.model is None) else None
    hits, misses = cache.hits, cache.misses
    cands = mine_candidates(view, mine_cfg, config.encoder, cache=cache, model=model, doc_texts=doc_texts)
    delta = {"hits": cache.hits - hits, "misses": cache.misses - misses}
    if config.denoise.cross_encoder:
        cands = _rescored(cands, view, config.denoise, cache, rdir)
    cands.write(rdir / "candidates.parquet")
    if config.auto_window:
        policy = _calibrated(cands, policy, config.audit, rdir)
    mined = select(cands, policy, corpus_doc_ids=view.doc_ids)
    rows: list[dict[str, Any]] = []
    files = export(mined, view.doc_text_map(), view.queries, rdir, config.fmt, rows=rows)
    write_decisions(mined, rdir / DECISIONS_FILE, policy)
    atomic_write_json(rdir / "stats.json", mined.stats | {"files": files, "policy": policy.to_dict()})
    out = mined.stats["output"]
    stats = {"rows": int(out["rows"]), "negatives": int(out["negatives"]),
             "rows_without_negatives": int(out["rows_without_negatives"]),
             "short_rows": int(mined.stats["short"]["rows"]), "sampler": policy.sampler.value,
             "policy": policy.to_dict()}
    fingerprints = cands.meta.get("models") or {}  # scorer name -> weights fingerprint (dense scorers)
    fp = fingerprints.get(spec.name) or fingerprints.get("dense") or next(iter(fingerprints.values()), None)
    return (rdir / FLAG_FILE, rows, files[FLAG_FILE]), stats, fp, delta


def _rescored(cands, view: Dataset, cfg: DenoiseConfig, cache, rdir: Path):
    """``[denoise]``: add the cross-encoder's ``score_ce`` in its window; write ``rescore.json``
    with the cost and the warning when the cross-encoder does not beat BM25 on its own check."""
    from hardneg.crossencoder import recorded_check, rescore_with_report, warn_if_worse

    check = recorded_check(cfg.cross_encoder)
    warning = warn_if_worse(check) if check is not None else None
    scored, report = rescore_with_report(cands, view, cfg.cross_encoder, window=cfg.window,
                                         batch_size=cfg.batch_size, cache=cache)
    atomic_write_json(rdir / "rescore.json", {"cross_encoder": cfg.cross_encoder, "window": cfg.window,
                                              "report": asdict(report), "check": check.to_dict() if check else None,
                                              "warning": warning})
    log.info(report.summary())
    return scored


def _calibrated(cands, policy: SelectionPolicy, audit: AuditConfig, rdir: Path) -> SelectionPolicy:
    """``window = "auto"``: audit the round's candidates, write ``audit.json``, take the calibrated
    window and percent."""
    from hardneg.audit import auto_window

    cal, doc = auto_window(cands, audit)
    atomic_write_json(rdir / "audit.json", doc)
    log.info(f"window auto: {cal.window[0]}:{cal.window[1]}, percent {cal.percent} ({cal.reason})")
    return replace(policy, window=cal.window, percent=cal.percent)


def _train_round(view: Dataset, negatives: tuple[Path, list, dict], init: str | None, model_dir: Path,
                 config: TrainConfig, card: Mapping[str, Any]) -> tuple[dict[str, Any], "SentenceTransformer"]:
    """Train a fresh copy of ``init`` on the round's negatives, handed over in memory (what
    ``negatives.jsonl`` and its sidecar hold); return the summary and the trained model, which
    holds the best checkpoint's weights (the ones saved to ``model_dir``)."""
    import json

    from hardneg.encode import default_model_path
    from hardneg.train import train
    from hardneg.train.config import TRAIN_LOG
    from hardneg.train.losses import load_student

    path, rows, sidecar = negatives
    log_file = model_dir.parent / TRAIN_LOG  # rounds/r<i>/train.log: beside the model, not copied with it
    student = load_student(init)  # what train() would load from ``init``; trained in place
    student.model_card_data.base_model = str(init) if init else default_model_path()  # the card's "trained from"
    if rows:
        meta = {**json.loads(json.dumps(sidecar)), "negatives_file": str(path), **card}  # as read back from disk
        res = train(view, rows, student, model_dir, config, dev_split="dev", meta=meta, log_file=log_file)
    else:  # nothing exported (the in-batch-only baseline): train() takes the empty file's sidecar
        res = train(view, path, student, model_dir, config, dev_split="dev", meta=card, log_file=log_file)
    return {"rows": res.data.n_rows, "queries": res.data.n_queries, "num_negatives": res.data.num_negatives,
            "steps": res.losses[-1][0] if res.losses else 0,
            "first_loss": res.losses[0][1] if res.losses else None,
            "last_loss": res.losses[-1][1] if res.losses else None,
            "best_step": res.best["step"] if res.best else None, "seconds": res.train_seconds,
            "summary": res.data.summary()}, student


def _clear_previous(out: Path) -> None:
    """Remove what an earlier run into ``out`` left (its kept model, its rounds), so nothing stale remains."""
    from hardneg.train.config import RESULT_FILE

    if (out / "model" / RESULT_FILE).is_file():
        shutil.rmtree(out / "model")
    for folder in sorted((out / "rounds").glob("r*")) if (out / "rounds").is_dir() else []:
        if (folder / "round.json").is_file() or (folder / "candidates.parquet").is_file():
            shutil.rmtree(folder)


def _copy_model(src: Path, dst: Path) -> None:
    """Replace ``dst`` with a copy of ``src`` (built beside it, then renamed)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


# ---- metrics and report -------------------------------------------------------------------
def _metrics(result: EvalResult, rounds: Sequence[RoundResult], selected: str, tuned_from: str, dev: str,
             dev_base: Mapping[str, np.ndarray], dev_ids: Sequence[str], config: RunConfig, clock: _Clock,
             seconds: float, base_fp: str) -> dict[str, Any]:
    """The content of ``metrics.json`` (every figure of the report, as data)."""
    seed = config.eval.seed
    means = result.means()
    systems = {s: means[s] for s in SYSTEMS}
    ci = {s: {m: list(bootstrap_ci(result.per_query[s][m], seed=seed)) for m in result.metrics} for s in SYSTEMS}
    lift = {}
    for ref in ("base", "bm25"):
        lift[f"over_{ref}"] = {
            m: {"diff": means["tuned"][m] - means[ref][m],
                "ci95": list(bootstrap_ci(result.per_query["tuned"][m] - result.per_query[ref][m], seed=seed)),
                "p": result.pvalues[ref][m]}
            for m in result.metrics}
    out: dict[str, Any] = {
        "split": result.split, "n_queries": len(result.query_ids), "metrics": result.metrics,
        "systems": systems, "ci95": ci, "lift": lift,
        "significance": (f"two-sided paired randomization test ({result.n_resamples} sign flips, seed {seed}) of "
                         "tuned against base and against bm25, Holm-corrected per metric; CIs: percentile "
                         "bootstrap over queries (2000 resamples)"),
        "selected": selected, "tuned_from": tuned_from, "tuned_kept_on_dev": selected != "base",
        "dev": {"description": dev, "base": _means(dev_base), "query_ids": list(dev_ids)},
        "base_fingerprint": base_fp,
        "machine": machine_info(),
        "precision": {"encode": resolve_encode(config.encoder.precision, config.encoder.backend),
                      "train": resolve_train(config.train.mixed_precision, machine_info()["cuda"] is not None)},
        "rounds": [asdict(r) for r in rounds],
        "timings": {k: round(v, 2) for k, v in clock.timings.items()} | {"total": round(seconds, 2)},
        "config": config.to_dict(),
    }
    if result.clean_ids:
        clean = result.means(result.clean_ids)
        out["clean"] = {"n_queries": len(result.clean_ids), "systems": {s: clean[s] for s in SYSTEMS}}
    out["notes"] = list(result.notes)
    return out


def format_run_table(result: RunResult, title: str | None = None):
    """A rich table: bm25, base and tuned on the test split, NDCG@10 CI, lift and p of tuned."""
    from rich.table import Table

    m = result.metrics
    table = Table(title=title or f"{m['split']}: {m['n_queries']} queries (tuned = {result.tuned_from}"
                                 f"{'' if m['tuned_kept_on_dev'] else ', NOT kept on dev'})")
    table.add_column("system")
    for metric in m["metrics"]:
        table.add_column(metric, justify="right")
    table.add_column("ndcg@10 95% CI", justify="right")
    for s in SYSTEMS:
        lo, hi = m["ci95"][s]["ndcg@10"]
        table.add_row(s, *[f"{m['systems'][s][x]:.4f}" for x in m["metrics"]], f"[{lo:.3f}, {hi:.3f}]")
    table.add_section()
    for ref in ("base", "bm25"):
        lift = m["lift"][f"over_{ref}"]
        lo, hi = lift["ndcg@10"]["ci95"]
        table.add_row(f"tuned - {ref}", *[f"{lift[x]['diff']:+.4f}" for x in m["metrics"]], f"[{lo:+.3f}, {hi:+.3f}]")
        table.add_row(f"  p vs {ref}", *[format_p(lift[x]["p"], result.evaluation.n_resamples) for x in m["metrics"]], "")
    return table


def report_markdown(result: RunResult) -> str:
    """``report.md``: the test table with lift and significance, the rounds, and what was kept."""
    m, n = result.metrics, result.evaluation.n_resamples
    metrics = m["metrics"]
    lines = [f"# hardneg run: tuned vs base vs BM25 on `{m['split']}` ({m['n_queries']} queries)", ""]
    verdict = (f"The tuned model is round `{result.tuned_from}`, kept because it beat the starting model on dev."
               if m["tuned_kept_on_dev"] else
               "No round beat the starting model on dev, so the run's model is the base model; the `tuned` row "
               "shows round `r0` anyway, for the record (no `model/` folder is written).")
    lines += [verdict, "", "| system | " + " | ".join(metrics) + " | ndcg@10 95% CI |", "|---" * (len(metrics) + 2) + "|"]
    for s in SYSTEMS:
        lo, hi = m["ci95"][s]["ndcg@10"]
        lines.append(f"| {s} | " + " | ".join(f"{m['systems'][s][x]:.4f}" for x in metrics) + f" | [{lo:.3f}, {hi:.3f}] |")
    lines += ["", "## Lift of the tuned model", "", "| vs | " + " | ".join(f"Δ {x}" for x in metrics)
              + " | Δ ndcg@10 95% CI | p(ndcg@10) |", "|---" * (len(metrics) + 3) + "|"]
    for ref in ("base", "bm25"):
        lift = m["lift"][f"over_{ref}"]
        lo, hi = lift["ndcg@10"]["ci95"]
        lines.append(f"| {ref} | " + " | ".join(f"{lift[x]['diff']:+.4f}" for x in metrics)
                     + f" | [{lo:+.4f}, {hi:+.4f}] | {format_p(lift['ndcg@10']['p'], n)} |")
    lines += ["", f"Significance: {m['significance']}. p-values of every metric are in `metrics.json`; "
              "per-query scores in `eval/per_query.tsv`.", ""]
    lines += [f"## Rounds (dev: {m['dev']['description']})", "",
              f"Base model on dev: NDCG@10 {m['dev']['base']['ndcg@10']:.4f}.", "",
              "| round | mined by | retriever | trained from | negatives | rows | steps | dev ndcg@10 | vs | gain | p | kept |",
              "|---" * 12 + "|"]
    for r in result.rounds:
        lines.append(f"| r{r.round} | {r.miner} | {r.retriever} | {r.init} | {r.negatives['negatives']} "
                     f"({r.negatives['sampler']}) | {r.train['rows']} | {r.train['steps']} | {r.dev['ndcg@10']:.4f} "
                     f"| {r.vs} | {r.gain:+.4f} | {format_p(r.p, n)} | {'yes' if r.kept else 'no: ' + r.reason} |")
    lines += ["", "Each round's candidates, negatives (`negatives.jsonl`, `stats.json`: what every filter "
              "removed) and model are in `rounds/r<i>/`."]
    if "clean" in m:
        c = m["clean"]
        lines += ["", f"## Test queries whose positives were never train positives ({c['n_queries']})", "",
                  "| system | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {s} | " + " | ".join(f"{c['systems'][s][x]:.4f}" for x in metrics) + " |" for s in SYSTEMS]
    for note in m["notes"]:
        lines += ["", f"Note: {note}."]
    timings = ", ".join(f"{k} {v:.0f}s" for k, v in m["timings"].items())
    lines += ["", f"Timings: {timings}."]
    return "\n".join(lines) + "\n"
