"""The `fields` scorer: read an answer object (a tool call's input, a structured-output JSON, or
JSON in the text) and check each field against its dataset column.

A reply without the expected tool call or JSON object is `unparsed` (never silently wrong); a
field the object lacks is a wrong field. Numbers compare with a relative tolerance, strings with
the exact scorer's normalisation, booleans by meaning (`true`, `yes`, `1`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from evalrun.plan.paths import as_number, text_at
from evalrun.results.score import Reply, Score, Scorer, normalize_text
from evalrun.spec import FieldSpec, ScorerSpec

__all__ = ["compare_field", "extract_object", "fields_scorer", "value_at"]

_MISSING = object()
_TRUE, _FALSE = {"true", "yes", "y", "t", "1"}, {"false", "no", "n", "f", "0"}


def value_at(obj: Any, path: str) -> Any:
    """The value at a dotted path (`address.zip`, `items.0.name`), or `_MISSING`."""
    current = obj
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _first_json_object(text: str) -> Any:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def extract_object(reply: Reply, source: str, tool: str | None) -> tuple[Any, str | None]:
    """(the answer object, or None; why it is missing)."""
    if source == "tool":
        calls = [c for c in reply.tool_uses if tool is None or c.get("name") == tool]
        if not calls:
            named = f"to tool {tool!r}" if tool else ""
            return None, f"no tool call {named}".strip()
        value = calls[0].get("input")
        return (value, None) if isinstance(value, dict) else (None, "the tool call has no input object")
    if source == "json":
        value = reply.json
        if isinstance(value, dict):
            return value, None
        return None, "the reply is not a JSON object"
    value = _first_json_object(reply.text)
    return (value, None) if value is not None else (None, "no JSON object in the reply")


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None
    return None


def compare_field(answer: Any, gold: str, spec: FieldSpec, *, case_sensitive: bool) -> bool:
    """Whether an extracted value matches the dataset's gold text."""
    if answer is _MISSING or answer is None:
        return gold.strip() == "" if answer is None else False
    gold_number, answer_number = as_number(gold), as_number(answer)
    if gold_number is not None and answer_number is not None:
        if spec.tolerance:
            return abs(answer_number - gold_number) <= spec.tolerance * abs(gold_number)
        return answer_number == gold_number
    if isinstance(answer, bool):
        return _as_bool(gold) is answer
    if isinstance(answer, dict | list):
        try:
            return bool(json.loads(gold) == answer)
        except ValueError:
            return False
    sensitive = spec.case_sensitive if spec.case_sensitive is not None else case_sensitive
    return normalize_text(str(answer), sensitive) == normalize_text(gold, sensitive)


def fields_scorer(spec: ScorerSpec) -> Scorer:
    specs = spec.field_specs
    source = spec.from_ or "json"

    def score(reply: Reply, target: str, row: Mapping[str, str]) -> Score:
        obj, problem = extract_object(reply, source, spec.tool)
        if obj is None:
            return Score(answer=None, correct=False, status="unparsed", explanation=problem)
        results: dict[str, bool] = {}
        answers: dict[str, Any] = {}
        for path, field in specs.items():
            value = value_at(obj, path)
            answers[path] = None if value is _MISSING else value
            results[path] = compare_field(value, text_at(row, field.column), field, case_sensitive=spec.case_sensitive)
        wrong = [path for path, right in results.items() if not right]
        return Score(
            answer=json.dumps(answers, ensure_ascii=False, sort_keys=True),
            correct=not wrong,
            status="ok",
            explanation=f"wrong: {', '.join(wrong)}" if wrong else None,
            fields=results,
        )

    return Scorer(score, needs_message=True, columns=[f"correct_{path}" for path in specs])


