from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import openai
import pytest
import pytest_asyncio
from pydantic import SecretStr

from bot.settings import Settings
from scheduler.errors import TaskError
from scheduler.planning.llm import LLM, LOCAL_SERVER_KEY, Message, public_url, redact
from tests.fakes.openai_server import ChatRequest, FakeOpenAI, Reply, UsageCall, UsageLog

HELLO = [Message(role="system", content="Be brief."), Message(role="user", content="Say hi.")]


@pytest_asyncio.fixture
async def llm(fake_openai: FakeOpenAI) -> AsyncIterator[LLM]:
    client = LLM(
        model="test-model",
        api_key=fake_openai.api_key,
        base_url=fake_openai.base_url,
        timeout=5.0,
        max_retries=2,
    )
    yield client
    await client.aclose()


async def test_text_completion_sends_messages_and_records_usage(
    fake_openai: FakeOpenAI, llm: LLM
) -> None:
    fake_openai.script(Reply.text("hi!", prompt_tokens=12, completion_tokens=3))
    usage = UsageLog()

    completion = await llm.complete_text(HELLO, usage=usage)

    assert completion.content == "hi!"
    assert completion.finish_reason == "stop"
    assert not completion.truncated
    assert usage.calls == [UsageCall(model="test-model", prompt_tokens=12, completion_tokens=3)]
    (request,) = fake_openai.requests
    assert request.model == "test-model"
    assert request.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi."},
    ]
    assert "response_format" not in request.body
    assert request.headers["Authorization"] == f"Bearer {fake_openai.api_key}"


async def test_structured_completion_asks_for_strict_json_schema(
    fake_openai: FakeOpenAI, llm: LLM
) -> None:
    schema = {"type": "object", "additionalProperties": False, "required": [], "properties": {}}
    fake_openai.script(Reply.json({}))
    usage = UsageLog()

    completion = await llm.complete_structured(HELLO, name="thing", schema=schema, usage=usage)

    assert completion.content == "{}"
    assert fake_openai.requests[0].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    assert len(usage.calls) == 1


@pytest.mark.parametrize(
    ("reply", "content", "refusal", "truncated"),
    [
        (Reply.refused("not this"), None, "not this", False),
        (Reply.truncated("half an ans"), "half an ans", None, True),
        (Reply(content=None), None, None, False),
    ],
)
async def test_completion_reports_refusals_and_truncation(
    fake_openai: FakeOpenAI,
    llm: LLM,
    reply: Reply,
    content: str | None,
    refusal: str | None,
    truncated: bool,
) -> None:
    fake_openai.script(reply)

    completion = await llm.complete_text(HELLO, usage=UsageLog())

    assert (completion.content, completion.refusal, completion.truncated) == (
        content,
        refusal,
        truncated,
    )


async def test_rate_limit_is_retried_by_the_sdk(fake_openai: FakeOpenAI, llm: LLM) -> None:
    fake_openai.script(Reply.http_error(429, "slow down", retry_after=0.001), "after the wait")
    usage = UsageLog()

    completion = await llm.complete_text(HELLO, usage=usage)

    assert completion.content == "after the wait"
    assert len(fake_openai.requests) == 2
    assert len(usage.calls) == 1


async def test_rate_limit_that_outlasts_the_retries_is_a_retryable_task_error(
    fake_openai: FakeOpenAI, llm: LLM
) -> None:
    fake_openai.script(*[Reply.http_error(429, "slow down", retry_after=0.001)] * 3)
    usage = UsageLog()

    with pytest.raises(TaskError) as raised:
        await llm.complete_text(HELLO, usage=usage)

    assert raised.value.retryable
    assert "429" in str(raised.value)
    assert "slow down" in str(raised.value)
    assert len(fake_openai.requests) == 3  # the first try and max_retries=2
    assert usage.calls == []


