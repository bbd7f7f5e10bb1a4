"""The ``hardneg`` command line: a thin typer layer over the library's functions."""
from __future__ import annotations

import functools
import inspect
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from hardneg.errors import HardnegError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Mine, select and audit hard negatives; fine-tune and evaluate embedding retrievers.",
)
console = Console(width=None if sys.stdout.isatty() else 120)

DataOpt = typer.Option(..., "--data", help="A BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/*.tsv), "
                                           "or a pairs JSONL together with --corpus.")
CorpusOpt = typer.Option(None, "--corpus", help="Corpus JSONL when --data is a pairs file.")
SkipUnknownOpt = typer.Option(False, "--skip-unknown", help="Drop qrels rows naming unknown queries/documents "
                                                           "(counted in a warning) instead of failing.")
ModelOpt = typer.Option(None, "--model", help="Local sentence-transformers folder (default: the bundled all-MiniLM-L6-v2).")
CacheOpt = typer.Option(None, "--cache-dir", help="Embedding cache folder (default: $HARDNEG_CACHE or ~/.cache/hardneg).")


def _setup_logging() -> None:
    """hardneg's own warnings (skipped rows, merged queries) go to stderr; libraries stay quiet."""
    log = logging.getLogger("hardneg")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        log.addHandler(handler)
        log.propagate = False


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


def _load(data: Path, corpus: Optional[Path], skip_unknown: bool):
    from hardneg.data import load_dataset

    return load_dataset(data, corpus=corpus, skip_unknown=skip_unknown)


def _encoder_config(model, batch_size, query_max_length, passage_max_length, query_prompt, passage_prompt):
    from hardneg.encode import EncoderConfig

    return EncoderConfig(model=str(model) if model else None, batch_size=batch_size,
                         query_max_length=query_max_length, passage_max_length=passage_max_length,
                         query_prompt=query_prompt, passage_prompt=passage_prompt)


