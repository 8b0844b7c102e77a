"""The plan message's buttons: only the requester may cancel a run or retry its failed tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from bot.payloads import CANCEL_ACTION, RETRY_ACTION
from storage.records import EventKind, RunStatus
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


@pytest_asyncio.fixture
async def bot(tmp_path: Path) -> AsyncIterator[SlackBot]:
    async with slack_bot_running(tmp_path) as running:
        yield running


async def test_cancel_by_a_stranger_is_refused_and_by_the_requester_honoured(
    bot: SlackBot,
) -> None:
    step_gate = asyncio.Event()  # never set: the llm step stays in flight until cancelled
    bot.openai.respond_with(answering(step_gate=step_gate))
    delivery = await bot.mention("compare the weather in Tokyo and Paris")
    [plan_post] = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: "task_card" in c.block_types
    )
    await bot.openai.wait_for_requests(2)  # the plan, then the held llm step
    run = await bot.run_in_thread(delivery.ts)
    plan_ts = plan_post.response["ts"]

    refused = await bot.sender.button(
        CANCEL_ACTION, run.id, user=BOB, channel=CHANNEL, message_ts=plan_ts, thread_ts=delivery.ts
    )
    assert refused.status == 200
    [whisper] = await bot.slack.wait_for_call("chat.postEphemeral")
    assert whisper.body["user"] == BOB
    assert whisper.body["thread_ts"] == delivery.ts
    assert f"Only <@{ALICE}> can cancel" in whisper.body["text"]
    assert bot.engine.is_active(run.id)

    honoured = await bot.sender.button(
        CANCEL_ACTION,
        run.id,
        user=ALICE,
        channel=CHANNEL,
        message_ts=plan_ts,
        thread_ts=delivery.ts,
    )
    assert honoured.status == 200
    await bot.wait_idle()
    cancelled = await bot.run(run.id)
    assert cancelled.status is RunStatus.CANCELLED
    assert len(bot.slack.calls_to("chat.postEphemeral")) == 1
    plan = await bot.plan_message(cancelled)
    assert "Cancelled" in plan.text
    assert "[running]" not in plan.text
    assert CANCEL_ACTION not in str(plan.blocks)


async def test_retry_failed_tasks_by_the_requester(bot: SlackBot) -> None:
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
    assert run.status is RunStatus.FAILED
    plan = await bot.plan_message(run)
    assert RETRY_ACTION in str(plan.blocks)

    stranger = await bot.sender.button(
        RETRY_ACTION, run.id, user=BOB, channel=CHANNEL, message_ts=plan.ts, thread_ts=delivery.ts
    )
    assert stranger.status == 200
    [whisper] = await bot.slack.wait_for_call("chat.postEphemeral")
    assert f"Only <@{ALICE}> can retry" in whisper.body["text"]

    retried = await bot.sender.button(
        RETRY_ACTION,
        run.id,
        user=ALICE,
        channel=CHANNEL,
        message_ts=plan.ts,
        thread_ts=delivery.ts,
    )
    assert retried.status == 200
    await bot.wait_idle()
    manual = [
        e.task_id
        for e in await bot.store.events(run.id)
        if e.kind is EventKind.TASK_RETRIED and (e.data or {}).get("manual")
    ]
    assert sorted(t for t in manual if t is not None) == ["t2", "t3"]
    tasks = {t.id: t for t in await bot.store.get_tasks(run.id)}
    assert tasks["t1"].attempts == 1  # what succeeded is kept
    assert tasks["t2"].attempts == 2
    assert (await bot.run(run.id)).status is RunStatus.FAILED  # the tool still fails
    assert len(bot.slack.calls_to("chat.postEphemeral")) == 1