@pytest.mark.parametrize(
    ("status", "retryable", "words"),
    [
        (400, False, "HTTP 400"),
        (401, False, "OPENAI_API_KEY"),
        (403, False, "HTTP 403"),
        (404, False, "DAGBOT_MODEL"),
        (422, False, "HTTP 422"),
        (408, True, "HTTP 408"),
        (429, True, "Rate limited"),
        (500, True, "HTTP 500"),
        (503, True, "HTTP 503"),
    ],
)
async def test_http_errors_map_to_task_errors(
    fake_openai: FakeOpenAI, status: int, retryable: bool, words: str
) -> None:
    llm = LLM(model="m", api_key=fake_openai.api_key, base_url=fake_openai.base_url, max_retries=0)
    fake_openai.script(Reply.http_error(status, "the server says no"))
    try:
        with pytest.raises(TaskError) as raised:
            await llm.complete_text(HELLO, usage=UsageLog())
    finally:
        await llm.aclose()

    assert raised.value.retryable is retryable
    assert words in str(raised.value)
    assert "the server says no" in str(raised.value)


async def test_error_messages_never_contain_the_api_key(fake_openai: FakeOpenAI) -> None:
    key = "sk-live-secret-abcdefghijklmnop"
    llm = LLM(model="m", api_key=key, base_url=fake_openai.base_url, max_retries=0)
    fake_openai.script(Reply.http_error(401, f"Incorrect API key provided: {key}."))
    try:
        with pytest.raises(TaskError) as raised:
            await llm.complete_text(HELLO, usage=UsageLog())
    finally:
        await llm.aclose()

    assert key not in str(raised.value)
    assert "***" in str(raised.value)
    assert fake_openai.requests[0].headers["Authorization"] == f"Bearer {key}"


async def test_timeout_is_a_retryable_task_error(fake_openai: FakeOpenAI) -> None:
    release = asyncio.Event()

    async def hold(request: ChatRequest) -> str:
        await release.wait()
        return "too late"

    fake_openai.respond_with(hold)
    llm = LLM(
        model="m",
        api_key=fake_openai.api_key,
        base_url=fake_openai.base_url,
        timeout=0.05,
        max_retries=0,
    )
    try:
        with pytest.raises(TaskError) as raised:
            await llm.complete_text(HELLO, usage=UsageLog())
    finally:
        release.set()
        await llm.aclose()

    assert raised.value.retryable
    assert "did not answer within 0.05 s" in str(raised.value)


async def test_a_web_page_instead_of_a_completion_is_a_clear_error(
    fake_openai: FakeOpenAI, llm: LLM
) -> None:
    fake_openai.script(Reply.web_page("<html>\n<body>Please sign in to the proxy</body></html>"))

    with pytest.raises(TaskError) as raised:
        await llm.complete_text(HELLO, usage=UsageLog())

    message = str(raised.value)
    assert not raised.value.retryable
    assert "did not answer with a chat completion" in message
    assert "'<html> <body>Please sign in to the proxy</body></html>'" in message
    assert "OPENAI_BASE_URL" in message
    assert len(fake_openai.requests) == 1


async def test_a_held_responder_is_cancelled_when_the_client_gives_up(
    fake_openai: FakeOpenAI,
) -> None:
    cancelled = asyncio.Event()

    async def hold_forever(request: ChatRequest) -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    fake_openai.respond_with(hold_forever)
    llm = LLM(model="m", api_key=fake_openai.api_key, base_url=fake_openai.base_url,
              timeout=0.05, max_retries=0)  # fmt: skip
    try:
        with pytest.raises(TaskError):
            await llm.complete_text(HELLO, usage=UsageLog())
    finally:
        await llm.aclose()

    await cancelled.wait()


async def test_unreachable_server_is_a_retryable_task_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more: the connection is refused.
    llm = LLM(
        model="m",
        api_key="sk-secret-for-this-test-only",
        base_url=f"http://user:pw@127.0.0.1:{port}/v1?token=abc",
        max_retries=0,
    )
    try:
        with pytest.raises(TaskError) as raised:
            await llm.complete_text(HELLO, usage=UsageLog())
    finally:
        await llm.aclose()

    message = str(raised.value)
    assert raised.value.retryable
    assert f"http://127.0.0.1:{port}/v1" in message
    assert "pw" not in message
    assert "abc" not in message
    assert "sk-secret" not in message


