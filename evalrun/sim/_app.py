"""The ASGI app: `POST /v1/messages`, `POST /v1/messages/count_tokens` and the Message Batches
endpoints under `/v1/messages/batches`. Every response carries `x-evalrun-simulator: 1`."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive as StarletteReceive
from starlette.types import Scope as StarletteScope
from starlette.types import Send as StarletteSend

from evalrun.models import ModelInfo
from evalrun.sim._batches import MAX_BATCH_BYTES, BatchStore
from evalrun.sim._cache import CachePlan, PromptCache, TooManyBreakpoints
from evalrun.sim._errors import ConnectionDropped, SimError, invalid
from evalrun.sim._jsonio import dumps, loads
from evalrun.sim._reply import Reply, generate_reply
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
_JSONL = (b"content-type", b"application/binary")
_ANNOUNCE = (b"x-evalrun-simulator", b"1")
_MAX_PAGE = 1000


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
        self.batches = BatchStore(config, self.process)

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

    async def _body(self, receive: Receive, headers: Mapping[bytes, bytes], limit: int = _MAX_BODY) -> Any:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise SimError(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise SimError(400, "invalid_request_error", "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
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

    async def _envelope(
        self, scope: Scope, receive: Receive, *, limit: int | None = _MAX_BODY
    ) -> tuple[str, Any]:
        """Authenticate, check the version header and read the JSON body (None when `limit` is)."""
        headers = dict(scope["headers"])
        self._authenticate(headers)
        version = self._version(headers)
        body = await self._body(receive, headers, limit) if limit is not None else None
        return version, body

    # -- one Messages request, real-time or in a batch ------------------------------------------

    def check(self, body: Any, version: str, *, count_tokens: bool = False) -> ModelInfo:
        """Validate a Messages (or count_tokens) body under `version`; the model it names."""
        validate_request(body, removed=self.table.removed_params(version), count_tokens=count_tokens)
        info = self.table.get(body["model"])
        check_model_rules(body, info)
        return info

    def plan(self, body: Mapping[str, Any], info: ModelInfo) -> CachePlan:
        """What the request reads from and writes to the prompt cache."""
        try:
            return self.cache.plan(
                info.id,
                request_units(body),
                top_level=body.get("cache_control"),
                min_tokens=info.cache_min_tokens or _DEFAULT_CACHE_MIN,
            )
        except TooManyBreakpoints as exc:
            raise invalid(str(exc)) from None

    def reply(self, body: Mapping[str, Any], info: ModelInfo) -> Reply:
        """What the simulated model answers."""
        return generate_reply(
            body, info, seed=self.config.seed, skill=self.config.skill_for(info), key=self.config.answers
        )

    def finish(self, info: ModelInfo, plan: CachePlan, reply: Reply, *, tier: str) -> dict[str, Any]:
        """Commit the cache writes and build the Message."""
        self.cache.commit(plan)
        content: list[dict[str, Any]] = []
        if reply.thinking is not None:
            content.append(
                {"type": "thinking", "thinking": reply.thinking, "signature": "sim-" + uuid.uuid4().hex}
            )
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        if reply.tool_call is not None:
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_" + uuid.uuid4().hex[:24],
                    "name": reply.tool_call.name,
                    "input": reply.tool_call.input,
                }
            )
        return {
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
                "service_tier": tier,
            },
        }

    def process(self, body: Any, version: str) -> dict[str, Any]:
        """One batch request: the Message it gets, or the SimError a real-time request would."""
        info = self.check(body, version)
        plan = self.plan(body, info)
        return self.finish(info, plan, self.reply(body, info), tier="batch")

    # -- endpoints ------------------------------------------------------------------------

    async def count_tokens(self, scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
        version, body = await self._envelope(scope, receive)
        self.check(body, version, count_tokens=True)
        return 200, dumps({"input_tokens": count_request_tokens(body)}), []

    async def messages(self, scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
        version, body = await self._envelope(scope, receive)
        info = self.check(body, version)
        family = info.family
        scope["evalrun.family"] = family  # from here on, responses carry rate-limit headers
        plan = self.plan(body, info)
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
        reply = self.reply(body, info)
        delay = self._latency(reply.output_tokens)
        if delay > 0:
            await anyio.sleep(delay)
        message = self.finish(info, plan, reply, tier="standard")
        self.limiter.charge_output(family, reply.output_tokens)
        return 200, dumps(message), []

    # -- Message Batches ------------------------------------------------------------------

    async def create_batch(self, scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
        version, body = await self._envelope(scope, receive, limit=MAX_BATCH_BYTES)
        batch = self.batches.create(body, version)
        return 200, dumps(self.batches.view(batch, _base_url(scope))), []

    async def list_batches(self, scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
        await self._envelope(scope, receive, limit=None)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        limit = 20
        if "limit" in query:
            raw = query["limit"][-1]
            if not raw.lstrip("-").isdigit():
                raise invalid("limit: Input should be a valid integer, unable to parse string as an integer")
            limit = int(raw)
            if limit < 1:
                raise invalid("limit: Input should be greater than or equal to 1")
            if limit > _MAX_PAGE:
                raise invalid(f"limit: Input should be less than or equal to {_MAX_PAGE}")
        page = self.batches.page(
            _base_url(scope),
            limit=limit,
            after_id=query.get("after_id", [None])[-1],
            before_id=query.get("before_id", [None])[-1],
        )
        return 200, dumps(page), []

    async def get_batch(self, scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
        await self._envelope(scope, receive, limit=None)
        batch = self.batches.get(scope["path_params"]["batch_id"])
        return 200, dumps(self.batches.view(batch, _base_url(scope))), []

    async def cancel_batch(self, scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
        await self._envelope(scope, receive, limit=None)
        batch = self.batches.cancel(scope["path_params"]["batch_id"])
        return 200, dumps(self.batches.view(batch, _base_url(scope))), []

    async def delete_batch(self, scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
        await self._envelope(scope, receive, limit=None)
        return 200, dumps(self.batches.delete(scope["path_params"]["batch_id"])), []

    async def batch_results(self, scope: Scope, receive: Receive) -> tuple[int, bytes, Headers]:
        await self._envelope(scope, receive, limit=None)
        return 200, self.batches.results(scope["path_params"]["batch_id"]), [_JSONL]

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
        headers: Headers = [] if any(k == b"content-type" for k, _ in extra) else [_JSON]
        headers += [(b"request-id", request_id.encode()), (b"content-length", str(len(payload)).encode())]
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


def _base_url(scope: Scope) -> str:
    """scheme://host[:port] the client used to reach this request (for absolute URLs)."""
    scheme = str(scope.get("scheme", "http"))
    host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
    if not host:
        server = scope.get("server") or ("127.0.0.1", None)
        name, port = server[0], server[1]
        name = f"[{name}]" if ":" in str(name) else str(name)
        host = name if port is None else f"{name}:{port}"
    return f"{scheme}://{host}"


