"""The fake Slack Web API answers like Slack does, so tests built on it mean something."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import FakeSlack, fake_slack_server


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


@pytest.mark.parametrize(("token", "error"), [("xoxb-wrong", "invalid_auth"), ("", "not_authed")])
async def test_tokens_are_checked(slack: FakeSlack, token: str, error: str) -> None:
    stranger = AsyncWebClient(token=token or None, base_url=slack.base_url)
    assert await _error_of(stranger.auth_test()) == error
    assert slack.calls[-1].ok is False


async def test_messages_threads_updates_and_permalinks(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    root = slack.add_message("C1", "hello <@bot>", user="U1")
    posted = await client.chat_postMessage(
        channel="C1",
        thread_ts=root.ts,
        text="first",
        metadata={"event_type": "dagbot_plan", "event_payload": {"run_id": "r1"}},
    )
    await client.chat_update(channel="C1", ts=posted["ts"], text="second")
    message = slack.message("C1", posted["ts"])
    assert (message.text, message.edits, message.versions) == ("second", 1, ["first", "second"])
    assert [m.ts for m in slack.thread("C1", root.ts)] == [root.ts, posted["ts"]]

    replies = await client.conversations_replies(channel="C1", ts=root.ts)
    assert "metadata" not in replies["messages"][1]
    replies = await client.conversations_replies(
        channel="C1", ts=root.ts, include_all_metadata=True
    )
    assert replies["messages"][1]["metadata"]["event_payload"] == {"run_id": "r1"}

    link = await client.chat_getPermalink(channel="C1", message_ts=posted["ts"])
    assert f"thread_ts={root.ts}" in link["permalink"]
    assert await _error_of(client.chat_update(channel="C1", ts="1.2", text="x")) == (
        "message_not_found"
    )


async def test_form_bodies_are_parsed_like_json_ones(slack: FakeSlack) -> None:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
    blocks = '[{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]'
    await client.api_call("chat.postMessage", data={"channel": "C1", "text": "t", "blocks": blocks})
    [call] = slack.calls_to("chat.postMessage")
    assert call.blocks == [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"text": "x" * 40_001}, "msg_too_long"),
        ({"text": "x", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        (
            {
                "text": "x",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "y" * 3001}}],
            },
            "invalid_blocks",
        ),
        ({"text": "x", "blocks": [{"type": "markdown", "text": "z" * 12001}]}, "invalid_blocks"),
        ({}, "no_text"),
    ],
)
async def test_slack_limits_are_enforced(
    client: AsyncWebClient, kwargs: dict[str, object], error: str
) -> None:
    body = {"channel": "C1", **kwargs}
    assert await _error_of(client.api_call("chat.postMessage", json=body)) == error


async def test_nested_task_cards_count_and_can_be_rejected(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    card = {"type": "task_card", "task_id": "t", "title": "t", "status": "pending"}
    plan = {"type": "plan", "title": "p", "tasks": [card] * 50}
    assert await _error_of(client.chat_postMessage(channel="C1", text="x", blocks=[plan])) == (
        "invalid_blocks"
    )
    slack.reject_block_types("task_card")
    small = {**plan, "tasks": [card]}
    assert await _error_of(client.chat_postMessage(channel="C1", text="x", blocks=[small])) == (
        "invalid_blocks"
    )
    assert "unsupported type: task_card" in str(slack.calls[-1].response["errors"])


async def test_scripted_failures_are_consumed_in_order(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.fail(
        "chat.postMessage", "channel_not_found", times=1, when=lambda b: b["channel"] == "C2"
    )
    await client.chat_postMessage(channel="C1", text="fine")
    assert await _error_of(client.chat_postMessage(channel="C2", text="x")) == "channel_not_found"
    await client.chat_postMessage(channel="C2", text="fine again")
    assert [c.ok for c in slack.calls_to("chat.postMessage")] == [True, False, True]


async def test_streaming_needs_recipients_in_channels(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    root = slack.add_message("C1", "q", user="U1")
    assert await _error_of(client.chat_startStream(channel="C1", thread_ts=root.ts)) == (
        "missing_recipient_team_id"
    )
    stream = await client.chat_stream(
        channel="C1",
        thread_ts=root.ts,
        recipient_team_id=slack.team_id,
        recipient_user_id="U1",
        buffer_size=4,
    )
    await stream.append(markdown_text="Hello, ")
    await stream.append(markdown_text="world")
    assert stream.ts is not None
    assert slack.message("C1", stream.ts).streaming
    await stream.stop(markdown_text="!")
    message = slack.message("C1", stream.ts)
    assert (message.text, message.streaming) == ("Hello, world!", False)
    assert await _error_of(
        client.chat_appendStream(channel="C1", ts=stream.ts, markdown_text="x")
    ) == ("message_not_in_streaming_state")


async def test_status_is_cleared_by_a_reply(slack: FakeSlack, client: AsyncWebClient) -> None:
    root = slack.add_message("C1", "q", user="U1")
    await client.assistant_threads_setStatus(channel_id="C1", thread_ts=root.ts, status="is busy")
    assert slack.thread_status[("C1", root.ts)] == "is busy"
    await client.chat_postMessage(channel="C1", thread_ts=root.ts, text="answer")
    assert ("C1", root.ts) not in slack.thread_status


async def test_hold_keeps_a_call_in_flight_until_released(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.hold("auth.test")
    call = asyncio.create_task(client.auth_test())
    await slack.wait_for(lambda s: s.held("auth.test") == 1)
    assert slack.calls == []
    slack.release("auth.test")
    assert (await call)["ok"]
    assert len(slack.calls_to("auth.test", ok=True)) == 1


async def test_wait_for_reports_what_it_saw(slack: FakeSlack, client: AsyncWebClient) -> None:
    await client.auth_test()
    with pytest.raises(AssertionError, match=r"calls: auth\.test"):
        await slack.wait_for_call("chat.update", within=0.05)


async def test_reactions_follow_slacks_rules(slack: FakeSlack, client: AsyncWebClient) -> None:
    person = slack.add_message("C1", "steer it", user="U1")
    await client.reactions_add(channel="C1", timestamp=person.ts, name="eyes")
    assert slack.messages[("C1", person.ts)].reactions == {"eyes": [slack.bot_user_id]}
    # The same reaction twice, a name with colons or unknown, no such message, no item.
    again = client.reactions_add(channel="C1", timestamp=person.ts, name="eyes")
    assert await _error_of(again) == "already_reacted"
    colons = client.reactions_add(channel="C1", timestamp=person.ts, name=":eyes:")
    assert await _error_of(colons) == "invalid_name"
    unknown = client.reactions_add(channel="C1", timestamp=person.ts, name="not_an_emoji_x")
    assert await _error_of(unknown) == "invalid_name"
    missing = client.reactions_add(channel="C1", timestamp="1.000001", name="memo")
    assert await _error_of(missing) == "message_not_found"
    nothing = client.api_call("reactions.add", json={"name": "memo"})
    assert await _error_of(nothing) == "no_item_specified"
    assert slack.messages[("C1", person.ts)].reactions == {"eyes": [slack.bot_user_id]}
