"""A fake /v1/messages whose right and wrong answers a test decides, row by row and prompt by
prompt, and the two-run experiment the across tests (diff, gate, history) build on it.

It is not a simulator (no `x-evalrun-simulator` header), so its answers go into the shared
response cache like a real endpoint's: a prompt that did not change between two runs is answered
from the cache in the second.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

from evalrun.execute import prepare, run_prepared

ROWS = 200
LETTERS = "ABCD"


def right_letter(row: int) -> str:
    return LETTERS[row % 4]


class Oracle:
    """Answers the question of row i right unless `wrong(marker, i)` says otherwise, where
    `marker` is the first of `markers` found in the request's text ('' for none)."""

    def __init__(self, wrong: Callable[[str, int], bool], markers: tuple[str, ...]) -> None:
        self.wrong = wrong
        self.markers = markers
        self.bodies: list[dict[str, Any]] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        text = json.dumps(body["messages"]) + json.dumps(body.get("system", ""))
        row = int(re.search(r"Question number (\d+)\?", text).group(1))  # type: ignore[union-attr]
        marker = next((m for m in self.markers if m in text), "")
        letter = right_letter(row)
        if self.wrong(marker, row):
            letter = LETTERS[(row + 1) % 4]
        message = {
            "id": f"msg_{len(self.bodies)}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": f"{letter})"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 30, "output_tokens": 2, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0},
        }  # fmt: skip
        return httpx.Response(200, json=message, headers={"request-id": f"req_{len(self.bodies)}"})


def write_dataset(path: Path, rows: int = ROWS, *, cluster: int | None = None) -> Path:
    head = "id,question,A,B,C,D,answer" + (",passage" if cluster else "")
    lines = [
        f"r{i},Question number {i}?,a{i},b{i},c{i},d{i},{right_letter(i)}" + (f",p{i // cluster}" if cluster else "")
        for i in range(rows)
    ]
    path.write_text(head + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_experiment(path: Path, prompts: dict[str, str], *, name: str = "exp", extra: str = "") -> Path:
    """A one-model spec whose prompts are `name → a lead text` put before the question."""
    body = "".join(
        f"  {key}:\n    messages: [{{role: user, content: \"{lead} {{question}} (A) {{A}} (B) {{B}} (C) {{C}} (D) {{D}}\"}}]\n"
        "    prefill: \"The answer is (\"\n"
        for key, lead in prompts.items()
    )
    path.write_text(
        f"name: {name}\ndataset: {{path: data.csv, id: id}}\nmodels: [claude-haiku-4-5]\n"
        f"params: {{max_tokens: 2}}\nprompts:\n{body}scorer: {{type: choice, target: answer}}\n{extra}",
        encoding="utf-8",
    )
    return path


def run_spec(spec: Path, out: Path, oracle: Oracle) -> Path:
    async def go() -> None:
        await run_prepared(prepare(spec, out=out), transport=oracle.transport(), backoff=lambda a, b: 0.0)

    anyio.run(go)
    return out


def set_started(folder: Path, started_at: str) -> None:
    """Date a run folder's runs (the order `runs --name` lists them in)."""
    with contextlib.closing(sqlite3.connect(folder / "store.sqlite")) as db, db:
        db.execute("UPDATE runs SET started_at = ?", (started_at,))
