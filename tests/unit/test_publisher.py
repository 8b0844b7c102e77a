"""The Slack publisher against the fake Slack Web API, with a real engine on a real SQLite file."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.blocks import CANCEL_ACTION, MAX_MESSAGE_TEXT, RETRY_ACTION
from bot.publisher import PLANNING_STATUS, SlackPublisher
from bot.rate_budget import RateBudget
from bot.run_sync import STATUS_REFRESH
from bot.slack_client import make_client
from scheduler.dag.engine import Engine, EngineConfig
from scheduler.dag.executors import Executor, Planner, PlanRequest, TaskContext
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from scheduler.dag.retry import RetryPolicies, RetryPolicy
from scheduler.errors import PlanningFailed, TaskError
from storage.records import Delivery, RunStatus
from storage.sqlite import SqliteStore
from tests.fakes.slack_api import (
    FakeClock,
    FakeMessage,
    FakeSlack,
    SlackCall,
    fake_slack_server,
)

ONE_ATTEMPT = RetryPolicies(default=RetryPolicy(max_attempts=1))

CHANNEL = "C0PLANS"
ALICE = "U0ALICE"
MIN_INTERVAL = 0.02
# Slack's minute runs in a second here, for the fake and for the bot's budget alike: the rate
# tiers stay on, only shorter.
SPEED = 60.0


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack_server(clock=FakeClock(speed=SPEED)) as server:
        yield server


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "dagbot.sqlite3")


# -- building blocks ---------------------------------------------------------------------------


def default_summary(context: TaskContext) -> str:
    lines = [
        f"- {task.id}: {task.output}"
        for task in context.results.values()
        if task.kind is TaskKind.TOOL
    ]
    return "# Report\n\n" + "\n".join(lines)


def executors(
    *,
    gate: asyncio.Event | None = None,
    summary: Callable[[TaskContext], str] = default_summary,
) -> dict[TaskKind, Executor]:
    """A tool executor that waits on `gate` for tasks with args.wait and fails args.fail."""

    async def tool(context: TaskContext) -> str:
        if context.task.args.get("wait") and gate is not None:
            await gate.wait()
        if context.task.args.get("fail"):
            raise TaskError(str(context.task.args["fail"]))
        return f"{context.task.title} done"

    async def summarise(context: TaskContext) -> str:
        return summary(context)

    return {TaskKind.TOOL: tool, TaskKind.SUMMARY: summarise}


def make_plan(count: int = 2, *, wait: tuple[str, ...] = (), fail: tuple[str, ...] = ()) -> Plan:
    tools = [
        PlanTask(
            id=f"t{i}",
            kind=TaskKind.TOOL,
            title=f"Step {i}",
            tool="time.get_current_time",
            args={"wait": f"t{i}" in wait, "fail": "broken" if f"t{i}" in fail else ""},
        )
        for i in range(1, count + 1)
    ]
    summary = PlanTask(id="s", kind=TaskKind.SUMMARY, title="Report", deps=[t.id for t in tools])
    return Plan(title="A plan", tasks=[*tools, summary])


@dataclass(frozen=True, kw_only=True)
class Stack:
    store: SqliteStore
    engine: Engine
    publisher: SlackPublisher

    async def submit(
        self, slack: FakeSlack, plan: Plan | None = None, *, channel: str = CHANNEL, **meta: Any
    ) -> Thread:
        root = slack.add_message(channel, "<@U0FAKEBOT> do things", user=ALICE)
        fields = {
            "team_id": slack.team_id,
            "channel": channel,
            "thread_ts": root.ts,
            "user": ALICE,
            "source": "mention",
            **meta,
        }
        run = await self.engine.submit(
            "do things",
            plan=plan,
            requester=ALICE,
            thread_key=f"{slack.team_id}:{channel}:{root.ts}",
            meta={k: v for k, v in fields.items() if v is not None},
        )
        return Thread(run_id=run.id, ts=root.ts, channel=channel)

    async def settle(self, run_id: str | None = None) -> None:
        async with asyncio.timeout(30):
            if run_id is None:
                await self.engine.run_until_idle()
            else:
                await self.engine.wait(run_id)
            await self.publisher.wait_idle()

    async def meta(self, run_id: str) -> dict[str, Any]:
        return (await self.engine.view(run_id)).run.meta

    async def delivery(self, run_id: str) -> Delivery:
        return await self.store.delivery(run_id)


@dataclass(frozen=True, kw_only=True)
class Thread:
    run_id: str
    ts: str
    channel: str = CHANNEL


@asynccontextmanager
async def running(
    db_path: str,
    slack: FakeSlack,
    engine_executors: dict[TaskKind, Executor] | None = None,
    *,
    planner: Planner | None = None,
    min_interval: float = MIN_INTERVAL,
    status_refresh: float = STATUS_REFRESH,
) -> AsyncIterator[Stack]:
    """A store, engine and publisher on `db_path`, started in the bot's order."""
    store = await SqliteStore.open(db_path)
    engine = Engine(
        store,
        engine_executors or executors(),
        planner=planner,
        config=EngineConfig(max_concurrency=64, retry=ONE_ATTEMPT),
    )
    budget = RateBudget(speed=slack.clock.speed)
    client = make_client(slack.bot_token, slack.base_url, rate_limit_retries=1, budget=budget)
    publisher = SlackPublisher(
        client, engine, min_interval=min_interval, status_refresh=status_refresh
    )
    await publisher.start()
    await engine.resume_all()
    try:
        yield Stack(store=store, engine=engine, publisher=publisher)
    finally:
        await engine.close()
        await publisher.aclose()
        await store.close()
    assert slack.tier_limited == 0, "the budget let a call exceed Slack's rate tiers"


