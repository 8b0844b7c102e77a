"""The fake Slack refuses what Slack refuses: content limits, block shapes, and outages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import FakeSlack, Outage, fake_slack_server


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


def _rich(text: str) -> dict[str, Any]:
    return {
        "type": "rich_text",
        "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}],
    }


def _card(**fields: Any) -> dict[str, Any]:
    return {"type": "task_card", "task_id": "t1", "title": "Fetch", "status": "pending", **fields}


def _plan(*cards: dict[str, Any]) -> dict[str, Any]:
    return {"type": "plan", "title": "A plan", "tasks": list(cards)}


def _feedback(**overrides: Any) -> dict[str, Any]:
    element = {
        "type": "feedback_buttons",
        "action_id": "dagbot_feedback",
        "positive_button": {"text": {"type": "plain_text", "text": "👍"}, "value": "good"},
        "negative_button": {"text": {"type": "plain_text", "text": "👎"}, "value": "bad"},
        **overrides,
    }
    return {"type": "context_actions", "elements": [element]}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


ACCEPTED = [
    pytest.param([_plan(_card(output=_rich("done"), details=_rich("tool")))], id="full card"),
    pytest.param(
        [_plan(_card(sources=[{"type": "url", "url": "https://a.example", "text": "a"}]))],
        id="sources",
    ),
    pytest.param([_feedback()], id="feedback buttons"),
    pytest.param([_section("y" * 3000)] * 4, id="12000 chars of blocks"),
]

REFUSED = [
    pytest.param({"text": "x" * 40_001}, "msg_too_long", id="text past 40000"),
    pytest.param({"text": "x", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks", id="51"),
    pytest.param({"blocks": [_section("y" * 3001)]}, "invalid_blocks", id="section 3001"),
    pytest.param(
        {"blocks": [{"type": "markdown", "text": "z" * 12_001}]}, "invalid_blocks", id="md 12001"
    ),
    pytest.param(
        {"blocks": [_section("y" * 3000)] * 4 + [_section("!")]},
        "msg_blocks_too_long",
        id="blocks text past 12000",
    ),
    pytest.param(
        {"blocks": [_plan(*[_card(task_id=f"t{i}", title="t" * 600) for i in range(21)])]},
        "msg_blocks_too_long",
        id="task card titles count",
    ),
    pytest.param({"blocks": [_plan(_card(title=""))]}, "invalid_blocks", id="empty title"),
    pytest.param({"blocks": [_plan(_card(title="  "))]}, "invalid_blocks", id="blank title"),
    pytest.param({"blocks": [_plan(_card(title=None))]}, "invalid_blocks", id="no title"),
    pytest.param({"blocks": [_plan(_card(status="done"))]}, "invalid_blocks", id="bad status"),
    pytest.param({"blocks": [_plan(_card(status=None))]}, "invalid_blocks", id="no status"),
    pytest.param({"blocks": [_plan(_card(output=_rich("")))]}, "invalid_blocks", id="empty out"),
    pytest.param({"blocks": [_rich("")]}, "invalid_blocks", id="empty rich text"),
    pytest.param({"blocks": [_plan(_card(sources=[{"type": "url"}]))]}, "invalid_blocks", id="src"),
    pytest.param({"blocks": [_section("")]}, "invalid_blocks", id="empty section"),
    pytest.param(
        {"blocks": [_feedback(positive_button={"value": "good"})]}, "invalid_blocks", id="no text"
    ),
    pytest.param(
        {"blocks": [_feedback(negative_button=None)]}, "invalid_blocks", id="one feedback button"
    ),
    pytest.param(
        {"blocks": [{"type": "context_actions", "elements": [_feedback()["elements"][0]] * 6}]},
        "invalid_blocks",
        id="six context actions",
    ),
    pytest.param(
        {"blocks": [{"type": "context_actions", "elements": [{"type": "button"}]}]},
        "invalid_blocks",
        id="button in context actions",
    ),
]


@pytest.mark.parametrize("blocks", ACCEPTED)
async def test_what_slack_accepts_is_accepted(
    client: AsyncWebClient, blocks: list[dict[str, Any]]
) -> None:
    posted = await client.chat_postMessage(channel="C1", text="fallback", blocks=blocks)
    assert posted["ok"]


@pytest.mark.parametrize(("kwargs", "error"), REFUSED)
@pytest.mark.parametrize("method", ["chat.postMessage", "chat.update"])
async def test_what_slack_refuses_is_refused(
    client: AsyncWebClient, kwargs: dict[str, Any], error: str, method: str
) -> None:
    body: dict[str, Any] = {"channel": "C1", "text": "fallback", **kwargs}
    if method == "chat.update":
        posted = await client.chat_postMessage(channel="C1", text="first")
        body["ts"] = posted["ts"]
    assert await _error_of(client.api_call(method, json=body)) == error


@pytest.mark.parametrize("kind", ["html", "text", "bad_json"])
async def test_an_outage_answers_what_is_not_json(
    slack: FakeSlack, client: AsyncWebClient, kind: Outage
) -> None:
    slack.outage(kind)
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="C1", text="hello")
    assert slack.calls[-1].error == f"outage:{kind}"
    slack.restore()
    assert (await client.chat_postMessage(channel="C1", text="hello"))["ok"]


async def test_an_outage_can_drop_connections(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.outage("connection")
    with pytest.raises(aiohttp.ClientError):
        await client.auth_test()
    slack.restore()
    assert (await client.auth_test())["ok"]
