"""The ASGI app: `POST /v1/messages` and `POST /v1/messages/count_tokens`."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from evalrun.models import ModelInfo
from evalrun.sim._cache import PromptCache, TooManyBreakpoints
from evalrun.sim._errors import ConnectionDropped, SimError, invalid
from evalrun.sim._jsonio import dumps, loads
from evalrun.sim._reply import generate_reply
from evalrun.sim._validate import check_model_rules, validate_request
from evalrun.sim.config import SimConfig
from evalrun.sim.ratelimit import RateLimiter, retry_after
from evalrun.tokens import count_request_tokens, request_units

__all__ = ["create_app"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_MAX_BODY = 32 * 1024 * 1024  # the real API's per-request limit
_DEFAULT_CACHE_MIN = 1024
_JSON = (b"content-type", b"application/json")


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex[:24]


def _error_body(error_type: str, message: str, request_id: str) -> bytes:
    return dumps(
        {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
    )


class _Simulator:
    """The state shared by all requests of one app: cache, buckets and the fault dice."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.table = config.model_table
        self.cache = PromptCache()
        self.limiter = RateLimiter(rpm=config.rpm, itpm=config.itpm, otpm=config.otpm, burst=config.burst)
        # Separate streams so that changing the latency settings leaves the faults unchanged.
        self.fault_rng = random.Random(f"{config.seed}:faults")
        self.latency_rng = random.Random(f"{config.seed}:latency")
        self.known_versions = frozenset(self.table.api_versions)

    # -- the request's envelope -------------------------------------------------------------

    def _authenticate(self, headers: Mapping[bytes, bytes]) -> None:
        key = self.config.api_key
        if key is None:
            return
        if b"x-api-key" in headers:  # x-api-key wins when both are sent, as on the real API
            if headers[b"x-api-key"].decode("latin-1") != key:
                raise SimError(401, "authentication_error", "invalid x-api-key")
            return
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if not auth:
            raise SimError(401, "authentication_error", "x-api-key header is required")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != key:
            raise SimError(401, "authentication_error", "invalid authorization bearer token")

    def _version(self, headers: Mapping[bytes, bytes]) -> str:
        raw = headers.get(b"anthropic-version")
        if raw is None:
            raise invalid("anthropic-version: header is required")
        version = raw.decode("latin-1").strip()
        if self.known_versions and version not in self.known_versions:
            raise invalid(f"anthropic-version: unknown version '{version}'")
        return version

    async def _body(self, scope: Scope, receive: Receive, headers: Mapping[bytes, bytes]) -> Any:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > _MAX_BODY:
            raise SimError(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise SimError(400, "invalid_request_error", "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > _MAX_BODY:
                raise SimError(
                    413, "request_too_large", "Request exceeds the maximum allowed number of bytes."
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            return loads(b"".join(chunks))
        except ValueError:
            raise invalid(
                "There was an error parsing the body of your request: it is not valid JSON"
            ) from None

    async def _parse(
        self, scope: Scope, receive: Receive, *, count_tokens: bool
    ) -> tuple[dict[str, Any], ModelInfo]:
        headers = dict(scope["headers"])
        self._authenticate(headers)
        version = self._version(headers)
        body = await self._body(scope, receive, headers)
        validate_request(body, removed=self.table.removed_params(version), count_tokens=count_tokens)
        info = self.table.get(body["model"])
        check_model_rules(body, info)
        scope["evalrun.family"] = info.family  # from here on, responses carry rate-limit headers
        return body, info

    # -- endpoints ------------------------------------------------------------------------

    async def count_tokens(self, scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
        body, _ = await self._parse(scope, receive, count_tokens=True)
        return 200, dumps({"input_tokens": count_request_tokens(body)}), []

    async def messages(self, scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
        body, info = await self._parse(scope, receive, count_tokens=False)
        try:
            plan = self.cache.plan(
                info.id,
                request_units(body),
                top_level=body.get("cache_control"),
                min_tokens=info.cache_min_tokens or _DEFAULT_CACHE_MIN,
            )
        except TooManyBreakpoints as exc:
            raise invalid(str(exc)) from None
        family = info.family
        wait = self.limiter.admit(family, plan.uncached + plan.write)
        if wait is not None:
            raise SimError(
                429,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of "
                f"{self._limits_text()} for {family} models. Please retry after the time in the retry-after header.",
                headers={"retry-after": str(retry_after(wait))},
            )
        self._fault()
        reply = generate_reply(
            body, info, seed=self.config.seed, skill=self.config.skill_for(info), key=self.config.answers
        )
        delay = self._latency(reply.output_tokens)
        if delay > 0:
            await anyio.sleep(delay)
        self.cache.commit(plan)
        self.limiter.charge_output(family, reply.output_tokens)
        content: list[dict[str, Any]] = []
        if reply.thinking is not None:
            content.append(
                {"type": "thinking", "thinking": reply.thinking, "signature": "sim-" + uuid.uuid4().hex}
            )
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        message = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": info.response_id,
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": reply.stop_sequence,
            "usage": {
                "input_tokens": plan.uncached,
                "output_tokens": reply.output_tokens,
                "cache_creation_input_tokens": plan.write,
                "cache_read_input_tokens": plan.read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": plan.write_5m,
                    "ephemeral_1h_input_tokens": plan.write_1h,
                },
                "service_tier": "standard",
            },
        }
        return 200, dumps(message), []

    def _limits_text(self) -> str:
        parts = []
        for label, value in (
            ("requests", self.config.rpm),
            ("input tokens", self.config.itpm),
            ("output tokens", self.config.otpm),
        ):
            if value is not None:
                parts.append(f"{value:g} {label} per minute")
        return ", ".join(parts)

    def _fault(self) -> None:
        config = self.config
        if not (config.p500 or config.p529 or config.pdrop):
            return
        draw = self.fault_rng.random()
        if draw < config.p500:
            raise SimError(500, "api_error", "Internal server error")
        if draw < config.p500 + config.p529:
            raise SimError(529, "overloaded_error", "Overloaded")
        if draw < config.p500 + config.p529 + config.pdrop:
            raise _Drop

    def _latency(self, output_tokens: int) -> float:
        config = self.config
        seconds = 0.0
        if config.latency_ms > 0:
            # Lognormal with median latency_ms: exp(N(ln median, sigma)).
            seconds = config.latency_ms / 1000 * math.exp(self.latency_rng.gauss(0.0, config.latency_spread))
        return seconds + config.latency_per_output_token_ms * output_tokens / 1000


class _Drop(Exception):
    """Internal: the fault dice chose to drop this connection."""


class _Endpoint:
    """A raw ASGI endpoint: starlette's Request/Response are skipped on the hot path, and the
    drop fault needs to control exactly what reaches the socket."""

    def __init__(
        self,
        sim: _Simulator,
        handler: Callable[[Scope, Receive], Awaitable[tuple[int, bytes, Headers]]],
        *,
        rate_limited: bool,
    ):
        self.sim = sim
        self.handler = handler
        self.rate_limited = rate_limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _request_id()
        extra: Headers = []
        try:
            status, payload, extra = await self.handler(scope, receive)
        except SimError as exc:
            status = exc.status
            payload = _error_body(exc.error_type, exc.message, request_id)
            extra = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
        except _Drop:
            # Promise a body, then vanish: uvicorn closes the socket and the client sees a
            # truncated response (httpx.RemoteProtocolError).
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [_JSON, (b"content-length", b"1000")],
                }
            )
            raise ConnectionDropped() from None
        headers: Headers = [
            _JSON,
            (b"request-id", request_id.encode()),
            (b"content-length", str(len(payload)).encode()),
        ]
        headers.extend(extra)
        if self.rate_limited:
            family = self._family(scope)
            if family is not None:
                headers.extend(self.sim.limiter.headers(family))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _family(self, scope: Scope) -> str | None:
        # The handler stashes the resolved family; errors before model resolution have none.
        return scope.get("evalrun.family")


def create_app(config: SimConfig) -> Starlette:
    """The simulator as a Starlette app, for uvicorn or `httpx.ASGITransport`."""
    sim = _Simulator(config)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        message = "Not found" if status == 404 else f"Method {request.method} not allowed"
        rid = _request_id()
        return Response(
            _error_body(kind, message, rid),
            status_code=status,
            media_type="application/json",
            headers={"request-id": rid},
        )

    routes = [
        Route("/v1/messages", _Endpoint(sim, sim.messages, rate_limited=True), methods=["POST"]),
        Route(
            "/v1/messages/count_tokens",
            _Endpoint(sim, sim.count_tokens, rate_limited=False),
            methods=["POST"],
        ),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.simulator = sim
    return app
