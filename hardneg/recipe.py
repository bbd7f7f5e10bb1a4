"""TOML recipes -> :class:`~hardneg.loop.RunConfig`: one file runs the whole loop (``hardneg run``).

A recipe is the packaged default recipe (``hardneg/recipes/default.toml``, every key with
its default and a comment) overlaid with the user's file and then with overrides
(``--set section.key=value``). A section's keys are the options declared on its config
classes (:mod:`hardneg.options`): the default recipe is generated from those declarations
(:func:`render_default_recipe`; a test checks the shipped file equals it), and so is every
command-line option. ``"none"`` (or ``"off"``, ``""``) stands for "not set" in keys that take
it, since TOML has no null. Relative paths are read from the working directory, as on the
command line. An unknown section or key, or a value of the wrong type or range, stops with
``FILE: [section] key: what is wrong`` before anything runs.
"""
from __future__ import annotations

import copy
import difflib
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from hardneg.audit import AuditConfig
from hardneg.checks import config_paths, trec_ready, writable_folder
from hardneg.encode.cache import CacheConfig
from hardneg.encode import EncoderConfig
from hardneg.errors import HardnegError
from hardneg.export import ExportConfig
from hardneg.loop import DataConfig, EvalConfig, LoopConfig, RunConfig
from hardneg.mine import MineConfig
from hardneg.options import Mismatch, coerce, key_of, recipe_fields, toml_lines, toml_value, type_name
from hardneg.crossencoder import DenoiseConfig
from hardneg.select import SelectionPolicy
from hardneg.train import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["RecipeError", "default_recipe_text", "dump_recipe", "load_recipe", "parse_override"]


class RecipeError(HardnegError):
    """A recipe that cannot be used, located as ``FILE: [section] key: what is wrong``."""


@dataclass(frozen=True)
class _Section:
    classes: tuple[type, ...]  # the config classes whose options are this section's keys
    doc: str = ""  # the comment under the section's header in default.toml


SECTIONS: dict[str, _Section] = {
    "data": _Section((DataConfig,)),
    "model": _Section((EncoderConfig, CacheConfig), "The base model and how it embeds for mining and evaluation."),
    "mine": _Section((MineConfig,), "Candidate retrieval."),
    "select": _Section((SelectionPolicy, ExportConfig),
                       'The selection policy. window = "auto": each round audits its candidates and takes the '
                       "window (and percent) that `hardneg calibrate` picks, see [audit]."),
    "train": _Section((TrainConfig,), "Fine-tuning."),
    "loop": _Section((LoopConfig,), "Re-mining rounds and the dev gate."),
    "eval": _Section((EvalConfig,), "The final test evaluation."),
    "audit": _Section((AuditConfig,), 'Used when [select] window = "auto": hide a fraction of the positives of '
                      "train queries that have several, measure per original-rank bucket how often an unlabeled "
                      "candidate is a hidden positive (the false-negative curve), and take the smallest window "
                      "start (and the largest percent) whose buckets stay under the target. Writes "
                      "OUT/rounds/r<i>/audit.json."),
    "denoise": _Section((DenoiseConfig,), "Cross-encoder scores for each round's candidates (RocketQA-style "
                        "denoising): with a cross_encoder, the original ranks in `window` get a `score_ce` before "
                        "selection, and [select] denoise_above drops those it scores above the threshold. Train "
                        "one offline with `hardneg train-reranker --folds 2` (cross-fitted, so it never judges its "
                        "own training queries). Writes OUT/rounds/r<i>/rescore.json (cost, and a warning when it "
                        "does not beat BM25 on its check)."),
}

#: options whose value the run produces itself, so they are not recipe keys.
FLOW_OPTIONS = {
    "out": "`hardneg run --out OUT` places every output under OUT",
    "candidates": "each round writes OUT/rounds/r<i>/candidates.parquet",
    "negatives": "each round writes OUT/rounds/r<i>/negatives.jsonl",
    "restart": "`hardneg mine --restart` discards a stale OUT/.mine-checkpoint",
}

_HEADER = """\
# hardneg's default recipe: `hardneg run RECIPE.toml --out OUT` runs
#   baselines (BM25 + the base model) -> mine -> select -> train -> re-mining rounds
#   -> evaluation on the test split (BM25, base, tuned; paired p-values, bootstrap CIs)
#   -> OUT/report.md + OUT/metrics.json
#
# A recipe of your own only needs the keys it changes: every key left out takes the value
# below. Copy this file with `hardneg recipe > my.toml`. Override single keys on the command
# line with `--set section.key=value`. TOML has no null: "none" means "not set" where a key
# accepts it. Relative paths are read from the working directory, as on the command line.
# Every option of `hardneg mine`, `hardneg select` and `hardneg train` is a key here (the
# option --near-dup is `near_dup`, --teacher is `teachers`, --model is [model] path).
# These are the full-quality settings; `hardneg demo` scales them down to run in minutes.
# Generated from the options' declarations (hardneg.recipe.render_default_recipe).
"""


# ---- files ----------------------------------------------------------------------------------
def default_recipe_path() -> Path:
    """The packaged, commented default recipe (full-quality settings)."""
    return Path(__file__).resolve().parent / "recipes" / "default.toml"


