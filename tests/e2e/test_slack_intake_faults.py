"""Intake faults, driven through the real bolt app over HTTP with signed requests.

Forged or malformed bodies, bad unicode, a mention with no goal, replayed button presses,
feedback buttons, Slack Connect's authorizations, a Slack API that is down when the bot starts,
and a slash command acked while the database is locked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from bot.blocks import FEEDBACK_ACTION
from bot.payloads import RETRY_ACTION
from storage.records import EventKind, RunStatus
from storage.sqlite import sqlite_path
from tests.e2e.slack_harness import (
    ALICE,
    BOB,
    CHANNEL,
    SlackBot,
    answering,
    slack_bot_running,
    wire_plan,
    wire_task,
)
from tests.fakes.slack_requests import FAKE_SIGNING_SECRET


@pytest_asyncio.fixture
async def bot(tmp_path: Path) -> AsyncIterator[SlackBot]:
    async with slack_bot_running(tmp_path) as running:
        yield running


async def _post_bytes(bot: SlackBot, body: bytes, content_type: str) -> tuple[int, str]:
    """POST raw bytes, correctly signed (the signature covers the bytes as sent)."""
    stamp = str(int(time.time()))
    digest = hmac.new(
        FAKE_SIGNING_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256
    ).hexdigest()
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest}",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(bot.sender.url, data=body, headers=headers) as response,
    ):
        return response.status, await response.text()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("{not json", "application/json"),
        ("payload=%7Bnot+json", "application/x-www-form-urlencoded"),
        ("", "application/json"),
    ],
)
async def test_a_forged_malformed_body_is_401_before_it_is_parsed(
    bot: SlackBot, body: str, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    status, _ = await bot.sender.post(body, content_type=content_type, secret="not-the-secret")
    assert status == 401
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b'{"type": "event_callback", "event": {"text": "\\ud800"}}', "application/json"),
        (b"payload=%7B%22user%22%3A+%22%5Cudc00%22%7D", "application/x-www-form-urlencoded"),
        (b"text=%ED%A0%80&team_id=T1", "application/x-www-form-urlencoded"),
    ],
    ids=["bad json", "not utf-8", "lone surrogate", "surrogate in payload", "bad form"],
)
async def test_a_signed_unreadable_body_is_400(
    bot: SlackBot, body: bytes, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    status, text = await _post_bytes(bot, body, content_type)
    assert status == 400, text
    assert "Traceback" not in caplog.text
    assert await bot.store.recent_runs(limit=5) == []


async def test_a_mention_with_a_lone_surrogate_in_its_text_is_400(bot: SlackBot) -> None:
    envelope = bot.sender.envelope(
        bot.sender.mention_event(bot.mention_text("weather \ud83d"), user=ALICE, channel=CHANNEL)
    )
    status, _ = await bot.sender.post(json.dumps(envelope), content_type="application/json")
    assert status == 400
    await bot.wait_idle()
    assert await bot.store.recent_runs(limit=5) == []


@pytest.mark.parametrize("goal", ["", "<@U0SOMEONE>", "<@U0SOMEONE> <@U0OTHER|other>"])
async def test_a_mention_without_a_goal_is_answered_not_run(bot: SlackBot, goal: str) -> None:
    delivery = await bot.mention(goal)
    assert delivery.status == 200
    await bot.wait_idle()
    assert await bot.store.recent_runs(limit=5) == []
    [answer] = bot.slack.calls_to("chat.postMessage")
    assert answer.body["thread_ts"] == delivery.ts
    assert "Tell me what you want done" in answer.body["text"]


async def test_slack_connect_takes_the_team_from_the_authorization(bot: SlackBot) -> None:
    event = bot.sender.mention_event(
        bot.mention_text("weather please"), user=ALICE, channel=CHANNEL
    )
    bot.slack.add_message(CHANNEL, event["text"], user=ALICE, ts=event["ts"])
    envelope = bot.sender.envelope(event)
    envelope["team_id"] = "T0OTHERORG"  # the shared channel's other workspace
    status, _ = await bot.sender.post(json.dumps(envelope), content_type="application/json")
    assert status == 200
    await bot.wait_idle()
    [run] = await bot.store.recent_runs(limit=5)
    assert run.meta["team_id"] == bot.slack.team_id
    [start] = bot.slack.calls_to("chat.startStream", ok=True)
    assert start.body["recipient_team_id"] == bot.slack.team_id


@pytest.mark.parametrize("kind", ["connection", "html"])
async def test_a_bot_started_while_slack_is_down_keeps_every_mention(
    bot: SlackBot, kind: str
) -> None:
    bot.slack.outage(kind)  # type: ignore[arg-type]
    delivery = await bot.mention("weather in Tokyo and Paris")
    assert delivery.status == 200
    assert any(c.method == "auth.test" for c in bot.slack.calls), "bolt asked auth.test"
    run = await bot.run_in_thread(delivery.ts)
    assert run.goal == "weather in Tokyo and Paris"
    bot.slack.restore()
    await bot.wait_idle()
    finished = await bot.run(run.id)
    assert finished.status is RunStatus.SUCCEEDED
    assert (await bot.plan_message(finished)).block_types[0] == "plan"
    # Later requests are authorized by auth.test, asked once it answers.
    again = await bot.mention("and now Berlin")
    assert again.status == 200
    assert bot.slack.calls_to("auth.test", ok=True)


async def test_a_slash_command_is_acked_while_the_database_is_locked(bot: SlackBot) -> None:
    path = sqlite_path(bot.http.bot.runtime.settings.database_url)
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        answered = await bot.sender.command("weather in Tokyo", user=ALICE, channel=CHANNEL)
        assert answered.status == 200
        assert await bot.store.recent_runs(limit=5) == []
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await bot.wait_idle()
    [run] = await bot.store.recent_runs(limit=5)
    assert run.goal == "weather in Tokyo"


async def test_a_replayed_retry_press_does_not_rerun(bot: SlackBot) -> None:
    failing = wire_plan(
        "Doomed",
        wire_task("t1", "tool", "Works", tool="test.echo", args={"text": "fine"}),
        wire_task("t2", "tool", "Breaks", tool="test.fail", args={"message": "the tool broke"}),
        wire_task("t3", "summary", "Report", deps=["t1", "t2"]),
    )
    bot.openai.respond_with(answering(failing, summary="Half of it worked."))
    delivery = await bot.mention("try something that fails")
    await bot.wait_idle()
    run = await bot.run_in_thread(delivery.ts)
    plan = await bot.plan_message(run)
    press = {
        "user": ALICE,
        "channel": CHANNEL,
        "message_ts": plan.ts,
        "thread_ts": delivery.ts,
        "trigger_id": "111.222",
        "action_ts": "1700000000.000100",
    }
    assert (await bot.sender.button(RETRY_ACTION, run.id, **press)).status == 200
    await bot.wait_idle()
    assert (await bot.sender.button(RETRY_ACTION, run.id, **press)).status == 200
    await bot.wait_idle()
    retried = [
        e.task_id
        for e in await bot.store.events(run.id)
        if e.kind is EventKind.TASK_RETRIED and (e.data or {}).get("manual")
    ]
    assert sorted(t for t in retried if t is not None) == ["t2", "t3"], "retried once only"


async def test_feedback_presses_are_recorded_once_per_person(bot: SlackBot) -> None:
    delivery = await bot.mention("weather in Tokyo and Paris")
    await bot.wait_idle()
    run = await bot.run_in_thread(delivery.ts)

    async def vote(user: str, value: str, trigger: str) -> None:
        sent = await bot.sender.button(
            FEEDBACK_ACTION,
            f"{value}:{run.id}",
            user=user,
            channel=CHANNEL,
            message_ts=delivery.ts,
            thread_ts=delivery.ts,
            trigger_id=trigger,
            action_ts=f"1700000000.{trigger}",
            element_type="feedback_buttons",
        )
        assert sent.status == 200
        await bot.wait_idle()

    await vote(BOB, "good", "1")
    await vote(BOB, "good", "1")  # replayed
    assert await bot.store.feedback(run.id) == {"good": 1}
    await vote(ALICE, "bad", "2")
    assert await bot.store.feedback(run.id) == {"good": 1, "bad": 1}
    await vote(BOB, "bad", "3")  # Bob changes his mind: his latest vote counts
    assert await bot.store.feedback(run.id) == {"bad": 2}
    assert bot.slack.calls_to("chat.postEphemeral") == [], "anyone may vote, silently"
