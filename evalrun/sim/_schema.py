"""Build a JSON value that satisfies a structured-output or tool-input schema, with the answer
placed in it.

Covers what evals ask for: objects with properties/required, string (enum, const, minLength,
maxLength, the common formats), integer/number (minimum, maximum, their exclusive forms,
multipleOf), boolean, null, array (items, minItems, maxItems, uniqueItems), anyOf/oneOf (the
first branch that is not null), allOf (merged) and local `$ref`s into `$defs`/`definitions`.
No jsonschema at request time.

A *provider* can supply the value of any object property by its dotted path (`"address.zip"`):
it gets the property's schema, flattened to one branch, and returns a value valid under it or
`MISSING` to let the builder fill the property in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = [
    "MISSING",
    "Provider",
    "first_enum",
    "fit_string",
    "flatten",
    "instance_for",
    "number_in_range",
    "property_paths",
    "type_of",
    "within",
]

_FILLER = "Simulated reasoning."
_MAX_DEPTH = 16
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "12:00:00Z",
    "duration": "P1D",
    "email": "someone@example.com",
    "idn-email": "someone@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


class _Missing:
    """The provider's "no value here"."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
Provider = Callable[[str, Mapping[str, Any]], Any]


def _resolve(schema: Any, root: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while isinstance(schema, Mapping) and "$ref" in schema and seen < 32:
        ref = str(schema["$ref"])
        target: Any = root
        if ref.startswith("#"):
            for part in ref.lstrip("#").strip("/").split("/"):
                if part:
                    target = target.get(part, {}) if isinstance(target, Mapping) else {}
        schema, seen = target, seen + 1
    return schema if isinstance(schema, Mapping) else {}


def _branch(options: list[Any], root: Mapping[str, Any]) -> Any:
    """The first anyOf/oneOf branch that allows more than null (else the first branch)."""
    for option in options:
        if type_of(_resolve(option, root)) != "null":
            return option
    return options[0]


def flatten(raw: Any, root: Mapping[str, Any]) -> Mapping[str, Any]:
    """`raw` with its `$ref`s followed, anyOf/oneOf narrowed to one branch and allOf merged."""
    node = _resolve(raw, root)
    for _ in range(_MAX_DEPTH):
        for key in ("anyOf", "oneOf"):
            options = node.get(key)
            if isinstance(options, list) and options and "enum" not in node and "const" not in node:
                rest = {k: v for k, v in node.items() if k != key}
                node = {**rest, **_resolve(_branch(options, root), root)}
                break
        else:
            parts = node.get("allOf")
            if not (isinstance(parts, list) and parts):
                return node
            merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
            for part in parts:
                merged.update(_resolve(part, root))
            node = merged
    return node


def _children(schema: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    props = schema.get("properties")
    if isinstance(props, Mapping):
        out.extend(props.values())
    if isinstance(schema.get("items"), Mapping):
        out.append(schema["items"])
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            out.append(schema[key][0])
    return out


def first_enum(schema: Mapping[str, Any]) -> list[str] | None:
    """The first all-string `enum` met depth-first (the answer choices), or None."""
    stack: list[Any] = [schema]
    visited = 0
    while stack and visited < 256:
        node = _resolve(stack.pop(0), schema)
        visited += 1
        enum = node.get("enum")
        if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
            return list(enum)
        stack[:0] = _children(node)
    return None


def type_of(node: Mapping[str, Any]) -> str | None:
    """The node's JSON type: the first non-null one of a type list, or inferred from its keys."""
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return str(kinds[0]) if kinds else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in node:
        return "object"
    if "items" in node:
        return "array"
    return None


def property_paths(schema: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every object property reachable without crossing an array, by dotted path, flattened."""
    out: dict[str, Mapping[str, Any]] = {}

    def walk(raw: Any, prefix: str, depth: int) -> None:
        node = flatten(raw, schema)
        props = node.get("properties")
        if depth > _MAX_DEPTH or not isinstance(props, Mapping):
            return
        for name, sub in props.items():
            path = f"{prefix}.{name}" if prefix else str(name)
            out[path] = flatten(sub, schema)
            walk(sub, path, depth + 1)

    walk(schema, "", 0)
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _bound(
    node: Mapping[str, Any], inclusive: str, exclusive: str, tighter: Callable[..., float]
) -> tuple[float | None, bool]:
    """The tighter of an inclusive and an exclusive bound, and whether it is exclusive."""
    inc, exc = _number(node.get(inclusive)), _number(node.get(exclusive))
    if inc is None:
        return (None, False) if exc is None else (exc, True)
    if exc is not None and tighter(inc, exc) == exc:
        return exc, True  # on a tie the exclusive bound is the tighter
    return inc, False


def _inside(value: float, low: tuple[float | None, bool], high: tuple[float | None, bool]) -> bool:
    (lo, lo_x), (hi, hi_x) = low, high
    if lo is not None and (value < lo or (lo_x and value == lo)):
        return False
    return not (hi is not None and (value > hi or (hi_x and value == hi)))


def within(value: float, node: Mapping[str, Any]) -> bool:
    """Whether `value` keeps the node's minimum/maximum bounds (inclusive and exclusive)."""
    low = _bound(node, "minimum", "exclusiveMinimum", max)
    high = _bound(node, "maximum", "exclusiveMaximum", min)
    return _inside(value, low, high)


_Bound = tuple[float | None, bool]  # (the bound, whether it is exclusive)


def number_in_range(node: Mapping[str, Any], kind: str, index: int = 0) -> int | float:
    """A value of `kind` (integer or number) inside the node's bounds and on its multipleOf
    grid; a larger `index` gives another value, so that array items can differ."""
    low = _bound(node, "minimum", "exclusiveMinimum", max)
    high = _bound(node, "maximum", "exclusiveMaximum", min)
    step = _number(node.get("multipleOf"))
    step = step if step is not None and step > 0 else None
    if kind == "integer":
        low, high, base = _integer_bounds(low, high)
        step = step if step is not None and step.is_integer() else 1.0
    else:
        base = _number_base(low, high)
        if step is None:
            return _off_grid(low, high, base, index)
    value = _on_grid(base, step, low, high, index)
    return round(value) if kind == "integer" else float(round(value, 9))


def _integer_bounds(low: _Bound, high: _Bound) -> tuple[_Bound, _Bound, float]:
    """The inclusive integer bounds inside `low` and `high`, and the integer to start from."""
    (lo, lo_x), (hi, hi_x) = low, high
    lo_i = None if lo is None else math.floor(lo) + 1 if lo_x or not lo.is_integer() else int(lo)
    hi_i = None if hi is None else math.ceil(hi) - 1 if hi_x or not hi.is_integer() else int(hi)
    base: float = lo_i if lo_i is not None else (0 if hi_i is None or hi_i >= 0 else hi_i)
    return (lo_i, False), (hi_i, False), base


def _number_base(low: _Bound, high: _Bound) -> float:
    """Where a number starts: the middle of two bounds, just inside one, or 0."""
    (lo, lo_x), (hi, hi_x) = low, high
    if lo is not None and hi is not None:
        return lo + (hi - lo) / 2
    if lo is not None:
        return lo + (1 if lo_x else 0)
    if hi is not None:
        return min(0.0, hi - (1 if hi_x else 0))
    return 0.0


def _off_grid(low: _Bound, high: _Bound, base: float, index: int) -> float:
    """A number with no multipleOf: another one per `index`, rounded when that stays inside."""
    (lo, _), (hi, _) = low, high
    if lo is not None and hi is not None:
        value = lo + (hi - lo) * (index + 1) / (index + 2)
    else:
        value = base - index if lo is None and hi is not None else base + index
    rounded = round(value, 6)
    return float(rounded if _inside(rounded, low, high) else value)


def _on_grid(base: float, step: float, low: _Bound, high: _Bound, index: int) -> float:
    """The multiple of `step` nearest `base` inside the bounds, `index` steps away if that fits."""
    grid = math.ceil(base / step) * step
    if not _inside(grid, low, high):
        grid = math.floor(base / step) * step
    for value in (grid + index * step, grid - index * step):
        if _inside(value, low, high):
            return value
    return grid


def fit_string(text: str, node: Mapping[str, Any]) -> str:
    """`text` padded to minLength and cut to maxLength."""
    min_length = int(node.get("minLength", 0) or 0)
    if len(text) < min_length:
        text = text + "." * (min_length - len(text))
    if "maxLength" in node:
        text = text[: int(node["maxLength"])]
    return text


def instance_for(
    schema: Mapping[str, Any],
    answer: str | None,
    *,
    provider: Provider | None = None,
    answer_in_strings: bool = True,
) -> Any:
    """A value valid under `schema`, with `answer` in the first enum that has it, or else (when
    `answer_in_strings`) in the first free string. `provider` may supply any property's value."""
    return _Instance(schema, answer, provider, answer_in_strings).build(schema, 0, "", 0)


class _Instance:
    """One walk of `instance_for`: places the answer once, in the first place that takes it."""

    def __init__(
        self, schema: Mapping[str, Any], answer: str | None, provider: Provider | None, answer_in_strings: bool
    ) -> None:
        self.schema = schema
        self.answer = answer
        self.provider = provider
        self.placed = answer is None
        choices = first_enum(schema)
        # When an enum offers the answer, free strings (a "reasoning" field, say) must not take it.
        self.string_takes_answer = answer_in_strings and not (choices and answer in choices)

    def build(self, raw: Any, depth: int, path: str | None, index: int) -> Any:
        if depth > _MAX_DEPTH:
            return None
        node = flatten(raw, self.schema)
        if self.provider is not None and path:
            supplied = self.provider(path, node)
            if supplied is not MISSING:
                return supplied
        if "const" in node:
            return node["const"]
        enum = node.get("enum")
        if isinstance(enum, list) and enum:
            return self._choose(enum, index)
        kind = type_of(node)
        if kind == "object":
            return self._object(node, depth, path)
        if kind == "array":
            return self._array(node, depth)
        if kind in ("integer", "number"):
            return number_in_range(node, kind, index)
        if kind == "boolean":
            return index % 2 == 0
        if kind == "string" or kind is None:
            return self._string(node, index)
        return None  # "null", or a type this walk does not know

    def _object(self, node: Mapping[str, Any], depth: int, path: str | None) -> dict[str, Any]:
        props = node.get("properties")
        props = props if isinstance(props, Mapping) else {}
        return {
            name: self.build(sub, depth + 1, f"{path}.{name}" if path else str(name), 0)
            for name, sub in props.items()
        }

    def _array(self, node: Mapping[str, Any], depth: int) -> list[Any]:
        count = max(int(node.get("minItems", 1) or 0), 1)
        if "maxItems" in node:
            count = min(count, int(node["maxItems"]))
        return [self.build(node.get("items", {}), depth + 1, None, i) for i in range(count)]

    def _choose(self, enum: list[Any], index: int) -> Any:
        if not self.placed and self.answer in enum:
            self.placed = True
            return self.answer
        return enum[index % len(enum)]

    def _string(self, node: Mapping[str, Any], index: int) -> str:
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt]
        if self.string_takes_answer and not self.placed and self.answer is not None:
            self.placed = True
            text = self.answer
        else:
            text = _FILLER if index == 0 else f"{_FILLER} ({index + 1})"
        return fit_string(text, node)
