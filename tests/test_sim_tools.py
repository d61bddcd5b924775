"""Tool use, structured output and extraction answers from the simulator, in-process."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalrun.errors import DatasetError
from evalrun.sim import AnswerKey, SimConfig, count_request_tokens, create_app
from evalrun.sim._schema import instance_for

V1 = {"anthropic-version": "2023-06-01"}
MCQ = "Which planet is largest?\n(A) Mars\n(B) Jupiter\n(C) Venus\n(D) Mercury"

Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_client() -> AsyncIterator[Client]:
    clients: list[httpx.AsyncClient] = []

    def make(config: SimConfig | None = None) -> httpx.AsyncClient:
        app = create_app(config or SimConfig())
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://sim", headers=V1)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def body(
    content: Any = MCQ, *, model: str = "claude-sonnet-4-5", max_tokens: int = 300, **extra: Any
) -> dict:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def tool(name: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": f"The {name} tool.", "input_schema": schema, **extra}


def forced(name: str) -> dict[str, str]:
    return {"type": "tool", "name": name}


async def post(client: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/messages", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


async def error_of(client: httpx.AsyncClient, payload: dict[str, Any]) -> str:
    response = await client.post("/v1/messages", json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return str(error["message"])


def only_tool_use(message: dict[str, Any]) -> dict[str, Any]:
    blocks = [b for b in message["content"] if b["type"] == "tool_use"]
    assert len(blocks) == 1, message["content"]
    return blocks[0]


WEATHER = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and country"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "detailed": {"type": "boolean"},
    },
    "required": ["location", "unit"],
    "additionalProperties": False,
}


# -- tool use -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_forced_tool_replies_with_a_valid_tool_use(make_client: Client) -> None:
    client = make_client()
    tools = [
        tool("get_time", {"type": "object", "properties": {"tz": {"type": "string"}}}),
        tool("get_weather", WEATHER),
    ]
    message = await post(
        client, body("What's the weather in Oslo?", tools=tools, tool_choice=forced("get_weather"))
    )
    assert message["stop_reason"] == "tool_use" and message["stop_sequence"] is None
    block = only_tool_use(message)
    assert block["name"] == "get_weather" and block["id"].startswith("toolu_")
    jsonschema.validate(block["input"], WEATHER)
    assert [b["type"] for b in message["content"]] == ["tool_use"]
    assert message["usage"]["input_tokens"] == count_request_tokens(
        body("What's the weather in Oslo?", tools=tools, tool_choice=forced("get_weather"))
    )
    assert message["usage"]["output_tokens"] > 0
    # `any` forces a call too: the first tool.
    anyone = await post(client, body("Time?", tools=tools, tool_choice={"type": "any"}))
    assert anyone["stop_reason"] == "tool_use" and only_tool_use(anyone)["name"] == "get_time"


@pytest.mark.anyio
async def test_auto_and_none_answer_in_text(make_client: Client) -> None:
    client = make_client()
    tools = [tool("get_weather", WEATHER)]
    for choice in ({"type": "auto"}, {"type": "none"}, None):
        extra: dict[str, Any] = {"tool_choice": choice} if choice else {}
        message = await post(client, body(tools=tools, **extra))
        assert message["stop_reason"] == "end_turn"
        assert [b["type"] for b in message["content"]] == ["text"]
        assert message["content"][0]["text"].startswith("The answer is (")


@pytest.mark.anyio
async def test_a_call_that_does_not_fit_max_tokens_is_not_made(make_client: Client) -> None:
    message = await post(
        make_client(), body("Weather?", max_tokens=3, tools=[tool("w", WEATHER)], tool_choice=forced("w"))
    )
    assert message["stop_reason"] == "max_tokens" and message["content"] == []
    assert message["usage"]["output_tokens"] == 3


@pytest.mark.anyio
async def test_always_thinking_model_thinks_before_the_call(make_client: Client) -> None:
    message = await post(
        make_client(),
        body("Weather?", model="claude-opus-5-5", tools=[tool("w", WEATHER)], tool_choice=forced("w")),
    )
    assert [b["type"] for b in message["content"]] == ["thinking", "tool_use"]
    jsonschema.validate(only_tool_use(message)["input"], WEATHER)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"tools": [tool("w", WEATHER)], "tool_choice": forced("nope")},
            "tool_choice.tool.name: Tool 'nope' not found",
        ),
        ({"tools": [{"name": "w"}]}, "tools.0.custom.input_schema: Field required"),
        ({"tools": [{"input_schema": WEATHER}]}, "tools.0.custom.name: Field required"),
        ({"tools": [tool("w", {"properties": {}})]}, "tools.0.custom.input_schema.type: Field required"),
        (
            {"tools": [tool("w", {"type": "array"})]},
            "tools.0.custom.input_schema.type: Input should be 'object'",
        ),
        (
            {"tools": [tool("get weather", WEATHER)]},
            "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'",
        ),
        ({"tools": [tool("w", WEATHER), tool("w", WEATHER)]}, "tools: Tool names must be unique."),
        ({"tools": {"name": "w"}}, "tools: Input should be a valid list"),
        ({"tool_choice": {"type": "any"}}, "tool_choice may only be specified while providing tools."),
        (
            {"tools": [tool("w", WEATHER)], "tool_choice": {"type": "sometimes"}},
            "tool_choice: Input tag 'sometimes' found using 'type' does not match any of the expected tags",
        ),
        (
            {"tools": [tool("w", WEATHER)], "tool_choice": {"type": "tool"}},
            "tool_choice.tool.name: Field required",
        ),
        (
            {
                "tools": [tool("w", WEATHER)],
                "tool_choice": forced("w"),
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            "Thinking may not be enabled when tool_choice forces tool use.",
        ),
        (
            {"tools": [tool("w", WEATHER, colour="red")]},
            "tools.0.custom.colour: Extra inputs are not permitted",
        ),
    ],
)
async def test_bad_tools_are_400s(make_client: Client, extra: dict[str, Any], expected: str) -> None:
    message = await error_of(make_client(), body(**extra))
    assert message.startswith(expected)
    # count_tokens takes tools too, and refuses them alike.
    count = {k: v for k, v in body(**extra).items() if k != "max_tokens"}
    response = await make_client().post("/v1/messages/count_tokens", json=count)
    assert response.status_code == 400 and response.json()["error"]["message"].startswith(expected)


# -- schemas --------------------------------------------------------------------------------

TYPED = {
    "type": "object",
    "$defs": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
    "properties": {
        "level": {"type": "integer", "enum": [1, 2, 3]},
        "colour": {"$ref": "#/$defs/colour"},
        "count": {"type": "integer", "minimum": 5, "maximum": 9},
        "strict_count": {"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 7},
        "negative": {"type": "integer", "maximum": -3},
        "even": {"type": "integer", "minimum": 3, "multipleOf": 2},
        "ratio": {"type": "number", "minimum": 0.25, "maximum": 0.75},
        "open_ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "price": {"type": "number", "minimum": 10},
        "flag": {"type": "boolean"},
        "maybe": {"type": ["integer", "null"], "minimum": 2},
        "nullable": {"anyOf": [{"type": "null"}, {"type": "number", "minimum": 100}]},
        "when": {"type": "string", "format": "date"},
        "contact": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 3, "uniqueItems": True},
        "scores": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 10},
            "minItems": 2,
            "uniqueItems": True,
        },
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string", "minLength": 5}, "zip": {"type": "integer"}},
            "required": ["street", "zip"],
            "additionalProperties": False,
        },
        "merged": {
            "allOf": [{"type": "object", "properties": {"a": {"type": "boolean"}}}, {"required": ["a"]}]
        },
    },
    "required": ["level", "colour", "count", "ratio", "flag", "tags", "address", "merged"],
    "additionalProperties": False,
}


def _check_types(value: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(TYPED, format_checker=jsonschema.FormatChecker()).validate(value)
    assert value["level"] in (1, 2, 3) and value["colour"] in ("red", "green", "blue")
    for name in ("count", "strict_count", "negative", "even", "maybe"):
        assert type(value[name]) is int, name
    assert value["strict_count"] == 6 and value["negative"] <= -3 and value["even"] % 2 == 0
    for name in ("ratio", "open_ratio", "price", "nullable"):
        assert isinstance(value[name], int | float) and not isinstance(value[name], bool), name
    assert 0 < value["open_ratio"] < 1 and value["nullable"] >= 100
    assert type(value["flag"]) is bool and type(value["merged"]["a"]) is bool
    assert type(value["address"]["zip"]) is int and len(value["address"]["street"]) >= 5


@pytest.mark.anyio
async def test_schema_values_have_their_types_in_structured_output_and_tool_input(
    make_client: Client,
) -> None:
    client = make_client()
    fmt = {"format": {"type": "json_schema", "schema": TYPED}}
    structured = await post(client, body("Fill this in.", output_config=fmt, max_tokens=1000))
    _check_types(json.loads(structured["content"][0]["text"]))
    called = await post(
        client,
        body("Fill this in.", tools=[tool("fill", TYPED)], tool_choice=forced("fill"), max_tokens=1000),
    )
    _check_types(only_tool_use(called)["input"])


_bound = st.one_of(st.none(), st.integers(-1000, 1000))


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["integer", "number"]),
    low=_bound,
    high=_bound,
    exclusive_low=st.booleans(),
    exclusive_high=st.booleans(),
    step=st.one_of(st.none(), st.integers(1, 7)),
    items=st.integers(1, 4),
)
def test_numbers_respect_their_bounds(
    kind: str,
    low: int | None,
    high: int | None,
    exclusive_low: bool,
    exclusive_high: bool,
    step: int | None,
    items: int,
) -> None:
    node: dict[str, Any] = {"type": kind}
    if low is not None:
        node["exclusiveMinimum" if exclusive_low else "minimum"] = low
    if high is not None:
        node["exclusiveMaximum" if exclusive_high else "maximum"] = high
    if step is not None:
        node["multipleOf"] = step
    if low is not None and high is not None and (high - low) < (step or 1) * (items + 2) + 2:
        return  # too narrow to hold distinct multiples; not what schemas ask
    schema = {
        "type": "object",
        "properties": {
            "one": node,
            "many": {"type": "array", "items": node, "minItems": items, "uniqueItems": True},
        },
    }
    value = instance_for(schema, None)
    jsonschema.validate(value, schema)
    assert (type(value["one"]) is int) if kind == "integer" else isinstance(value["one"], float)


# -- extraction answers from the key ----------------------------------------------------------

PEOPLE = [
    {"id": "p1", "text": "Ada Lovelace was born in London in 1815; she was a mathematician.", "name": "Ada Lovelace",
     "city": "London", "year": "1815", "scientist": "yes", "height": "1.65", "notes": "A long note that is longer than the question text itself, so it must never be used to match."},
    {"id": "p2", "text": "Enrico Fermi was born in Rome in 1901; he was a physicist.", "name": "Enrico Fermi",
     "city": "Rome", "year": "1901", "scientist": "true", "height": "1.70", "notes": "Another long note, longer than the question, which must never be used to match a request."},
    {"id": "p3", "text": "Frida Kahlo was born in Coyoacán in 1907; she was a painter.", "name": "Frida Kahlo",
     "city": "Coyoacán", "year": "1907", "scientist": "no", "height": "1.60", "notes": "Yet another long note, far longer than the question, which must never match any request."},
]  # fmt: skip
FIELDS = {
    "name": "name",
    "birth.city": "city",
    "birth.year": "year",
    "scientist": "scientist",
    "height_m": "height",
    "notes": "notes",
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "birth": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "year": {"type": "integer", "minimum": 1000, "maximum": 3000},
            },
            "required": ["city", "year"],
        },
        "scientist": {"type": "boolean"},
        "height_m": {"type": "number"},
        "comment": {"type": "string"},
    },
    "required": ["name", "birth", "scientist", "height_m"],
}


def _expected(row: dict[str, str]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "birth": {"city": row["city"], "year": int(row["year"])},
        "scientist": row["scientist"] in ("yes", "true"),
        "height_m": float(row["height"]),
    }


async def _extract(
    client: httpx.AsyncClient, row: dict[str, str], *, via_tool: bool, model: str = "claude-opus-4-8"
) -> dict[str, Any]:
    prompt = f"Extract the person described here.\n\n{row['text']}"
    if via_tool:
        message = await post(
            client, body(prompt, model=model, tools=[tool("record", PERSON)], tool_choice=forced("record"))
        )
        return only_tool_use(message)["input"]
    fmt = {"format": {"type": "json_schema", "schema": PERSON}}
    message = await post(client, body(prompt, model=model, output_config=fmt))
    return json.loads(message["content"][0]["text"])


@pytest.mark.anyio
@pytest.mark.parametrize("via_tool", [True, False])
async def test_a_skilled_model_extracts_the_key_values_with_their_types(
    make_client: Client, via_tool: bool
) -> None:
    key = AnswerKey.from_rows(PEOPLE, "name", fields=FIELDS)
    client = make_client(SimConfig(answers=key, skills={"opus": 1.0}))
    for row in PEOPLE:
        value = await _extract(client, row, via_tool=via_tool)
        jsonschema.validate(value, PERSON)
        assert {k: value[k] for k in ("name", "birth", "scientist", "height_m")} == _expected(row)
        assert type(value["birth"]["year"]) is int and type(value["scientist"]) is bool
        assert value["comment"] not in {r["name"] for r in PEOPLE}  # unmatched: filler, not the target


@pytest.mark.anyio
async def test_an_unskilled_model_gets_plausible_wrong_values(make_client: Client) -> None:
    key = AnswerKey.from_rows(PEOPLE, "name", fields=FIELDS)
    client = make_client(SimConfig(answers=key, skills={"opus": 0.0}))
    for row in PEOPLE:
        value = await _extract(client, row, via_tool=True)
        jsonschema.validate(value, PERSON)
        right = _expected(row)
        assert value["name"] != right["name"] and value["name"] in {r["name"] for r in PEOPLE}
        assert value["birth"]["city"] in {r["city"] for r in PEOPLE} - {row["city"]}
        year = value["birth"]["year"]
        assert type(year) is int and year != right["birth"]["year"] and 1000 <= year <= 3000
        assert value["scientist"] is (not right["scientist"])
        assert isinstance(value["height_m"], float) and value["height_m"] != right["height_m"]


@pytest.mark.anyio
async def test_field_accuracy_is_about_the_skill(make_client: Client) -> None:
    rows = [
        {
            "q": f"Record {i}: the parcel weighs {i * 3 + 1} kg and goes to town {i}.",
            "weight": str(i * 3 + 1),
            "town": f"Town{i}",
            "t": "x",
        }
        for i in range(300)
    ]
    key = AnswerKey.from_rows(rows, "t", fields={"weight": "weight", "town": "town"})
    client = make_client(SimConfig(answers=key, skills={"sonnet": 0.7}, seed=4))
    schema = {"type": "object", "properties": {"weight": {"type": "integer"}, "town": {"type": "string"}}}
    right = {"weight": 0, "town": 0}
    for row in rows:
        message = await post(
            client, body(row["q"], tools=[tool("parcel", schema)], tool_choice=forced("parcel"))
        )
        value = only_tool_use(message)["input"]
        right["weight"] += value["weight"] == int(row["weight"])
        right["town"] += value["town"] == row["town"]
    for name, count in right.items():
        assert 0.7 - 0.09 < count / len(rows) < 0.7 + 0.09, (name, count)  # about 3.4 standard errors
    assert right["weight"] != right["town"]  # one draw per field, not one per request


@pytest.mark.anyio
async def test_letters_still_come_from_the_target_beside_fields(make_client: Client) -> None:
    rows = [
        {
            "question": "Which planet is largest? It is the fifth from the sun.",
            "answer": "B",
            "planet": "Jupiter",
        }
    ]
    key = AnswerKey.from_rows(rows, "answer", fields={"planet": "planet"})
    client = make_client(SimConfig(answers=key, skills={"opus": 1.0}))
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["A", "B", "C", "D"]},
            "planet": {"type": "string"},
        },
        "required": ["answer", "planet"],
    }
    prompt = f"{rows[0]['question']}\n(A) Mars\n(B) Jupiter\n(C) Venus\n(D) Mercury"
    fmt = {"format": {"type": "json_schema", "schema": schema}}
    message = await post(client, body(prompt, model="claude-opus-4-8", output_config=fmt))
    assert json.loads(message["content"][0]["text"]) == {"answer": "B", "planet": "Jupiter"}
    # Plain text is unchanged by the fields.
    text = await post(client, body(prompt, model="claude-opus-4-8"))
    assert text["content"][0]["text"] == "The answer is (B)."


def test_field_columns_do_not_match_and_are_checked(tmp_path: Path) -> None:
    key = AnswerKey.from_rows(PEOPLE, "name", "id", fields=FIELDS)
    row = key.match("Who is this? " + PEOPLE[1]["text"])
    assert row is not None and row.id == "p2"
    assert row.field_values() == {
        "name": "Enrico Fermi", "birth.city": "Rome", "birth.year": "1901", "scientist": "true",
        "height_m": "1.70", "notes": PEOPLE[1]["notes"],
    }  # fmt: skip
    assert key.match(PEOPLE[0]["notes"]) is None  # a field cell is no question
    assert key.field_values("birth.city") == ("London", "Rome", "Coyoacán")
    with pytest.raises(DatasetError, match="no column 'nope'"):
        AnswerKey.from_rows(PEOPLE, "name", fields={"x": "nope"})
    with pytest.raises(DatasetError, match="bad field path"):
        AnswerKey.from_rows(PEOPLE, "name", fields={"a..b": "city"})
    path = tmp_path / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(PEOPLE[0]))
        writer.writeheader()
        writer.writerows(PEOPLE)
    from_csv = AnswerKey.from_csv(path, "name", "id", fields=FIELDS)
    assert from_csv.rows == key.rows
    with pytest.raises(DatasetError, match="no column 'town'"):
        AnswerKey.from_csv(path, "name", fields={"town": "town"})


# -- the grader -----------------------------------------------------------------------------


def grade_schema(*labels: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"explanation": {"type": "string"}, "grade": {"type": "string", "enum": list(labels)}},
        "required": ["explanation", "grade"],
        "additionalProperties": False,
    }


GRADE_SCHEMA = grade_schema("pass", "fail")
FIVE = grade_schema("5", "4", "3", "2", "1")


def grading_prompt(response: str, reference: str | None = None, *, scale_line: str | None = None) -> str:
    parts = ["Grade the reply below against the rubric: it must answer the question correctly."]
    if scale_line:
        parts.append(scale_line)
    parts.append(f"<response>{response}</response>")
    if reference is not None:
        parts.append(f"<reference>{reference}</reference>")
    return "\n\n".join(parts)


async def structured_grade(
    client: httpx.AsyncClient, schema: dict[str, Any], response: str, reference: str | None
) -> dict[str, Any]:
    fmt = {"format": {"type": "json_schema", "schema": schema}}
    message = await post(
        client, body(grading_prompt(response, reference), model="claude-haiku-4-5", output_config=fmt)
    )
    value = json.loads(message["content"][0]["text"])
    jsonschema.validate(value, schema)
    assert value["explanation"].endswith(".") and value["explanation"].count(". ") == 0
    return value


@pytest.mark.anyio
async def test_grader_pass_fail_structured(make_client: Client) -> None:
    client = make_client()
    assert (await structured_grade(client, GRADE_SCHEMA, "It is  PARIS, of course.", "paris"))[
        "grade"
    ] == "pass"
    assert (await structured_grade(client, GRADE_SCHEMA, "The capital is new\nYork city", "New York"))[
        "grade"
    ] == "pass"
    assert (await structured_grade(client, GRADE_SCHEMA, "It is Lyon.", "Paris"))["grade"] == "fail"
    assert (await structured_grade(client, GRADE_SCHEMA, "The red one.", "The blue one"))["grade"] == "fail"
    # Without a reference: any real answer passes, "I don't know." and nothing fail.
    assert (await structured_grade(client, GRADE_SCHEMA, "Paris.", None))["grade"] == "pass"
    assert (await structured_grade(client, GRADE_SCHEMA, "I don't know.", None))["grade"] == "fail"
    assert (await structured_grade(client, GRADE_SCHEMA, "   ", None))["grade"] == "fail"


@pytest.mark.anyio
async def test_grader_five_point_scale_follows_the_overlap(make_client: Client) -> None:
    client = make_client()
    reference = "red green blue yellow"

    async def grade_of(response: str) -> str:
        return str((await structured_grade(client, FIVE, response, reference))["grade"])

    assert await grade_of("Red green blue yellow, in that order.") == "5"
    assert await grade_of("red, green and blue") == "4"  # 3 of 4 words
    assert await grade_of("green and yellow") == "3"  # 2 of 4
    assert await grade_of("only red") == "2"  # 1 of 4
    assert await grade_of("purple") == "1"
    assert await grade_of("I don't know.") == "1"


@pytest.mark.anyio
async def test_grader_text_mode_continues_the_prefill(make_client: Client) -> None:
    client = make_client()
    line = "Grades, best first: pass, fail."

    async def reply(response: str, reference: str | None, *, prefill: str | None) -> str:
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": grading_prompt(response, reference, scale_line=line)}
        ]
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
        payload = {"model": "claude-sonnet-4-5", "max_tokens": 200, "messages": messages}
        return str((await post(client, payload))["content"][0]["text"])

    continued = await reply("Paris", "Paris", prefill="<explanation>")
    assert continued == "The response contains the reference answer.</explanation>\n<grade>pass</grade>"
    whole = await reply("Lyon", "Paris", prefill=None)
    assert (
        whole
        == "<explanation>The response shares nothing with the reference answer.</explanation>\n<grade>fail</grade>"
    )
    five = "Grades, best first: 5, 4, 3, 2, 1."
    payload = body(grading_prompt("green and yellow", "red green blue yellow", scale_line=five))
    assert (await post(client, payload))["content"][0]["text"].endswith("<grade>3</grade>")


@pytest.mark.anyio
async def test_grader_through_a_forced_tool(make_client: Client) -> None:
    message = await post(
        make_client(),
        body(
            grading_prompt("Paris", "Paris"),
            tools=[tool("submit_grade", GRADE_SCHEMA)],
            tool_choice=forced("submit_grade"),
        ),
    )
    assert only_tool_use(message)["input"] == {
        "explanation": "The response contains the reference answer.",
        "grade": "pass",
    }


@pytest.mark.anyio
async def test_response_tags_without_a_scale_are_an_ordinary_question(make_client: Client) -> None:
    message = await post(make_client(), body(f"<response>{MCQ}</response>"))
    assert message["content"][0]["text"].startswith("The answer is (")
