"""TOML recipes -> :class:`~hardneg.loop.RunConfig`: one file runs the whole loop (``hardneg run``).

A recipe is the packaged default recipe (``hardneg/recipes/default.toml``, every key with
its default and a comment) overlaid with the user's file and then with overrides
(``--set section.key=value``). Every option of ``hardneg mine``, ``select`` and ``train``
is a recipe key (:data:`CLI_KEYS`). ``"none"`` (or ``"off"``, ``""``) stands for "not set"
in keys that take it, since TOML has no null. Relative paths are read from the working
directory, as on the command line. An unknown section or key, or a value of the wrong
type, stops with ``FILE: [section] key: what is wrong`` before anything runs.
"""
from __future__ import annotations

import copy
import difflib
import json
import sys
import types
import typing
from dataclasses import dataclass, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Union

from hardneg.audit import AuditConfig
from hardneg.encode import EncoderConfig
from hardneg.errors import HardnegError
from hardneg.loop import DataConfig, EvalConfig, LoopConfig, RunConfig
from hardneg.mine import MineConfig
from hardneg.rerank import DenoiseConfig
from hardneg.select import Sampler, SelectionPolicy
from hardneg.train import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["CLI_KEYS", "FLOW_OPTIONS", "RecipeError", "default_recipe_path", "default_recipe_text", "demo_overrides",
           "dump_recipe", "load_recipe", "parse_override", "recipe_from_dict", "recipe_keys"]

NONE_WORDS = ("none", "off", "null", "")


class RecipeError(HardnegError):
    """A recipe that cannot be used, located as ``FILE: [section] key: what is wrong``."""


@dataclass(frozen=True)
class _Section:
    cls: type
    renames: Mapping[str, str]  # recipe key -> dataclass field
    extras: Mapping[str, Any]  # recipe keys that are not fields of cls -> type
    exclude: tuple[str, ...] = ()
    doc: str = ""


SECTIONS: dict[str, _Section] = {
    "data": _Section(DataConfig, {}, {}, doc="the dataset and its dev/test splits"),
    "model": _Section(EncoderConfig, {"path": "model"}, {"cache_dir": str | None},
                      doc="the base model and how it embeds for mining and evaluation"),
    "mine": _Section(MineConfig, {}, {}, exclude=("rank_by", "score_by"), doc="candidate retrieval"),
    "select": _Section(SelectionPolicy, {"near_dup": "near_dup_cosine"}, {"format": str | None},
                       doc="the selection policy"),
    "train": _Section(TrainConfig, {}, {}, doc="fine-tuning"),
    "loop": _Section(LoopConfig, {}, {}, doc="re-mining rounds and the dev gate"),
    "eval": _Section(EvalConfig, {}, {}, doc="the final test evaluation"),
    "audit": _Section(AuditConfig, {}, {}, doc='the false-negative audit behind window = "auto"'),
    "denoise": _Section(DenoiseConfig, {}, {}, doc="cross-encoder scores of the candidates (select.denoise_above)"),
}

_POLICY_KEYS = {name: f"select.{name}" for name in (
    "window", "percent", "margin", "max_score", "pos_ref", "near_dup", "denoise_above", "rank_by", "score_by",
    "sampler", "num_negatives", "on_short", "seed", "simans_a", "simans_b", "temperature", "format")}
_DATA_KEYS = {"data": "data.path", "corpus": "data.corpus", "skip_unknown": "data.skip_unknown"}

#: command -> option (parameter name) -> the recipe key that sets it in ``hardneg run``.
CLI_KEYS: dict[str, dict[str, str]] = {
    "mine": {**_DATA_KEYS, "split": "mine.split", "retriever": "mine.retriever", "teacher": "mine.teachers",
             "depth": "mine.depth", "model": "model.path", "cache_dir": "model.cache_dir",
             "batch_size": "model.batch_size", "search": "mine.search", "nlist": "mine.nlist",
             "nprobe": "mine.nprobe", "ef_search": "mine.ef_search", "recall_sample": "mine.recall_sample",
             "target_recall": "mine.target_recall", "query_chunk": "mine.query_chunk", "float16": "model.float16",
             "backend": "model.backend", "passage_max_length": "model.passage_max_length",
             "chunk_tokens": "mine.chunk_tokens", "chunk_overlap": "mine.chunk_overlap",
             "engine": "mine.engine", "ray_address": "mine.ray_address", "ray_shards": "mine.ray_shards",
             "ray_actors": "mine.ray_actors",
             **_POLICY_KEYS},
    "select": {"data": "data.path", "corpus": "data.corpus", **_POLICY_KEYS},
    "train": {**_DATA_KEYS, "model": "model.path", "dev_split": "data.dev_split", "split": "mine.split",
              **{f.name: f"train.{f.name}" for f in fields(TrainConfig)}},
}
#: options whose value the run produces itself, so they are not recipe keys.
FLOW_OPTIONS = {
    "out": "`hardneg run --out OUT` places every output under OUT",
    "candidates": "each round writes OUT/rounds/r<i>/candidates.parquet",
    "negatives": "each round writes OUT/rounds/r<i>/negatives.jsonl",
    "restart": "`hardneg mine --restart` discards a stale OUT/.mine-checkpoint",
}


# ---- files ----------------------------------------------------------------------------------
def default_recipe_path() -> Path:
    """The packaged, commented default recipe (full-quality settings)."""
    return Path(__file__).resolve().parent / "recipes" / "default.toml"


