"""The grading stage of a `judge` scorer: one request to the grader model per answered cell.

A grading request shows the grader the user's rubric (with `{column}` placeholders, `{response}`
and `{target}`), the reply between `<response>` tags and the reference between `<reference>`
tags, and asks for a short explanation and one grade from the scale, best first. How it asks
follows the grader's capabilities like any other model's: structured output
(`{"explanation", "grade": enum}`) where prefill is refused, or `<explanation>…</explanation>
<grade>…</grade>` text started by an `<explanation>` prefill where it is accepted.

Grading requests go through the same store, cache, run loop, budget and estimate as the graded
ones; they are keyed by content, so a re-run grades only what was not graded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from evalrun.models import ModelTable
from evalrun.plan.endpoints import ModelPlan
from evalrun.plan.grid import PlanChunk, adapt_params, canonical_json, request_key
from evalrun.plan.modes import MODES, AnswerMode
from evalrun.plan.render import Template
from evalrun.spec import Experiment, ScorerSpec
from evalrun.store.records import RequestRecord, reply_shown
from evalrun.store.run_store import Learned, Store
from evalrun.tokens import estimate_input_tokens

__all__ = ["JUDGE_SYSTEM", "JudgePlan", "judge_mode", "reply_for_grading"]

JUDGE_SYSTEM = (
    "You are a careful, consistent grader. Grade the response strictly by the rubric, "
    "using only the grades you are given."
)
JUDGE_MAX_TOKENS = 512
EXPLANATION_PREFILL = "<explanation>"


def judge_mode(scorer: ScorerSpec, model: ModelPlan) -> str:
    """structured where the grader refuses (or may refuse) prefill, prefill where it accepts it."""
    forced = scorer.answer_mode or "auto"
    if forced != "auto":
        return forced
    return "prefill" if model.info.prefill is True else "structured"


def reply_for_grading(text: str | None, message_json: str | None) -> str:
    """What the grader reads: the reply's text, or its tool calls when it has no text."""
    return reply_shown(text, message_json)


@dataclass
class JudgePlan:
    """The grading requests of a run, streamed from its answered cells (see the module docstring)."""

    experiment: Experiment
    model: ModelPlan
    table: ModelTable
    store: Store | None = None
    learned: Mapping[str, Learned] = field(default_factory=dict)

    def __post_init__(self) -> None:
        scorer = self.experiment.scorer
        self.scorer = scorer
        self.labels = scorer.grade_labels
        self.mode_name = judge_mode(scorer, self.model)
        mode: AnswerMode = MODES["plain" if self.mode_name == "structured" else self.mode_name]
        judge_spec = scorer.judge_model
        params: dict[str, Any] = {"max_tokens": JUDGE_MAX_TOKENS, "temperature": 0}
        params.update(judge_spec.params if judge_spec is not None else {})
        self.params, self.notes = adapt_params(params, self.model, self.table, Learned(), mode)
        self.template = Template.parse(scorer.rubric or "", where="scorer.rubric")
        self.models = (self.model,)

    @property
    def total_cells(self) -> int:
        if self.store is None:
            return 0
        return self.store.answered_cell_count()

    def columns(self) -> tuple[str, ...]:
        """The dataset columns the rubric names ({response} and {target} are not columns)."""
        return tuple(c for c in self.template.columns if c not in ("response", "target"))

    def instruction(self) -> str:
        grades = ", ".join(self.labels)
        if self.mode_name == "structured":
            return f"Give a short explanation, then the grade. Grades, best first: {grades}."
        return (
            "First explain your grade briefly between <explanation> and </explanation>, then give the grade "
            f"between <grade> and </grade>. Grades, best first: {grades}."
        )

    def body(self, values: Mapping[str, str], reply: str) -> dict[str, Any]:
        """The grading request for one answered cell."""
        target_column = self.scorer.target
        response_block = f"<response>\n{reply}\n</response>"
        reference_block = f"<reference>\n{values.get(target_column, '')}\n</reference>" if target_column else ""
        filled = self.template.fill({**values, "response": response_block, "target": reference_block})
        parts = [filled]
        if "response" not in self.template.columns:
            parts.append(response_block)
        if reference_block and "target" not in self.template.columns:
            parts.append(reference_block)
        parts.append(self.instruction())
        messages: list[dict[str, Any]] = [{"role": "user", "content": "\n\n".join(parts)}]
        body: dict[str, Any] = {"model": self.model.request_model, "max_tokens": self.params["max_tokens"],
                                "system": JUDGE_SYSTEM}  # fmt: skip
        if self.mode_name == "prefill":
            messages.append({"role": "assistant", "content": EXPLANATION_PREFILL})
        body["messages"] = messages
        for key, value in self.params.items():
            if key != "max_tokens":
                body[key] = value
        if self.mode_name == "structured":
            config = dict(body.get("output_config") or {})
            config["format"] = {"type": "json_schema", "schema": self.schema()}
            body["output_config"] = config
        return body

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"explanation": {"type": "string"}, "grade": {"type": "string", "enum": list(self.labels)}},
            "required": ["explanation", "grade"],
            "additionalProperties": False,
        }

    def keyed(self, body: dict[str, Any]) -> tuple[str, str]:
        body_json = canonical_json(body)
        return request_key(body_json, repeat=0, endpoint=self.model.endpoint, api_version=self.model.api_version), body_json

    def chunks(
        self,
        *,
        models: set[str] | None = None,
        after_seq: int = -1,
        until_seq: int | None = None,
        size: int = 2048,
        first_size: int = 64,
    ) -> Iterator[PlanChunk]:
        """Grading requests for the answered cells that have none yet, in plan order."""
        assert self.store is not None
        limit = first_size
        cursor = after_seq
        while True:
            cells = self.store.answered_cells(after_seq=cursor, limit=limit)
            if until_seq is not None:
                cells = [c for c in cells if c["seq"] <= until_seq]
            if not cells:
                return
            chunk = PlanChunk()
            for cell in cells:
                values = json.loads(cell["values_json"])
                body = self.body(values, reply_for_grading(cell["text"], cell["message_json"]))
                key, body_json = self.keyed(body)
                chunk.requests.append(
                    RequestRecord(
                        key=key,
                        first_seq=cell["seq"],
                        model=self.model.label,
                        max_tokens=int(body["max_tokens"]),
                        input_tokens=estimate_input_tokens(body),
                        body_json=body_json,
                        stage="judge",
                    )
                )
                chunk.links.append((cell["seq"], key))
                chunk.last_seq = cell["seq"]
            cursor = chunk.last_seq
            yield chunk
            limit = size

    def fingerprint(self, images_digest: str = "") -> str:
        return ""
