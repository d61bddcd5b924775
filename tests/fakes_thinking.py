"""A fake Messages API that thinks: independent of evalrun's simulator, for the reasoning tests.

Each request is one configuration (its `output_config.effort` and `thinking`) asked one
multiple-choice question. The fake answers right when the question's hash fraction is below the
configuration's skill (`skills`, more effort and thinking → more skill), so the exact accuracy
of every configuration is known in advance (`expected_accuracy`). With thinking on it spends
`thinking_tokens(...)` tokens (more with more effort), billed in `usage.output_tokens` and shown
as a summarized thinking block that names a *wrong* letter (a scorer reading thinking would be
caught). It can report the thinking count in `usage.thinking_tokens` (`report_thinking`),
refuse questions (`refuse`), or think until `max_tokens` cuts it (`overthink`). `history`
keeps every Messages body; `cost_usd` is what every reply cost at Sonnet 4.6's prices.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import httpx

from evalrun.tokens import count_text_tokens

PRICE_IN, PRICE_OUT = 3.0, 15.0  # claude-sonnet-4-6, USD per million tokens
SKILLS = {
    ("low", "off"): 0.45,
    ("high", "off"): 0.55,
    ("low", "budget"): 0.7,
    ("high", "budget"): 0.9,
}
THINK_BASE = {"low": 1200, "high": 2600}


def fraction(text: str, salt: str = "") -> float:
    digest = hashlib.blake2b(f"{salt}\x00{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def config_of(body: dict[str, Any]) -> tuple[str, str]:
    effort = (body.get("output_config") or {}).get("effort") or "low"
    thinking = body.get("thinking") or {}
    return effort, "budget" if thinking.get("type") == "enabled" else "off"


def thinking_tokens(question: str, config: tuple[str, str], budget: int) -> int:
    if config[1] == "off":
        return 0
    return min(THINK_BASE[config[0]] + int(fraction(question, "think") * 600), budget)


def write_questions(path: Any, rows: int) -> list[tuple[str, str]]:
    """A CSV of `rows` questions (id, question, A–D, answer); returns (question, answer) pairs."""
    out = []
    lines = ["id,question,A,B,C,D,answer"]
    for i in range(rows):
        question = f"Question {i}: which option is number {i % 4}?"
        answer = "ABCD"[i % 4]
        lines.append(f"q{i},{question},a{i},b{i},c{i},d{i},{answer}")
        out.append((question, answer))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


class ThinkingAPI:
    """See the module docstring. `questions` maps question text → right letter."""

    def __init__(
        self,
        questions: Iterable[tuple[str, str]],
        *,
        skills: dict[tuple[str, str], float] | None = None,
        report_thinking: bool = False,
        refuse: Iterable[str] = (),
        overthink: Iterable[str] = (),
        refusal_names_answer: bool = False,
    ) -> None:
        self.questions = dict(questions)
        self.skills = skills or SKILLS
        self.report_thinking = report_thinking
        self.refuse = set(refuse)
        self.overthink = set(overthink)
        # A refusal whose partial text still names the right letter: a scorer reading it would
        # count it correct, but a refusal is never correct.
        self.refusal_names_answer = refusal_names_answer
        self.history: list[dict[str, Any]] = []
        self.cost_usd = 0.0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def correct(self, question: str, config: tuple[str, str]) -> bool:
        return fraction(question) < self.skills[config]

    def expected_accuracy(self, config: tuple[str, str]) -> float:
        return sum(self.correct(q, config) for q in self.questions) / len(self.questions)

    def _question(self, body: dict[str, Any]) -> str:
        text = json.dumps(body["messages"], ensure_ascii=False)
        return next(q for q in self.questions if q in text)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path.endswith("/count_tokens"):
            return httpx.Response(200, json={"input_tokens": len(json.dumps(body["messages"])) // 4})
        self.history.append(body)
        question = self._question(body)
        config = config_of(body)
        right = self.questions[question]
        letter = right if self.correct(question, config) else {"A": "B", "B": "C", "C": "D", "D": "A"}[right]
        wrong = {"A": "B", "B": "C", "C": "D", "D": "A"}[letter]
        budget = int((body.get("thinking") or {}).get("budget_tokens") or 0)
        thought = thinking_tokens(question, config, budget)
        content: list[dict[str, Any]] = []
        stop = "end_turn"
        text = f"The answer is ({letter})."
        if thought:
            content.append({"type": "thinking", "thinking": f"Perhaps the answer is ({wrong}).", "signature": "sig"})
        if question in self.refuse:
            stop, text = "refusal", f"The answer is ({self.questions[question]})." if self.refusal_names_answer else ""
        elif question in self.overthink and thought:
            stop, text, thought = "max_tokens", "", body["max_tokens"]
        if text:
            content.append({"type": "text", "text": text})
        output = thought + count_text_tokens(text)
        usage: dict[str, Any] = {
            "input_tokens": len(json.dumps(body["messages"])) // 4,
            "output_tokens": output,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        if self.report_thinking:
            usage["thinking_tokens"] = thought
        self.cost_usd += (usage["input_tokens"] * PRICE_IN + output * PRICE_OUT) / 1e6
        message = {
            "id": f"msg_{len(self.history)}", "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage,
        }  # fmt: skip
        return httpx.Response(200, json=message, headers={"request-id": f"req_{len(self.history)}"})
