"""The ``hardneg`` command line: a thin typer layer over the library's functions.

Every option of a command comes from a config class's declaration (:mod:`hardneg.options`):
:func:`with_options` adds a class's fields as options and hands the command the built config.
A command parses, calls one library function and prints.
"""
from __future__ import annotations

import functools
import inspect
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console

from hardneg.audit import AuditConfig
from hardneg.encode.cache import CacheConfig
from hardneg.positives.clicks import ClickConfig, ClickPolicy
from hardneg.diagnose import DiagnoseConfig
from hardneg.encode import EncoderConfig
from hardneg.errors import HardnegError
from hardneg.export import ExportConfig
from hardneg.loop import DataConfig, EvalConfig
from hardneg.mine import MineConfig
from hardneg.options import cli_parameters, declared, from_cli, key_of
from hardneg.crossencoder import DenoiseConfig
from hardneg.select import SelectionPolicy
from hardneg.positives.synth import SynthConfig
from hardneg.train import TrainConfig
from hardneg.train.reranker import RerankerConfig

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Mine, select and audit hard negatives; fine-tune and evaluate embedding retrievers.",
)
console = Console(width=None if sys.stdout.isatty() else 120)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show everything the libraries print: progress "
                                 "bars, the trainer's logs (else only in the run folder's train.log) and each "
                                 "repeat of a warning. Before the command: `hardneg --verbose demo`."),
) -> None:
    from hardneg.output import configure

    configure(verbose)


class _Stderr(logging.StreamHandler):
    """A handler writing to the current ``sys.stderr`` (a rich status or a test runner may swap it)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


def _setup_logging() -> None:
    """hardneg's own warnings (skipped rows, merged queries) go to stderr, each once without
    --verbose (:class:`hardneg.output.OnceFilter`, reset for each command); libraries stay quiet."""
    from hardneg.output import OnceFilter

    log = logging.getLogger("hardneg")
    if not log.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        handler.addFilter(OnceFilter())
        log.addHandler(handler)
        log.propagate = False
    for f in (f for h in log.handlers for f in h.filters if isinstance(f, OnceFilter)):
        f.seen.clear()


def _say(msg: str) -> None:
    """One progress line (a stage done): printed as it is, never read as markup."""
    console.print(msg, style="dim", markup=False, highlight=False)


def _working(text: str):
    """A transient status line while a stage runs (:func:`hardneg.output.working`)."""
    from hardneg.output import working

    return working(console, text)


def friendly(fn):
    """Show user errors as one line (``FILE:LINE: what is wrong``) and exit 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _setup_logging()
        try:
            return fn(*args, **kwargs)
        except HardnegError as e:
            print(f"error: {e}", file=sys.stderr)  # one line, never wrapped
            raise typer.Exit(2) from None

    return wrapper


# ---- options from the config declarations --------------------------------------------------------
@dataclass(frozen=True)
class Opts:
    """A config class whose options a command takes: all fields, ``only`` some, or all but ``exclude``.

    ``section`` is the recipe section of those options (``hardneg run`` sets the same things
    there); ``defaults`` replaces a shown default where a command differs from the recipe.
    """

    cls: type
    section: str | None = None
    only: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()


def with_options(**groups: Opts):
    """Add each group's options to a command, which receives the built configs by group name.

    The command's ``recipe_keys`` maps each option to the recipe key that sets it in ``hardneg run``.
    """

    def decorate(fn):
        sig = inspect.signature(fn)
        params = {name: cli_parameters(g.cls, g.only, g.exclude, g.required, dict(g.defaults))
                  for name, g in groups.items()}
        flat = [p for ps in params.values() for p in ps]
        names = [p.name for p in flat] + [n for n in sig.parameters if n not in groups]
        clash = sorted({n for n in names if names.count(n) > 1})
        assert not clash, f"{fn.__name__}: options declared twice: {clash}"

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            built = {name: from_cli(groups[name].cls, {p.name: kwargs.pop(p.name) for p in ps})
                     for name, ps in params.items()}
            return fn(*args, **kwargs, **built)

        kept = [p for p in sig.parameters.values() if p.name not in groups]
        wrapper.__signature__ = sig.replace(parameters=kept + flat)
        fields = {name: {f.name: f for f in declared(g.cls)} for name, g in groups.items()}
        wrapper.recipe_keys = {p.name: f"{groups[name].section}.{key_of(fields[name][p.name])}"
                               for name, ps in params.items() if groups[name].section for p in ps}
        return wrapper

    return decorate


#: the encoder options of commands that embed (the device and normalisation stay recipe keys)
ENCODER = Opts(EncoderConfig, "model", exclude=("device", "normalize"))
CACHE = Opts(CacheConfig, "model")
DATA = Opts(DataConfig, "data", only=("path", "corpus", "skip_unknown"), required=("path",))
POLICY = Opts(SelectionPolicy, "select")
EXPORT = Opts(ExportConfig, "select")


