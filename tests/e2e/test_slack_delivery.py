"""What Slack delivers that must not start a run, or must start exactly one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from storage.records import RunStatus
from tests.e2e.slack_harness import ALICE, CHANNEL, SlackBot, answering, slack_bot_running


@pytest_asyncio.fixture
async def bot(tmp_path: Path) -> AsyncIterator[SlackBot]:
    async with slack_bot_running(tmp_path) as running:
        yield running


async def _nothing_started(bot: SlackBot) -> None:
    await bot.wait_idle()
    assert await bot.store.recent_runs() == []
    assert bot.openai.requests == []


@pytest.mark.parametrize(
    ("secret", "age"),
    [("not-the-signing-secret", 0), (None, 6 * 60), (None, -6 * 60)],
    ids=["forged", "stale", "from the future"],
)
async def test_badly_signed_requests_are_refused(
    bot: SlackBot, secret: str | None, age: int
) -> None:
    stamp = int(time.time()) - age
    event = bot.sender.mention_event(bot.mention_text("do it"), user=ALICE, channel=CHANNEL)
    delivered = await bot.sender.event(event, secret=secret, timestamp=stamp)
    commanded = await bot.sender.command(
        "do it", user=ALICE, channel=CHANNEL, secret=secret, timestamp=stamp
    )
    assert (delivered.status, commanded.status) == (401, 401)
    await _nothing_started(bot)
    assert bot.slack.calls == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Slack-Signature": "", "X-Slack-Request-Timestamp": ""},
        {"X-Slack-Request-Timestamp": "yesterday"},
        {"X-Slack-Signature": "v1=abc"},
    ],
    ids=["empty", "timestamp not a number", "unknown version"],
)
async def test_requests_with_malformed_signature_headers_are_refused(
    bot: SlackBot, headers: dict[str, str]
) -> None:
    event = bot.sender.mention_event(bot.mention_text("do it"), user=ALICE, channel=CHANNEL)
    body = json.dumps(bot.sender.envelope(event))
    status, _ = await bot.sender.post(body, content_type="application/json", headers=headers)
    assert status == 401
    await _nothing_started(bot)


async def test_a_request_without_signature_headers_is_refused(bot: SlackBot) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(bot.sender.url, json={"type": "event_callback"}) as response,
    ):
        assert response.status == 401
    await _nothing_started(bot)


async def test_a_redelivered_event_starts_one_run(bot: SlackBot) -> None:
    first = await bot.mention("compare the weather in Tokyo and Paris")
    event = first.envelope["event"]
    retries = await asyncio.gather(
        bot.sender.event(event, event_id=first.event_id, retry_num=1, retry_reason="http_timeout"),
        bot.sender.event(event, event_id=first.event_id, retry_num=2, retry_reason="http_error"),
    )
    assert [first.status, *(r.status for r in retries)] == [200, 200, 200]
    await bot.wait_idle()
    [run] = await bot.store.recent_runs()
    assert run.status is RunStatus.SUCCEEDED
    assert len(bot.openai.plan_requests) == 1
    assert len(bot.messages_containing(CHANNEL, first.ts, "Paris has rain")) == 1


async def test_a_repeated_slash_command_trigger_starts_one_run(bot: SlackBot) -> None:
    sends = [
        bot.sender.command("compare the weather", user=ALICE, channel=CHANNEL, trigger_id="1.2")
        for _ in range(2)
    ]
    assert [d.status for d in await asyncio.gather(*sends)] == [200, 200]
    await bot.wait_idle()
    assert len(await bot.store.recent_runs()) == 1
    assert len([m for m in bot.slack.messages.values() if "asked dagbot" in m.text]) == 1


async def test_messages_from_bots_are_ignored(bot: SlackBot) -> None:
    other_bot = await bot.mention("run this", bot_id="B0OTHER")
    itself = await bot.sender.mention(
        bot.mention_text("talking to myself"), user=bot.slack.bot_user_id, channel=CHANNEL
    )
    assert (other_bot.status, itself.status) == (200, 200)
    await _nothing_started(bot)
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_an_empty_goal_gets_a_short_answer_in_the_thread(bot: SlackBot) -> None:
    delivery = await bot.mention("   ")
    assert delivery.status == 200
    await _nothing_started(bot)
    [answer] = bot.slack.replies(CHANNEL, delivery.ts)
    assert "what you want done" in answer.text

    command = await bot.sender.command("  ", user=ALICE, channel=CHANNEL)
    assert "/dagbot <goal>" in command.json()["text"]  # an empty /dagbot is asking for help


async def test_an_enormous_goal_is_answered_with_the_limit(bot: SlackBot) -> None:
    limit = bot.http.bot.intake.max_goal_chars
    delivery = await bot.mention("x" * (limit + 1))
    assert delivery.status == 200
    await _nothing_started(bot)
    [answer] = bot.slack.replies(CHANNEL, delivery.ts)
    assert f"{limit + 1:,} characters long; the limit is {limit:,}" in answer.text

    command = await bot.sender.command("y" * (limit + 500), user=ALICE, channel=CHANNEL)
    assert command.json()["response_type"] == "ephemeral"
    assert f"the limit is {limit:,}" in command.json()["text"]
    await _nothing_started(bot)


async def test_a_429_storm_on_chat_update_still_lands_the_final_state(bot: SlackBot) -> None:
    step_gate = asyncio.Event()
    bot.openai.respond_with(answering(step_gate=step_gate))
    delivery = await bot.mention("compare the weather in Tokyo and Paris")
    await bot.slack.wait_for_call("chat.postMessage", lambda c: "task_card" in c.block_types)
    bot.slack.rate_limit("chat.update", times=8, retry_after=0)
    step_gate.set()
    await bot.wait_idle()

    run = await bot.run_in_thread(delivery.ts)
    assert run.status is RunStatus.SUCCEEDED
    assert len(bot.slack.calls_to("chat.update", ok=False)) == 8
    assert bot.slack.calls_to("chat.update", ok=True)
    plan = await bot.plan_message(run)
    assert plan.text.count("[succeeded]") == 4
    assert len(bot.messages_containing(CHANNEL, delivery.ts, "Paris has rain")) == 1


async def test_a_dagbot_goal_sent_while_slack_is_down_starts_once_it_is_back(
    bot: SlackBot,
) -> None:
    bot.slack.fail("chat.postMessage", "service_unavailable", times=3)
    answer = await bot.sender.command("compare the weather", user=ALICE, channel=CHANNEL)
    assert (answer.status, answer.text) == (200, "")
    await bot.wait_idle()
    refused = bot.slack.calls_to("chat.postMessage", ok=False)
    assert [c.error for c in refused] == ["service_unavailable"] * 3
    [root] = [m for m in bot.slack.messages.values() if "asked dagbot" in m.text]
    run = await bot.run_in_thread(root.ts)
    assert run.status is RunStatus.SUCCEEDED
    assert len(bot.messages_containing(CHANNEL, root.ts, "Paris has rain")) == 1
