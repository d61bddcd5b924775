"""Build a JSON value that satisfies a structured-output schema, with the answer placed in it.

Covers what evals ask for: objects with properties/required, string (enum, const, minLength),
integer/number (minimum, maximum), boolean, null, array (items, minItems), anyOf/oneOf/allOf
(the first branch) and local `$ref`s into `$defs`/`definitions`. No jsonschema at request time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["first_enum", "instance_for"]

_FILLER = "Simulated reasoning."


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


def _type_of(node: Mapping[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return kinds[0] if kinds else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in node:
        return "object"
    if "items" in node:
        return "array"
    return None


def instance_for(schema: Mapping[str, Any], answer: str) -> Any:
    """A value valid under `schema`, with `answer` in the first enum that has it, or else in the
    first free string."""
    placed = [False]
    choices = first_enum(schema)
    # When an enum offers the answer, free strings (a "reasoning" field, say) must not take it.
    string_takes_answer = not (choices and answer in choices)

    def build(raw: Any, depth: int) -> Any:
        node = _resolve(raw, schema)
        if depth > 16:
            return None
        if "const" in node:
            return node["const"]
        enum = node.get("enum")
        if isinstance(enum, list) and enum:
            if not placed[0] and answer in enum:
                placed[0] = True
                return answer
            return enum[0]
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list) and node[key]:
                return build(node[key][0], depth + 1)
        if isinstance(node.get("allOf"), list) and node["allOf"]:
            merged: dict[str, Any] = {}
            for part in node["allOf"]:
                merged.update(_resolve(part, schema))
            return build(merged, depth + 1)
        kind = _type_of(node)
        if kind == "object":
            props = node.get("properties")
            props = props if isinstance(props, Mapping) else {}
            return {name: build(sub, depth + 1) for name, sub in props.items()}
        if kind == "array":
            count = max(int(node.get("minItems", 1) or 0), 1)
            if "maxItems" in node:
                count = min(count, int(node["maxItems"]))
            return [build(node.get("items", {}), depth + 1) for _ in range(count)]
        if kind in ("integer", "number"):
            low = node.get("minimum", node.get("exclusiveMinimum"))
            value: float = 0 if low is None else low
            if "exclusiveMinimum" in node and low == node["exclusiveMinimum"]:
                value = low + 1
            high = node.get("maximum")
            if high is not None and value > high:
                value = high
            return int(value) if kind == "integer" else float(value)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        if kind == "string" or kind is None:
            if string_takes_answer and not placed[0]:
                placed[0] = True
                text = answer
            else:
                text = _FILLER
            min_length = int(node.get("minLength", 0) or 0)
            if len(text) < min_length:
                text = text + "." * (min_length - len(text))
            if "maxLength" in node:
                text = text[: int(node["maxLength"])]
            return text
        return None

    return build(schema, 0)
