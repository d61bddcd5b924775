"""What marks the simulator from outside, and what the product loads without it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import httpx
import pytest

import evalrun.tokens
from evalrun.sim import SimConfig, create_app, running_server

V1 = {"anthropic-version": "2023-06-01"}
MARK = "x-evalrun-simulator"


def _params(**extra: object) -> dict[str, object]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # rpm=1: the bucket refills in a minute, not in the second a loaded machine may take between requests.
    app = create_app(SimConfig(api_key="sk-mark", rpm=1, burst=1, batch_seconds=0))
    headers = {**V1, "x-api-key": "sk-mark"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://sim", headers=headers
    ) as c:
        yield c


@pytest.mark.anyio
async def test_every_response_announces_the_simulator(client: httpx.AsyncClient) -> None:
    responses = [
        await client.post("/v1/messages", json=_params()),  # 200
        await client.post("/v1/messages", json=_params()),  # 429: burst 1
        await client.post("/v1/messages", json=_params(foo=1)),  # 400
        await client.post("/v1/messages", json=_params(), headers={"x-api-key": "wrong"}),  # 401
        await client.post("/v1/messages", json=_params(model="claude-nope")),  # 404 model
        await client.post(
            "/v1/messages/count_tokens",
            json={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]},
        ),
        await client.get("/v1/nothing"),  # 404 route
        await client.get("/v1/messages"),  # 405
    ]
    created = await client.post(
        "/v1/messages/batches", json={"requests": [{"custom_id": "a", "params": _params()}]}
    )
    batch = created.json()
    responses += [
        created,
        await client.get("/v1/messages/batches"),
        await client.get(f"/v1/messages/batches/{batch['id']}"),
        await client.get(f"/v1/messages/batches/{batch['id']}/results"),
        await client.post(f"/v1/messages/batches/{batch['id']}/cancel"),
        await client.delete(f"/v1/messages/batches/{batch['id']}"),
        await client.get("/v1/messages/batches/msgbatch_gone"),
    ]
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 429, 400, 401, 404, 200, 404, 405, 200, 200, 200, 200, 200, 200, 404]
    for response in responses:
        assert response.headers.get(MARK) == "1", (response.request.url, response.status_code)


@pytest.mark.anyio
async def test_faults_announce_the_simulator_too() -> None:
    for config in (SimConfig(p500=1.0), SimConfig(p529=1.0)):
        transport = httpx.ASGITransport(create_app(config))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim", headers=V1) as c:
            response = await c.post("/v1/messages", json=_params())
            assert response.status_code >= 500 and response.headers[MARK] == "1"


def test_the_sdk_sees_the_mark_over_loopback() -> None:
    with (
        running_server(SimConfig()) as url,
        anthropic.Anthropic(api_key="k", base_url=url, max_retries=0) as sdk,
    ):
        raw = sdk.messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers[MARK] == "1"
        with pytest.raises(anthropic.NotFoundError) as info:
            sdk.messages.create(
                model="claude-unknown", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.response.headers[MARK] == "1"


def _fresh_python(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_token_rule_loads_without_the_simulator() -> None:
    _fresh_python(
        "import evalrun.tokens, sys\n"
        "loaded = [m for m in sys.modules if m.startswith(('starlette', 'uvicorn', 'evalrun.sim'))]\n"
        "assert not loaded, loaded\n"
        "assert evalrun.tokens.estimate_text_tokens('The answer is (C).') == 8\n"
    )


def test_the_token_module_itself_needs_only_the_standard_library() -> None:
    # Loaded on its own, outside the package, so that `evalrun/__init__` is not part of the test.
    path = Path(evalrun.tokens.__file__)
    _fresh_python(
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('token_rule', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('evalrun', 'pandas', 'starlette', 'uvicorn', 'httpx')]\n"
        "assert not loaded, loaded\n"
        "assert module.count_request_tokens({'messages': [{'role': 'user', 'content': 'C'}]}) == 4\n"
    )


def test_the_local_estimate_is_the_simulators_count() -> None:
    assert evalrun.tokens.estimate_input_tokens(_params()) == evalrun.tokens.count_request_tokens(_params())
