"""The whole loop: baselines -> mine -> select -> train -> re-mining rounds -> held-out evaluation.

Use :func:`run` (or ``hardneg run RECIPE.toml``) to take a dataset from "the general model
loses to BM25" to a fine-tuned model whose lift over the free systems (BM25, the base model and
their RRF hybrid) is measured on the test split, with paired significance and bootstrap
intervals, beside the tuned model's own hybrid; the system to deploy is chosen on dev
(:mod:`~hardneg.loop.hybrid`).

Rounds follow ANCE: round 0 mines with the starting model; each later round mines again
with the last kept model (the weight-keyed embedding cache then misses: new weights, new
vectors) and trains again from ``round_init`` (the base model or the previous one). A round
is kept only if it beats the incumbent on dev NDCG@10 (:func:`gate`); round 0 is judged
against the starting model itself, so a fine-tune that does not help is never reported as
the result. The loop stops after ``rounds`` re-mining rounds or at the first round not kept.
Dev is the dataset's dev split, or train queries held out once for every round
(:func:`split_dev`), never the test split.

The parts: :mod:`~hardneg.loop.config` (what a run is told), :mod:`~hardneg.loop.rounds` (mine,
select, train, gate), :mod:`~hardneg.loop.hybrid` (the hybrids, what to deploy),
:mod:`~hardneg.loop.results` (``metrics.json``, ``report.md``). Import from
``hardneg.loop``.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from hardneg import output
from hardneg.data import Dataset, load_dataset
from hardneg.encode import Encoder
from hardneg.checkpoint import digest
from hardneg.encode.cache import EmbeddingCache, memoised_texts_hashes
from hardneg.errors import HardnegError
from hardneg.evaluate import EvalResult, evaluate, write_eval
from hardneg.files import atomic_write_json, atomic_write_text
from hardneg.loop.config import DataConfig, EvalConfig, LoopConfig, RoundGate, RoundInit, RunConfig
from hardneg.loop.hybrid import (HYBRID_BASE, HYBRID_TUNED, PAIRS, PRIOR, choose_deploy, deploy_record, dev_means,
                                 hybrid_rankings, hybrid_record, mean_ndcg, prior_rankings)
from hardneg.loop.results import RunResult, _metrics, format_run_table, report_markdown
from hardneg.loop.rounds import (GATE_METRIC, GateDecision, RoundPlan, RoundResult, _bm25_rankings, _Clock, _Dense,
                                 _dev_scores, _means, _rounds, _Run, gate, plan_round, split_dev)
from hardneg.mine import chunked_for, dataset_digest
from hardneg.precision import resolved
from hardneg.report import write_report
from hardneg.retrieve.base import Ranking
from hardneg.run_state import RunState, load_rankings

__all__ = ["DataConfig", "EvalConfig", "GateDecision", "LoopConfig", "RoundGate", "RoundInit", "RoundPlan",
           "RoundResult", "RunConfig", "RunResult", "format_run_table", "gate", "plan_round", "run", "split_dev"]

log = logging.getLogger("hardneg.loop")


def run(config: RunConfig, out: str | Path, *, progress: Callable[[str], None] | None = None,
        data: Dataset | None = None, restart: bool = False, recipe: str | None = None) -> RunResult:
    """Run the recipe into ``out``; return the final evaluation, the rounds and the metrics.

    Writes ``out/metrics.json``, ``out/report.md`` and ``out/report.html`` (the system to deploy, chosen
    on dev; the lift of the tuned model and of its hybrid over BM25, base and their hybrid, with paired
    p-values Holm-corrected across those comparisons and bootstrap CIs), ``out/eval/`` (per-query scores
    and TREC runs of the six systems), ``out/rounds/r<i>/`` (candidates, negatives, stats,
    model, dev verdict, ``train.log``: the trainer's own log), ``out/model`` (the kept model;
    absent when none beat the base) and ``out/.run/`` (the run's state, :mod:`hardneg.run_state`).
    ``data`` passes an already loaded dataset instead of ``config.data.path``; ``recipe`` a recipe's
    text to write to ``out/recipe.toml`` once the folder is checked (``hardneg run`` passes
    :func:`hardneg.recipe.dump_recipe`'s), so that it never lies beside another run's files.

    Resumes: called again on the same folder with the same recipe (data, base model, precision),
    after a kill at any point, it continues from the last finished stage (baselines, each round's
    mine / train / gate, the test evaluation) and ends with the same files as an uninterrupted run
    (timings aside). Another recipe over the folder, or an earlier run's files without a state,
    raise :class:`HardnegError` unless ``restart`` (which removes that run first). The final files
    exist only once the run has finished.

    Each model (the base, each round's) has one encoder for the whole run: loaded once (the
    base only if something is to be encoded), fingerprinted once, its corpus vectors read once;
    the corpus texts are hashed once. Each round hands its selected negatives to training in
    memory (the files are still written) and stores every candidate's fate in
    ``rounds/r<i>/decisions.parquet``, which the report reads.
    """
    with memoised_texts_hashes():
        return _run(config, Path(out), progress or log.info, data, restart, recipe)


def _run(config: RunConfig, out: Path, say: Callable[[str], None], data: Dataset | None,
         restart: bool, recipe: str | None) -> RunResult:
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
    # [mine] chunk_tokens: rounds mine and train on chunks; evaluation ranks documents by their best chunk
    chunks = None if config.mine.chunk_tokens is None else chunked_for(view, config.mine, config.encoder)
    corpus = chunks or data  # view and data share their documents
    corpus_texts = corpus.doc_texts()  # one list for every retriever: its hash is computed once
    ranked = _ranked_doc_ids(data, chunks)

    def dense(encoder: "Encoder") -> _Dense:
        return _Dense(encoder, corpus, corpus_texts)

    say(f"data: {len(data.doc_ids)} documents; train {len(view.positives('train'))} queries, "
        f"dev: {dev_description}; test '{test}' {len(data.positives(test))} queries")

    base = dense(Encoder(config.encoder, cache=cache))  # loaded from its folder only if something must be encoded
    base_fp = base.fingerprint
    state = _open(out, _fingerprint(config, data, corpus, corpus_texts, base_fp), restart, recipe, say)
    ctx = _Run(config, view, chunks, cache, out, say, clock, dense, corpus_texts, state, ranked)
    test_runs, dev_runs, dev_base = _baselines(ctx, data, base)
    rounds, models = _rounds(ctx, base, dev_base)
    kept = [r for r in rounds if r.kept]
    selected = f"r{kept[-1].round}" if kept else "base"
    tuned_from = selected if kept else "r0"
    if not kept:
        say("no round beat the starting model on dev: the base model stays (r0 is still evaluated below)")

    output.status(f"test evaluation: tuned ({tuned_from}), base, bm25 and their hybrids on {test}")
    with clock.time("test evaluation"):
        test_runs["tuned"] = _tuned_ranking(ctx, models[tuned_from], data)
        dev_runs["tuned"] = load_rankings(state.path(f"{tuned_from}.dev.npz"), ranked)["dev"]  # its gate's
        result, ordered, choice = _evaluate(ctx, data, dev_runs, test_runs, bool(kept))
    if kept:  # the final files, from here on
        _copy_model(Path(kept[-1].model_dir), out / "model")
        say(f"kept {selected}: copied to {out / 'model'}")
    write_eval(result, out / "eval", ordered)
    seconds = time.perf_counter() - start + clock.restored
    metrics = _metrics(result, rounds, selected, tuned_from, dev_description, dev_base, list(view.positives("dev")),
                       config, clock, seconds, base_fp, choice)
    run_result = RunResult(str(out), result, rounds, selected, tuned_from, dev_description, _means(dev_base),
                           metrics, seconds)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", report_markdown(run_result))
    state.finish()
    _report_html(out, data)
    return run_result


def _open(out: Path, fingerprint: dict[str, str], restart: bool, recipe: str | None, say) -> RunState:
    """The run's state on ``out`` (checked; with ``restart``, the earlier run removed first); then
    ``recipe.toml``, which therefore never lies beside another run's files."""
    state = RunState(out, fingerprint, restart)
    if recipe is not None:
        atomic_write_text(out / "recipe.toml", recipe)
    if state.resumed:
        say(f"resuming {out}: done before: {', '.join(state.resumed)}")
    return state


def _report_html(out: Path, data: Dataset) -> None:
    """``report.html``: a view of the finished run's files (``hardneg report`` writes it too), so
    its failure must not fail the run: any plotting or rendering error becomes a warning."""
    output.status("writing report.html")
    try:
        write_report(out, data=data)
    except Exception as e:  # noqa: BLE001
        log.warning(f"report.html not written: {type(e).__name__}: {e} (retry with `hardneg report {out}`)")


def _fingerprint(config: RunConfig, data: Dataset, corpus: Dataset, corpus_texts: Sequence[str],
                 base_fp: str) -> dict[str, str]:
    """What decides a run's files: the resolved recipe, the data, the base model's weights, the precision."""
    precision = list(resolved(config.encoder, config.train).values())  # [encode, train]
    return {"recipe": digest(config.to_dict()), "data": dataset_digest(data, corpus.doc_ids, corpus_texts),
            "base model": base_fp, "precision": digest(precision)}


def _ranked_doc_ids(data: Dataset, chunks) -> Sequence[str]:
    """The documents a run's rankings index: the corpus's, or (chunked) the chunks' documents."""
    return chunks.documents() if chunks is not None else data.doc_ids


def _baselines(run: _Run, data: Dataset, base: _Dense) -> tuple[dict[str, Ranking], dict[str, Ranking], dict]:
    """Stage ``baselines``: bm25 and the base model on test and on dev (rankings stored). Returns the
    test rankings, the dev rankings and the base model's per-query dev scores."""
    test, depth, chunks = run.config.data.test_split, run.config.eval.depth, run.chunks

    def compute() -> dict[str, Ranking]:
        output.status(f"baselines: bm25 and the base model on {test} and dev")
        bm25, dev_bm25 = _bm25_rankings(data, test, run.view, depth, chunks, run.corpus_texts)
        return {"bm25": bm25, "base": base.ranking(data, test, depth, chunks),
                "dev": base.ranking(run.view, "dev", depth, chunks), "dev bm25": dev_bm25}

    runs, record = run.state.ranking_stage("baselines", "baselines.npz", compute, run.ranked)
    run.clock.add("baselines", record)
    dev = {"bm25": runs.pop("dev bm25"), "base": runs.pop("dev")}
    with run.clock.time("baselines"):  # the first scoring also compiles the metrics' code
        dev_base = _dev_scores(run.view, dev["base"])
    if not record["resumed"]:
        run.say(f"baselines on {test}: " + ", ".join(
            f"{name} NDCG@10 {mean_ndcg(data.split_qrels(test), r):.4f}" for name, r in runs.items())
            + f"; base on dev NDCG@10 {dev_base[GATE_METRIC].mean():.4f} ({record['seconds']:.0f}s)")
    return runs, dev, dev_base


def _evaluate(run: _Run, data: Dataset, dev: dict[str, Ranking], test: dict[str, Ranking], kept: bool
              ) -> tuple[EvalResult, dict[str, Ranking], dict[str, Any]]:
    """The six systems on test: the hybrids fused at their dev-chosen RRF k, each tuned system tested
    against each free one (``PAIRS``, Holm across them), the system to deploy chosen on dev
    (:mod:`hardneg.loop.hybrid`). Returns the evaluation, its rankings (tuned first: the reference of
    ``eval/``) and ``metrics.json``'s ``hybrid`` and ``deploy``."""
    ev, qrels = run.config.eval, run.view.split_qrels("dev")
    prior = prior_rankings(run.view, qrels, dev["bm25"], test["bm25"], ev.prior_weights)
    dev, test = {**dev, PRIOR: prior.dev}, {**test, PRIOR: prior.test}
    choices, dev_all, test_all = hybrid_rankings(qrels, dev, test, ev.rrf_k, ev.depth)
    ordered = {s: test_all[s] for s in ("tuned", "base", "bm25", PRIOR, HYBRID_BASE, HYBRID_TUNED)}
    result = evaluate(data, run.config.data.test_split, ordered, n_resamples=ev.n_resamples, seed=ev.seed,
                      pairs=PAIRS)
    scores = dev_means(qrels, dev_all, choices)
    deploy = deploy_record(choose_deploy(scores, kept), scores, result, kept)
    return result, ordered, {"hybrid": hybrid_record(choices, ev.rrf_k), "prior": prior.record(), "deploy": deploy}


def _tuned_ranking(run: _Run, tuned: _Dense, data: Dataset) -> Ranking:
    """Stage ``test``: the tuned model's test ranking (stored; the evaluation itself is recomputed)."""
    test = run.config.data.test_split
    runs, record = run.state.ranking_stage(
        "test", "test.npz", lambda: {"tuned": tuned.ranking(data, test, run.config.eval.depth, run.chunks)},
        run.ranked)
    if record["resumed"]:  # else timed by the caller
        run.clock.add("test evaluation", record)
    return runs["tuned"]


def _copy_model(src: Path, dst: Path) -> None:
    """Replace ``dst`` with a copy of ``src`` (built beside it, then renamed)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
