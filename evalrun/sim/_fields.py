"""Field answers: what a simulated model writes into each extracted property of a matched row.

A property whose dotted path has a value in the answer-key row gets that value, converted to
the property's type, with probability `skill` (one deterministic draw per request and field);
otherwise a plausible wrong value of the same type: a number off by a factor, another row's
string for the same field, the other boolean, another member of the enum.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from evalrun.sim._schema import MISSING, Provider, fit_string, type_of, within
from evalrun.sim.answers import AnswerKey, KeyRow

__all__ = ["coerce", "field_provider", "wrong_value"]

_TRUE = frozenset({"true", "yes", "y", "t", "1"})
_FALSE = frozenset({"false", "no", "n", "f", "0"})
_INT_FACTORS = (10, 2, 3, 0.5, 0.1)
_FLOAT_FACTORS = (10.0, 2.0, 1.5, 0.5, 0.1)
_UNSURE = "I don't know."
_NUMBER_NOISE = re.compile(r"[,_\s]")


def _parse_number(raw: str) -> int | float | None:
    text = _NUMBER_NOISE.sub("", raw)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def coerce(raw: str, node: Mapping[str, Any]) -> Any:
    """`raw` (a dataset cell) as a value of the property's type, or MISSING when it has none."""
    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        return _enum_member(raw, enum)
    if "const" in node:
        return node["const"] if str(node["const"]).casefold() == raw.casefold() else MISSING
    kind = type_of(node)
    if kind in ("integer", "number"):
        return _number_in(raw, node, integer=kind == "integer")
    if kind == "boolean":
        word = raw.strip().casefold()
        return True if word in _TRUE else False if word in _FALSE else MISSING
    if kind == "string" or kind is None:
        return fit_string(raw, node)
    return MISSING


def _enum_member(raw: str, enum: list[Any]) -> Any:
    """The member `raw` names (any case), or the number it is; MISSING when none."""
    for member in enum:
        if str(member).casefold() == raw.casefold():
            return member
    number = _parse_number(raw)
    for member in enum:
        if number is not None and isinstance(member, int | float) and member == number:
            return member
    return MISSING


def _number_in(raw: str, node: Mapping[str, Any], *, integer: bool) -> Any:
    """`raw` as a number inside the node's bounds (a whole one for an integer), else MISSING."""
    number = _parse_number(raw)
    if number is None:
        return MISSING
    if integer:
        if isinstance(number, float) and not number.is_integer():
            return MISSING
        number = int(number)
    return number if within(number, node) else MISSING


def _scaled(value: int | float, node: Mapping[str, Any], n: int) -> int | float:
    integer = isinstance(value, int)
    factors = _INT_FACTORS if integer else _FLOAT_FACTORS
    candidates: list[int | float] = []
    for i in range(len(factors)):
        factor = factors[(n + i) % len(factors)]
        scaled = value * factor
        candidates.append(round(scaled) if integer else round(scaled, 6))
    candidates += [value + 1, value - 1]
    for candidate in candidates:
        if candidate != value and within(candidate, node):
            return candidate
    return value


def wrong_value(correct: Any, node: Mapping[str, Any], others: Sequence[str], n: int) -> Any:
    """A plausible wrong value of `correct`'s type; `others` are the field's values in other rows."""
    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        rest = [m for m in enum if m != correct]
        return rest[n % len(rest)] if rest else correct
    if isinstance(correct, bool):
        return not correct
    if isinstance(correct, int | float):
        return _scaled(correct, node, n)
    if isinstance(correct, str):
        rest = [v for v in others if v.casefold() != correct.casefold()]
        return fit_string(rest[n % len(rest)] if rest else _UNSURE, node)
    return correct


def _draw(base: int, path: str) -> tuple[float, int]:
    raw = hashlib.blake2b(f"{base}\x00{path}".encode(), digest_size=16).digest()
    return int.from_bytes(raw[:8], "big") / 2**64, int.from_bytes(raw[8:], "big")


def field_provider(row: KeyRow, key: AnswerKey, *, skill: float, base: int) -> Provider | None:
    """The provider that answers `row`'s fields at `skill`, or None when the row has no fields.

    `base` seeds the per-field draws (the request's own draw, so a field is answered the same
    way every time the same model sees the same request)."""
    values = row.field_values()
    if not values:
        return None

    def provide(path: str, node: Mapping[str, Any]) -> Any:
        raw = values.get(path)
        if raw is None:
            return MISSING
        correct = coerce(raw, node)
        if correct is MISSING:
            return MISSING
        u, n = _draw(base, path)
        if u < skill:
            return correct
        others = [v for v in key.field_values(path) if coerce(v, node) is not MISSING]
        return wrong_value(correct, node, others, n)

    return provide
