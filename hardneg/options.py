"""Options declared once: on the config dataclasses, as :func:`option` fields.

Each field carries its default, its help, its range or choices and, where it differs from the
field name, its recipe key and command-line spelling. Everything else is derived from that one
declaration:

* :func:`check` validates a config against its declared ranges and choices (every config's
  ``__post_init__`` calls it), so the CLI, the recipe and Python share one set of checks;
* :func:`cli_parameters` makes a command's typer options (help, default, flag spelling) and
  :func:`with_options` adds them to a command (the groups of :class:`Opts`);
* :func:`recipe_fields` gives a recipe section's keys and types, and :func:`toml_lines` the
  section of the packaged, commented ``default.toml`` (a test checks the shipped file equals it).

tevatron's ``arguments.py`` does the same with ``field(metadata={"help": ...})``; the derivations
are written here because typer builds options from function signatures, not from dataclasses.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import textwrap
import types
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any, List, Optional, TypeVar, Union

from hardneg.checks import command_inputs
from hardneg.errors import HardnegError, OptionError

__all__: list[str] = []  # internal: how config classes declare options (read by the CLI and recipes)

#: text that stands for "not set" in options that take it (TOML has no null)
NONE_WORDS = ("none", "off", "null", "")

_MISSING = dataclasses.MISSING
_E = TypeVar("_E", bound=Enum)


def option(default: Any = _MISSING, help: str = "", *, factory: Any = _MISSING,  # noqa: A002 (help, as argparse)
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           choices: tuple[str, ...] | None = None, key: str | None = None, cli: str | bool | None = None,
           recipe: bool = True, path: str | None = None) -> Any:
    """A dataclass field with its help and range: the one declaration of an option.

    ``ge``/``gt``/``le``/``lt`` bound a number (None values always pass); ``choices`` the text of a
    ``str`` field (an Enum-typed field takes its members). ``key`` is the recipe key (and, unless
    ``cli`` says otherwise, the ``--key-with-dashes`` option); ``cli`` a typer declaration such
    as ``"--progress/--no-progress"``, or False for a field no command exposes; ``recipe=False``
    keeps it out of recipes. ``path`` marks a path checked before a command writes anything
    (:func:`hardneg.checks.config_paths`): ``"model"`` a model folder, ``"cache"`` / ``"folder"`` a
    writable folder.
    """
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "key": key, "cli": cli,
            "recipe": recipe, "path": path}
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


#: the largest seed numpy's generators take (seeds are integers in [0, 2**32 - 1])
SEED_MAX = 2**32 - 1


def seed_option(default: int, help: str) -> Any:  # noqa: A002 (help, as argparse)
    """A seed's :func:`option`: an integer in ``[0, SEED_MAX]``, the range numpy accepts."""
    return option(default, help, ge=0, le=SEED_MAX)


