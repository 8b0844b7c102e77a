from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.budgeted_client import LeaseLapsed, speak_for
from bot.slack_client import (
    SLACK_API_URL,
    GatewayErrorRetryHandler,
    error_code,
    is_transient,
    make_client,
    normalise_base_url,
    retry_after,
)
from tests.fakes.slack_api import FakeSlack, fake_slack_server


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack_server() as server:
        yield server


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, SLACK_API_URL),
        ("", SLACK_API_URL),
        ("  ", SLACK_API_URL),
        ("http://127.0.0.1:9000/api", "http://127.0.0.1:9000/api/"),
        ("http://127.0.0.1:9000/api/", "http://127.0.0.1:9000/api/"),
        ("https://proxy.example/slack/api///", "https://proxy.example/slack/api/"),
    ],
)
def test_normalise_base_url(given: str | None, expected: str) -> None:
    assert normalise_base_url(given) == expected
    assert make_client("xoxb-x", given).base_url == expected


def test_retry_handlers_are_installed() -> None:
    client = make_client("xoxb-x", None, rate_limit_retries=3)
    kinds = {type(handler): handler for handler in client.retry_handlers}
    assert set(kinds) == {
        AsyncRateLimitErrorRetryHandler,
        AsyncConnectionErrorRetryHandler,
        GatewayErrorRetryHandler,
    }
    assert issubclass(GatewayErrorRetryHandler, AsyncServerErrorRetryHandler)
    assert kinds[AsyncRateLimitErrorRetryHandler].max_retry_count == 3


async def test_a_429_is_retried_after_retry_after(slack: FakeSlack) -> None:
    slack.rate_limit("auth.test", times=1, retry_after=0)
    client = make_client(slack.bot_token, slack.base_url.rstrip("/"))
    response = await client.auth_test()
    assert response["team_id"] == slack.team_id
    assert [c.status for c in slack.calls_to("auth.test")] == [429, 200]


async def test_a_429_beyond_the_retries_surfaces_with_its_retry_after(slack: FakeSlack) -> None:
    slack.rate_limit("chat.postMessage", times=2, retry_after=0)
    client = make_client(slack.bot_token, slack.base_url, rate_limit_retries=1)
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel="C1", text="hi")
    assert error_code(raised.value) == "ratelimited"
    assert is_transient(raised.value)
    assert retry_after(raised.value) == 0.0


def _api_error(status: int, error: str, headers: dict[str, str] | None = None) -> SlackApiError:
    response = AsyncSlackResponse(
        client=None,
        http_verb="POST",
        api_url="https://slack.com/api/chat.update",
        req_args={},
        data={"ok": False, "error": error},
        headers=headers or {},
        status_code=status,
    )
    return SlackApiError("failed", response)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("error", "code", "transient"),
    [
        (_api_error(200, "channel_not_found"), "channel_not_found", False),
        (_api_error(200, "invalid_blocks"), "invalid_blocks", False),
        (_api_error(200, "internal_error"), "internal_error", True),
        (_api_error(429, "ratelimited"), "ratelimited", True),
        (_api_error(503, "service_unavailable"), "service_unavailable", True),
        (_api_error(500, ""), "http_500", True),
        (SlackRequestError("stream not started"), "SlackRequestError", False),
        (TimeoutError(), "TimeoutError", True),
        (ConnectionResetError(), "ConnectionResetError", True),
        (ValueError("bug"), "ValueError", False),
    ],
)
def test_error_classification(error: Exception, code: str, transient: bool) -> None:
    assert error_code(error) == code
    assert is_transient(error) is transient


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0"}, 0.0),
        ({}, None),
        ({"Retry-After": "x"}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after(_api_error(429, "ratelimited", headers)) == expected
    assert retry_after(ValueError()) is None


async def test_a_call_made_for_a_run_this_process_no_longer_holds_is_not_sent(
    slack: FakeSlack,
) -> None:
    client = make_client(slack.bot_token, slack.base_url, holds=lambda run_id: run_id != "taken")

    async def post_for(run_id: str) -> None:
        speak_for(run_id)
        await client.chat_postMessage(channel="C1", text=f"for {run_id}")

    with pytest.raises(LeaseLapsed, match="may no longer hold run taken"):
        await asyncio.create_task(post_for("taken"))
    assert is_transient(LeaseLapsed("x"))  # tried again once the next renewal has told
    await asyncio.create_task(post_for("held"))
    await client.chat_postMessage(channel="C1", text="for no run")  # e.g. a reply to a user
    assert [c.body["text"] for c in slack.calls_to("chat.postMessage")] == [
        "for held",
        "for no run",
    ]
