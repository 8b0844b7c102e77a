"""Approval of sensitive tools in Slack: the real bot over HTTP, fake Slack and LLM, real MCP.

`test.echo` is configured with `requireApproval`; the plan's other tools run freely. A task
waiting for approval shows Approve and Deny under the plan; the requester and DAGBOT_APPROVERS
may press them, anyone else is told privately that they may not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.payloads import APPROVE_ACTION, DENY_ACTION
from storage.records import RunStatus, TaskRecord, TaskStatus
from tests.e2e.slack_harness import (
    ALICE,
    BOB,
    CHANNEL,
    SlackBot,
    answering,
    bot_serving,
    slack_bot_running,
    wire_plan,
    wire_task,
)
from tests.fakes.mcp_test_server import stdio_entry
from tests.fakes.openai_server import fake_openai_server
from tests.fakes.slack_api import SlackCall, fake_slack_server
from tests.fakes.slack_requests import Delivery, response_urls
from tests.support.postgres import fresh_database

CAROL = "U0CAROL"
"""An approver (DAGBOT_APPROVERS) who did not start the run."""
DAVE = "U0DAVE"
"""Not in the channel at all."""

PUBLISH_PLAN = wire_plan(
    "Publish the report",
    wire_task("t1", "tool", "Compute", tool="test.scale", args={"value": 21}),
    wire_task(
        "t2", "tool", "Publish", tool="test.echo", args={"text": "publish {{t1}}"}, deps=["t1"]
    ),
    wire_task("t3", "tool", "Meanwhile", tool="test.scale", args={"value": 1}),
    wire_task("t4", "tool", "Announce", tool="test.scale", args={"value": 3}, deps=["t2"]),
    wire_task("t5", "summary", "Report", deps=["t2", "t3", "t4"]),
)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


def approval_env(directory: Path, **extra: str) -> dict[str, str]:
    path = directory / "mcp-approval.json"
    entry = {**stdio_entry(), "requireApproval": ["echo"]}
    path.write_text(json.dumps({"mcpServers": {"test": entry}}))
    return {"DAGBOT_MCP_CONFIG": str(path), "DAGBOT_APPROVERS": CAROL, **extra}


@asynccontextmanager
async def approval_bot(directory: Path, **extra: str) -> AsyncIterator[SlackBot]:
    responder = answering(PUBLISH_PLAN, summary="Published.")
    async with slack_bot_running(
        directory, responder=responder, env=approval_env(directory, **extra)
    ) as bot:
        bot.slack.join(CHANNEL, CAROL)
        yield bot


def asks_approval(call: SlackCall) -> bool:
    return APPROVE_ACTION in json.dumps(call.body.get("blocks"))


def card_status(call: SlackCall, task_id: str) -> str | None:
    for block in call.body.get("blocks") or []:
        for card in block.get("tasks") or []:
            if card.get("task_id") == task_id:
                return str(card.get("status"))
    return None


async def until_asked(bot: SlackBot) -> SlackCall:
    """The plan message as it first shows the Approve and Deny buttons."""
    [update, *_] = await bot.slack.wait_for_call("chat.update", asks_approval)
    return update


async def press(
    bot: SlackBot, action: str, run_id: str, user: str, delivery: Delivery, message_ts: str
) -> None:
    answer = await bot.sender.button(
        action,
        f"{run_id}:t2",
        user=user,
        channel=CHANNEL,
        message_ts=message_ts,
        thread_ts=delivery.ts,
    )
    assert answer.status == 200


async def test_the_requester_approves_and_the_task_runs_with_the_arguments_shown(
    tmp_path: Path,
) -> None:
    async with approval_bot(tmp_path) as bot:
        delivery = await bot.mention("publish the report")
        asked = await until_asked(bot)
        run = await bot.run_in_thread(delivery.ts)
        blocks = json.dumps(asked.body["blocks"])
        # The exact arguments, after {{t1}} was replaced by t1's output.
        assert json.dumps('"text": "publish 42.0"')[1:-1] in blocks
        assert DENY_ACTION in blocks
        tasks = {t.id: t for t in await bot.store.get_tasks(run.id)}
        assert tasks["t2"].status is TaskStatus.AWAITING_APPROVAL
        # Other tasks do not wait for the decision.
        await bot.slack.wait_for_call(
            "chat.update", lambda c: asks_approval(c) and card_status(c, "t3") == "complete"
        )
        await press(bot, APPROVE_ACTION, run.id, ALICE, delivery, asked.body["ts"])
        await bot.wait_idle()

        done = await bot.run(run.id)
        assert done.status is RunStatus.SUCCEEDED
        tasks = {t.id: t for t in await bot.store.get_tasks(run.id)}
        assert tasks["t2"].output == "publish 42.0"
        plan = await bot.plan_message(done)
        assert APPROVE_ACTION not in json.dumps(plan.blocks)
        assert bot.slack.calls_to("chat.postEphemeral") == []
        assert len(bot.messages_containing(CHANNEL, delivery.ts, "Published.")) == 1


async def test_an_approver_denies_the_task_fails_and_its_dependants_are_skipped(
    tmp_path: Path,
) -> None:
    async with approval_bot(tmp_path) as bot:
        delivery = await bot.mention("publish the report")
        asked = await until_asked(bot)
        run = await bot.run_in_thread(delivery.ts)
        await press(bot, DENY_ACTION, run.id, CAROL, delivery, asked.body["ts"])
        await bot.wait_idle()

        done = await bot.run(run.id)
        assert done.status is RunStatus.FAILED
        tasks = {t.id: t for t in await bot.store.get_tasks(run.id)}
        assert (tasks["t2"].status, tasks["t2"].error) == (
            TaskStatus.FAILED,
            f"Denied by <@{CAROL}>.",
        )
        assert tasks["t4"].status is TaskStatus.SKIPPED
        assert tasks["t5"].status is TaskStatus.SUCCEEDED  # the summary says what happened
        plan = await bot.plan_message(done)
        [card] = [c for b in plan.blocks for c in b.get("tasks", []) if c["task_id"] == "t2"]
        assert card["status"] == "error"
        assert {"type": "user", "user_id": CAROL} in card["output"]["elements"][0]["elements"]
        assert APPROVE_ACTION not in json.dumps(plan.blocks)
        assert bot.slack.calls_to("chat.postEphemeral") == []


async def test_a_strangers_press_is_refused_privately_and_a_second_press_changes_nothing(
    tmp_path: Path,
) -> None:
    async with approval_bot(tmp_path) as bot:
        delivery = await bot.mention("publish the report")
        asked = await until_asked(bot)
        run = await bot.run_in_thread(delivery.ts)
        plan_ts = asked.body["ts"]

        await press(bot, APPROVE_ACTION, run.id, BOB, delivery, plan_ts)
        [refusal] = await bot.slack.wait_for_call("chat.postEphemeral")
        assert refusal.body["user"] == BOB
        assert refusal.body["thread_ts"] == delivery.ts
        assert f"Only <@{ALICE}> or an approver can approve or deny" in refusal.body["text"]
        # Someone outside the channel cannot even be answered privately: Slack refuses it.
        await press(bot, DENY_ACTION, run.id, DAVE, delivery, plan_ts)
        await bot.slack.wait_for_call("chat.postEphemeral", ok=False)
        [call] = bot.slack.calls_to("chat.postEphemeral", ok=False)
        assert call.error == "user_not_in_channel"
        tasks = {t.id: t for t in await bot.store.get_tasks(run.id)}
        assert tasks["t2"].status is TaskStatus.AWAITING_APPROVAL

        # The requester approves; a double click and Slack's replay of the click change nothing.
        clicked = await bot.sender.button(
            APPROVE_ACTION,
            f"{run.id}:t2",
            user=ALICE,
            channel=CHANNEL,
            message_ts=plan_ts,
            thread_ts=delivery.ts,
            trigger_id="111.222",
            action_ts="1700000000.000001",
        )
        replayed = await bot.sender.button(
            APPROVE_ACTION,
            f"{run.id}:t2",
            user=ALICE,
            channel=CHANNEL,
            message_ts=plan_ts,
            thread_ts=delivery.ts,
            trigger_id="111.222",
            action_ts="1700000000.000001",
        )
        assert (clicked.status, replayed.status) == (200, 200)
        await press(bot, APPROVE_ACTION, run.id, ALICE, delivery, plan_ts)
        # An approver's late Deny does not undo the approval; they are told who decided.
        await press(bot, DENY_ACTION, run.id, CAROL, delivery, plan_ts)
        await bot.wait_idle()

        assert (await bot.run(run.id)).status is RunStatus.SUCCEEDED
        events = [e for e in await bot.store.events(run.id) if e.task_id == "t2"]
        assert [e.kind.value for e in events].count("task_approved") == 1
        [approval] = await bot.store.approvals(run.id)
        assert (approval.decision, approval.decided_by) == ("approved", f"<@{ALICE}>")
        whispers = [c for c in bot.slack.calls_to("chat.postEphemeral") if c.ok]
        assert [w.body["user"] for w in whispers] == [BOB, CAROL]
        assert whispers[1].body["text"] == f"This task was already approved by <@{ALICE}>."


async def test_an_approval_not_given_in_time_counts_as_denied(tmp_path: Path) -> None:
    async with approval_bot(tmp_path, DAGBOT_APPROVAL_TIMEOUT="0.5") as bot:
        delivery = await bot.mention("publish the report")
        asked = await until_asked(bot)
        run = await bot.run_in_thread(delivery.ts)
        await bot.wait_idle()  # nobody presses: the deadline passes

        done = await bot.run(run.id)
        assert done.status is RunStatus.FAILED
        tasks = {t.id: t for t in await bot.store.get_tasks(run.id)}
        assert tasks["t2"].error == "Not approved within 0.5 s: denied."
        assert tasks["t4"].status is TaskStatus.SKIPPED
        await press(bot, APPROVE_ACTION, run.id, ALICE, delivery, asked.body["ts"])
        [late] = await bot.slack.wait_for_call("chat.postEphemeral")
        assert late.body["user"] == ALICE
        assert late.body["text"].startswith("Too late")
        assert (await bot.run(run.id)).status is RunStatus.FAILED


async def test_a_restart_while_a_task_awaits_approval_keeps_the_request_and_its_message(
    tmp_path: Path,
) -> None:
    async with (
        fake_slack_server() as slack,
        fake_openai_server() as openai,
        response_urls() as urls,
    ):
        openai.respond_with(answering(PUBLISH_PLAN, summary="Published."))
        slack.join(CHANNEL, ALICE, BOB, CAROL)
        env = approval_env(tmp_path)
        async with bot_serving(slack, openai, urls, tmp_path, env=env) as first:
            delivery = await first.mention("publish the report")
            asked = await until_asked(first)
            run = await first.run_in_thread(delivery.ts)
            [before] = await first.store.approvals(run.id)
        # dagbot stopped while t2 waited; it starts again on the same database.
        async with bot_serving(slack, openai, urls, tmp_path, env=env) as second:
            tasks = {t.id: t for t in await second.store.get_tasks(run.id)}
            assert tasks["t2"].status is TaskStatus.AWAITING_APPROVAL
            assert await second.store.approvals(run.id) == [before]  # same deadline
            await press(second, APPROVE_ACTION, run.id, ALICE, delivery, asked.body["ts"])
            await second.wait_idle()

            done = await second.run(run.id)
            assert done.status is RunStatus.SUCCEEDED
            plan = await second.plan_message(done)
            assert plan.ts == asked.body["ts"]  # the same plan message, updated in place
            assert APPROVE_ACTION not in json.dumps(plan.blocks)
            assert len(second.messages_containing(CHANNEL, delivery.ts, "Published.")) == 1
            assert mapping_of(await second.store.get_tasks(run.id)) == {
                "t1": 1,
                "t2": 1,
                "t3": 1,
                "t4": 1,
                "t5": 1,
            }


def mapping_of(tasks: list[TaskRecord]) -> Mapping[str, int]:
    """Attempts per task: nothing ran twice across the restart."""
    return {t.id: t.attempts for t in tasks}


async def test_a_press_that_reaches_a_replica_not_owning_the_run_is_acted_on_by_the_owner(
    tmp_path: Path, postgres_url: str
) -> None:
    async with (
        fake_slack_server() as slack,
        fake_openai_server() as openai,
        response_urls() as urls,
    ):
        openai.respond_with(answering(PUBLISH_PLAN, summary="Published."))
        slack.join(CHANNEL, ALICE, BOB, CAROL)
        env = {**approval_env(tmp_path), "DATABASE_URL": postgres_url}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        async with (
            bot_serving(slack, openai, urls, tmp_path / "a", env=env) as owner,
            bot_serving(slack, openai, urls, tmp_path / "b", env=env) as replica,
        ):
            delivery = await owner.mention("publish the report")
            asked = await until_asked(owner)
            run = await owner.run_in_thread(delivery.ts)
            assert await owner.engine.owns(run.id)
            assert not await replica.engine.owns(run.id)

            await press(replica, APPROVE_ACTION, run.id, ALICE, delivery, asked.body["ts"])
            await replica.wait_idle()
            await owner.wait_idle()

            done = await owner.run(run.id)
            assert done.status is RunStatus.SUCCEEDED
            assert not replica.engine.is_active(run.id)
            assert len(owner.messages_containing(CHANNEL, delivery.ts, "Published.")) == 1
            assert slack.calls_to("chat.postEphemeral") == []
