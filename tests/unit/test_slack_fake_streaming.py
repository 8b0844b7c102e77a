"""The fake Slack holds streamed messages in Slack's states and refuses what Slack refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import FakeMessage, FakeSlack, fake_slack_server


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack_server() as server:
        yield server


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)


async def _error_of(call: Awaitable[object]) -> str:
    with pytest.raises(SlackApiError) as raised:
        await call
    return str(raised.value.response["error"])


async def _started(slack: FakeSlack, client: AsyncWebClient, text: str = "Hi") -> FakeMessage:
    root = slack.add_message("C1", "q", user="U1")
    response = await client.chat_startStream(
        channel="C1",
        thread_ts=root.ts,
        recipient_team_id=slack.team_id,
        recipient_user_id="U1",
        markdown_text=text,
    )
    return slack.message("C1", str(response["ts"]))


async def test_a_streaming_message_cannot_be_edited_until_stopped(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    message = await _started(slack, client)
    assert slack.streaming_messages() == [message]
    edit = client.chat_update(channel="C1", ts=message.ts, text="replaced")
    assert await _error_of(edit) == "streaming_state_conflict"
    await client.chat_stopStream(channel="C1", ts=message.ts, markdown_text=" there")
    assert (message.text, message.streaming) == ("Hi there", False)
    await client.chat_update(channel="C1", ts=message.ts, text="replaced")
    assert message.text == "replaced"


async def test_a_finished_stream_takes_no_append_and_no_second_stop(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    message = await _started(slack, client)
    await client.chat_stopStream(channel="C1", ts=message.ts)
    append = client.chat_appendStream(channel="C1", ts=message.ts, markdown_text="more")
    assert await _error_of(append) == "message_not_in_streaming_state"
    stop = client.chat_stopStream(channel="C1", ts=message.ts)
    assert await _error_of(stop) == "message_not_in_streaming_state"
    plain = await client.chat_postMessage(channel="C1", text="plain")
    append_to_plain = client.chat_appendStream(channel="C1", ts=plain["ts"], markdown_text="x")
    assert await _error_of(append_to_plain) == "message_not_in_streaming_state"


async def test_an_expired_stream_is_final_with_what_it_had(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    message = await _started(slack, client, "half")
    slack.expire_stream("C1", message.ts)
    assert (message.text, message.streaming) == ("half", False)
    stop = client.chat_stopStream(channel="C1", ts=message.ts, markdown_text=" and the rest")
    assert await _error_of(stop) == "message_not_in_streaming_state"
    await client.chat_update(channel="C1", ts=message.ts, text="half and the rest")


async def test_stream_text_limits(slack: FakeSlack, client: AsyncWebClient) -> None:
    message = await _started(slack, client)
    too_long = client.chat_appendStream(channel="C1", ts=message.ts, markdown_text="x" * 12_001)
    assert await _error_of(too_long) == "msg_too_long"
    chunk = {"type": "markdown_text", "text": "y" * 12_001}
    assert await _error_of(
        client.chat_appendStream(channel="C1", ts=message.ts, chunks=[chunk])
    ) == ("msg_too_long")
    both = client.chat_appendStream(
        channel="C1",
        ts=message.ts,
        markdown_text="a",
        chunks=[{"type": "markdown_text", "text": "b"}],
    )
    assert await _error_of(both) == "invalid_arguments"
    empty = client.chat_appendStream(channel="C1", ts=message.ts, markdown_text="")
    assert await _error_of(empty) == "no_text"
    slack.max_streamed_text = 10
    past_message_cap = client.chat_appendStream(channel="C1", ts=message.ts, markdown_text="z" * 9)
    assert await _error_of(past_message_cap) == "msg_too_long"
    assert (message.text, message.streaming) == ("Hi", True), "a refused append changes nothing"
    await client.chat_appendStream(channel="C1", ts=message.ts, markdown_text="z" * 8)
    assert message.text == "Hi" + "z" * 8


async def test_stop_checks_its_blocks_and_metadata(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    message = await _started(slack, client)
    bad_blocks = client.chat_stopStream(channel="C1", ts=message.ts, blocks=[{"text": "no type"}])
    assert await _error_of(bad_blocks) == "invalid_blocks"
    bad_metadata = client.chat_stopStream(
        channel="C1", ts=message.ts, metadata={"event_payload": {"a": 1}}
    )
    assert await _error_of(bad_metadata) == "invalid_metadata_format"
    assert message.streaming, "a refused stop leaves the stream open"
    metadata = {"event_type": "dagbot_summary", "event_payload": {"run_id": "r1"}}
    divider = {"type": "divider"}
    await client.chat_stopStream(channel="C1", ts=message.ts, blocks=[divider], metadata=metadata)
    assert (message.blocks, message.metadata) == ([divider], metadata)
