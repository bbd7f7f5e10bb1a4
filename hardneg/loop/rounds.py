"""The rounds: each mines with the incumbent, selects, trains, and is kept only if it beats the
incumbent on dev (:func:`gate`); the dev split the rounds are judged on (:func:`split_dev`)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from hardneg import output
from hardneg.audit import AuditConfig, auto_window
from hardneg.chunking import search_documents
from hardneg.crossencoder import DenoiseConfig, recorded_check, rescore_with_report, warn_if_worse
from hardneg.data import Dataset
from hardneg.encode import Encoder, default_model_path
from hardneg.errors import HardnegError
from hardneg.evaluate import N_RESAMPLES, format_p, paired_randomization_test
from hardneg.export import FLAG_FILE, export
from hardneg.files import atomic_write_json
from hardneg.loop.config import DataConfig, RoundGate, RoundInit, RunConfig
from hardneg.metrics import per_query_scores
from hardneg.mine import MineConfig, mine_candidates
from hardneg.options import as_enum
from hardneg.retrieve import Kind, RetrieverSpec
from hardneg.retrieve.base import Ranking
from hardneg.retrieve.bm25 import BM25Retriever
from hardneg.retrieve.dense import DenseRetriever
from hardneg.run_state import RunState, clear_dir
from hardneg.sampling import holdout, holdout_size
from hardneg.select import SelectionPolicy, select, write_decisions
from hardneg.select.decisions import DECISIONS_FILE
from hardneg.train import TrainConfig, train
from hardneg.train.config import TRAIN_LOG
from hardneg.train.losses import load_student

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__: list[str] = []  # internal: import from hardneg.loop

log = logging.getLogger("hardneg.loop")


GATE_METRIC = "ndcg@10"


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


class _Dense:
    """One model for the whole run: its Encoder (one loaded model, one fingerprint) and one exact
    retriever over the run's corpus, shared by mining, the dev gate and the test evaluation, so
    the corpus is embedded (or read from the cache) once per model."""

    def __init__(self, encoder: "Encoder", corpus: Dataset, corpus_texts: Sequence[str]):
        self.encoder = encoder
        self.retriever = DenseRetriever(encoder, corpus.doc_ids, corpus_texts)

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint

    def ranking(self, ds: Dataset, split: str, depth: int, chunks: Dataset | None = None) -> Ranking:
        """``split``'s queries ranked over the corpus (over ``chunks``, a document scoring its best chunk)."""
        return _search(self.retriever, ds, split, depth, chunks)


def _bm25_rankings(ds: Dataset, split: str, dev: Dataset, depth: int, chunks: Dataset | None,
                   texts: Sequence[str]) -> tuple[Ranking, Ranking]:
    """BM25's rankings of ``ds``'s ``split`` and of ``dev``'s ``dev`` split (a view of the same corpus,
    whose texts are ``texts``: the chunks' with ``chunks``), from one index."""
    corpus = chunks or ds
    bm25 = BM25Retriever(corpus.doc_ids, texts)
    return _search(bm25, ds, split, depth, chunks), _search(bm25, dev, "dev", depth, chunks)


def _search(retriever, ds: Dataset, split: str, depth: int, chunks: Dataset | None) -> Ranking:
    qids = list(ds.positives(split))
    texts = [ds.queries[q] for q in qids]
    return retriever.search(qids, texts, depth) if chunks is None else search_documents(retriever, chunks, qids,
                                                                                         texts, depth)


def _dev_scores(ds: Dataset, ranking: Ranking) -> dict[str, np.ndarray]:
    return per_query_scores(ds.split_qrels("dev"), ranking)