def event_type(call_or_message: SlackCall | FakeMessage) -> str | None:
    if isinstance(call_or_message, SlackCall):
        metadata = call_or_message.body.get("metadata")
    else:
        metadata = call_or_message.metadata
    return metadata.get("event_type") if isinstance(metadata, dict) else None


def plan_posts(slack: FakeSlack) -> list[SlackCall]:
    return [
        c for c in slack.calls_to("chat.postMessage", ok=True) if event_type(c) == "dagbot_plan"
    ]


def summaries(slack: FakeSlack, thread: Thread) -> list[FakeMessage]:
    replies = slack.replies(thread.channel, thread.ts)
    return [m for m in replies if event_type(m) == "dagbot_summary"]


def summary_text(message: FakeMessage) -> str:
    """What a reader sees: the markdown block when there is one, else the streamed text."""
    for block in message.blocks:
        if block.get("type") == "markdown":
            return str(block["text"])
    return message.text


def card_statuses(message: FakeMessage) -> dict[str, str]:
    plan = next(b for b in message.blocks if b["type"] == "plan")
    return {card["task_id"]: card["status"] for card in plan["tasks"]}


def action_ids(message: FakeMessage) -> list[str]:
    return [e["action_id"] for b in message.blocks if b["type"] == "actions" for e in b["elements"]]


def plan_message(slack: FakeSlack, thread: Thread) -> FakeMessage:
    [message] = [m for m in slack.replies(CHANNEL, thread.ts) if event_type(m) == "dagbot_plan"]
    return message


# -- the happy path ----------------------------------------------------------------------------


async def test_plan_posted_once_updated_and_summary_posted(slack: FakeSlack, db_path: str) -> None:
    async with running(db_path, slack) as stack:
        thread = await stack.submit(slack, make_plan(3))
        await stack.settle(thread.run_id)

        assert len(plan_posts(slack)) == 1
        meta = await stack.meta(thread.run_id)
        delivery = await stack.delivery(thread.run_id)
        assert delivery.plan_message is not None
        message = slack.message(CHANNEL, delivery.plan_message)
        assert message.thread_ts == thread.ts
        assert card_statuses(message) == {f"t{i}": "complete" for i in (1, 2, 3)} | {
            "s": "complete"
        }
        assert action_ids(message) == []
        assert "Done · 4 of 4 tasks done" in message.rendered
        assert message.text.startswith("Plan: A plan")

        [summary] = summaries(slack, thread)
        assert (
            summary_text(summary)
            == "# Report\n\n- t1: Step 1 done\n- t2: Step 2 done\n- t3: Step 3 done"
        )
        assert delivery.summary_message == summary.ts
        assert meta["permalink"].startswith("https://fake.slack.com/archives/C0PLANS/")
        [home] = slack.calls_to("views.publish", ok=True)
        assert home.body["user_id"] == ALICE
        assert "do things" in str(slack.home_views[ALICE]["blocks"])