def default_recipe_text() -> str:
    return default_recipe_path().read_text(encoding="utf-8")


def render_default_recipe() -> str:
    """The default recipe as the options declare it: every key, its default and its help."""
    import textwrap

    lines = _HEADER.splitlines()
    for name, spec in SECTIONS.items():
        lines += ["", f"[{name}]"] + [f"# {w}" for w in textwrap.wrap(spec.doc, 108, break_on_hyphens=False)]
        for cls in spec.classes:
            lines += toml_lines(cls)
    return "\n".join(lines) + "\n"


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{source}: not valid TOML: {e}") from None


def load_recipe(path: str | Path | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                override_source: str = "overrides") -> RunConfig:
    """The default recipe, overlaid with the file at ``path`` (if any), then with ``overrides``.

    ``overrides`` is ``{section: {key: value}}`` (see :func:`parse_override` for
    ``section.key=value`` text). Errors name the file (or ``override_source``), section and key.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise RecipeError(f"{path}: cannot read the recipe ({e.strerror or e})") from None
        layers.append((str(path), _read_toml(text, str(path))))
    if overrides:
        layers.append((override_source, overrides))
    return recipe_from_dict(*layers)


def recipe_from_dict(*layers: tuple[str, Mapping[str, Any]]) -> RunConfig:
    """Build a RunConfig from ``(source, {section: {key: value}})`` layers over the defaults.

    Later layers win. Keys absent from every layer take the default recipe's values.
    """
    default_source = str(default_recipe_path())
    values: dict[str, dict[str, tuple[Any, str]]] = {}
    for source, layer in [(default_source, _read_toml(default_recipe_text(), default_source)), *layers]:
        _check_keys(layer, source)
        for section, table in layer.items():
            for key, value in table.items():
                values.setdefault(section, {})[key] = (value, source)
    explicit = {(s, k) for s, table in values.items() for k, (_, src) in table.items() if src != default_source}
    return _build(values, explicit)


def _check_keys(layer: Mapping[str, Any], source: str) -> None:
    for section, table in layer.items():
        if section not in SECTIONS:
            if not isinstance(table, Mapping):
                raise RecipeError(f"{source}: unknown top-level key '{section}': every key belongs to a section "
                                  f"({', '.join(f'[{s}]' for s in SECTIONS)})")
            raise RecipeError(f"{source}: unknown section [{section}] (sections: "
                              f"{', '.join(f'[{s}]' for s in SECTIONS)})")
        if not isinstance(table, Mapping):
            raise RecipeError(f"{source}: [{section}] must be a table of keys, not a {type(table).__name__}")
        known = recipe_keys(section)
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise RecipeError(f"{source}: unknown key '{key}' in section [{section}] "
                                  f"({hint}known keys: {', '.join(sorted(known))})")


def recipe_keys(section: str) -> dict[str, Any]:
    """Recipe key -> type of every key of ``section``."""
    return {key: hint for cls in SECTIONS[section].classes for key, (_, hint) in recipe_fields(cls).items()}


# ---- values -------------------------------------------------------------------------------
def _section_values(section: str, values: Mapping[str, tuple[Any, str]]) -> dict[str, Any]:
    """Typed values of one section, keyed by recipe key."""
    keys = recipe_keys(section)
    out = {}
    for key, (value, source) in values.items():
        try:
            out[key] = coerce(value, keys[key])
        except Mismatch:
            raise RecipeError(f"{source}: [{section}] {key}: expected {type_name(keys[key])}, "
                              f"got {json.dumps(value, default=str)}") from None
    return out


def _make(section: str, values: Mapping[str, Any], sources: Mapping[str, str]) -> list[Any]:
    """One object per config class of ``section``, each from its own keys."""
    out = []
    for cls in SECTIONS[section].classes:
        fields = recipe_fields(cls)
        kwargs = {f.name: values[key] for key, (f, _) in fields.items() if key in values}
        try:
            out.append(cls(**kwargs))
        except HardnegError as e:
            default = str(default_recipe_path())
            where = ", ".join(sorted({s for s in sources.values() if s != default})) or default
            raise RecipeError(f"{where}: [{section}] {e}") from None
    return out


def _build(values: dict[str, dict[str, tuple[Any, str]]], explicit: set[tuple[str, str]]) -> RunConfig:
    raw_window, source = values.get("select", {}).get("window", (None, ""))
    auto = isinstance(raw_window, str) and raw_window.strip().lower() == "auto"
    if auto:  # chosen per round by the audit (hardneg.audit.calibrate)
        values = {**values, "select": {**values["select"], "window": ("none", source)}}
    typed = {s: _section_values(s, values.get(s, {})) for s in SECTIONS}
    sources = {s: {k: src for k, (_, src) in values.get(s, {}).items()} for s in SECTIONS}
    train = typed["train"]
    for key in ("query_prompt", "passage_prompt"):  # train with the prompts the model embeds with
        if ("train", key) not in explicit:
            train[key] = typed["model"][key]
    built = {s: _make(s, typed[s], sources[s]) for s in SECTIONS}
    (policy, export), (encoder, cache) = built["select"], built["model"]
    if policy.denoise_above is not None and not built["denoise"][0].cross_encoder:
        where = sources["select"].get("denoise_above", "")
        raise RecipeError(f"{where}: [select] denoise_above needs [denoise] cross_encoder (the model whose "
                          "scores it thresholds)")
    mine = replace(built["mine"][0], rank_by=policy.rank_by, score_by=policy.score_by)  # as `hardneg mine` does
    return RunConfig(data=built["data"][0], encoder=encoder, cache_dir=cache.cache_dir, mine=mine, policy=policy,
                     fmt=export.format.value if export.format else None, train=built["train"][0],
                     loop=built["loop"][0], eval=built["eval"][0], audit=built["audit"][0],
                     denoise=built["denoise"][0], auto_window=auto)


def parse_override(text: str) -> dict[str, dict[str, Any]]:
    """``"section.key=value"`` -> ``{section: {key: value}}``; the value is read as TOML, else as text."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not (sep and dot and section and key):
        raise RecipeError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. train.max_steps=100")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return {section: {key.strip(): value}}


