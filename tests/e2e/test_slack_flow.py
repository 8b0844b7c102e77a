"""A goal from Slack to summary: mentions, /dagbot, follow-ups, App Home, the health check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio

from storage.records import RunStatus
from tests.e2e.slack_harness import (
    ALICE,
    CHANNEL,
    STEP,
    SUMMARY,
    SlackBot,
    answering,
    slack_bot_running,
    wire_plan,
    wire_task,
)


@pytest_asyncio.fixture
async def bot(tmp_path: Path) -> AsyncIterator[SlackBot]:
    async with slack_bot_running(tmp_path) as running:
        yield running


async def test_a_mention_is_planned_run_and_summarised_in_its_thread(bot: SlackBot) -> None:
    step_gate = asyncio.Event()
    bot.openai.respond_with(answering(step_gate=step_gate))
    delivery = await bot.mention("compare the weather in Tokyo and Paris")
    assert delivery.status == 200
    # Hold the llm step until the plan is in the thread, so the rest shows as edits.
    await bot.slack.wait_for_call("chat.postMessage", lambda c: "task_card" in c.block_types)
    step_gate.set()
    await bot.wait_idle()

    run = await bot.run_in_thread(delivery.ts)
    assert run.goal == "compare the weather in Tokyo and Paris"
    assert run.status is RunStatus.SUCCEEDED
    assert run.requester == ALICE
    assert run.meta["source"] == "mention"

    # The planner saw the goal (without the bot's mention) and the MCP server's tools.
    [planning] = bot.openai.plan_requests
    assert "compare the weather in Tokyo and Paris" in planning.transcript
    assert f"<@{bot.slack.bot_user_id}>" not in planning.transcript
    assert "test.echo" in planning.transcript

    # The plan went into the thread under the mention and was edited in place to the end.
    plan = await bot.plan_message(run)
    assert plan.thread_ts == delivery.ts
    assert "task_card" in plan.block_types
    assert plan.edits >= 1
    assert plan.text.count("[succeeded]") == 4
    assert "[succeeded] Compare" not in plan.versions[0]
    replies = [m.ts for m in bot.slack.replies(CHANNEL, delivery.ts) if m.bot_id]
    summary_ts = (await bot.store.delivery(run.id)).summary_message
    assert replies == [plan.ts, summary_ts]
    assert not any(c.ok is False for c in bot.slack.calls_to("chat.update"))

    # The summary is a new reply in the same thread, once.
    assert [m.ts for m in bot.messages_containing(CHANNEL, delivery.ts, "Paris has rain")] == [
        summary_ts
    ]
    # Tool outputs flowed into the llm step, whose output flowed into the summary.
    [step] = bot.openai.text_requests
    assert "Tokyo: sunny, 24C" in step.transcript
    assert "Paris: rain, 14C" in step.transcript
    [summary] = [r for r in bot.openai.requests if r.is_decision]
    assert STEP in summary.transcript
    assert bot.slack.calls_to("conversations.replies") == []


async def test_dagbot_command_posts_the_goal_and_threads_the_run_under_it(bot: SlackBot) -> None:
    answer = await bot.sender.command(
        "compare the weather in Tokyo and Paris", user=ALICE, channel=CHANNEL
    )
    assert (answer.status, answer.text) == (200, "")
    await bot.wait_idle()

    [root] = [m for m in bot.slack.messages.values() if "asked dagbot" in m.text]
    assert root.thread_ts is None
    assert f"<@{ALICE}>" in root.text
    assert "compare the weather in Tokyo and Paris" in root.text
    run = await bot.run_in_thread(root.ts)
    assert run.status is RunStatus.SUCCEEDED
    assert run.meta["source"] == "command"
    assert (await bot.plan_message(run)).thread_ts == root.ts
    assert len(bot.messages_containing(CHANNEL, root.ts, "Paris has rain")) == 1


async def test_help_list_and_cancel_answer_privately(bot: SlackBot) -> None:
    helped = await bot.sender.command("help", user=ALICE, channel=CHANNEL)
    assert helped.status == 200
    assert helped.json()["response_type"] == "ephemeral"
    assert "/dagbot list" in helped.json()["text"]

    empty = await bot.sender.command(
        "list", user=ALICE, channel=CHANNEL, response_url=bot.urls.url("empty")
    )
    assert empty.status == 200
    [nothing] = await bot.urls.wait_for("empty")
    assert "no runs yet" in nothing["text"]

    delivery = await bot.mention("compare the weather in Tokyo and Paris")
    await bot.wait_idle()
    run = await bot.run_in_thread(delivery.ts)
    await bot.sender.command("list", user=ALICE, channel=CHANNEL, response_url=bot.urls.url("list"))
    [listing] = await bot.urls.wait_for("list")
    assert listing["response_type"] == "ephemeral"
    assert f"`{run.id}` done" in listing["text"]
    assert f"<{run.meta['permalink']}|" in listing["text"]

    await bot.sender.command(
        f"cancel {run.id[:6]}", user=ALICE, channel=CHANNEL, response_url=bot.urls.url("cancel")
    )
    [cancel] = await bot.urls.wait_for("cancel")
    assert "already finished" in cancel["text"]
    await bot.sender.command(
        "cancel nosuchrun", user=ALICE, channel=CHANNEL, response_url=bot.urls.url("unknown")
    )
    [unknown] = await bot.urls.wait_for("unknown")
    assert "No run matches `nosuchrun`" in unknown["text"]


async def test_a_follow_up_in_the_thread_plans_with_the_earlier_goal_and_summary(
    bot: SlackBot,
) -> None:
    first = await bot.mention("compare the weather in Tokyo and Paris")
    await bot.wait_idle()
    earlier = await bot.run_in_thread(first.ts)

    berlin = wire_plan(
        "Berlin too",
        wire_task("t1", "tool", "Berlin weather", tool="test.echo", args={"text": "Berlin: fog"}),
        wire_task("t2", "summary", "Report", deps=["t1"]),
    )
    bot.openai.respond_with(answering(berlin, summary="Berlin is foggy."))
    second = await bot.mention("now do the same for Berlin", thread_ts=first.ts)
    assert second.status == 200
    await bot.wait_idle()

    follow_up = await bot.run_in_thread(first.ts)
    assert follow_up.id != earlier.id
    assert follow_up.parent_run_id == earlier.id
    assert follow_up.status is RunStatus.SUCCEEDED
    planning = bot.openai.plan_requests[-1]
    assert "now do the same for Berlin" in planning.transcript
    assert "compare the weather in Tokyo and Paris" in planning.transcript
    assert SUMMARY in planning.transcript
    # Both runs live in the one thread, each with its own plan message and summary.
    assert (await bot.plan_message(follow_up)).thread_ts == first.ts
    assert (await bot.plan_message(follow_up)).ts != (await bot.plan_message(earlier)).ts
    assert len(bot.messages_containing(CHANNEL, first.ts, "Berlin is foggy.")) == 1
    assert bot.slack.calls_to("conversations.replies") == []


async def test_opening_app_home_publishes_the_users_runs(bot: SlackBot) -> None:
    delivery = await bot.mention("compare the weather in Tokyo and Paris")
    await bot.wait_idle()
    run = await bot.run_in_thread(delivery.ts)
    opened = await bot.sender.home_opened(ALICE)
    assert opened.status == 200
    await bot.wait_idle()
    home = bot.slack.home_views[ALICE]
    assert home["type"] == "home"
    assert run.goal in str(home["blocks"])


async def test_health_check(bot: SlackBot) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{bot.http.base_url}/healthz") as response,
    ):
        assert response.status == 200
        assert await response.json() == {"ok": True}
