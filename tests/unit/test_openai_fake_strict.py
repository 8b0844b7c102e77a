"""The fake OpenAI server refuses strict schemas and answers that OpenAI would refuse."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply, strict_schema_error

CLOSED = {
    "type": "object",
    "additionalProperties": False,
    "required": ["a"],
    "properties": {"a": {"type": "string"}},
}


def response_format(schema: dict[str, Any], *, name: str = "x", strict: bool = True) -> Any:
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": schema, "strict": strict},
    }


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({**CLOSED, "additionalProperties": True}, "'additionalProperties' is required"),
        ({**CLOSED, "required": []}, "Missing 'a'"),
        (
            {
                **CLOSED,
                "properties": {
                    "a": {"type": "array", "items": {"type": "object", "properties": {}}}
                },
            },
            "context=('properties', 'a', 'items')",
        ),
        ({"type": "array", "items": {"type": "string"}}, "must be a JSON Schema of 'type"),
    ],
)
def test_schemas_strict_mode_refuses(schema: dict[str, Any], message: str) -> None:
    error = strict_schema_error(response_format(schema))
    assert error is not None
    assert message in error


def test_a_schema_that_is_not_strict_is_taken_as_it_is() -> None:
    assert strict_schema_error(response_format(CLOSED)) is None
    assert strict_schema_error(response_format({"type": "object"}, strict=False)) is None
    assert "pattern" in (strict_schema_error(response_format(CLOSED, name="a b")) or "")


async def test_the_server_refuses_a_broken_strict_schema_with_a_400(
    fake_openai: FakeOpenAI,
) -> None:
    client = openai.AsyncOpenAI(api_key=fake_openai.api_key, base_url=fake_openai.base_url)
    try:
        with pytest.raises(openai.BadRequestError, match="additionalProperties"):
            await client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                response_format=response_format({**CLOSED, "additionalProperties": True}),
            )
        # A scripted answer outside the schema is the test's bug: answered 500 and kept.
        fake_openai.script(Reply.json({"b": 1}))
        with pytest.raises(openai.InternalServerError):
            await client.with_options(max_retries=0).chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                response_format=response_format(CLOSED),
            )
        assert "does not fit the strict schema" in str(fake_openai.responder_errors[0])
        fake_openai.responder_errors.clear()
        # ...unless it plays a server without structured output.
        fake_openai.script(Reply.json({"b": 1}, off_schema=True))
        answer = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            response_format=response_format(CLOSED),
        )
        assert answer.choices[0].message.content == '{"b": 1}'
    finally:
        await client.close()
