"""Fakes for the sending layer's hostile cases: a Batches API that can lose a create's reply,
point results elsewhere, or fail its results download; and a Messages API that can echo the key,
send a gzip bomb or never answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
import httpx

from .conftest import QUESTIONS

ANSWERS = {q[0]: q[5] for q in QUESTIONS.values()}


def message(text: str, *, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": usage or {"input_tokens": 50, "output_tokens": 1}}  # fmt: skip


def letter_for(params: dict[str, Any]) -> str:
    text = json.dumps(params.get("messages"))
    return next((letter for question, letter in ANSWERS.items() if question in text), "A")


class BatchAPI:
    """The Message Batches API, in memory. `drop_create` loses the reply of that many creates
    (the batch is created); `results_status` answers the results download with those statuses
    first (0: the connection drops); `results_origin` names another host in `results_url`."""

    def __init__(self, *, polls_to_end: int = 1) -> None:
        self.batches: dict[str, dict[str, Any]] = {}
        self.polls_to_end = polls_to_end
        self.drop_create = 0
        self.results_status: list[int] = []
        self.results_origin: str | None = None
        self.results_fetches = 0
        self.foreign_keys: list[str] = []  # x-api-key values seen by a request to another host
        self.log: list[str] = []
        self.on_create: Callable[[], None] | None = None
        self.on_list: Callable[[], None] | None = None
        self.on_poll: Callable[[], None] | None = None

    @property
    def created(self) -> int:
        return sum(1 for b in self.batches.values() if not b.get("foreign"))

    def add_foreign(self, size: int, *, ended: bool = True) -> str:
        """Another batch of the account (another experiment's) with `size` requests."""
        batch_id = f"msgbatch_other{len(self.batches)}"
        requests = [{"custom_id": f"other{i}", "params": {"messages": []}} for i in range(size)]
        self.batches[batch_id] = {"requests": requests, "polls": 99 if ended else -10**9, "foreign": True,
                                  "created_at": datetime.now(UTC).isoformat()}  # fmt: skip
        return batch_id

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await anyio.lowlevel.checkpoint()  # as a real exchange: a cancellation lands here
        return self.answer(request)

    def answer(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.log.append(f"{method} {request.url}")
        if request.url.host != "api.anthropic.com":
            self.foreign_keys.append(request.headers.get("x-api-key", ""))
            return httpx.Response(200, content=b"")
        if method == "POST" and path == "/v1/messages/batches":
            return self._create(request)
        if method == "GET" and path == "/v1/messages/batches":
            for batch in self.batches.values():  # time passes for every batch between two looks
                batch["polls"] += 1
            if self.on_list is not None:
                self.on_list()
            data = [self._view(b) for b in reversed(self.batches)]
            return httpx.Response(200, json={"data": data, "has_more": False})
        if method == "GET" and path.endswith("/results"):
            return self._results(path.split("/")[-2])
        if method == "GET" and path.startswith("/v1/messages/batches/"):
            batch_id = path.split("/")[-1]
            if batch_id not in self.batches:
                return httpx.Response(404, json={"type": "error", "error": {"type": "not_found_error", "message": "no such batch"}})
            self.batches[batch_id]["polls"] += 1
            if self.on_poll is not None:
                self.on_poll()
            return httpx.Response(200, json=self._view(batch_id))
        return httpx.Response(404, json={"type": "error", "error": {"type": "not_found_error", "message": path}})

    def _create(self, request: httpx.Request) -> httpx.Response:
        batch_id = f"msgbatch_{len(self.batches) + 1}"
        requests = json.loads(request.content)["requests"]
        self.batches[batch_id] = {"requests": requests, "polls": 0, "created_at": datetime.now(UTC).isoformat()}
        if self.on_create is not None:
            self.on_create()
        if self.drop_create:
            self.drop_create -= 1
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json=self._view(batch_id))

    def _results(self, batch_id: str) -> httpx.Response:
        self.results_fetches += 1
        if self.results_status:
            status = self.results_status.pop(0)
            if status == 0:
                raise httpx.ReadError("connection reset")
            return httpx.Response(status, json={"type": "error", "error": {"type": "api_error", "message": "boom"}})
        lines = []
        for item in self.batches[batch_id]["requests"]:
            result = {"type": "succeeded", "message": message(letter_for(item["params"]))}
            lines.append(json.dumps({"custom_id": item["custom_id"], "result": result}))
        return httpx.Response(200, content="\n".join(lines).encode())

    def _view(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        ended = batch["polls"] >= self.polls_to_end
        n = len(batch["requests"])
        origin = self.results_origin or "https://api.anthropic.com"
        return {"id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "created_at": batch["created_at"],
                "request_counts": {"processing": 0 if ended else n, "succeeded": n if ended else 0, "errored": 0,
                                   "canceled": 0, "expired": 0},
                "results_url": f"{origin}/v1/messages/batches/{batch_id}/results" if ended else None}  # fmt: skip
