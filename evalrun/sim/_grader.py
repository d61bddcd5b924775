"""The simulated grader: model-graded scoring requests get a deterministic, explainable grade.

A grading request has, in its last user turn, the graded reply between `<response>` and
`</response>` and optionally the reference answer between `<reference>` and `</reference>`.
Its scale (labels best first) is either the `enum` of a `grade` property in the structured
output (or forced tool input) schema, or, in text mode, a line `Grades, best first: a, b, c.`;
the text reply is then `<explanation>…</explanation>` and `<grade>…</grade>`, continuing an
assistant prefill such as `<explanation>` without repeating it.

Grades: with a reference, the best when the whitespace- and case-normalized reference is
contained in the normalized response, the worst when they share no word, and on scales of
three or more labels a grade in between in proportion to the share of the reference's words
the response has. Without a reference, the best for a non-empty response other than
"I don't know." and the worst otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalrun.sim._schema import MISSING, Provider, fit_string, flatten, type_of

__all__ = ["GradeRequest", "grade", "grade_text", "grading_provider", "grading_request"]

_SCALE_LINE = re.compile(r"(?im)^[ \t]*Grades,[ \t]*best[ \t]+first:[ \t]*(.+?)[ \t]*$")
_WORD = re.compile(r"\w+")
_UNSURE = "i don't know"


@dataclass(frozen=True)
class GradeRequest:
    """What a grading request asks: the reply, the reference (if any) and the labels, best first."""

    response: str
    reference: str | None
    labels: tuple[Any, ...]


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [b["text"] for b in content if isinstance(b, Mapping) and b.get("type") == "text"]


def _between(text: str, tag: str) -> str | None:
    start = text.find(f"<{tag}>")
    end = text.rfind(f"</{tag}>")
    if start < 0 or end < start:
        return None
    return text[start + len(tag) + 2 : end]


def _schema_labels(schema: Mapping[str, Any]) -> tuple[Any, ...] | None:
    props = flatten(schema, schema).get("properties")
    if not isinstance(props, Mapping) or "grade" not in props:
        return None
    enum = flatten(props["grade"], schema).get("enum")
    if isinstance(enum, list) and len(enum) >= 2:
        return tuple(enum)
    return None


def _text_labels(texts: Sequence[str]) -> tuple[str, ...] | None:
    for text in texts:
        match = _SCALE_LINE.search(text)
        if match:
            labels = tuple(p.strip().rstrip(".").strip() for p in match.group(1).split(","))
            labels = tuple(label for label in labels if label)
            if len(labels) >= 2:
                return labels
    return None


def grading_request(body: Mapping[str, Any], schema: Mapping[str, Any] | None) -> GradeRequest | None:
    """The grading request `body` makes, or None when it is not one.

    `schema` is the structured-output or forced tool-input schema, if the request has one; a
    request with a schema is a grading request only when the schema has a `grade` enum."""
    users = [m for m in body["messages"] if m["role"] == "user"]
    if not users:
        return None
    last_user = "\n".join(_texts(users[-1]["content"]))
    response = _between(last_user, "response")
    if response is None:
        return None
    if schema is not None:
        labels = _schema_labels(schema)
    else:
        system = body.get("system")
        system_texts = [system] if isinstance(system, str) else _texts(system)
        labels = _text_labels([last_user, *system_texts])
    if labels is None:
        return None
    reference = _between(last_user, "reference")
    return GradeRequest(response=response, reference=reference, labels=labels)


def _normalized(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").casefold().split())


def grade(request: GradeRequest) -> tuple[Any, str]:
    """The label the simulated grader gives, and its one-sentence explanation."""
    labels = request.labels
    best, worst = 0, len(labels) - 1
    response = _normalized(request.response)
    reference = _normalized(request.reference or "")
    if reference:
        if reference in response:
            return labels[best], "The response contains the reference answer."
        wanted = set(_WORD.findall(reference))
        shared = wanted & set(_WORD.findall(response))
        if not shared:
            return labels[worst], "The response shares nothing with the reference answer."
        if len(labels) == 2:
            return labels[worst], (
                f"The response does not contain the reference answer; it shares only {len(shared)} "
                f"of its {len(wanted)} words."
            )
        fraction = len(shared) / len(wanted)
        index = min(max(round((1 - fraction) * worst), 1), worst - 1)
        return labels[
            index
        ], f"The response shares {len(shared)} of the reference answer's {len(wanted)} words."
    if not response:
        return labels[worst], "The response is empty."
    if response.rstrip(".!") == _UNSURE:
        return labels[worst], "The response says it does not know."
    return labels[best], "The response gives a substantive answer."


def grading_provider(label: Any, explanation: str) -> Provider:
    """Fills the `grade` and `explanation` properties of a grading schema."""

    def provide(path: str, node: Mapping[str, Any]) -> Any:
        if path == "grade":
            enum = node.get("enum")
            return label if isinstance(enum, list) and label in enum else MISSING
        if path == "explanation" and type_of(node) in ("string", None) and "enum" not in node:
            return fit_string(explanation, node)
        return MISSING

    return provide


def grade_text(label: Any, explanation: str, prefill: str) -> str:
    """The text-mode reply, continuing `prefill` (an assistant turn such as `<explanation>`)."""
    full = f"<explanation>{explanation}</explanation>\n<grade>{label}</grade>"
    if not prefill:
        return full
    if full.startswith(prefill):
        return full[len(prefill) :]
    if prefill.rstrip().endswith("<explanation>"):
        return full[len("<explanation>") :]
    return "\n" + full
