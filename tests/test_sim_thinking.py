"""The simulator's thinking: the API's thinking rules as 400s, and thinking that costs output
tokens, shows a summarized block and can be cut by max_tokens before any text."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from evalrun.sim import SimConfig, create_app
from evalrun.tokens import count_text_tokens

MCQ = "Which is largest?\n(A) 1\n(B) 2\n(C) 3\n(D) 4"
V1 = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def _body(model: str = "claude-sonnet-4-6", *, max_tokens: int = 8000, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": MCQ}], **extra}


async def _post(body: dict[str, Any]) -> httpx.Response:
    app = create_app(SimConfig(api_key="k"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://sim", headers=V1) as client:
        return await client.post("/v1/messages", json=body)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "says"),
    [
        (_body(thinking={"type": "enabled", "budget_tokens": 512}), "greater than or equal to 1024"),
        (_body(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 2048}), "`max_tokens` must be greater"),
        (_body(thinking={"type": "enabled"}), "budget_tokens: Field required"),
        (_body("claude-opus-4-7", thinking={"type": "enabled", "budget_tokens": 2048}), "does not support budget_tokens"),
        (_body("claude-haiku-4-5", thinking={"type": "adaptive"}), "'adaptive' is not supported"),
        (_body(output_config={"effort": "extreme"}), "output_config.effort"),
        (_body("claude-haiku-4-5", output_config={"effort": "high"}), "'high' is not supported by this model"),
        (_body(thinking={"type": "adaptive"}, temperature=0), "`temperature` may only be set to 1"),
        (_body(thinking={"type": "adaptive"}, top_k=5), "`top_k` may not be set"),
        ({**_body("claude-sonnet-4-5", thinking={"type": "enabled", "budget_tokens": 1024}),
          "messages": [{"role": "user", "content": MCQ}, {"role": "assistant", "content": "The answer is ("}]},
         "final message is an assistant message"),
    ],
)  # fmt: skip
async def test_thinking_rules_are_400s(body: dict[str, Any], says: str) -> None:
    response = await _post(body)
    assert response.status_code == 400, response.text
    assert says in response.json()["error"]["message"]


@pytest.mark.anyio
async def test_thinking_is_billed_as_output_and_shown_summarized() -> None:
    plain = (await _post(_body())).json()
    thought = (await _post(_body(thinking={"type": "enabled", "budget_tokens": 4096}))).json()
    kinds = [block["type"] for block in thought["content"]]
    assert kinds == ["thinking", "text"]
    visible = count_text_tokens(thought["content"][1]["text"])
    spent = thought["usage"]["output_tokens"] - visible
    assert 512 <= spent <= 4096 and spent > 10 * count_text_tokens(thought["content"][0]["thinking"])
    assert plain["usage"]["output_tokens"] < thought["usage"]["output_tokens"]


@pytest.mark.anyio
async def test_adaptive_thinking_cut_by_max_tokens_has_no_text_block() -> None:
    reply = (await _post(_body("claude-opus-4-7", max_tokens=100, thinking={"type": "adaptive"},
                               output_config={"effort": "max"}))).json()  # fmt: skip
    assert reply["stop_reason"] == "max_tokens"
    assert [block["type"] for block in reply["content"]] == ["thinking"]
    assert reply["usage"]["output_tokens"] == 100