async def test_cancel_button_while_running_then_cancelled_state(
    slack: FakeSlack, db_path: str
) -> None:
    gate = asyncio.Event()
    async with running(db_path, slack, executors(gate=gate)) as stack:
        thread = await stack.submit(slack, make_plan(2, wait=("t2",)))
        await slack.wait_for(
            lambda s: any(
                "1 running" in m.rendered for m in s.replies(CHANNEL, thread.ts) if m.blocks
            )
        )
        message = plan_message(slack, thread)
        assert action_ids(message) == [CANCEL_ACTION]
        assert card_statuses(message)["t2"] == "in_progress"

        assert await stack.engine.cancel(thread.run_id)
        await stack.settle(thread.run_id)
        message = slack.message(CHANNEL, message.ts)
        assert card_statuses(message) == {"t1": "complete", "t2": "error", "s": "error"}
        assert "Cancelled" in message.rendered
        assert action_ids(message) == [RETRY_ACTION]
        assert summaries(slack, thread) == []


# -- coalescing and rate limits ----------------------------------------------------------------


async def test_a_burst_of_transitions_becomes_few_updates(slack: FakeSlack, db_path: str) -> None:
    gate = asyncio.Event()
    count = 30
    async with running(db_path, slack, executors(gate=gate)) as stack:
        plan = make_plan(count, wait=tuple(f"t{i}" for i in range(1, count + 1)))
        thread = await stack.submit(slack, plan)
        await slack.wait_for(lambda s: len(plan_posts(s)) == 1)
        # Keep the first update in flight while every task finishes behind it.
        slack.hold("chat.update")
        before = len(slack.calls_to("chat.update"))
        gate.set()
        await stack.engine.wait(thread.run_id)
        transitions = len(await stack.store.events(thread.run_id))
        slack.release("chat.update")
        await stack.settle(thread.run_id)

        burst_updates = len(slack.calls_to("chat.update")) - before
        assert transitions > 2 * count
        assert 1 <= burst_updates <= 2
        message = plan_message(slack, thread)
        assert set(card_statuses(message).values()) == {"complete"}
        assert len(card_statuses(message)) == count + 1
        assert len(summaries(slack, thread)) == 1


async def test_429_storm_on_update_still_lands_the_final_state(
    slack: FakeSlack, db_path: str
) -> None:
    gate = asyncio.Event()
    async with running(db_path, slack, executors(gate=gate)) as stack:
        thread = await stack.submit(slack, make_plan(2, wait=("t1", "t2")))
        await slack.wait_for(lambda s: len(plan_posts(s)) == 1)
        slack.rate_limit("chat.update", times=3, retry_after=0)
        gate.set()
        await stack.settle(thread.run_id)

        limited = [c for c in slack.calls_to("chat.update") if c.status == 429]
        assert len(limited) == 3
        assert slack.calls_to("chat.update")[-1].ok
        message = plan_message(slack, thread)
        assert set(card_statuses(message).values()) == {"complete"}
        run = (await stack.engine.view(thread.run_id)).run
        assert run.status is RunStatus.SUCCEEDED
        assert len(summaries(slack, thread)) == 1