async def test_missing_key_without_base_url_fails_on_first_call_naming_the_variable() -> None:
    llm = LLM(model="m", api_key=None, base_url=None)
    try:
        with pytest.raises(TaskError) as raised:
            await llm.complete_text(HELLO, usage=UsageLog())
    finally:
        await llm.aclose()

    assert "OPENAI_API_KEY" in str(raised.value)
    assert not raised.value.retryable


async def test_local_server_without_key_gets_a_placeholder(fake_openai: FakeOpenAI) -> None:
    llm = LLM(model="m", api_key=None, base_url=fake_openai.base_url)
    fake_openai.script("fine")
    try:
        completion = await llm.complete_text(HELLO, usage=UsageLog())
    finally:
        await llm.aclose()

    assert completion.content == "fine"
    assert fake_openai.requests[0].headers["Authorization"] == f"Bearer {LOCAL_SERVER_KEY}"


async def test_from_settings_uses_key_url_model_and_timeout(fake_openai: FakeOpenAI) -> None:
    settings = Settings.model_validate(
        {
            "OPENAI_API_KEY": "sk-from-settings-123456",
            "OPENAI_BASE_URL": fake_openai.base_url,
            "DAGBOT_MODEL": "settings-model",
            "DAGBOT_LLM_TIMEOUT": 7.5,
        }
    )
    assert isinstance(settings.openai_api_key, SecretStr)
    llm = LLM.from_settings(settings)
    fake_openai.script("ok")
    try:
        await llm.complete_text(HELLO, usage=UsageLog())
    finally:
        await llm.aclose()

    assert llm.timeout == 7.5
    request = fake_openai.requests[0]
    assert request.model == "settings-model"
    assert request.headers["Authorization"] == "Bearer sk-from-settings-123456"


async def test_fake_server_streams_the_scripted_text(fake_openai: FakeOpenAI) -> None:
    # Other suites may stream from the fake; check it speaks SSE the way the SDK reads it.
    fake_openai.script(Reply.text("one two  three", prompt_tokens=4, completion_tokens=3))
    client = openai.AsyncOpenAI(api_key=fake_openai.api_key, base_url=fake_openai.base_url)
    try:
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces: list[str] = []
        totals: list[int] = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                totals.append(chunk.usage.total_tokens)
    finally:
        await client.close()

    assert "".join(pieces) == "one two  three"
    assert len(pieces) > 1
    assert totals == [7]


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("plain words", (), "plain words"),
        ("key sk-abcdef123456 here", (), "key *** here"),
        ("key sk-proj-****abcd.", (), "key ***."),
        ("token xoxb-1234-5678-abcdef leaked", (), "token *** leaked"),
        ("my-own-secret inside", ("my-own-secret",), "*** inside"),
        ("sk- alone", (), "sk- alone"),
        ("empty secret ignored", ("",), "empty secret ignored"),
    ],
)
def test_redact(text: str, secrets: tuple[str, ...], expected: str) -> None:
    assert redact(text, secrets) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("http://user:secret@localhost:8000/v1", "http://localhost:8000/v1"),
        ("http://localhost:11434/v1?api-key=abc#x", "http://localhost:11434/v1"),
    ],
)
def test_public_url(url: str, expected: str) -> None:
    assert public_url(url) == expected


async def test_by_default_the_client_does_not_retry_the_engine_does(
    fake_openai: FakeOpenAI,
) -> None:
    # One engine attempt is one request: retries nested inside each attempt made one llm task
    # send up to nine requests and a hung step take about fifteen minutes to fail.
    client = LLM(model="m", api_key=fake_openai.api_key, base_url=fake_openai.base_url)
    fake_openai.script(Reply.http_error(503, "busy"))
    try:
        with pytest.raises(TaskError) as raised:
            await client.complete_text(HELLO, usage=UsageLog())
    finally:
        await client.aclose()
    assert raised.value.retryable
    assert len(fake_openai.requests) == 1