def merge_overrides(*parts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        for section, table in part.items():
            out.setdefault(section, {}).update(copy.deepcopy(dict(table)))
    return out


# ---- writing a recipe back ----------------------------------------------------------------
def _section_objects(config: RunConfig, section: str) -> tuple[Any, ...]:
    return {"data": (config.data,), "model": (config.encoder, CacheConfig(config.cache_dir)), "mine": (config.mine,),
            "select": (config.policy, ExportConfig(config.fmt)), "train": (config.train,), "loop": (config.loop,),
            "eval": (config.eval,), "audit": (config.audit,), "denoise": (config.denoise,)}[section]


def dump_recipe(config: RunConfig) -> str:
    """A complete recipe (every key) that :func:`load_recipe` reads back to ``config``."""
    lines = ["# Written by hardneg: the resolved recipe of a run (every key, defaults included)."]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for obj in _section_objects(config, section):
            for key, (f, _) in recipe_fields(type(obj)).items():
                value = getattr(obj, f.name)
                if obj is config.policy and key == "window" and config.auto_window:
                    value = "auto"
                lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


# ---- the demo -----------------------------------------------------------------------------
def demo_data_path() -> Path:
    """The repository's ``examples/scifact-sample`` (present in a source checkout, not in the wheel)."""
    return Path(__file__).resolve().parents[1] / "examples" / "scifact-sample"


def demo_overrides(data: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The default recipe scaled down to run in minutes on 2 CPU cores (~1 with AMX, ~6 without).

    Shorter texts (128 tokens) and a fixed budget of training steps; everything else is
    the default recipe. Too little training to promise a lift: the table says what it got.
    """
    steps = 10
    return {
        "data": {"path": str(data or demo_data_path())},
        "model": {"passage_max_length": 128, "query_max_length": 64},
        "mine": {"depth": 100},
        "select": {"num_negatives": 1},
        "train": {"max_steps": steps, "batch_size": 16, "max_seq_length": 128, "lr": 3e-5, "num_negatives": 1,
                  "eval_steps": steps // 2, "eval_corpus": 200, "logging_steps": 5},  # best of 3 dev checks
        "loop": {"rounds": 1},
    }


def demo_recipe(data: str | Path | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                ) -> tuple[RunConfig, str]:
    """``hardneg demo``'s config (:func:`demo_overrides` on ``data``, then ``overrides``) and its banner.

    Raises when the dataset is missing (the wheel has no ``examples/``).
    """
    path = Path(data) if data else demo_data_path()
    if not path.exists():
        raise HardnegError(f"{path}: not found; the demo reads the repository's examples/ folder: run it from a "
                           "source checkout or pass --data")
    config = load_recipe(None, merge_overrides(demo_overrides(path), overrides or {}), override_source="demo settings")
    banner = (f"demo: the default recipe on {path} with smaller settings (passage max length "
              f"{config.encoder.passage_max_length}, {config.train.max_steps} training steps of "
              f"{config.train.batch_size}, {config.loop.rounds} re-mining round); full settings: `hardneg recipe`")
    return config, banner


# ---- before a run writes anything --------------------------------------------------------
def preflight(config: RunConfig, out: str | Path) -> None:
    """Everything ``hardneg run`` can check before it writes ``recipe.toml``: ``out`` is a writable folder,
    model folders are models (base, retriever, teachers, guide, cross-encoder), cache and checkpoint
    folders writable, the policy fits the mining scorers, and the data loads (every split with
    positives, the mined, dev and test splits present, test ids fit a TREC run). Call it first."""
    writable_folder(out, "--out")
    for section in SECTIONS:
        for obj in _section_objects(config, section):
            config_paths(obj, lambda f, section=section: f"[{section}] {key_of(f)}")
    config.mine.for_policy(config.policy)
    ds = config.data.load()
    for split in (config.mine.split, config.data.dev_split):
        if split is not None:
            ds.split_qrels(split)
    trec_ready(ds, config.data.test_split)