def key_of(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of ``cls``, once per class (every config's construction reads them)."""
    return typing.get_type_hints(cls)


def declared(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are options (init fields not starting with ``_``)."""
    return [f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]


# ---- checking -------------------------------------------------------------------------------
def check(config: Any) -> None:
    """Coerce Enum fields from their text and check every declared range and choice.

    Raises ``HardnegError("name must be >= 1, not 0")`` (the recipe prefixes file and section).
    """
    hints = _hints(type(config))
    for f in declared(type(config)):
        value = getattr(config, f.name)
        enum = _enum_type(hints[f.name])
        if enum is not None and value is not None and not isinstance(value, enum):
            value = as_enum(enum, value, key_of(f))
            object.__setattr__(config, f.name, value)
        _check_value(f, value, int in (hints[f.name], *typing.get_args(hints[f.name])))


def as_enum(kind: type[_E], value: Any, name: str) -> _E:
    """``value`` as a member of ``kind``: a member as is, else by its text (or another Enum's value).

    Raises ``HardnegError("name must be one of a, b, not 'x'")``.
    """
    if isinstance(value, kind):
        return value
    try:
        return kind(value.value if isinstance(value, Enum) else value)
    except ValueError:
        raise OptionError(name, f"must be one of {', '.join(e.value for e in kind)}, not {value!r}") from None


def _check_value(f: dataclasses.Field, value: Any, integer: bool = False) -> None:
    m, name = f.metadata, key_of(f)
    if value is None or not m:
        return
    if isinstance(value, float) and math.isnan(value):
        raise OptionError(name, "must be a number, not nan")
    if m.get("choices") and value not in m["choices"]:
        raise OptionError(name, f"must be one of {', '.join(m['choices'])}, not {value!r}")
    for bound, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                            ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        for v in value if isinstance(value, list) else [value]:  # a list's bounds hold for each value
            if m.get(bound) is not None and isinstance(v, (int, float)) and not ok(v, m[bound]):
                what = range_text(m) or ("positive" if bound == "gt" and m[bound] == 0 else
                                         f"{'an integer ' if integer else ''}{word} {_num(m[bound])}")
                raise OptionError(name, f"must be {what}, not {v}")


def range_text(m: typing.Mapping[str, Any]) -> str:
    """``in [0, 1)`` when both ends are bounded, else empty."""
    lo = ("[", m["ge"]) if m.get("ge") is not None else ("(", m["gt"]) if m.get("gt") is not None else None
    hi = ("]", m["le"]) if m.get("le") is not None else (")", m["lt"]) if m.get("lt") is not None else None
    return f"in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}" if lo and hi else ""


def _num(bound: float) -> str:
    """A bound as text: integers whole (``4294967295``), other numbers short (``0.95``)."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _enum_type(hint: Any) -> type[Enum] | None:
    for arg in (hint, *typing.get_args(hint)):
        if isinstance(arg, type) and issubclass(arg, Enum):
            return arg
    return None


# ---- text and TOML values -> typed values -----------------------------------------------------
class Mismatch(Exception):
    """A value that is not of the field's type (the caller names where it came from)."""


def coerce(value: Any, hint: Any, numbers_from_text: bool = False) -> Any:
    """``value`` (from TOML or the command line) as the type ``hint`` says, else :class:`Mismatch`.

    ``"none"``/``"off"`` become None where None is allowed and ``"10:100"`` a tuple; numbers are
    read from text only with ``numbers_from_text`` (the command line: TOML has typed numbers,
    so ``batch_size = "32"`` there is a mistake worth reporting).
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS)):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, numbers_from_text)
            except Mismatch:
                continue
        raise Mismatch
    if hint in (bool, int, float, str):
        return _scalar(value, hint, numbers_from_text)
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            raise Mismatch from None
    if origin is tuple:
        if isinstance(value, str) and ":" in value:
            value = value.split(":")
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(coerce(v, a, numbers_from_text or isinstance(v, str)) for v, a in zip(value, args))
        raise Mismatch
    if origin is list and isinstance(value, (list, tuple)):
        return [coerce(v, args[0], numbers_from_text) for v in value]
    raise Mismatch


def _scalar(value: Any, hint: type, numbers_from_text: bool) -> Any:
    if isinstance(value, str) and hint in (int, float) and numbers_from_text:
        try:
            return hint(value.strip())
        except ValueError:
            raise Mismatch from None
    if hint is bool and isinstance(value, bool) or hint is str and isinstance(value, str):
        return value
    if hint in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if hint is int and value != int(value):
            raise Mismatch
        return hint(value)
    raise Mismatch


def parse(value: Any, hint: Any, name: str) -> Any:
    """Text as :func:`coerce` reads it (numbers included), with a :class:`HardnegError` naming
    the option when the value does not fit."""
    try:
        return coerce(value, hint, numbers_from_text=True)
    except Mismatch:
        raise HardnegError(f"{name} expects {type_name(hint)}, got {json.dumps(value, default=str)}") from None


def type_name(hint: Any) -> str:
    """How an error names what a key expects: ``an integer or 'none'``."""
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(repr(e.value) for e in hint)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "'none'"}
    if hint in names:
        return names[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} numbers or 'LOW:HIGH'" if args[0] is float else "'MIN:MAX'"
    if origin is list:
        return "a list of integers" if args and args[0] is int else "a list of strings"
    return str(hint)  # pragma: no cover


# ---- the command line -------------------------------------------------------------------------
def cli_parameters(cls: type, only: typing.Iterable[str] | None = None, exclude: typing.Iterable[str] = (),
                   required: typing.Iterable[str] = (), defaults: typing.Mapping[str, Any] | None = None,
                   ) -> list[inspect.Parameter]:
    """Keyword-only typer parameters, one per option of ``cls`` (named by field).

    ``only``/``exclude`` pick fields; ``required`` ones have no default; ``defaults`` overrides
    a shown default (e.g. a command-specific one). Bools are flags; numbers stay numbers; text
    that must be parsed (ranges, "none") is taken as text and read by :func:`coerce`.
    """
    import typer

    hints = _hints(cls)
    wanted = None if only is None else list(only)
    fields = {f.name: f for f in declared(cls) if f.metadata.get("cli") is not False}
    names = wanted if wanted is not None else [n for n in fields if n not in set(exclude)]
    out = []
    for name in names:
        f = fields[name]
        default = ... if name in set(required) else (defaults or {}).get(name, _default(f))
        decl = flag_of(f)
        if hints[name] is bool and "/" not in decl:
            decl = f"{decl}/--no-{decl[2:]}"
        annotation = _cli_type(hints[name])
        shown = _text(default) if annotation in (str, Optional[str]) and default not in (None, ...) else default
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                     default=typer.Option(shown, decl, help=help_text(f, hints[name]))))
    return out


@dataclass(frozen=True)
class Opts:
    """A config class whose options a command takes: all fields, ``only`` some, or all but ``exclude``.

    ``section`` is their recipe section; ``defaults`` replaces a shown default where a command
    differs from the recipe; ``build=False`` hands the command the values, not the config.
    """

    cls: type
    section: str | None = None
    only: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()
    build: bool = True


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
            values = {name: {p.name: kwargs.pop(p.name) for p in ps} for name, ps in params.items()}
            built = {name: _built(groups[name], v) for name, v in values.items()}
            command_inputs(fn.__name__, kwargs, built, flag_name)  # paths, --out: before the command writes anything
            return fn(*args, **kwargs, **built)

        kept = [p for p in sig.parameters.values() if p.name not in groups]
        wrapper.__signature__ = sig.replace(parameters=kept + flat)
        fields = {name: {f.name: f for f in declared(g.cls)} for name, g in groups.items()}
        wrapper.recipe_keys = {p.name: f"{groups[name].section}.{key_of(fields[name][p.name])}"
                               for name, ps in params.items() if groups[name].section for p in ps}
        return wrapper

    return decorate


def _built(group: Opts, values: dict[str, Any]) -> Any:
    """The group's config from its values (or the values, ``build=False``); a value out of range
    names its flag: ``--seed: must be in [0, 4294967295], not -1``."""
    if not group.build:
        return values
    try:
        return from_cli(group.cls, values)
    except OptionError as e:
        flags = {key_of(f): flag_name(f) for f in declared(group.cls)}
        if e.key not in flags:
            raise
        raise HardnegError(f"{flags[e.key]}: {e.what}") from None


def flag_of(f: dataclasses.Field) -> str:
    """The command-line declaration of an option field (``--chunk-tokens``, or its declared ``cli``)."""
    return f.metadata.get("cli") or "--" + key_of(f).replace("_", "-")


def flag_name(f: dataclasses.Field) -> str:
    """The flag that names an option field in an error: ``--progress`` of ``--progress/--no-progress``."""
    return flag_of(f).split("/")[0]


def from_cli(cls: type, values: typing.Mapping[str, Any]) -> Any:
    """Build ``cls`` from command-line values (text parsed as :func:`coerce` does)."""
    hints = _hints(cls)
    fields = {f.name: f for f in declared(cls)}
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if isinstance(value, str) and _cli_type(hint) == Optional[str]:
            value = parse(value, hint, flag_of(fields[name]))
        kwargs[name] = value
    return cls(**kwargs)


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return f.default


def _cli_type(hint: Any) -> Any:
    if hint in (bool, int, float, str):
        return hint
    if typing.get_origin(hint) is list:
        return List[str]
    if isinstance(hint, type) and issubclass(hint, Enum):
        return str
    return Optional[str]  # "none", "10:100", numbers: parsed by coerce


def _text(value: Any) -> str:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return ":".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def help_text(f: dataclasses.Field, hint: Any = None) -> str:
    """The field's help, with its choices when they are not already named in it."""
    text = f.metadata.get("help", "")
    enum = _enum_type(hint) if hint is not None else None
    choices = f.metadata.get("choices") or ([e.value for e in enum] if enum else None)
    if choices and not all(c in text for c in choices):
        text = f"{text} One of: {', '.join(choices)}."
    return text


# ---- recipes ------------------------------------------------------------------------------------
def recipe_fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """Recipe key -> (field, type) for every recipe option of ``cls``."""
    hints = _hints(cls)
    return {key_of(f): (f, hints[f.name]) for f in declared(cls) if f.metadata.get("recipe", True)}


def toml_value(value: Any) -> str:
    """A value as TOML (None as ``"none"``, enums as their text)."""
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
    if isinstance(value, tuple):  # a range: "10:100", as on the command line
        return json.dumps(_text(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover


def toml_lines(cls: type, width: int = 110) -> list[str]:
    """``key = default  # help`` lines of one recipe section, help wrapped under the comment column."""
    lines = []
    for key, (f, hint) in recipe_fields(cls).items():
        head = f"{key} = {toml_value(_default(f))}"
        column = max(26, len(head) + 1)
        wrapped = textwrap.wrap(help_text(f, hint), width - column - 2, break_on_hyphens=False) or [""]
        lines.append(f"{head.ljust(column)}# {wrapped[0]}".rstrip())
        lines += [f"{'':{column}}# {w}" for w in wrapped[1:]]
    return lines
