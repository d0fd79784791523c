"""Type checks of values a person wrote (a study file, ``--set`` overrides) against a
dataclass's annotations, and the one reader of JSON and JSON-lines files a person may have edited.

A YAML typo (``seeds: [zero]``, ``beams: ten``) should fail at once with the field and the
value it holds, not minutes later as a ``TypeError`` from a comparison deep inside. This
module knows the few annotation shapes our config dataclasses use: ``int``, ``float``,
``bool``, ``str``, ``X | None``, ``list[X]``, ``dict[K, V]`` and bare ``list`` / ``dict``.
"""

from __future__ import annotations

import json
import math
import types
import typing
from pathlib import Path
from typing import Any

from tca4rec.errors import ConfigError, RunError

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
          dict: "a mapping", type(None): "null"}


def check_value(value: Any, annotation: Any, path: str) -> None:
    """Raise ``ConfigError`` naming the field ``path`` (``train.max_steps``, ``seeds[1]``) and
    ``value`` unless ``value`` fits ``annotation``."""
    where = f"field '{path}'"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return check_value(value, option, path)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not {' or '.join(_describe(a) for a in args)}")
    if origin is list or annotation is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {value!r} is not a list")
        for n, item in enumerate(value):
            if args:
                check_value(item, args[0], f"{path}[{n}]")
        return
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {value!r} is not a mapping")
        for key, item in value.items():
            if args:
                check_value(key, args[0], f"{path} (key {key!r})")
                check_value(item, args[1], f"{path}.{key}")
        return
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation is type(None):
        ok = value is None
    else:
        ok = isinstance(value, annotation)
    if not ok:
        raise ConfigError(f"{where}: {value!r} is not {_describe(annotation)}")


def loads_json(text: str) -> Any:
    """``json.loads`` of text a person wrote. JSON nested past the reader's depth (about 1,000
    levels, a ``RecursionError``) is a ``json.JSONDecodeError`` like any other malformed JSON, so
    each reader's one handler names the file and row."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply to read", text, 0) from None


def utf8_text(path: Path) -> str:
    """The file's text, a byte-order mark dropped (spreadsheets write one). Bytes that are not UTF-8
    raise ``UnicodeDecodeError``; ``bad_line`` says where, for the caller's own error."""
    return path.read_bytes().removeprefix(b"\xef\xbb\xbf").decode("utf-8")  # not utf-8-sig: its offsets skip the mark


def bad_line(e: UnicodeDecodeError) -> int:
    """The 1-based line of the first byte that is not UTF-8."""
    return e.object[:e.start].count(b"\n") + 1


def read_text(path: Path) -> str:
    """A run file's text (``utf8_text``); bytes that are not UTF-8 are a ``RunError`` naming the line.
    A missing file is the caller's ``FileNotFoundError`` (its advice differs)."""
    try:
        return utf8_text(path)
    except UnicodeDecodeError as e:
        raise RunError(f"{path}, line {bad_line(e)} is not UTF-8 text") from None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) of every non-blank line of a JSON-lines file (predictions, a training
    log); a line that is not a JSON object is a ``RunError`` naming the file and line."""
    records = []
    for number, line in enumerate(read_text(path).split("\n"), 1):
        if line.strip():
            try:
                record = loads_json(line)
            except ValueError as e:
                raise RunError(f"{path}, line {number} is not JSON ({e})") from None
            if not isinstance(record, dict):
                raise RunError(f"{path}, line {number} is not a record (a JSON object)")
            records.append((number, record))
    return records


def is_int(value: object) -> bool:
    """An integer, not a bool (JSON's ``true`` is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed(value: object, what: str) -> int:
    """Raise ``ConfigError`` naming ``what`` (an option or a field) unless ``value`` is a seed every
    generator takes: numpy's refuse negative ones, and torch's wrap them silently."""
    if not is_int(value) or not 0 <= value < 2**32:
        raise ConfigError(f"{what}: {value!r} is not a seed (an integer in 0..{2**32 - 1:,})")
    return value


def check_name(value: object, path: str) -> str:
    """Raise ``ConfigError`` naming the field ``path`` unless ``value`` is a plain name: one folder or
    file name, as every name that becomes a path component must be (a study's datasets, hosts, CF
    models). ``../../x``, ``a/b``, ``..`` or an absolute path would write outside the folder meant."""
    if not isinstance(value, str) or value in ("", ".", "..") or any(c in value for c in "/\\\0"):
        raise ConfigError(f"field '{path}': {value!r} is not a plain name (one folder name, without '/', '\\' "
                          "or '..')")
    return value


def check_fields(cls: type, values: dict[str, Any], prefix: str = "") -> None:
    """Check every entry of ``values`` against the annotation of the dataclass field it names
    (``prefix``: the path of ``values`` itself, e.g. ``train``). Names that are not fields are
    left to the caller's unknown-key message."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if name in hints:
            check_value(value, hints[name], f"{prefix}.{name}" if prefix else name)


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (list, dict):
        return _NAMES[origin]
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