def default_recipe_text() -> str:
    return default_recipe_path().read_text(encoding="utf-8")


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
    spec = SECTIONS[section]
    hints = typing.get_type_hints(spec.cls)
    back = {field: key for key, field in spec.renames.items()}
    keys = {back.get(f.name, f.name): hints[f.name] for f in fields(spec.cls)
            if f.init and not f.name.startswith("_") and f.name not in spec.exclude}
    return keys | dict(spec.extras)


# ---- values -------------------------------------------------------------------------------
class _Mismatch(Exception):
    pass


def _type_name(hint: Any) -> str:
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(repr(e.value) for e in hint)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "'none'"}
    if hint in names:
        return names[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} numbers or 'LOW:HIGH'" if args[0] is float else f"'{'MIN:MAX'}'"
    if origin is list:
        return "a list of strings"
    return str(hint)


def _coerce(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if type(None) in args and isinstance(value, str) and value.strip().lower() in NONE_WORDS:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            raise _Mismatch from None
    if origin is tuple:
        if isinstance(value, str) and ":" in value:
            value = value.split(":")
            try:
                value = [float(v) if args[0] is float else int(v) for v in value]
            except ValueError:
                raise _Mismatch from None
        if isinstance(value, list) and len(value) == len(args):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        raise _Mismatch
    if origin is list:
        if isinstance(value, list):
            return [_coerce(v, args[0]) for v in value]
        raise _Mismatch
    raise _Mismatch  # pragma: no cover - a field type this module does not know


def _section_values(section: str, values: Mapping[str, tuple[Any, str]]) -> dict[str, Any]:
    """Typed values of one section, keyed by recipe key."""
    keys = recipe_keys(section)
    out = {}
    for key, (value, source) in values.items():
        try:
            out[key] = _coerce(value, keys[key])
        except _Mismatch:
            raise RecipeError(f"{source}: [{section}] {key}: expected {_type_name(keys[key])}, "
                              f"got {json.dumps(value, default=str)}") from None
    return out


def _make(section: str, values: Mapping[str, Any], sources: Mapping[str, str]):
    spec = SECTIONS[section]
    kwargs = {spec.renames.get(k, k): v for k, v in values.items() if k not in spec.extras}
    try:
        return spec.cls(**kwargs)
    except HardnegError as e:
        default = str(default_recipe_path())
        where = ", ".join(sorted({s for s in sources.values() if s != default})) or default
        raise RecipeError(f"{where}: [{section}] {e}") from None


def _build(values: dict[str, dict[str, tuple[Any, str]]], explicit: set[tuple[str, str]]) -> RunConfig:
    raw_window, source = values.get("select", {}).get("window", (None, ""))
    auto = isinstance(raw_window, str) and raw_window.strip().lower() == "auto"
    if auto:  # chosen per round by the audit (hardneg.audit.calibrate)
        values = {**values, "select": {**values["select"], "window": ("none", source)}}
    typed = {s: _section_values(s, values.get(s, {})) for s in SECTIONS}
    sources = {s: {k: src for k, (_, src) in values.get(s, {}).items()} for s in SECTIONS}
    sel = typed["select"]
    if Sampler(sel["sampler"]) in (Sampler.RANDOM, Sampler.NONE):
        for key in ("window", "percent"):  # the baselines use no candidates: default filters do not apply
            if ("select", key) not in explicit:
                sel[key] = None
    train = typed["train"]
    for key in ("query_prompt", "passage_prompt"):  # train with the prompts the model embeds with
        if ("train", key) not in explicit:
            train[key] = typed["model"][key]
    built = {s: _make(s, typed[s], sources[s]) for s in SECTIONS}
    policy: SelectionPolicy = built["select"]
    mine: MineConfig = built["mine"]
    if policy.denoise_above is not None and not built["denoise"].cross_encoder:
        where = sources["select"].get("denoise_above", "")
        raise RecipeError(f"{where}: [select] denoise_above needs [denoise] cross_encoder (the model whose "
                          "scores it thresholds)")
    mine = replace(mine, rank_by=policy.rank_by, score_by=policy.score_by)  # as `hardneg mine` does
    return RunConfig(data=built["data"], encoder=built["model"], cache_dir=typed["model"]["cache_dir"],
                     mine=mine, policy=policy, fmt=sel["format"], train=built["train"], loop=built["loop"],
                     eval=built["eval"], audit=built["audit"], denoise=built["denoise"], auto_window=auto)


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
def _section_object(config: RunConfig, section: str) -> Any:
    return {"data": config.data, "model": config.encoder, "mine": config.mine, "select": config.policy,
            "train": config.train, "loop": config.loop, "eval": config.eval, "audit": config.audit,
            "denoise": config.denoise}[section]


def _toml_value(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover


def dump_recipe(config: RunConfig) -> str:
    """A complete recipe (every key) that :func:`load_recipe` reads back to ``config``."""
    lines = ["# Written by hardneg: the resolved recipe of a run (every key, defaults included)."]
    for section, spec in SECTIONS.items():
        obj = _section_object(config, section)
        lines += ["", f"[{section}]"]
        for key in recipe_keys(section):
            if key == "cache_dir":
                value = config.cache_dir
            elif key == "format":
                value = config.fmt
            elif section == "select" and key == "window" and config.auto_window:
                value = "auto"
            elif section == "select" and key == "window" and config.policy.window is not None:
                value = "{}:{}".format(*config.policy.window)
            else:
                value = getattr(obj, spec.renames.get(key, key))
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


# ---- the demo -----------------------------------------------------------------------------
def demo_data_path() -> Path:
    """The repository's ``examples/scifact-sample`` (present in a source checkout, not in the wheel)."""
    return Path(__file__).resolve().parents[1] / "examples" / "scifact-sample"


def demo_overrides(data: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The default recipe scaled down to run in under 5 minutes on 2 CPU cores.

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
