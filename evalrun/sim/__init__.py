"""A local stand-in for the Anthropic Messages API, faithful enough to test evalrun against.

`create_app(SimConfig(...))` gives an ASGI app (use it in-process through
`httpx.ASGITransport`); `running_server` serves it on loopback for real clients and the
official SDK; `serve` runs it in the foreground for the `evalrun sim` command.

It serves `/v1/messages` (text, prefill, structured output, forced tool use, model-graded
scoring requests), `/v1/messages/count_tokens` and the Message Batches API, and marks every
response with the header `x-evalrun-simulator: 1`. The product never imports this package:
the token rule it shares with the product lives in `evalrun.tokens`.
"""

from __future__ import annotations

from evalrun.sim._app import create_app
from evalrun.sim._errors import ConnectionDropped
from evalrun.sim._server import running_server, serve
from evalrun.sim.answers import AnswerKey, KeyRow
from evalrun.sim.config import DEFAULT_SKILL, DEFAULT_SKILLS, SimConfig
from evalrun.sim.ratelimit import RateLimiter, TokenBucket
from evalrun.tokens import count_request_tokens, count_text_tokens

__all__ = [
    "DEFAULT_SKILL",
    "DEFAULT_SKILLS",
    "AnswerKey",
    "ConnectionDropped",
    "KeyRow",
    "RateLimiter",
    "SimConfig",
    "TokenBucket",
    "count_request_tokens",
    "count_text_tokens",
    "create_app",
    "running_server",
    "serve",
]