def _means(scores: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {m: float(v.mean()) for m, v in scores.items()}


class _Clock:
    """The run's timings by name; ``restored`` sums the seconds of stages finished by an earlier start."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.restored = 0.0

    def time(self, name: str):
        clock = self

        class _Span:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                clock.timings[name] = clock.timings.get(name, 0.0) + time.perf_counter() - self.start

        return _Span()

    def add(self, name: str, record: Mapping[str, Any]) -> None:
        """Count a stage's recorded seconds (:meth:`hardneg.run_state.RunState.stage`) under ``name``."""
        self.timings[name] = self.timings.get(name, 0.0) + record["seconds"]
        self.restored += record["seconds"] if record["resumed"] else 0.0


@dataclass
class _Run:
    """What every stage of one run shares: its config, data views, cache, folder, state and clock."""

    config: RunConfig
    view: Dataset
    chunks: Dataset | None
    cache: Any
    out: Path
    say: Callable[[str], None]
    clock: _Clock
    dense: Callable[["Encoder"], _Dense]
    corpus_texts: Sequence[str]
    state: RunState
    ranked: Sequence[str]  # the document ids its rankings index


def _rounds(run: _Run, base: _Dense, dev_base: dict[str, np.ndarray]) -> tuple[list[RoundResult], dict[str, _Dense]]:
    """Round 0 and up to ``rounds`` re-mining rounds; stops at the first round not kept. With
    ``chunks`` the rounds mine and train on chunks and the dev gate ranks documents. Each
    round's model stays in memory as trained (the saved folder holds the same weights; a round
    trained by an earlier start of the run is read from that folder) and gets one encoder
    (``dense``) for its dev gate, the next round's mining and the test. Each round is three
    stages of the run's state: ``r<i> mine``, ``r<i> train``, ``r<i> gate``."""
    config = run.config
    models: dict[str, _Dense] = {"base": base}
    dirs: dict[str, str | None] = {"base": config.encoder.model}
    incumbent, inc_scores = "base", dev_base
    results: list[RoundResult] = []
    for r in range(config.loop.rounds + 1):
        plan = plan_round(r, incumbent, config.loop.round_init)
        rdir = run.out / "rounds" / f"r{r}"
        mine_cfg, policy = (remine_config(config.mine, config.policy) if plan.remine
                            else (config.mine, config.policy))
        negatives, mined = _mine_stage(run, plan, mine_cfg, policy, models[plan.miner], rdir)
        tuned, trained = _train_stage(run, plan, mine_cfg, negatives, mined, dirs[plan.init], rdir)
        models[f"r{r}"], dirs[f"r{r}"] = tuned, str(rdir / "model")
        result, scores = _gate_stage(run, plan, mine_cfg, (mined, trained), tuned, inc_scores, rdir)
        results.append(result)
        if not result.kept:
            break
        if incumbent != "base":
            models.pop(incumbent, None)  # free a superseded model (r0 is kept for the "tuned" row)
        incumbent, inc_scores = f"r{r}", scores
    return results, models


def _mine_stage(run: _Run, plan: RoundPlan, mine_cfg: MineConfig, policy: SelectionPolicy, miner: _Dense,
                rdir: Path) -> tuple[tuple[Path, list, dict], dict[str, Any]]:
    """Stage ``r<i> mine`` (into a fresh ``rdir``): the negatives to train on (read back from
    ``negatives.jsonl`` when an earlier start mined them) and the stage's record."""
    r = plan.round

    def compute():
        clear_dir(rdir)  # what a start killed in this round left
        output.status(f"r{r}: mining with {plan.miner} ({mine_cfg.retriever})")
        return _mine_round(run.chunks or run.view, mine_cfg, policy, run.config, miner, run.cache, rdir, plan,
                           run.corpus_texts)

    def save(mined) -> dict[str, Any]:
        negatives, stats, fp, delta = mined
        return {"stats": stats, "miner_fingerprint": fp, "mining_cache": delta, "sidecar": negatives[2]}

    def load(rec: dict[str, Any]):
        file = rdir / FLAG_FILE
        rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
        return (file, rows, rec["sidecar"]), rec["stats"], rec["miner_fingerprint"], rec["mining_cache"]

    (negatives, stats, _, delta), record = run.state.stage(f"r{r} mine", compute, save, load)
    run.clock.add("mining", record)
    if not record["resumed"]:
        run.say(f"r{r}: mined with {plan.miner} ({mine_cfg.retriever}): {stats['rows']} rows, "
                f"{stats['negatives']} negatives; cache {delta['hits']} hits, {delta['misses']} misses "
                f"({record['seconds']:.0f}s)")
    return negatives, record


def _train_stage(run: _Run, plan: RoundPlan, mine_cfg: MineConfig, negatives: tuple[Path, list, dict],
                 mined: Mapping[str, Any], init: str | None, rdir: Path) -> tuple[_Dense, dict[str, Any]]:
    """Stage ``r<i> train`` (into a fresh ``rdir/model``): the trained model's encoder (read from
    that folder when an earlier start trained it) and the stage's record."""
    r, model_dir = plan.round, rdir / "model"

    def compute():
        clear_dir(model_dir)  # a half-trained model, its checkpoints
        output.status(f"r{r}: training from {plan.init}")
        card = {"policy": mined["stats"]["policy"], "mined_by": f"{plan.miner} ({mine_cfg.retriever})",
                "round": f"r{r} of `hardneg run`, trained from {plan.init}"}
        trained, student = _train_round(run.chunks or run.view, negatives, init, model_dir, run.config.train, card)
        return trained, run.dense(Encoder(run.config.encoder, model=student, cache=run.cache))  # the best checkpoint

    def load(rec: dict[str, Any]):
        return rec["train"], run.dense(Encoder(replace(run.config.encoder, model=str(model_dir)), cache=run.cache))

    (trained, tuned), record = run.state.stage(f"r{r} train", compute, lambda t: {"train": t[0]}, load)
    run.clock.add("training", record)
    if not record["resumed"]:
        run.say(f"r{r}: {_trained_line(trained)}")
    return tuned, record


def _gate_stage(run: _Run, plan: RoundPlan, mine_cfg: MineConfig, before: tuple[dict, dict], tuned: _Dense,
                inc_scores: dict[str, np.ndarray], rdir: Path) -> tuple[RoundResult, dict[str, np.ndarray]]:
    """Stage ``r<i> gate``: the tuned model's dev ranking (stored), judged against the incumbent;
    writes ``rdir/round.json``. Returns the round and its per-query dev scores."""
    r, config = plan.round, run.config

    def compute() -> dict[str, Ranking]:
        output.status(f"r{r}: dev evaluation")
        return {"dev": tuned.ranking(run.view, "dev", config.eval.depth, run.chunks)}

    rankings, record = run.state.ranking_stage(f"r{r} gate", f"r{r}.dev.npz", compute, run.ranked)
    ranking = rankings["dev"]
    run.clock.add("dev evaluation", record)
    with run.clock.time("dev evaluation"):
        scores = _dev_scores(run.view, ranking)
    loop, (mined, trained) = config.loop, before
    decision = gate(scores[GATE_METRIC], inc_scores[GATE_METRIC], loop.round_gate, loop.alpha, loop.min_gain,
                    loop.seed, config.eval.n_resamples)
    result = RoundResult(
        r, plan.miner, plan.init, mine_cfg.retriever, mined["miner_fingerprint"], mined["mining_cache"],
        mined["stats"], trained["train"], str(rdir / "model"), tuned.fingerprint, _means(scores), plan.miner,
        decision.gain, decision.p, decision.keep, decision.reason,
        sum(x["seconds"] for x in (mined, trained, record)))
    atomic_write_json(rdir / "round.json", asdict(result))
    if not record["resumed"]:
        run.say(f"r{r}: dev NDCG@10 {scores[GATE_METRIC].mean():.4f} vs {plan.miner} "
                f"{inc_scores[GATE_METRIC].mean():.4f}: {'kept' if decision.keep else 'not kept'} "
                f"({decision.reason}); {result.seconds:.0f}s")
    return result, scores


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
    cal, doc = auto_window(cands, audit)
    atomic_write_json(rdir / "audit.json", doc)
    log.info(f"window auto: {cal.window[0]}:{cal.window[1]}, percent {cal.percent} ({cal.reason})")
    return replace(policy, window=cal.window, percent=cal.percent)


def _train_round(view: Dataset, negatives: tuple[Path, list, dict], init: str | None, model_dir: Path,
                 config: TrainConfig, card: Mapping[str, Any]) -> tuple[dict[str, Any], "SentenceTransformer"]:
    """Train a fresh copy of ``init`` on the round's negatives, handed over in memory (what
    ``negatives.jsonl`` and its sidecar hold); return the summary and the trained model, which
    holds the best checkpoint's weights (the ones saved to ``model_dir``)."""
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
