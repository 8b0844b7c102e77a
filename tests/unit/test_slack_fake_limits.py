"""The fake Slack's rate tiers (per method, per workspace) and its status timeout."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import (
    POST_MESSAGE_BURST,
    STATUS_TIMEOUT,
    TIER_2,
    TIER_3,
    FakeClock,
    FakeSlack,
    fake_slack_server,
)

CHANNEL = "C0LIMITS"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    # A clock that only moves when told: every window is exactly where the test puts it.
    async with fake_slack_server(clock=FakeClock(speed=1e-9)) as server:
        yield server


def client_of(slack: FakeSlack, token: str | None = None) -> AsyncWebClient:
    # No retry handlers: the test sees each 429 itself.
    return AsyncWebClient(token=token or slack.bot_token, base_url=slack.base_url)


async def limited(call: object) -> SlackApiError:
    with pytest.raises(SlackApiError) as raised:
        await call  # type: ignore[misc]
    return raised.value


async def test_chat_update_is_tier_3_per_workspace(slack: FakeSlack) -> None:
    client = client_of(slack)
    posted = await client.chat_postMessage(channel=CHANNEL, text="x")
    for _ in range(TIER_3):
        await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="y")
    error = await limited(client.chat_update(channel=CHANNEL, ts=posted["ts"], text="z"))
    assert error.response.status_code == 429
    assert error.response["error"] == "ratelimited"
    assert int(error.response.headers["Retry-After"]) >= 1
    assert slack.tier_limited == 1

    # Another workspace has its own budget.
    slack.add_workspace("xoxb-other-workspace", "T0OTHER")
    other = client_of(slack, "xoxb-other-workspace")
    mine = await other.chat_postMessage(channel="C0OTHER", text="x")
    await other.chat_update(channel="C0OTHER", ts=mine["ts"], text="y")

    # A minute later the window has moved on.
    slack.clock.advance(60)
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="again")


async def test_streams_are_tier_2(slack: FakeSlack) -> None:
    client = client_of(slack)
    root = slack.add_message(CHANNEL, "hi", user="U0ALICE")
    starts = {
        "channel": CHANNEL,
        "thread_ts": root.ts,
        "recipient_team_id": slack.team_id,
        "recipient_user_id": "U0ALICE",
    }
    for _ in range(TIER_2):
        await client.api_call("chat.startStream", json=starts)
    error = await limited(client.api_call("chat.startStream", json=starts))
    assert error.response.status_code == 429


async def test_post_message_is_about_one_a_second_per_channel(slack: FakeSlack) -> None:
    client = client_of(slack)
    for _ in range(POST_MESSAGE_BURST):
        await client.chat_postMessage(channel=CHANNEL, text="burst")
    error = await limited(client.chat_postMessage(channel=CHANNEL, text="one too many"))
    assert error.response.status_code == 429
    await client.chat_postMessage(channel="C0ELSEWHERE", text="another channel is fine")
    slack.clock.advance(1.0)
    await client.chat_postMessage(channel=CHANNEL, text="a second later")


async def test_status_expires_after_two_minutes_unless_set_again(slack: FakeSlack) -> None:
    client = client_of(slack)
    root = slack.add_message(CHANNEL, "hi", user="U0ALICE")
    await client.assistant_threads_setStatus(
        channel_id=CHANNEL, thread_ts=root.ts, status="is planning…"
    )
    slack.clock.advance(STATUS_TIMEOUT - 10)
    assert slack.status_of(CHANNEL, root.ts) == "is planning…"
    await client.assistant_threads_setStatus(
        channel_id=CHANNEL, thread_ts=root.ts, status="is planning…"
    )
    slack.clock.advance(STATUS_TIMEOUT - 10)
    assert slack.status_of(CHANNEL, root.ts) == "is planning…"
    assert slack.expired_statuses == []
    slack.clock.advance(10)
    assert slack.status_of(CHANNEL, root.ts) is None
    assert slack.expired_statuses == [(CHANNEL, root.ts)]


async def test_reactions_are_tier_3(slack: FakeSlack) -> None:
    client = client_of(slack)
    names = ["eyes", "memo", "hourglass", "thumbsup", "white_check_mark"]
    messages = [slack.add_message(CHANNEL, f"m{i}", user="U1") for i in range(TIER_3 // 5)]
    for message in messages:
        for name in names:
            await client.reactions_add(channel=CHANNEL, timestamp=message.ts, name=name)
    extra = slack.add_message(CHANNEL, "one more", user="U1")
    error = await limited(client.reactions_add(channel=CHANNEL, timestamp=extra.ts, name="eyes"))
    assert error.response.status_code == 429
    assert slack.tier_limited == 1
