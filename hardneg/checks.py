"""Checks of paths, names and ids, run before a command writes anything.

Every command's options pass through :func:`command_inputs` (called by
:func:`hardneg.options.with_options` once the configs are built): ``--out`` is a folder we may
write, model options name model folders, cache and checkpoint folders are writable. ``hardneg
run`` calls :func:`hardneg.recipe.preflight` before its first write. Each failure is a
:class:`~hardneg.errors.HardnegError` naming the option (``--out: ...``), so the command exits 2
with one line and an untouched output folder.

The id checks (:func:`ids_fit`) belong to the writers of formats that cannot hold every id: a
TREC run splits on whitespace, a qrels TSV on tabs and newlines.
"""
from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from hardneg.errors import HardnegError

__all__: list[str] = []  # internal: what the command line and `hardneg run` check first

#: files one of which every model folder holds (sentence-transformers, transformers, a cross-fit)
MODEL_MARKERS = ("modules.json", "config.json", "folds.json")
#: commands whose ``--out`` names a file (every other command's names a folder)
FILE_OUT_COMMANDS = ("calibrate", "skip_above_cmd", "rescore_cmd", "recipe_cmd")
#: a hub id (``org/name``): not a local path, left to the loader (offline: its own error)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_PLAIN = re.compile(r"[A-Za-z0-9][\w.+-]*")

#: characters each format cannot hold in an id
FORBIDDEN = {"TREC run": (" ", "\t", "\n", "\r", "\v", "\f"), "qrels TSV": ("\t", "\n", "\r")}


def model_folder(value: str | Path | None, option: str) -> None:
    """Refuse a model option naming a path that is not a model folder (no ``config.json``,
    ``modules.json`` or ``folds.json``, or an unreadable one). None (the bundled model) and hub ids
    that are no local path pass."""
    if value is None or str(value).strip() == "":
        return
    path = Path(value).expanduser()
    if not path.exists():
        if _HUB_ID.fullmatch(str(value)) and not str(value).startswith("."):
            return
        raise HardnegError(f"{option}: {value}: no such model folder")
    if not path.is_dir():
        raise HardnegError(f"{option}: {value}: a file, not a model folder")
    markers = [m for m in MODEL_MARKERS if (path / m).is_file()]
    if not markers:
        raise HardnegError(f"{option}: {value}: not a model folder (no {', '.join(MODEL_MARKERS)})")
    _readable_json(path / markers[0], option)


def _readable_json(path: Path, option: str) -> None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise HardnegError(f"{option}: {path}: not a readable model file ({type(e).__name__})") from None


def writable_folder(value: str | Path | None, option: str) -> None:
    """Refuse a folder we cannot create or write in (or a file where a folder is meant), by trying:
    a temporary file is made and removed in the folder or its nearest existing parent."""
    if value is None:
        return
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise HardnegError(f"{option}: {value} is a file, not a folder")
    _writable_parent(path, option, value)


def writable_file(value: str | Path | None, option: str) -> None:
    """Refuse an output file whose folder we cannot create or write in."""
    if value is None:
        return
    path = Path(value).expanduser()
    _writable_parent(path if path.is_dir() else path.parent, option, value)


def _writable_parent(path: Path, option: str, value: Any) -> None:
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise HardnegError(f"{option}: {value}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise HardnegError(f"{option}: {value}: cannot write in {probe} ({e.strerror or e})") from None


def plain_name(name: str, what: str) -> str:
    """``name`` if it is a plain name (letters, digits, ``. _ + -``; no path, no space): it names files."""
    if not _PLAIN.fullmatch(name):
        raise HardnegError(f"{what}: '{name}' is not a plain name (letters, digits, . _ + -; no path or space)")
    return name


def ids_fit(ids: Iterable[str], fmt: str, where: str) -> None:
    """Refuse, before anything is written, an id that format ``fmt`` (a key of :data:`FORBIDDEN`) cannot hold."""
    bad = FORBIDDEN[fmt]
    for i in ids:
        if any(c in i for c in bad) or i != i.strip():
            raise HardnegError(f"{where}: id {i!r} cannot be written to a {fmt} (it holds "
                               f"{'whitespace' if fmt == 'TREC run' else 'a tab, a newline or edge spaces'})")


def config_paths(config: Any, name_of: Callable[[dataclasses.Field], str]) -> None:
    """Check the path fields of one config: model folders are models, cache and checkpoint folders
    writable; ``name_of(field)`` names a field in an error (its flag, or its recipe key)."""
    if not dataclasses.is_dataclass(config):
        return
    for f in dataclasses.fields(config):
        kind = f.metadata.get("path")
        if kind is None:
            continue
        where = name_of(f)
        value = getattr(config, f.name)
        if kind == "model":
            model_folder(value, where)
        elif kind == "specs":
            retriever_models(value if isinstance(value, list) else [value], where)
        elif kind == "cache":  # none: the config's default folder
            writable_folder(value if value is not None else config.folder, where)
        else:
            writable_folder(value, where)


def retriever_models(specs: Iterable[str], option: str) -> None:
    """Check the ``MODEL`` folder of each ``KIND[:NAME][=MODEL]`` spec (kinds and names are the
    spec's own parse, :meth:`hardneg.retrieve.RetrieverSpec.parse`)."""
    for text in specs:
        model_folder(text.partition("=")[2].strip() or None, f"{option} {text!r}")


def command_inputs(command: str, kwargs: Mapping[str, Any], configs: Mapping[str, Any],
                   flag: Callable[[dataclasses.Field], str]) -> None:
    """What every command checks before it runs: its configs' paths (named by ``flag``), ``--out`` and
    ``--cross-encoder``."""
    for config in configs.values():
        config_paths(config, flag)
    if isinstance(kwargs.get("retriever"), list):
        retriever_models(kwargs["retriever"], "--retriever")
    if kwargs.get("cross_encoder") is not None:
        model_folder(kwargs["cross_encoder"], "--cross-encoder")
    if kwargs.get("out") is not None:
        (writable_file if command in FILE_OUT_COMMANDS else writable_folder)(kwargs["out"], "--out")


def trec_ready(ds: Any, split: str) -> Any:
    """``ds`` if the TREC runs of ``split`` can hold its ids (its queries' and every document's: no
    whitespace), else a :class:`HardnegError` naming the id, before anything is retrieved or written."""
    ids_fit(ds.split_qrels(split), "TREC run", f"{ds.source}: split '{split}': query-id")
    ids_fit(ds.doc_ids, "TREC run", f"{ds.source}: corpus-id")
    return ds
