"""Each fact about the Messages API is written once (`evalrun.messages_api`, `evalrun.send.bucket`):
the spec, the client, the store, the costs and the simulator all read the same table. These tests
fail when one of them grows its own copy again, or when the copies would disagree."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from evalrun import cost, messages_api, models, spec
from evalrun.messages_api import (
    BODY_FIELDS,
    COUNT_TOKENS_FIELDS,
    GENERATION_ONLY_FIELDS,
    IMAGE_MEDIA_TYPES,
    SAMPLING_PARAMS,
    SPEC_PARAMS,
    USAGE_COLUMNS,
    Usage,
    detect_image_type,
    is_image_of_type,
    usage_counters,
)
from evalrun.models import Price
from evalrun.plan import render
from evalrun.send import limits
from evalrun.send.bucket import TokenBucket
from evalrun.sim import _validate, ratelimit
from evalrun.sim._errors import SimError
from evalrun.store.records import Outcome
from evalrun.store.run_store import Store


def test_every_module_reads_the_one_table() -> None:
    assert spec.MESSAGES_PARAMS is SPEC_PARAMS
    assert models.SAMPLING_PARAMS is SAMPLING_PARAMS
    assert render.IMAGE_TYPES is IMAGE_MEDIA_TYPES
    assert limits.TokenBucket is TokenBucket
    assert ratelimit.TokenBucket is TokenBucket
    # No module keeps a private copy under its old name.
    from evalrun.send import client

    for module, name in (
        (_validate, "_MESSAGES_FIELDS"), (_validate, "_COUNT_FIELDS"), (_validate, "_MEDIA_TYPES"),
        (_validate, "_MAGIC"), (client, "_COUNT_TOKENS_FIELDS"), (client, "_USAGE_COUNTERS"),
    ):  # fmt: skip
        assert not hasattr(module, name), f"{module.__name__}.{name} is a second copy"


def test_the_field_sets_fit_together() -> None:
    assert SPEC_PARAMS < BODY_FIELDS
    assert {"model", "messages", "system", "stream"}.isdisjoint(SPEC_PARAMS)
    assert GENERATION_ONLY_FIELDS < BODY_FIELDS
    assert set(SAMPLING_PARAMS) <= GENERATION_ONLY_FIELDS & SPEC_PARAMS
    assert {"max_tokens", "temperature"}.isdisjoint(COUNT_TOKENS_FIELDS)
    assert {"model", "messages", "system", "tools"} <= COUNT_TOKENS_FIELDS


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}], **extra}


@pytest.mark.parametrize("name", sorted(SPEC_PARAMS))
def test_the_simulator_takes_every_parameter_a_spec_may_set(name: str) -> None:
    # The field must get past the simulator's "Extra inputs" check; a wrongly shaped value may
    # fail later, on its own field.
    try:
        _validate.validate_request(_body(**{"max_tokens": 1, name: None}), removed=frozenset())
    except SimError as exc:
        assert "Extra inputs" not in str(exc.message)


@pytest.mark.parametrize("name", sorted(BODY_FIELDS - {"model", "messages"}))
def test_count_tokens_in_the_simulator_refuses_exactly_the_generation_only_fields(name: str) -> None:
    body = _body(**{name: None})
    if name in GENERATION_ONLY_FIELDS:
        with pytest.raises(SimError, match="Extra inputs are not permitted"):
            _validate.validate_request(body, removed=frozenset(), count_tokens=True)
    else:
        try:
            _validate.validate_request(body, removed=frozenset(), count_tokens=True)
        except SimError as exc:
            assert "Extra inputs" not in str(exc.message)


@pytest.mark.anyio
async def test_the_client_sends_count_tokens_only_what_it_takes() -> None:
    import json

    import httpx

    from evalrun.send.client import MessagesClient

    sent: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"input_tokens": 3})

    body = _body(**dict.fromkeys(SPEC_PARAMS, 1))
    async with MessagesClient(base_url="http://x", api_key="k", transport=httpx.MockTransport(handle)) as client:
        assert await client.count_tokens(body) == 3
    assert set(sent[0]) == set(body) & COUNT_TOKENS_FIELDS
    assert not set(sent[0]) & GENERATION_ONLY_FIELDS


_SAMPLES = {
    "image/jpeg": b"\xff\xd8\xff\xe0" + bytes(20),
    "image/png": b"\x89PNG\r\n\x1a\n" + bytes(16),
    "image/gif": b"GIF87a" + bytes(18),
    "image/webp": b"RIFF\x10\0\0\0WEBPVP8 " + bytes(8),
}


@pytest.mark.parametrize("media_type", IMAGE_MEDIA_TYPES)
def test_the_planner_and_the_simulator_agree_on_each_image_type(media_type: str) -> None:
    data = _SAMPLES[media_type]
    assert detect_image_type(data) == render.detect_media_type(data) == media_type
    block = {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                         "data": base64.b64encode(data).decode()}}  # fmt: skip
    _validate.validate_request(_body(max_tokens=1, messages=[{"role": "user", "content": [block]}]),
                               removed=frozenset())  # fmt: skip
    for other in IMAGE_MEDIA_TYPES:
        if other != media_type:
            assert not is_image_of_type(data, other)
            block["source"]["media_type"] = other  # type: ignore[index]
            with pytest.raises(SimError, match="does not appear to be a valid"):
                _validate.validate_request(
                    _body(max_tokens=1, messages=[{"role": "user", "content": [block]}]), removed=frozenset()
                )


def test_a_riff_file_that_is_not_webp_is_no_image() -> None:
    assert detect_image_type(b"RIFF\x10\0\0\0WAVEfmt ") is None


def test_the_bucket_is_the_pacer_s_and_the_simulator_s() -> None:
    bucket = TokenBucket(rate=10.0, capacity=5.0, level=0.0, updated=100.0)
    assert bucket.wait_for(1, 100.0) == pytest.approx(0.1)
    bucket.charge(8, 100.5)  # a late charge may take it below zero (the simulator's output tokens)
    assert bucket.level == pytest.approx(-3.0)
    assert bucket.seconds_to_full() == pytest.approx(0.8)
    bucket.take(50, 101.3)  # a reservation takes at most a full bucket (the pacer's)
    assert bucket.level == pytest.approx(0.0)
    assert TokenBucket(rate=0.0, capacity=5.0, level=0.0, updated=0.0).wait_for(1, 10.0) == float("inf")


USAGES = [
    {"input_tokens": 1200, "output_tokens": 30, "cache_creation_input_tokens": 5000, "cache_read_input_tokens": 700,
     "cache_creation": {"ephemeral_5m_input_tokens": 4000, "ephemeral_1h_input_tokens": 1000},
     "service_tier": "batch"},
    {"input_tokens": 10, "output_tokens": 1},
    {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": None, "service_tier": 3},
]  # fmt: skip


def test_usage_counters_are_named_as_the_store_columns() -> None:
    assert usage_counters(None) is None
    assert usage_counters(USAGES[0]) == Usage(1200, 30, 5000, 700, 1000, "batch")
    assert usage_counters(USAGES[2]) == Usage(10, 1, 0, 0, None, None)
    assert USAGE_COLUMNS[:4] == messages_api.USAGE_COUNTERS


@pytest.mark.parametrize("usage", USAGES)
def test_a_reply_costs_the_same_live_and_from_the_store(tmp_path: Any, usage: dict[str, Any]) -> None:
    price = Price(input=1.0, output=5.0, cache_write_5m=1.25, cache_write_1h=2.0, cache_read=0.1)
    live = cost.usage_cost(price, usage)
    with Store.open(tmp_path / "run") as store:
        store.record(Outcome(key="k", status="ok", message={"content": [], "usage": usage}))
        row = dict(zip(USAGE_COLUMNS, store.query(f"SELECT {', '.join(USAGE_COLUMNS)} FROM responses")[0], strict=True))
    assert row == usage_counters(usage)._asdict()  # type: ignore[union-attr]
    assert cost.stored_cost(price, row) == pytest.approx(live)