async def test_slack_errors_never_fail_the_run_nor_leak_the_token(
    slack: FakeSlack, db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    slack.fail("chat.postMessage", "channel_not_found")
    slack.fail("assistant.threads.setStatus", "channel_not_found")
    async with running(db_path, slack) as stack:
        thread = await stack.submit(slack, make_plan(2))
        await stack.settle(thread.run_id)
        run = (await stack.engine.view(thread.run_id)).run
        assert run.status is RunStatus.SUCCEEDED
        # The publisher gave up on this run's posts but is alive: the next run is shown.
        slack.clear_failures()
        second = await stack.submit(slack, make_plan(1))
        await stack.settle(second.run_id)
        assert len(summaries(slack, second)) == 1
    assert "channel_not_found" in caplog.text
    assert slack.bot_token not in caplog.text


# -- classic fallback --------------------------------------------------------------------------


async def test_refused_plan_blocks_fall_back_to_classic_and_the_channel_remembers(
    slack: FakeSlack, db_path: str
) -> None:
    slack.reject_block_types("plan", "task_card")
    async with running(db_path, slack) as stack:
        first = await stack.submit(slack, make_plan(2, fail=("t2",)))
        await stack.settle(first.run_id)
        rejected = slack.calls_to("chat.postMessage", ok=False)
        # The full plan, then the smallest plan, are refused before classic blocks are used.
        assert [c.error for c in rejected] == ["invalid_blocks", "invalid_blocks"]
        message = plan_message(slack, first)
        assert "plan" not in message.block_types
        assert ":white_check_mark:" in message.rendered
        assert ":x:" in message.rendered
        assert action_ids(message) == [RETRY_ACTION]

        second = await stack.submit(slack, make_plan(1))
        await stack.settle(second.run_id)
        assert len(slack.calls_to("chat.postMessage", ok=False)) == 2, "no second native try"
        assert "plan" not in (plan_message(slack, second)).block_types
        assert not [c for c in slack.calls_to("chat.update") if not c.ok]

    # Not remembered for ever: a new process tries plan blocks again (they now work).
    slack.clear_failures()
    async with running(db_path, slack) as stack:
        third = await stack.submit(slack, make_plan(1))
        await stack.settle(third.run_id)
        assert "plan" in (plan_message(slack, third)).block_types


# -- the summary -------------------------------------------------------------------------------


async def test_summary_posted_whole_without_recipient_ids(slack: FakeSlack, db_path: str) -> None:
    async with running(db_path, slack) as stack:
        thread = await stack.submit(slack, make_plan(1), team_id=None)
        await stack.settle(thread.run_id)
        assert slack.calls_to("chat.startStream") == []
        [summary] = summaries(slack, thread)
        assert summary_text(summary) == "# Report\n\n- t1: Step 1 done"


async def test_huge_summary_is_split_into_clean_messages(slack: FakeSlack, db_path: str) -> None:
    stream = False  # streamed: tests/unit/test_summary_stream.py
    paragraphs = [f"## Part {i}\n\n" + f"sentence {i} " * 300 for i in range(40)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 100_000
    async with running(db_path, slack, executors(summary=lambda _: text)) as stack:
        thread = await stack.submit(slack, make_plan(1), team_id=slack.team_id if stream else None)
        await stack.settle(thread.run_id)
        parts = summaries(slack, thread)
        assert len(parts) >= 9
        assert bool(slack.calls_to("chat.startStream")) == stream
        shown = [summary_text(part) for part in parts]
        assert "\n\n".join(shown) == text.strip()
        for part, body in zip(parts, shown, strict=True):
            assert len(body) <= 12_000
            assert len(part.text) <= (12_000 if stream else MAX_MESSAGE_TEXT)
            assert body.startswith("## Part ")
        assert (await stack.delivery(thread.run_id)).summary_message == parts[0].ts


async def test_failed_run_summary_explains_what_failed(slack: FakeSlack, db_path: str) -> None:
    def no_summary(context: TaskContext) -> str:
        raise TaskError("the model is unavailable")

    async with running(
        db_path,
        slack,
        executors(summary=no_summary),
    ) as stack:
        thread = await stack.submit(slack, make_plan(2, fail=("t1",)), team_id=None)
        await stack.settle(thread.run_id)
        [summary] = summaries(slack, thread)
        body = summary_text(summary)
        assert body.startswith("**Finished with problems")
        assert "Step 1 (t1): broken" in body
        assert "Report (s): the model is unavailable" in body


# -- exactly once across a restart -------------------------------------------------------------


async def test_restart_mid_run_keeps_editing_the_same_plan_and_summarises_once(
    slack: FakeSlack, db_path: str
) -> None:
    gate = asyncio.Event()
    async with running(db_path, slack, executors(gate=gate)) as stack:
        thread = await stack.submit(slack, make_plan(2, wait=("t2",)))
        await slack.wait_for(
            lambda s: any("1 of 3 tasks done" in m.rendered for m in s.replies(CHANNEL, thread.ts))
        )
        plan_ts = plan_message(slack, thread).ts
    # The first process is gone with t2 still running; a new one resumes on the same database.
    updates_before = len(slack.calls_to("chat.update"))
    async with running(db_path, slack) as stack:
        await stack.settle(thread.run_id)
        run = (await stack.engine.view(thread.run_id)).run
        assert run.status is RunStatus.SUCCEEDED
        assert (await stack.delivery(thread.run_id)).plan_message == plan_ts
    assert len(plan_posts(slack)) == 1
    later = slack.calls_to("chat.update")[updates_before:]
    assert later
    assert {c.body["ts"] for c in later} == {plan_ts}
    assert set(card_statuses(slack.message(CHANNEL, plan_ts)).values()) == {"complete"}
    assert len(summaries(slack, thread)) == 1


async def test_a_finished_run_whose_summary_never_landed_is_summarised_on_start(
    slack: FakeSlack, db_path: str
) -> None:
    slack.fail("chat.startStream", "fatal_error")
    slack.fail("chat.postMessage", "fatal_error", when=lambda b: "markdown" in str(b.get("blocks")))
    async with running(db_path, slack) as stack:
        thread = await stack.submit(slack, make_plan(1))
        await stack.engine.wait(thread.run_id)
        await slack.wait_for_call("chat.postMessage", ok=False)
    assert summaries(slack, thread) == []
    slack.clear_failures()
    async with running(db_path, slack) as stack:
        await stack.publisher.wait_idle()
        assert len(summaries(slack, thread)) == 1
        assert (await stack.delivery(thread.run_id)).landed_seq is not None
    async with running(db_path, slack) as stack:
        await stack.publisher.wait_idle()
    assert len(summaries(slack, thread)) == 1


@pytest.mark.parametrize("landed", [True, False])
async def test_summary_intent_without_ts_is_checked_in_the_thread_once(
    slack: FakeSlack, db_path: str, landed: bool
) -> None:
    async with running(db_path, slack) as stack:
        thread = await stack.submit(slack, make_plan(1))
        await stack.settle(thread.run_id)
        [summary] = summaries(slack, thread)
        delivery = await stack.delivery(thread.run_id)
        key = next(k for k in delivery.posts if k.startswith("summary@"))
    # What a crash between posting and recording the ts leaves behind: the intent, no ts, the
    # final state not landed.
    with closing(sqlite3.connect(db_path)) as db, db:
        db.execute(
            "UPDATE delivery_posts SET message = NULL WHERE run_id = ? AND post_key = ?",
            (thread.run_id, key),
        )
        db.execute(
            "UPDATE deliveries SET landed_seq = NULL, summary_message = NULL WHERE run_id = ?",
            (thread.run_id,),
        )
    if not landed:
        del slack.messages[(CHANNEL, summary.ts)]
    async with running(db_path, slack) as stack:
        await stack.publisher.wait_idle()
        [lookup] = slack.calls_to("conversations.replies")
        assert lookup.body["ts"] == thread.ts
        [summary_now] = summaries(slack, thread)
        assert (summary_now.ts == summary.ts) == landed
        delivery = await stack.delivery(thread.run_id)
        assert None not in delivery.posts.values()
        assert delivery.summary_message == summary_now.ts


# -- planning ----------------------------------------------------------------------------------


async def test_planning_shows_status_then_a_clear_error(slack: FakeSlack, db_path: str) -> None:
    release = asyncio.Event()

    async def planner(request: PlanRequest) -> Plan:
        await release.wait()
        raise PlanningFailed("I need to know which city you mean.")

    async with running(db_path, slack, planner=planner) as stack:
        thread = await stack.submit(slack)
        [status] = await slack.wait_for_call("assistant.threads.setStatus")
        assert status.body["status"] == PLANNING_STATUS
        assert status.body["thread_ts"] == thread.ts
        release.set()
        await stack.settle(thread.run_id)
        replies = slack.replies(CHANNEL, thread.ts)
        [error] = [m for m in replies if event_type(m) == "dagbot_error"]
        assert "could not make a plan" in error.rendered
        assert "I need to know which city you mean." in error.rendered
        assert plan_posts(slack) == []
        assert summaries(slack, thread) == []
        assert (CHANNEL, thread.ts) not in slack.thread_status
        assert len(replies) == 1


async def test_placeholder_becomes_the_plan_when_status_is_unavailable(
    slack: FakeSlack, db_path: str
) -> None:
    slack.fail("assistant.threads.setStatus", "not_allowed")
    release = asyncio.Event()

    async def planner(request: PlanRequest) -> Plan:
        await release.wait()
        return make_plan(1)

    async with running(db_path, slack, planner=planner) as stack:
        thread = await stack.submit(slack)
        [placeholder] = await slack.wait_for_call("chat.postMessage", ok=True)
        assert "Planning: do things" in placeholder.body["text"]
        release.set()
        await stack.settle(thread.run_id)
        [post] = plan_posts(slack)
        message = slack.message(CHANNEL, post.response["ts"])
        assert card_statuses(message) == {"t1": "complete", "s": "complete"}
        assert len(summaries(slack, thread)) == 1


async def test_planning_failure_after_a_placeholder_updates_it(
    slack: FakeSlack, db_path: str
) -> None:
    slack.fail("assistant.threads.setStatus", "not_allowed")

    async def planner(request: PlanRequest) -> Plan:
        raise PlanningFailed("Nothing to plan.")

    async with running(db_path, slack, planner=planner) as stack:
        thread = await stack.submit(slack)
        await stack.settle(thread.run_id)
        replies = slack.replies(CHANNEL, thread.ts)
        errors = [m for m in replies if event_type(m) == "dagbot_error"]
        assert len(errors) == 1
        assert "Nothing to plan." in errors[0].rendered
        for message in replies:
            assert "Planning:" not in message.rendered


# -- scope -------------------------------------------------------------------------------------


async def test_runs_without_a_slack_channel_are_ignored(slack: FakeSlack, db_path: str) -> None:
    async with running(db_path, slack) as stack:
        run = await stack.engine.submit("terminal goal", plan=make_plan(2), requester="local")
        await stack.settle(run.id)
        assert (await stack.engine.view(run.id)).run.status is RunStatus.SUCCEEDED
        assert slack.calls == []


async def test_cancel_while_planning_clears_the_status(slack: FakeSlack, db_path: str) -> None:
    never = asyncio.Event()

    async def planner(request: PlanRequest) -> Plan:
        await never.wait()
        raise AssertionError("unreachable")

    async with running(db_path, slack, planner=planner) as stack:
        thread = await stack.submit(slack)
        await slack.wait_for(lambda s: (CHANNEL, thread.ts) in s.thread_status)
        assert await stack.engine.cancel(thread.run_id)
        await stack.settle(thread.run_id)
        assert (CHANNEL, thread.ts) not in slack.thread_status
        assert slack.replies(CHANNEL, thread.ts) == []


async def test_retry_after_failure_edits_the_same_plan_and_summarises_again(
    slack: FakeSlack, db_path: str
) -> None:
    attempts: list[str] = []

    def flaky_summary(context: TaskContext) -> str:
        attempts.append(context.task.id)
        return f"Summary number {len(attempts)}"

    fail_once = {"t1"}
    engine_executors = executors(summary=flaky_summary)
    tool = engine_executors[TaskKind.TOOL]

    async def tool_failing_once(context: TaskContext) -> str:
        if context.task.id in fail_once:
            fail_once.discard(context.task.id)
            raise TaskError("flaky")
        return await tool(context)

    engine_executors[TaskKind.TOOL] = tool_failing_once
    async with running(db_path, slack, engine_executors) as stack:
        thread = await stack.submit(slack, make_plan(1), team_id=None)
        await stack.settle(thread.run_id)
        message = plan_message(slack, thread)
        assert action_ids(message) == [RETRY_ACTION]
        assert await stack.engine.retry_failed(thread.run_id)
        await stack.settle(thread.run_id)
        message = plan_message(slack, thread)
        assert set(card_statuses(message).values()) == {"complete"}
        assert action_ids(message) == []
        assert [summary_text(m) for m in summaries(slack, thread)] == [
            "Summary number 1",
            "Summary number 2",
        ]
        assert len(plan_posts(slack)) == 1
