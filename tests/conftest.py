"""Shared fakes. Every test writes only under its tmp_path (the autouse fixture moves the cwd)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import math
import re
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

PREFILL_REFUSAL = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(order=True)
class _Timer:
    deadline: float
    seq: int
    event: anyio.Event = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class FakeClock:
    """A `Clock` (evalrun.send.clock) whose time jumps instead of passing.

    `now()` stands still while any task can run. Inside `async with clock.running():` a driver
    task waits until every task is blocked, then moves time straight to the earliest deadline
    of a `sleep` or `wait` on this clock and wakes who was waiting for it: a paced run asserts
    exact times and takes milliseconds. Timers with the same deadline fire in the order they
    were set, so a run is deterministic. Every task blocked with no timer set is a deadlock,
    and the driver raises it instead of hanging.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.start = self._now = start
        self._timers: list[_Timer] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    @property
    def elapsed(self) -> float:
        """Seconds since the start, rounded to the nanosecond (1000.3 - 1000 is not 0.3)."""
        return round(self._now - self.start, 9)

    def _timer(self, seconds: float) -> _Timer:
        deadline = self._now + max(0.0, seconds)
        if seconds > 0.0 and deadline == self._now:
            # Shorter than the float's resolution at this time: as on a real clock, some time
            # still passes (else a waiter that is owed 1e-14 s would wait at the same instant forever).
            deadline = math.nextafter(self._now, math.inf)
        timer = _Timer(deadline, next(self._seq), anyio.Event())
        heapq.heappush(self._timers, timer)
        return timer

    async def sleep(self, seconds: float) -> None:
        timer = self._timer(seconds)
        try:
            await timer.event.wait()
        finally:
            timer.cancelled = True

    async def wait(self, event: anyio.Event, timeout: float) -> None:
        if event.is_set():
            return
        timer = self._timer(timeout)
        try:
            async with anyio.create_task_group() as tg:

                async def on_event() -> None:
                    await event.wait()
                    timer.event.set()

                tg.start_soon(on_event)
                await timer.event.wait()
                tg.cancel_scope.cancel()
        finally:
            timer.cancelled = True

    def advance(self, seconds: float) -> None:
        """Move time forward by hand (outside `running()`), firing the timers it passes."""
        self._fire_until(self._now + seconds)

    def _fire_until(self, deadline: float) -> None:
        self._now = max(self._now, deadline)
        while self._timers and self._timers[0].deadline <= self._now:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.event.set()

    async def settle(self) -> None:
        """Let every task that can run, run (time does not move)."""
        loop = asyncio.get_running_loop()
        for _ in range(100_000):
            await asyncio.sleep(0)
            if not loop._ready:  # type: ignore[attr-defined]  # nothing else is runnable
                return
        raise RuntimeError("the tasks never settled")

    async def _drive(self) -> None:
        while True:
            await self.settle()
            while self._timers and self._timers[0].cancelled:
                heapq.heappop(self._timers)
            if not self._timers:
                raise RuntimeError(f"deadlock at +{self.elapsed:g} s: every task waits and no timer is set")
            self._fire_until(self._timers[0].deadline)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeClock]:
        """Run the body with time jumping to the next deadline whenever every task waits."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drive)
            yield self
            tg.cancel_scope.cancel()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALRUN_CACHE_DIR", str(tmp_path / "response-cache"))
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-secret-key-0123456789")


class FakeAPI:
    """A small, independent fake of /v1/messages for httpx.MockTransport.

    It answers a multiple-choice question right when `answers` maps its question text to a letter
    (`wrong` lists questions it answers wrong), enforces prefill/temperature refusals per model,
    and plays queued faults first: `enqueue(429, 500, ...)`. `history` keeps every request body.
    """

    def __init__(
        self,
        answers: dict[str, str] | None = None,
        *,
        no_prefill: tuple[str, ...] = (),
        no_temperature: tuple[str, ...] = (),
        key: str = "sk-test-secret-key-0123456789",
        wrong: tuple[str, ...] = (),
    ) -> None:
        self.answers = answers or {}
        self.no_prefill = no_prefill
        self.no_temperature = no_temperature
        self.key = key
        self.wrong = set(wrong)
        self.faults: list[int | str] = []
        self.history: list[dict[str, Any]] = []
        self.statuses: Counter[int] = Counter()
        self.usage_total = Counter[str]()

    def enqueue(self, *faults: int | str) -> None:
        self.faults.extend(faults)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _error(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
        self.statuses[status] += 1
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}
        return httpx.Response(status, json=body, headers={"request-id": "req_fake", **(headers or {})})

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.history.append(body)
        if request.headers.get("x-api-key") != self.key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if self.faults:
            fault = self.faults.pop(0)
            if fault == "drop":
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            if fault == 429:
                return self._error(429, "rate_limit_error", "Number of requests has exceeded your rate limit", {"retry-after": "0"})
            if fault == 500:
                return self._error(500, "api_error", "Internal server error")
            if fault == 529:
                return self._error(529, "overloaded_error", "Overloaded")
        model = body["model"]
        if model.startswith("claude-unknown"):
            return self._error(404, "not_found_error", f"model: {model}")
        last = body["messages"][-1]
        if last["role"] == "assistant" and model in self.no_prefill:
            return self._error(400, "invalid_request_error", PREFILL_REFUSAL)
        if "temperature" in body and model in self.no_temperature:
            return self._error(400, "invalid_request_error", "`temperature` is deprecated for this model.")
        text_in = json.dumps(body["messages"])
        letter = "A"
        for question, answer in self.answers.items():
            if question in text_in:
                letter = answer if question not in self.wrong else {"A": "B"}.get(answer, "A")
                break
        schema = (body.get("output_config") or {}).get("format")
        if schema:
            text = json.dumps({"answer": letter})
        elif last["role"] == "assistant":
            text = f"{letter}) because"
        else:
            text = f"The answer is ({letter})."
        words = re.findall(r"\S+|\s+", text)
        output = words[: body["max_tokens"]]
        stop = "max_tokens" if len(output) < len(words) else "end_turn"
        usage = {"input_tokens": len(text_in) // 4, "output_tokens": len(output)}
        self.usage_total.update(usage)
        self.statuses[200] += 1
        message = {
            "id": f"msg_{len(self.history)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "".join(output)}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {**usage, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }
        return httpx.Response(200, json=message, headers={"request-id": f"req_{len(self.history)}"})


QUESTIONS = {
    "q1": ("Capital of Peru?", "Lima", "Quito", "Cusco", "Bogota", "A"),
    "q2": ("Capital of Chile?", "Lima", "Santiago", "Quito", "Paris", "B"),
    "q3": ("Capital of Kenya?", "Lagos", "Accra", "Nairobi", "Cairo", "C"),
    "q4": ("Capital of Norway?", "Bergen", "Rome", "Madrid", "Oslo", "D"),
    "q5": ("Capital of Japan?", "Tokyo", "Osaka", "Kyoto", "Nara", "A"),
    "q6": ("Capital of Spain?", "Lisbon", "Madrid", "Seville", "Porto", "B"),
}


MC_PROMPT = (
    "prompts:\n  p:\n    messages: [{role: user, content: \"{question} (A) {A} (B) {B} (C) {C} (D) {D}\"}]\n"
    "    prefill: \"The answer is (\"\n"
)


def write_mc_csv(path: Path, rows: int) -> Path:
    """A multiple-choice CSV of `rows` distinct questions whose answers cycle A–D."""
    lines = (f"r{i},Question number {i}?,a{i},b{i},c{i},d{i},{'ABCD'[i % 4]}" for i in range(rows))
    path.write_text("id,question,A,B,C,D,answer\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_mc_spec(path: Path, *, name: str, dataset: str, extra: str = "") -> Path:
    """A one-model, one-prompt prefill spec over a `write_mc_csv` file."""
    path.write_text(
        f"name: {name}\ndataset: {{path: {dataset}, id: id}}\nmodels: [claude-haiku-4-5]\nparams: {{max_tokens: 1}}\n"
        + MC_PROMPT
        + "scorer: {type: choice, target: answer}\n"
        + extra,
        encoding="utf-8",
    )
    return path


@pytest.fixture
def mc_dataset(tmp_path: Path) -> Path:
    path = tmp_path / "mc.csv"
    lines = ["id,question,A,B,C,D,answer"] + [",".join((k, *v)) for k, v in QUESTIONS.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def fake_api() -> FakeAPI:
    return FakeAPI({q[0]: q[5] for q in QUESTIONS.values()})


@pytest.fixture
def write_spec(tmp_path: Path, mc_dataset: Path) -> Callable[..., Path]:
    """Write a spec file; `body` is YAML appended after the defaults it does not override."""

    def write(body: str = "", *, name: str = "spec.yaml") -> Path:
        text = textwrap.dedent(body)
        defaults = {
            "name:": "name: mc\n",
            "dataset:": "dataset: {path: mc.csv, id: id}\n",
            "models:": "models: [claude-haiku-4-5]\n",
            "params:": "params: {max_tokens: 1, temperature: 0}\n",
            "prompts:": (
                "prompts:\n  plain:\n    system: Answer with the letter.\n    messages:\n"
                "      - {role: user, content: \"{question}\\n(A) {A}\\n(B) {B}\\n(C) {C}\\n(D) {D}\"}\n"
                "    prefill: \"The answer is (\"\n"
            ),
            "scorer:": "scorer: {type: choice, target: answer}\n",
        }
        head = "".join(v for k, v in defaults.items() if not re.search(rf"^{k}", text, re.M))
        path = tmp_path / name
        path.write_text(head + text, encoding="utf-8")
        return path

    return write


def tallies_from_cells(cells: list[dict[str, Any]]) -> list[Any]:
    """VariantTally objects (what the reports compute from a store) from plain cell dicts with
    model, prompt, row_id, status, correct, answer_mode: for testing the statistics directly."""
    from evalrun.results.tally import VariantTally

    rows = {row_id: i for i, row_id in enumerate(dict.fromkeys(str(c["row_id"]) for c in cells))}
    tallies: dict[tuple[str, str], VariantTally] = {}
    for cell in cells:
        key = (cell["model"], cell["prompt"])
        tally = tallies.setdefault(key, VariantTally(model=key[0], prompt=key[1], rows=len(rows)))
        tally.cells += 1
        tally.modes.add(cell.get("answer_mode", "prefill"))
        status = cell["status"]
        if status == "pending":
            tally.pending += 1
        elif status == "error":
            tally.errors += 1
        else:
            tally.ok += status == "ok"
            tally.unparsed += status == "unparsed"
            correct = bool(cell["correct"]) and status == "ok"
            tally.correct += correct
            index = rows[str(cell["row_id"])]
            tally.row_sum[index] += float(correct)
            tally.row_n[index] += 1
    return list(tallies.values())