def _load(data: DataConfig):
    from hardneg.data import load_dataset

    return load_dataset(Path(data.path), corpus=Path(data.corpus) if data.corpus else None,
                        skip_unknown=data.skip_unknown)


def _chunk(ds, mine: MineConfig, encoder: EncoderConfig):
    """``ds`` chunked (:mod:`hardneg.chunking`), or as it is without ``--chunk-tokens``."""
    from hardneg.mine import chunked_for

    chunked = chunked_for(ds, mine, encoder)
    if chunked is not ds:
        info = chunked.chunking
        console.print(f"chunked {info['documents_split']} of {info['documents']} documents longer than "
                      f"{mine.chunk_tokens} tokens (overlap {mine.chunk_overlap}): {info['chunks']} chunks")
    return chunked


def _dataset_of(cands, data: DataConfig):
    """The dataset a candidate set was mined on (``--data`` overrides), chunked like it."""
    from hardneg.chunking import chunked_like

    source = data.path or cands.meta.get("data")
    if not source:
        raise HardnegError("the candidates record no dataset; pass --data")
    return chunked_like(_load(replace(data, path=str(source))), cands.meta)


@app.command()
@friendly
@with_options(data=DATA)
def validate(
    eval_split: str = typer.Option("test", "--eval-split", help="Split checked for leakage against train."),
    data: Any = None,
):
    """Check a dataset fully (ids, qrels, texts, encoding) and report train/eval leakage."""
    from hardneg.data import leakage

    ds = _load(data)
    console.print(f"{len(ds.doc_ids)} documents, {len(ds.queries)} queries")
    for split in ds.splits:
        pos = ds.positives(split)
        console.print(f"  {split}: {len(pos)} queries, {sum(map(len, pos.values()))} positives, "
                      f"{sum(map(len, ds.known_negatives(split).values()))} judged negatives")
    leak = leakage(ds, eval_split)
    if leak is not None:
        console.print(f"leakage train -> {eval_split}: {leak.summary()}")


@app.command("eval")
@friendly
@with_options(data=DATA, encoder=ENCODER, cache=CACHE, evaluation=Opts(EvalConfig, "eval"),
              chunks=Opts(MineConfig, "mine", only=("chunk_tokens", "chunk_overlap")))
