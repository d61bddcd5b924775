"""Fields of a dataset row by path: `question`, `doc.title`, `choices.0`.

A row is a mapping whose values may nest (objects and lists from JSONL, JSON, Parquet or a
saved Hugging Face dataset; flat strings from CSV). Templates, scorers and checks all address a
value the same way, through `lookup`, and turn it into prompt text through `text_of`.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import string
from collections.abc import Iterator, Mapping
from typing import Any

from evalrun.errors import DatasetError

__all__ = [
    "LETTERS",
    "FieldMissing",
    "RowValueError",
    "as_list",
    "as_number",
    "flatten",
    "letters",
    "lookup",
    "options_text",
    "text_at",
    "text_of",
]

LETTERS = string.ascii_uppercase  # option labels: the 26 a lettered list can have


class RowValueError(DatasetError):
    """A row's value cannot be used where the spec puts it; the plan adds which row and prompt."""


class FieldMissing(RowValueError):
    """A row has no value at a path a template or the scorer names."""


def _step(value: Any, part: str, path: str, done: str) -> Any:
    if isinstance(value, Mapping):
        if part in value:
            return value[part]
        raise FieldMissing(f"no field {path!r} ({done or 'the row'} has no {part!r}; it has {_keys(value)})")
    if isinstance(value, list | tuple):
        if part.isdigit() and int(part) < len(value):
            return value[int(part)]
        raise FieldMissing(f"no field {path!r} ({done} is a list of {len(value)}, with no item {part!r})")
    raise FieldMissing(f"no field {path!r} ({done} is {type(value).__name__}, not an object or a list)")


def _keys(value: Mapping[str, Any]) -> str:
    names = list(value)
    shown = ", ".join(map(str, names[:12])) + (", …" if len(names) > 12 else "")
    return shown or "nothing"


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """The value at `path`: a key as written first (a CSV column may contain dots), then names
    joined by dots, each an object key or a 0-based list index. Raises FieldMissing."""
    if path in values:
        return values[path]
    value: Any = values
    done = ""
    for part in path.split("."):
        value = _step(value, part, path, done)
        done = f"{done}.{part}" if done else part
    return value


def text_of(value: Any) -> str:
    """A value as prompt text: strings as they are, nothing for null, JSON for the rest."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, default=str)


def as_list(value: Any, *, path: str) -> list[Any]:
    """A list value (a CSV cell may hold one as JSON text); DatasetError when it is not one."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    if isinstance(value, list | tuple):
        return list(value)
    raise RowValueError(f"field {path!r} is {type(value).__name__}, not a list")


def letters(count: int, *, path: str) -> tuple[str, ...]:
    """The option labels of a list of `count` options: A, B, C, …"""
    if not 1 <= count <= len(LETTERS):
        raise RowValueError(f"field {path!r} has {count} options; a lettered list takes 1 to {len(LETTERS)}")
    return tuple(LETTERS[:count])


def options_text(value: Any, *, path: str) -> str:
    """A list as lettered options, one per line: `(A) first` … """
    items = as_list(value, path=path)
    labels = letters(len(items), path=path)
    return "\n".join(f"({label}) {text_of(item)}" for label, item in zip(labels, items, strict=True))


def flatten(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) of every leaf value: what a row says, as plain strings."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, f"{path}.")
        elif isinstance(value, list | tuple):
            yield from flatten({str(i): item for i, item in enumerate(value)}, f"{path}.")
        else:
            yield path, text_of(value)


def text_at(values: Mapping[str, Any], path: str) -> str:
    """The value at `path` (a column, or a nested field by its dotted path) as text, a number or
    an object from JSON as its JSON text; "" when the field is missing."""
    try:
        return text_of(lookup(values, path))
    except FieldMissing:
        return ""


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def as_number(value: Any) -> float | None:
    """A finite number from a number or its text (thousands commas allowed: "1,400"), else None:
    how a numeric field is read, in a reply and in the dataset alike."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER.match(value.strip().replace(",", "")):
        return float(value.strip().replace(",", ""))
    return None
