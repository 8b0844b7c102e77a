"""An answer from Slack (or a proxy) that is not JSON is a transient error, never AttributeError."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError

from bot.slack_client import error_code, is_transient, make_client, retry_after
from tests.fakes.slack_api import FakeSlack, Outage, fake_slack_server


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack_server() as server:
        yield server


@pytest.mark.parametrize(
    ("kind", "code"),
    [("html", "http_502"), ("text", "http_503"), ("bad_json", "not_json"), ("connection", None)],
)
async def test_outage_answers_are_transient(
    slack: FakeSlack, kind: Outage, code: str | None
) -> None:
    client = make_client(slack.bot_token, slack.base_url)
    slack.outage(kind)
    with pytest.raises((SlackApiError, aiohttp.ClientError)) as raised:
        await client.chat_postMessage(channel="C1", text="hello")
    error = raised.value
    assert is_transient(error), repr(error)
    if code is not None:
        assert isinstance(error, SlackApiError)
        assert error_code(error) == code
    else:
        assert error_code(error)  # a type name, never an exception from our own mapping
    assert retry_after(error) is None
    # The 5xx answers were retried by the client before surfacing.
    attempts = len(slack.calls_to("chat.postMessage"))
    assert attempts == (3 if kind in ("html", "text", "connection") else 1)
    slack.restore()
    assert (await client.chat_postMessage(channel="C1", text="hello"))["ok"]