class _SimulatorApp(Starlette):
    """Starlette, with `x-evalrun-simulator: 1` on every response (errors and 404s included),
    so that a client can tell it is talking to the simulator."""

    async def __call__(self, scope: StarletteScope, receive: StarletteReceive, send: StarletteSend) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return

        async def announce(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), _ANNOUNCE]}
            await send(message)

        await super().__call__(scope, receive, announce)


def create_app(config: SimConfig) -> Starlette:
    """The simulator as a Starlette app, for uvicorn or `httpx.ASGITransport`."""
    sim = _Simulator(config)

    def endpoint(handler: Callable[[Scope, Receive], Awaitable[tuple[int, bytes, Headers]]]) -> _Endpoint:
        return _Endpoint(sim, handler, rate_limited=False)

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

    batch = "/v1/messages/batches/{batch_id}"
    routes = [
        Route("/v1/messages", _Endpoint(sim, sim.messages, rate_limited=True), methods=["POST"]),
        Route("/v1/messages/count_tokens", endpoint(sim.count_tokens), methods=["POST"]),
        Route("/v1/messages/batches", endpoint(sim.create_batch), methods=["POST"]),
        Route("/v1/messages/batches", endpoint(sim.list_batches), methods=["GET"]),
        Route(batch, endpoint(sim.get_batch), methods=["GET"]),
        Route(batch, endpoint(sim.delete_batch), methods=["DELETE"]),
        Route(batch + "/cancel", endpoint(sim.cancel_batch), methods=["POST"]),
        Route(batch + "/results", endpoint(sim.batch_results), methods=["GET"]),
    ]
    app = _SimulatorApp(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.simulator = sim
    return app