@app.command()
@friendly
def validate(
    data: Path = DataOpt,
    corpus: Optional[Path] = CorpusOpt,
    skip_unknown: bool = SkipUnknownOpt,
    eval_split: str = typer.Option("test", "--eval-split", help="Split checked for leakage against train."),
):
    """Check a dataset fully (ids, qrels, texts, encoding) and report train/eval leakage."""
    from hardneg.data import leakage

    ds = _load(data, corpus, skip_unknown)
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
def eval_cmd(
    data: Path = DataOpt,
    split: str = typer.Option("test", "--split", help="Split to evaluate on (held out from training)."),
    retriever: List[str] = typer.Option(
        ["bm25", "dense"], "--retriever", "-r",
        help="KIND[:NAME][=MODEL], repeatable; KIND is bm25, dense or hybrid (RRF of bm25 + dense). "
             "The first is the reference of the significance tests.",
    ),
    model: Optional[Path] = ModelOpt,
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json, runs/*.trec, per_query.tsv, report.md."),
    corpus: Optional[Path] = CorpusOpt,
    skip_unknown: bool = SkipUnknownOpt,
    cache_dir: Optional[Path] = CacheOpt,
    batch_size: int = typer.Option(64, help="Encoding batch size."),
    query_max_length: Optional[int] = typer.Option(None, help="Max tokens per query (default: the model's)."),
    passage_max_length: Optional[int] = typer.Option(None, help="Max tokens per passage (default: the model's)."),
    query_prompt: str = typer.Option("", help="Prompt prepended to queries (e.g. 'query: ' for E5)."),
    passage_prompt: str = typer.Option("", help="Prompt prepended to passages (e.g. 'passage: ')."),
    depth: int = typer.Option(100, help="Documents retrieved per query (metrics use @10 and @100)."),
    seed: int = typer.Option(0, help="Seed of the permutation test and bootstrap intervals."),
):
    """Evaluate retrievers on a held-out split: NDCG@10, Recall@10/100, MRR@10, MAP@100 with significance."""
    from hardneg.evaluate import evaluate, format_table, write_eval
    from hardneg.retrieve import build_retrievers

    start = time.perf_counter()
    ds = _load(data, corpus, skip_unknown)
    qids = list(ds.positives(split)) if split in ds.qrels else ds.split_qrels(split)
    texts = [ds.queries[q] for q in qids]
    cfg = _encoder_config(model, batch_size, query_max_length, passage_max_length, query_prompt, passage_prompt)
    retrievers = build_retrievers(retriever, ds.doc_ids, ds.doc_texts(), cfg, cache=cache_dir)
    rankings = {}
    for name, r in retrievers.items():
        t = time.perf_counter()
        rankings[name] = r.search(qids, texts, depth)
        console.print(f"[dim]{name}: retrieved in {time.perf_counter() - t:.1f}s[/dim]")
    result = evaluate(ds, split, rankings, seed=seed)
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


# ---- mining ------------------------------------------------------------------------------------
def _opt(name: str, default, annotation, help: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, "--" + name.replace("_", "-"), help=help))


DEFAULT_WINDOW, DEFAULT_PERCENT = "10:100", "0.95"

# Selection policy options, shared by `mine` and `select` (one definition, added by a decorator).
# Defaults are the provisional default policy: NV-Retriever's percent 0.95 + top, window 10:100.
POLICY_OPTIONS = [
    _opt("window", None, Optional[str], "MIN:MAX 1-based ranks on the ORIGINAL ranking (counted with known "
         "positives), both ends kept, applied before any other filter ('off' for none). "
         "Unlike sentence-transformers' range_min, which skips surviving candidates. "
         f"Default {DEFAULT_WINDOW} (not for the random/none baselines)."),
    _opt("percent", None, Optional[str], "Keep a candidate only if score <= P x positive score (NV-Retriever; "
         f"'off' for none; default {DEFAULT_PERCENT}, not for the random/none baselines). "
         "Refused for scorers whose scores can be negative: use --margin."),
    _opt("margin", None, Optional[float], "Keep only if score <= positive score - M."),
    _opt("max_score", None, Optional[float], "Keep only if score <= X (TopK-Abs)."),
    _opt("pos_ref", "min", str, "Positive score the filters compare with: 'min' (the query's lowest) or "
         "'per-pair' (one output row per (query, positive))."),
    _opt("near_dup", None, Optional[float], "Drop candidates whose embedding cosine to a positive exceeds this."),
    _opt("denoise_above", None, Optional[float], "Drop candidates the cross-encoder (ce) scores above this."),
    _opt("rank_by", None, Optional[str], "Scorer whose ranks the window uses (default: the retriever)."),
    _opt("score_by", None, Optional[str], "Scorer whose scores the filters use (default: the retriever; "
         "never an RRF value)."),
    _opt("sampler", "top", str, "top | uniform | simans | softmax (from the survivors), random (whole corpus), "
         "none (in-batch negatives only)."),
    _opt("num_negatives", 7, int, "Negatives per output row (k)."),
    _opt("on_short", "keep", str, "When fewer than k survive: drop | keep | pad-random."),
    _opt("seed", 42, int, "Seed of every random choice."),
    _opt("simans_a", 1.0, float, "SimANS sharpness a (on per-query standardised scores)."),
    _opt("simans_b", 0.0, float, "SimANS offset b."),
    _opt("temperature", 1.0, float, "Softmax sampler temperature."),
    _opt("format", None, Optional[str], "Also write sentence-transformers data: st-triplet | st-ntuple | st-labeled."),
]


def option_group(options: list, build):
    """Decorator adding ``options`` to a command; ``build(**their values)`` returns the keyword
    arguments the command receives instead (e.g. ``{"config": TrainConfig(...)}``)."""

    def decorate(fn):
        sig = inspect.signature(fn)
        names = [p.name for p in options]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            built = build(**{n: kwargs.pop(n) for n in names})
            return fn(*args, **built, **kwargs)

        kept = [p for p in sig.parameters.values() if p.name not in ("policy", "fmt", "config")]
        wrapper.__signature__ = sig.replace(parameters=kept + options)
        return wrapper

    return decorate


def _policy_kwargs(format=None, **values):  # noqa: A002 (the option is --format)
    return {"policy": _policy(**values), "fmt": format}


def policy_options(fn):
    """Add the selection options to a command; it receives ``policy`` and ``fmt``."""
    return option_group(POLICY_OPTIONS, _policy_kwargs)(fn)


def _off(text: str | None) -> str | None:
    return None if text is None or text.strip().lower() in ("off", "none", "") else text


def _policy(window, percent, near_dup, **rest):
    from hardneg.select import SelectionPolicy

    if rest["sampler"] not in ("random", "none"):  # the baselines use no candidates, so no filters
        window = DEFAULT_WINDOW if window is None else window
        percent = DEFAULT_PERCENT if percent is None else percent

    try:
        pct = None if _off(percent) is None else float(percent)
    except ValueError:
        raise HardnegError(f"--percent must be a number in (0, 1] or 'off', got {percent!r}") from None
    return SelectionPolicy(window=_off(window), percent=pct, near_dup_cosine=near_dup, **rest)


def _select_and_write(cands, policy, fmt, out: Path, ds) -> None:
    from hardneg.export import export
    from hardneg.io import atomic_write_json
    from hardneg.select import format_stats_table, select

    start = time.perf_counter()
    mined = select(cands, policy, corpus_doc_ids=ds.doc_ids)
    elapsed = time.perf_counter() - start
    docs = _DocTexts(ds)
    report = export(mined, docs, ds.queries, out, fmt)
    atomic_write_json(out / "stats.json", mined.stats | {"files": report, "policy": policy.to_dict()})
    console.print(format_stats_table(mined.stats))
    console.print(f"selected in {elapsed:.3f}s; wrote {', '.join(sorted(report))} and stats.json to {out}")


class _DocTexts:
    """Read-only mapping doc id -> text that builds texts lazily (exports touch few docs)."""

    def __init__(self, ds):
        self.ds = ds

    def __getitem__(self, doc_id: str) -> str:
        return self.ds.doc_text(doc_id)

    def __contains__(self, doc_id: object) -> bool:
        try:
            self.ds.doc_index(doc_id)
            return True
        except KeyError:
            return False

    def get(self, doc_id, default=None):
        return self[doc_id] if doc_id in self else default


@app.command()
@friendly
@policy_options
def mine(
    data: Path = DataOpt,
    split: str = typer.Option("train", "--split", help="Split whose queries get negatives."),
    retriever: str = typer.Option("dense", "--retriever", help="dense | bm25 | hybrid (RRF ranks; scores stay "
                                  "the scorers' own), as KIND[:NAME][=MODEL]."),
    teacher: List[str] = typer.Option([], "--teacher", help="Extra scorer adding rank/score columns, "
                                      "e.g. bm25 or dense:e5=PATH; repeatable."),
    depth: int = typer.Option(200, help="Candidates retrieved per query and scorer."),
    model: Optional[Path] = ModelOpt,
    out: Path = typer.Option(..., "--out", help="Output folder: candidates.parquet, negatives.jsonl, stats.json."),
    corpus: Optional[Path] = CorpusOpt,
    skip_unknown: bool = SkipUnknownOpt,
    cache_dir: Optional[Path] = CacheOpt,
    batch_size: int = typer.Option(64, help="Encoding batch size."),
    policy=None,
    fmt=None,
):
    """Retrieve candidates once (candidates.parquet), then select negatives with the policy options."""
    from hardneg.encode import EncoderConfig
    from hardneg.mine import MineConfig, mine_candidates

    ds = _load(data, corpus, skip_unknown)
    config = MineConfig(retriever=retriever, teachers=list(teacher), depth=depth, split=split,
                        rank_by=policy.rank_by, score_by=policy.score_by)
    encoder = EncoderConfig(model=str(model) if model else None, batch_size=batch_size)
    start = time.perf_counter()
    cands = mine_candidates(ds, config, encoder, cache=cache_dir)
    cands.write(out / "candidates.parquet")
    console.print(f"mined {len(cands.table)} candidate rows for {cands.table['query_id'].nunique()} queries "
                  f"in {time.perf_counter() - start:.1f}s -> {out / 'candidates.parquet'}")
    _select_and_write(cands, policy, fmt, out, ds)


@app.command("select")
@friendly
@policy_options
def select_cmd(
    candidates: Path = typer.Argument(..., help="A candidates.parquet written by `hardneg mine`."),
    out: Path = typer.Option(..., "--out", help="Output folder: negatives.jsonl, stats.json, [train.parquet]."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset for the texts (default: the one mined)."),
    corpus: Optional[Path] = CorpusOpt,
    policy=None,
    fmt=None,
):
    """Select negatives again from stored candidates: no retrieval, no encoding (seconds)."""
    from hardneg.candidates import CandidateSet

    cands = CandidateSet.read(candidates)
    source = data or cands.meta.get("data")
    if not source:
        raise HardnegError(f"{candidates}: no dataset recorded; pass --data")
    _select_and_write(cands, policy, fmt, out, _load(Path(source), corpus, False))


# ---- training, the whole loop, the demo ---------------------------------------------------------
_TRAIN_HELP = {
    "loss": "mnrl (InfoNCE, in-batch + mined negatives) | cached-mnrl (GradCache) | gist (a guide model masks "
            "in-batch false negatives) | marginmse (distils cross-encoder teacher margins).",
    "epochs": "Passes over the training rows (--max-steps overrides).",
    "batch_size": "Queries per training batch.",
    "lr": "Peak learning rate.",
    "warmup_ratio": "Fraction of the steps spent warming up.",
    "max_seq_length": "Max tokens per text while training (the model is saved with its own).",
    "num_negatives": "Negatives per training row (default: as many as the richest query has).",
    "short_rows": "Queries with fewer negatives than that: drop | repeat.",
    "seed": "Training seed.",
    "mini_batch_size": "GradCache chunk size (cached-mnrl; gist with several negatives).",
    "guide_model": "gist's guide model folder (default: a frozen copy of the starting model).",
    "student_range": "marginmse: LOW:HIGH cosine range the teacher margins are mapped onto.",
    "max_steps": "A fixed budget of optimizer steps (overrides --epochs).",
    "eval_steps": "Evaluate on dev every N steps (integer) or fraction of the run (default: every quarter).",
    "eval_queries": "Dev queries evaluated while training (seeded sample).",
    "eval_corpus": "Documents of that evaluation: the queries' positives plus a seeded sample.",
    "holdout_fraction": "Without a dev split: fraction of the train queries held out for evaluation.",
    "no_duplicates": "No-duplicates batch sampler (no repeated text inside a batch).",
    "mixed_precision": "auto (bf16/fp16 on CUDA, off on CPU) | no | fp16 | bf16.",
    "query_prompt": "Prompt prepended to queries while training (e.g. 'query: ').",
    "passage_prompt": "Prompt prepended to passages while training (e.g. 'passage: ').",
    "logging_steps": "Log the training loss every N steps.",
    "show_progress": "Progress bars.",
    "checkpoint_dir": "Checkpoint folder (default: inside --out, removed after training).",
    "keep_checkpoints": "Keep the checkpoints after training.",
}
_TRAIN_FLAGS = {"no_duplicates": "--no-duplicates/--allow-duplicates", "show_progress": "--progress/--no-progress",
                "keep_checkpoints": "--keep-checkpoints/--no-keep-checkpoints"}
_TRAIN_TEXT = {"student_range": str, "eval_steps": Optional[str]}  # parsed by _train_config


def _train_option_list() -> list[inspect.Parameter]:
    """One option per TrainConfig field, defaults taken from TrainConfig itself."""
    import typing
    from dataclasses import fields

    from hardneg.train import TrainConfig

    defaults = TrainConfig()
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        default = default.value if hasattr(default, "value") else default  # enums as their text
        if f.name == "student_range":
            default = "{:g}:{:g}".format(*default)
        hint = hints[f.name]
        annotation = _TRAIN_TEXT.get(f.name) or (hint if hint in (int, float, bool) else
                                                  Optional[int] if hint == (int | None) else
                                                  str if default is not None else Optional[str])
        decl = _TRAIN_FLAGS.get(f.name, "--" + f.name.replace("_", "-"))
        out.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                     default=typer.Option(default, decl, help=_TRAIN_HELP[f.name])))
    return out


TRAIN_OPTIONS = _train_option_list()


def _train_config(**values):
    from hardneg.train import config_from_dict

    low, sep, high = str(values["student_range"]).partition(":")
    try:
        values["student_range"] = (float(low), float(high))
    except ValueError:
        raise HardnegError(f"--student-range must look like LOW:HIGH (e.g. 0:1), got {values['student_range']!r}") from None
    steps = _off(values["eval_steps"])
    try:
        values["eval_steps"] = None if steps is None else (int(steps) if steps.strip().isdigit() else float(steps))
    except ValueError:
        raise HardnegError(f"--eval-steps must be an integer, a fraction or 'none', got {steps!r}") from None
    return config_from_dict(values)


def train_options(fn):
    """Add one option per TrainConfig field to a command; it receives ``config``."""
    return option_group(TRAIN_OPTIONS, lambda **values: {"config": _train_config(**values)})(fn)


@app.command("train")
@friendly
@train_options
def train_cmd(
    data: Path = DataOpt,
    negatives: Optional[Path] = typer.Option(
        None, "--negatives", help="negatives.jsonl from `hardneg mine`/`select`. Left out, or empty because the "
        "policy was the in-batch-only baseline (--sampler none): train on the (query, positive) pairs of --split."),
    model: Optional[Path] = ModelOpt,
    out: Path = typer.Option(..., "--out", help="Model folder to write (a normal sentence-transformers model)."),
    corpus: Optional[Path] = CorpusOpt,
    skip_unknown: bool = SkipUnknownOpt,
    dev_split: Optional[str] = typer.Option(None, "--dev-split", help="Split evaluated while training (default: "
                                            "dev if present, else --holdout-fraction of the train queries)."),
    split: str = typer.Option("train", "--split", help="Split whose pairs train when there are no negatives."),
    config=None,
):
    """Fine-tune a sentence-transformers model on mined negatives; keeps the best dev checkpoint."""
    from hardneg.train import train

    ds = _load(data, corpus, skip_unknown)
    result = train(ds, negatives, str(model) if model else None, out, config, dev_split, pairs_split=split)
    console.print(result.data.summary())
    if result.evals:
        start, best = result.before, result.best or result.evals[-1]
        console.print(f"dev NDCG@10 ({result.eval_set}): start {start['ndcg@10']:.4f} -> kept step "
                      f"{best['step']} {best['ndcg@10']:.4f}")
    if result.losses:
        console.print(f"loss {result.losses[0][1]:.4f} (step {result.losses[0][0]}) -> {result.losses[-1][1]:.4f} "
                      f"(step {result.losses[-1][0]})")
    console.print(f"trained in {result.train_seconds:.1f}s; wrote {out} (model card README.md, hardneg_train.json)")


def _run_and_print(config, out: Path, title: str) -> None:
    from hardneg.io import atomic_write_text
    from hardneg.loop import format_run_table, run
    from hardneg.recipe import dump_recipe

    atomic_write_text(out / "recipe.toml", dump_recipe(config))
    result = run(config, out, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    console.print(format_run_table(result, title=f"{title}: {result.metrics['split']}, "
                                                 f"{result.metrics['n_queries']} queries"))
    if not result.metrics["tuned_kept_on_dev"]:
        console.print("note: no round beat the base model on dev; 'tuned' is round r0, shown for the record")
    for note in result.metrics["notes"]:
        console.print(f"note: {note}")
    console.print(f"wrote {out}/report.md, metrics.json, recipe.toml, eval/, rounds/"
                  f"{', model/' if result.metrics['tuned_kept_on_dev'] else ''} ({result.seconds:.0f}s)")


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
    from hardneg.io import atomic_write_text
    from hardneg.recipe import default_recipe_text

    text = default_recipe_text()
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        console.print(f"wrote {out}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