def eval_cmd(
    split: str = typer.Option("test", "--split", help="Split to evaluate on (held out from training)."),
    retriever: List[str] = typer.Option(
        ["bm25", "dense"], "--retriever", "-r",
        help="KIND[:NAME][=MODEL], repeatable; KIND is bm25, dense or hybrid (RRF of bm25 + dense). "
             "The first is the reference of the significance tests.",
    ),
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json, runs/*.trec, per_query.tsv, report.md."),
    data: Any = None, encoder: Any = None, cache: Any = None, evaluation: Any = None, chunks: Any = None,
):
    """Evaluate retrievers on a held-out split: NDCG@10, Recall@10/100, MRR@10, MAP@100 with significance.

    With --chunk-tokens the retrievers rank chunks and a document scores its best chunk: the
    metrics stay at document level.
    """
    from hardneg.chunking import search_documents
    from hardneg.evaluate import evaluate, format_table, write_eval
    from hardneg.retrieve import build_retrievers

    start = time.perf_counter()
    ds = _load(data)
    qids = list(ds.positives(split)) if split in ds.qrels else ds.split_qrels(split)
    texts = [ds.queries[q] for q in qids]
    docs = _chunk(ds, chunks, encoder)
    retrievers = build_retrievers(retriever, docs.doc_ids, docs.doc_texts(), encoder, cache=cache.cache_dir)
    rankings = {}
    for name, r in retrievers.items():
        t = time.perf_counter()
        with _working(f"{name}: retrieving for {len(qids)} queries"):
            rankings[name] = (r.search(qids, texts, evaluation.depth) if docs is ds
                              else search_documents(r, docs, qids, texts, evaluation.depth))
        console.print(f"[dim]{name}: retrieved in {time.perf_counter() - t:.1f}s[/dim]")
    result = evaluate(ds, split, rankings, seed=evaluation.seed, n_resamples=evaluation.n_resamples)
    write_eval(result, out, rankings)
    console.print(format_table(result))
    if result.clean_ids:
        _print_clean(result)
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"wrote {out}/metrics.json, report.md, runs/ ({time.perf_counter() - start:.1f}s)")


def _print_clean(result) -> None:
    from rich.table import Table

    table = Table(title=f"queries whose positives were never train positives ({len(result.clean_ids)})")
    table.add_column("system")
    for m in result.metrics:
        table.add_column(m, justify="right")
    for s, ms in result.means(result.clean_ids).items():
        table.add_row(s, *[f"{ms[m]:.4f}" for m in result.metrics])
    console.print(table)


# ---- mining and selection ------------------------------------------------------------------------
def _select_and_print(cands, ds, out: Path, policy, export) -> None:
    from hardneg.export import select_and_export
    from hardneg.select.stats import format_stats_table

    start = time.perf_counter()
    mined, report = select_and_export(cands, ds, out, policy, export.format)
    console.print(format_stats_table(mined.stats))
    console.print(f"selected in {time.perf_counter() - start:.3f}s; wrote {', '.join(sorted(report))} and "
                  f"stats.json to {out}")


@app.command()
@friendly
@with_options(data=DATA, config=Opts(MineConfig, "mine"), encoder=ENCODER, cache=CACHE, policy=POLICY,
              export=EXPORT)
def mine(
    out: Path = typer.Option(..., "--out", help="Output folder: candidates.parquet, negatives.jsonl, stats.json."),
    restart: bool = typer.Option(False, "--restart", help="Discard a checkpoint left in OUT by an earlier, "
                                 "different mining run instead of refusing it."),
    data: Any = None, config: Any = None, encoder: Any = None, cache: Any = None, policy: Any = None,
    export: Any = None,
):
    """Retrieve candidates once (candidates.parquet), then select negatives with the policy options.

    With --chunk-tokens candidates and negatives are chunks of long documents; a positive
    document's best-scoring chunk is its positive and its other chunks are never negatives.
    """
    from hardneg.checkpoint import CHECKPOINT_DIRNAME
    from hardneg.files import atomic_write_json
    from hardneg.mine import mine_to_folder, search_report

    config = replace(config, rank_by=policy.rank_by, score_by=policy.score_by)
    ds = _chunk(_load(data), config, encoder)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if total > 1:
            console.print(f"query chunk {done}/{total} mined (checkpoint: {out / CHECKPOINT_DIRNAME})")

    with _working(f"mining '{config.split}' with {config.retriever}"):
        cands = mine_to_folder(ds, out, config, encoder, cache.cache_dir, restart=restart, progress=progress)
    if cands.run.get("resumed_chunks"):
        console.print(f"resumed {cands.run['resumed_chunks']} of {cands.run['chunks']} query chunks")
    searches = search_report(cands)
    for name, s in searches.items():
        console.print(f"search {name}: {_search_line(s)}")
    if searches:
        atomic_write_json(out / "search.json", searches)
    console.print(f"mined {len(cands.table)} candidate rows for {cands.table['query_id'].nunique()} queries "
                  f"in {time.perf_counter() - start:.1f}s -> {out / 'candidates.parquet'}")
    _select_and_print(cands, ds, out, policy, export)


def _search_line(s: dict) -> str:
    """One dense scorer's search: kind (params), measured recall, build and search seconds."""
    recall = (f", recall@{s['depth']} {s['recall_at_depth']:.3f} on {s['recall_sample']} sampled queries"
              if s.get("recall_at_depth") is not None else "")
    params = ", ".join(f"{k}={v}" for k, v in s.get("params", {}).items())
    built = (f"build {s.get('build_seconds', 0):.1f}s, recall check {s.get('recall_seconds', 0):.1f}s, "
             if s["kind"] not in ("exact", "auto") else "")
    return f"{s['kind']}{f' ({params})' if params else ''}{recall}; {built}search {s.get('search_seconds', 0):.1f}s"


@app.command("select")
@friendly
@with_options(data=Opts(DataConfig, "data", only=("path", "corpus")), policy=POLICY, export=EXPORT)
def select_cmd(
    candidates: Path = typer.Argument(..., help="A candidates.parquet written by `hardneg mine`."),
    out: Path = typer.Option(..., "--out", help="Output folder: negatives.jsonl, stats.json, [train.parquet]."),
    data: Any = None, policy: Any = None, export: Any = None,
):
    """Select negatives again from stored candidates: no retrieval, no encoding (seconds).

    --data defaults to the dataset the candidates were mined on.
    """
    from hardneg.candidates import CandidateSet

    cands = CandidateSet.read(candidates)
    _select_and_print(cands, _dataset_of(cands, data), out, policy, export)


# ---- training, the whole loop, the demo ---------------------------------------------------------
@app.command("train")
@friendly
@with_options(data=Opts(DataConfig, "data", only=("path", "corpus", "skip_unknown", "dev_split"), required=("path",)),
              model=Opts(EncoderConfig, "model", only=("model",)), pairs=Opts(MineConfig, "mine", only=("split",)),
              config=Opts(TrainConfig, "train"))
def train_cmd(
    negatives: Optional[Path] = typer.Option(
        None, "--negatives", help="negatives.jsonl from `hardneg mine`/`select`. Left out, or empty because the "
        "policy was the in-batch-only baseline (--sampler none): train on the (query, positive) pairs of --split."),
    out: Path = typer.Option(..., "--out", help="Model folder to write (a normal sentence-transformers model)."),
    data: Any = None, model: Any = None, pairs: Any = None, config: Any = None,
):
    """Fine-tune a sentence-transformers model on mined negatives; keeps the best dev checkpoint."""
    from hardneg.train import train
    from hardneg.train.config import TRAIN_LOG

    with _working("training"):
        result = train(_load(data), negatives, model.model, out, config, data.dev_split, pairs_split=pairs.split)
    console.print(result.data.summary())
    console.print(f"{result.memory['summary']}; precision {result.precision} "
                  f"on {result.machine['cpu']} (AMX-BF16: {'yes' if result.machine['amx_bf16'] else 'no'})")
    if result.evals:
        start, best = result.before, result.best or result.evals[-1]
        console.print(f"dev NDCG@10 ({result.eval_set}): start {start['ndcg@10']:.4f} -> kept step "
                      f"{best['step']} {best['ndcg@10']:.4f}")
    if result.losses:
        console.print(f"loss {result.losses[0][1]:.4f} (step {result.losses[0][0]}) -> {result.losses[-1][1]:.4f} "
                      f"(step {result.losses[-1][0]})")
    console.print(f"trained in {result.train_seconds:.1f}s; wrote {out} (model card README.md, hardneg_train.json, "
                  f"the trainer's log {TRAIN_LOG})")


def _run_and_print(config, out: Path, title: str) -> None:
    from rich import box

    from hardneg.files import atomic_write_text
    from hardneg.loop import format_run_table, run
    from hardneg.recipe import dump_recipe
    from hardneg.train.config import TRAIN_LOG

    atomic_write_text(out / "recipe.toml", dump_recipe(config))
    with _working("starting"):
        result = run(config, out, progress=_say)
    table = format_run_table(result, title=f"{title}: {result.metrics['split']}, {result.metrics['n_queries']} queries")
    table.box = box.SIMPLE_HEAD  # light rules: the same table in two thirds of the bytes
    console.print(table)
    if not result.metrics["tuned_kept_on_dev"]:
        console.print("note: no round beat the base model on dev; 'tuned' is round r0, shown for the record")
    for note in result.metrics["notes"]:
        console.print(f"note: {note}")
    console.print(f"wrote {out}/report.html, report.md, metrics.json, recipe.toml, eval/, rounds/ (the trainer's "
                  f"logs: rounds/r<i>/{TRAIN_LOG}){', model/' if result.metrics['tuned_kept_on_dev'] else ''} "
                  f"({result.seconds:.0f}s)")


SetOpt = typer.Option([], "--set", help="Override a recipe key: SECTION.KEY=VALUE (TOML value), repeatable.")


def _overrides(sets: List[str], **loop) -> dict:
    from hardneg.recipe import merge_overrides, parse_override

    loop_keys = {k: v for k, v in loop.items() if v is not None}
    return merge_overrides(*(parse_override(s) for s in sets), {"loop": loop_keys} if loop_keys else {})


@app.command("run")
@friendly
def run_cmd(
    recipe: Path = typer.Argument(..., help="A TOML recipe (`hardneg recipe` prints the commented default)."),
    out: Path = typer.Option(..., "--out", help="Output folder: report.md, metrics.json, model/, eval/, rounds/."),
    set_: List[str] = SetOpt,
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Re-mining rounds after the first fine-tune ([loop] rounds)."),
    round_init: Optional[str] = typer.Option(None, "--round-init", help="base | previous ([loop] round_init)."),
    round_gate: Optional[str] = typer.Option(None, "--round-gate", help="gain | significant ([loop] round_gate)."),
):
    """Run a recipe: baselines -> mine -> select -> train -> rounds -> test evaluation with lift and p-values."""
    from hardneg.recipe import load_recipe

    overrides = _overrides(set_, rounds=rounds, round_init=round_init, round_gate=round_gate)
    config = load_recipe(recipe, overrides, override_source="command line")
    _run_and_print(config, out, f"hardneg run {recipe.name}")


@app.command()
@friendly
def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset (default: the repo's examples/scifact-sample)."),
    set_: List[str] = SetOpt,
):
    """The default recipe, scaled down, on the SciFact sample: under 5 minutes on 2 CPU cores."""
    from hardneg.recipe import demo_data_path, demo_overrides, load_recipe, merge_overrides, parse_override

    start = time.perf_counter()
    path = data or demo_data_path()
    if not path.exists():
        raise HardnegError(f"{path}: not found; the demo reads the repository's examples/ folder: run it from a "
                           "source checkout or pass --data")
    overrides = merge_overrides(demo_overrides(path), *(parse_override(s) for s in set_))
    config = load_recipe(None, overrides, override_source="demo settings")
    console.print(f"demo: the default recipe on {path} with smaller settings "
                  f"(passage max length {config.encoder.passage_max_length}, {config.train.max_steps} training "
                  f"steps of {config.train.batch_size}, {config.loop.rounds} re-mining round); "
                  f"full settings: `hardneg recipe`")
    _run_and_print(config, out, "demo")
    console.print(f"demo wall time {time.perf_counter() - start:.0f}s")


@app.command("recipe")
@friendly
def recipe_cmd(
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of printing."),
):
    """Print the commented default recipe (every key, full-quality defaults) to start your own."""
    from hardneg.files import atomic_write_text
    from hardneg.recipe import default_recipe_text

    text = default_recipe_text()
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out}")


@app.command()
@friendly
@with_options(config=Opts(AuditConfig, "audit", only=("hide", "draws", "seed")),
              data=Opts(DataConfig, "data", only=("path", "corpus")))
def audit(
    candidates: Path = typer.Argument(..., help="candidates.parquet of a TRAIN split mine (never an eval split)."),
    out: Path = typer.Option(..., "--out", help="Output folder: audit.json."),
    cross_encoder: Optional[Path] = typer.Option(None, "--cross-encoder", help="A CrossEncoder folder (or a "
                                                 "cross-fitted one from `hardneg train-reranker --folds`) "
                                                 "to judge a sample of unlabeled candidates per bucket."),
    judge_threshold: float = typer.Option(0.0, help="Judged relevant when the cross-encoder score is above this "
                                          "(a logit of 0 is p = 0.5)."),
    judge_sample: int = typer.Option(100, help="Unlabeled candidates judged per rank bucket."),
    config: Any = None, data: Any = None,
):
    """The false-negative curve: per original-rank bucket, how often an unlabeled candidate is relevant.

    With labels: hide a fraction of the positives of queries that have several and count the
    hidden ones per bucket (Wilson 95% intervals). With --cross-encoder: the share of a
    sample of unlabeled candidates per bucket the judge calls relevant (the texts come from
    --data, default the dataset mined). Writes OUT/audit.json; `hardneg calibrate
    OUT/audit.json` turns it into a window.
    """
    from hardneg.audit import audit_candidates
    from hardneg.candidates import CandidateSet
    from hardneg.files import atomic_write_json
    from hardneg.crossencoder import load_judge

    cands = CandidateSet.read(candidates)
    judge = {}
    if cross_encoder is not None:
        ds = _dataset_of(cands, data)
        judge = dict(judge=load_judge(cross_encoder), texts=ds.doc_text_map(), queries=ds.queries,
                     threshold=judge_threshold, sample=judge_sample)
    doc = {"candidates": str(candidates)} | audit_candidates(cands, config.hide, config.draws, config.seed, **judge)
    atomic_write_json(out / "audit.json", doc)
    if doc.get("labels_note"):
        console.print(f"labels: {doc['labels_note']}")
    _print_audit(doc)
    console.print(f"wrote {out / 'audit.json'}")


def _print_audit(doc: dict) -> None:
    from rich.table import Table

    table = Table(title="false-negative curve (share of unlabeled candidates that are relevant)")
    table.add_column("ranks")
    kinds = [k for k in ("labels", "judge") if doc.get(k)]
    for kind in kinds:
        table.add_column(f"{kind}: rate [95% CI]", justify="right")
        table.add_column("n", justify="right")
    for i, b in enumerate(doc[kinds[0]]["buckets"]):
        cells = [b["bucket"]]
        for kind in kinds:
            c = doc[kind]["buckets"][i]
            ci = f" [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]" if c["ci"] else ""
            cells += ["-" if c["rate"] is None else f"{c['rate']:.3f}{ci}", f"{c['n']:.0f}"]
        table.add_row(*cells)
    console.print(table)
    pos = (doc.get("judge") or {}).get("positives") or {}
    if pos.get("n"):
        console.print(f"the judge calls {pos['rate']:.1%} of {pos['n']} sampled labeled positives relevant "
                      f"[{pos['ci'][0]:.3f}, {pos['ci'][1]:.3f}]: its recall at this threshold")
    fixed = [b.get("corrected") for b in (doc.get("judge") or {}).get("buckets", [])]
    if fixed and all(fixed):
        console.print(f"judge corrected for recall {fixed[0]['recall']:.3f} and false alarms "
                      f"{fixed[0]['false_alarm']:.3f} (its deepest bucket): "
                      + ", ".join(f"{b['bucket']} {c['rate']:.3f}" for b, c in zip(doc["judge"]["buckets"], fixed)))


@app.command()
@friendly
@with_options(config=Opts(AuditConfig, "audit", only=("target", "window_end")))
def calibrate(
    audit_file: Path = typer.Argument(..., help="audit.json from `hardneg audit`."),
    use: str = typer.Option("auto", help="Curve: auto (the judge's when present, else the labels'), judge, labels."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the recipe keys to this TOML file."),
    config: Any = None,
):
    """Pick the smallest window start (and a percent threshold) under the target false-negative rate.

    Prints (or writes) recipe keys: `[select] window = "S:END"` and `percent`. In a recipe,
    `window = "auto"` does this inside `hardneg run` for every round.
    """
    from hardneg.audit import calibrate as calibrate_audit
    from hardneg.audit import read_audit
    from hardneg.files import atomic_write_text

    cal = calibrate_audit(read_audit(audit_file), config.target, config.window_end, use)
    text = cal.recipe_toml()
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out}: window {cal.window[0]}:{cal.window[1]}, percent {cal.percent}")


# ---- cross-encoder: rescore, train-reranker ------------------------------------------------------
@app.command("rescore")
@friendly
@with_options(data=Opts(DataConfig, "data", only=("path", "corpus")),
              config=Opts(DenoiseConfig, "denoise", required=("cross_encoder",), defaults=(("window", "1:100"),)),
              cache=CACHE)
def rescore_cmd(
    candidates: Path = typer.Argument(..., help="A candidates.parquet written by `hardneg mine`."),
    out: Path = typer.Option(..., "--out", help="The rescored candidates file (a folder: OUT/candidates.parquet)."),
    rank_by: Optional[str] = typer.Option(None, "--rank-by", help="Scorer whose ranks the window uses."),
    check: bool = typer.Option(True, "--check/--no-check", help="Check that the cross-encoder reranks BM25's top "
                               "100 better than BM25 (its train-reranker record, else dev, else the candidates' "
                               "queries)."),
    check_queries: int = typer.Option(100, "--check-queries", help="Queries of that check (seeded sample)."),
    data: Any = None, config: Any = None, cache: Any = None,
):
    """Add cross-encoder scores (score_ce, logits) for the candidates in a rank window and all positives.

    Then `hardneg select OUT --denoise-above T` drops candidates it scores above T (unscored
    ones are kept), and the export carries its scores as teacher pos_scores/neg_scores for
    `hardneg train --loss marginmse`. The window defaults to 1:100 here (every rank a sampler
    could reach); in a recipe's [denoise] to the default policy's reach.
    """
    from hardneg.encode.cache import EmbeddingCache
    from hardneg.candidates import CandidateSet
    from hardneg.crossencoder import Reranker, check_for_candidates, rescore_with_report

    cands = CandidateSet.read(candidates)
    ds = _dataset_of(cands, data)
    target = out if out.suffix == ".parquet" else out / "candidates.parquet"
    reranker, store = Reranker.load(config.cross_encoder), EmbeddingCache(cache.cache_dir)
    if check:
        console.print(check_for_candidates(reranker, ds, cands, max_queries=check_queries,
                                           batch_size=config.batch_size, cache=store).summary(), soft_wrap=True)
    rescored, report = rescore_with_report(cands, ds, reranker, window=config.window, rank_by=rank_by,
                                           batch_size=config.batch_size, cache=store)
    console.print(f"cross-encoder: {report.summary()}")
    rescored.write(target)
    console.print(f"wrote {target}; e.g. `hardneg select {target} --denoise-above 0` (logits: 0 is p = 0.5)")


@app.command("train-reranker")
@friendly
@with_options(data=Opts(DataConfig, "data", only=("path", "corpus", "skip_unknown", "dev_split"), required=("path",)),
              model=Opts(EncoderConfig, only=("model",)), config=Opts(RerankerConfig))
def train_reranker_cmd(
    out: Path = typer.Option(..., "--out", help="Folder of the CrossEncoder (fold_<i>/ + folds.json with --folds)."),
    negatives: Optional[Path] = typer.Option(None, "--negatives", help="negatives.jsonl from `hardneg mine`/`select`."),
    candidates: Optional[Path] = typer.Option(None, "--candidates", help="Or a candidates.parquet: negatives drawn "
                                              "uniformly from the original ranks of --window."),
    window: str = typer.Option("{}:{}".format(*SelectionPolicy().window), "--window",
                               help="With --candidates: MIN:MAX ranks negatives come from (the default policy's)."),
    data: Any = None, model: Any = None, config: Any = None,
):
    """Train a cross-encoder reranker on train positives (1) and mined negatives (0); check it against BM25.

    --model is the starting model (a sentence-transformers folder gets a new head).
    """
    from hardneg.crossencoder import warn_if_worse
    from hardneg.train.reranker import train_reranker, training_rows

    ds = _load(data)
    rows = training_rows(ds, config, negatives=negatives, candidates=candidates, window=window)
    with _working("training the cross-encoder"):
        result = train_reranker(ds, rows, out, model.model, config, data.dev_split)
    d = result.data
    console.print(f"trained on {d['pairs']:,} pairs ({d['positives']:,} positive, {d['negatives']:,} negative) "
                  f"of {d['queries']:,} queries" + (f" in {config.folds} folds" if result.folds else "")
                  + f" in {result.train_seconds:.1f}s")
    if result.check is not None:
        console.print(result.check.summary(), soft_wrap=True)
        warn_if_worse(result.check)
    console.print(f"wrote {out} ({'fold_<i>/, folds.json, ' if result.folds else ''}hardneg_reranker.json)")


# ---- the HTML report ----------------------------------------------------------------------------
@app.command("report")
@friendly
def report_cmd(
    run_dir: Path = typer.Argument(..., help="Output folder of `hardneg run` (holds metrics.json)."),
    progression: Optional[Path] = typer.Option(None, "--progression", help="A Markdown progression table "
                                               "(benchmarks/progression.py's table.md); default RUN_DIR/progression.md."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="An audit.json (`hardneg audit`); default "
                                         "RUN_DIR/audit.json, RUN_DIR/audit/audit.json or the tuned round's own."),
    sample: int = typer.Option(20, "--sample", help="Train queries in the per-query view (seeded)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-query sample."),
):
    """Write RUN_DIR/report.html (self-contained: images embedded, no network) and RUN_DIR/plots/*.png."""
    from hardneg.report import write_report

    print(write_report(run_dir, progression=progression, audit=audit, sample=sample, seed=seed))


# ---- positives from click logs and from an unlabeled corpus -------------------------------------
@app.command("clicks")
@friendly
@with_options(policy=Opts(ClickPolicy), config=Opts(ClickConfig))
def clicks_cmd(
    log: Path = typer.Argument(..., help="Click log: JSONL, CSV/TSV or Parquet; one impression per line with query, "
                               "shown (ids in displayed order), clicked, optional query_id, dwell, timestamp, session."),
    corpus: Path = typer.Option(..., "--corpus", help="Corpus JSONL[.gz] (or a BEIR folder holding one)."),
    out: Path = typer.Option(..., "--out", help="Output BEIR folder: corpus, queries.jsonl, qrels/train.tsv "
                             "[qrels/test.tsv], skip_above.tsv, clicks_stats.json, position_bias.md."),
    policy: Any = None, config: Any = None,
):
    """Positives from a click log (and skip-above negatives): a BEIR folder `mine` and `train` read."""
    from rich.table import Table

    from hardneg.positives.clicks import clicks_to_beir

    result = clicks_to_beir(log, corpus, out, replace(config, policy=policy))
    s, c = result.stats, result.stats["counts"]
    table = Table(title="click-through rate by position")
    for name in ("position", "impressions", "clicks", "CTR", "CTR / CTR@1", "counted CTR"):
        table.add_column(name, justify="right")
    for r in result.position_bias.itertuples(index=False):
        rel = "-" if r.ctr_relative != r.ctr_relative else f"{r.ctr_relative:.3f}"
        table.add_row(str(r.position), f"{r.impressions:,}", f"{r.clicks:,}", f"{r.ctr:.4f}", rel, f"{r.counted_ctr:.4f}")
    console.print(table)
    console.print(f"{s['impressions']:,} impressions of {s['queries']:,} queries; {c['clicks']:,} clicks, "
                  f"{c['clicks_counted']:,} counted -> {c['positives']:,} positives for "
                  f"{c['queries_with_positives']:,} queries ({s['train_queries']:,} train, {s['test_queries']:,} test); "
                  f"{s['skip_above_pairs']:,} skip-above pairs", soft_wrap=True)
    console.print(f"wrote {out} ({', '.join(result.files)})", soft_wrap=True)


@app.command("skip-above")
@friendly
@with_options(data=Opts(DataConfig, "data", only=("path", "corpus")))
def skip_above_cmd(
    candidates: Path = typer.Argument(..., help="A candidates.parquet written by `hardneg mine` on a "
                                      "`hardneg clicks` folder."),
    skips: Path = typer.Option(..., "--skips", help="skip_above.tsv written by `hardneg clicks`."),
    out: Path = typer.Option(..., "--out", help="The new candidates.parquet (with rows of source clicks-skip-above)."),
    data: Any = None,
):
    """Add skip-above negatives to a candidate set as a separate, flagged source.

    They have no retriever rank: a --window drops them. Select them on purpose with
    `hardneg select ... --rank-by clicks --score-by clicks --window 1:20 --percent off`
    (the window is then on displayed positions; most-skipped first). --data (default: the
    dataset mined) gives the duplicate and query-text flags.
    """
    from hardneg.candidates import CandidateSet
    from hardneg.positives.clicks import add_skip_above, read_skip_above

    cands = CandidateSet.read(candidates)
    ds = _dataset_of(cands, data) if data.path or cands.meta.get("data") else None
    result = add_skip_above(cands, read_skip_above(skips), ds)
    result.write(out)
    n = result.meta["skip_above"]
    console.print(f"{n['pairs']:,} skip-above pairs: {n['added']:,} rows added, {n['flagged_retrieved']:,} "
                  f"retrieved rows flagged, {n['not_mined']:,} for queries not in the set, "
                  f"{n['positives_refused']:,} known positives refused -> {out}", soft_wrap=True)


@app.command("synth")
@friendly
@with_options(config=Opts(SynthConfig))
def synth_cmd(
    corpus: Path = typer.Option(..., "--corpus", help="Corpus JSONL[.gz] (or a BEIR folder holding one)."),
    out: Path = typer.Option(..., "--out", help="Output BEIR folder: corpus.jsonl (the training corpus), "
                             "queries.jsonl, qrels/train.tsv, pairs.jsonl, synth.json."),
    config: Any = None,
):
    """Positives from an unlabeled corpus (no qrels, no model): a BEIR folder `mine` and `train` read."""
    from hardneg.positives.synth import write_synth

    result = write_synth(corpus, out, config)
    c = result.counts
    dropped = ", ".join(f"{k} {v:,}" for k, v in c.items() if k not in ("pairs", "queries", "docs_used",
                                                                         "docs_considered") and v)
    console.print(f"{config.method.value}: {c['pairs']:,} pairs ({c['queries']:,} queries) from "
                  f"{c.get('docs_used', 0):,} of {c['docs_considered']:,} documents"
                  + (f"; {dropped}" if dropped else ""), soft_wrap=True)
    console.print(f"wrote {out} (corpus.jsonl, queries.jsonl, qrels/train.tsv, pairs.jsonl, synth.json)",
                  soft_wrap=True)


# ---- before tuning: diagnose -------------------------------------------------------------------
@app.command("diagnose")
@friendly
@with_options(data=DATA, encoder=ENCODER, cache=CACHE, config=Opts(DiagnoseConfig))
def diagnose_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder: diagnosis.md/.html/.json/.png, "
                             "suspicious_positives.tsv, positive_pairs.tsv."),
    clicks: Optional[Path] = typer.Option(None, "--clicks", help="A click log (as `hardneg clicks` reads): adds "
                                          "its click-through rate by position. A folder written by `hardneg "
                                          "clicks` is picked up without it (its clicks_stats.json)."),
    data: Any = None, encoder: Any = None, cache: Any = None, config: Any = None,
):
    """Before spending money: BM25 vs the untuned model, vocabulary fit, overlap, suspicious positives, a verdict."""
    from hardneg.diagnose import click_bias_of, diagnose
    from hardneg.diagnose.report import write_diagnosis
    from hardneg.encode import Encoder

    start = time.perf_counter()
    ds = _load(data)
    ds.split_qrels(config.split)  # a missing split fails before the model loads
    enc = Encoder(encoder) if cache.cache_dir is None else Encoder(encoder, cache=cache.cache_dir)
    diag = diagnose(ds, enc, config)
    diag.clicks = click_bias_of(data.path, ds, clicks)
    write_diagnosis(diag, out, ds)
    m = diag.gap["means"]
    console.print(f"NDCG@10 on {config.split} ({diag.gap['n_queries']} queries): bm25 {m['bm25']['ndcg@10']:.4f}, "
                  f"untuned {m['dense']['ndcg@10']:.4f}, hybrid {m['hybrid']['ndcg@10']:.4f}", soft_wrap=True)
    console.print(f"verdict: tuning {diag.verdict.outlook.phrase}. {diag.verdict.headline}", soft_wrap=True,
                  markup=False)
    for reason in diag.verdict.reasons:
        console.print(f"  - {reason}", soft_wrap=True, markup=False)
    if diag.clicks:
        console.print(f"clicks: {diag.clicks['note']}", soft_wrap=True, markup=False)
    console.print(f"wrote {out}/diagnosis.md, diagnosis.html, diagnosis.json, suspicious_positives.tsv "
                  f"({time.perf_counter() - start:.1f}s)", soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    app()

