"""The publisher against Slack's real limits: leading edge, one budget, restarts and outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.blocks import CANCEL_ACTION
from bot.publisher import PLANNING_STATUS
from scheduler.dag.executors import PlanRequest
from scheduler.dag.plan import Plan
from tests.fakes.slack_api import FakeClock, FakeSlack, fake_slack_server
from tests.unit.test_publisher import (
    ALICE,
    CHANNEL,
    SPEED,
    Thread,
    action_ids,
    card_statuses,
    event_type,
    executors,
    make_plan,
    plan_posts,
    running,
    summaries,
)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack_server(clock=FakeClock(speed=SPEED)) as server:
        yield server


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "dagbot.sqlite3")


async def test_plan_and_final_state_never_wait_for_the_edit_interval(
    slack: FakeSlack, db_path: str
) -> None:
    """With an hour between intermediate edits, the plan and the final state still go at once."""
    gate = asyncio.Event()
    async with running(db_path, slack, executors(gate=gate), min_interval=3600) as stack:
        thread = await stack.submit(slack, make_plan(3, wait=("t1", "t2", "t3")))
        await slack.wait_for(lambda s: len(plan_posts(s)) == 1)
        gate.set()
        await stack.settle(thread.run_id)
        [post] = plan_posts(slack)
        message = slack.message(CHANNEL, post.response["ts"])
        assert set(card_statuses(message).values()) == {"complete"}
        assert len(summaries(slack, thread)) == 1
        # At most the leading edit of the burst went out before the final one.
        assert len(slack.calls_to("chat.update")) <= 2


async def test_twenty_busy_runs_share_one_budget_without_a_429(
    slack: FakeSlack, db_path: str
) -> None:
    """Many runs editing at once stay inside chat.update's Tier 3, finals first."""
    gate = asyncio.Event()
    async with running(db_path, slack, executors(gate=gate), min_interval=0.0) as stack:
        threads: list[Thread] = []
        for index in range(20):
            threads.append(
                await stack.submit(slack, make_plan(6, wait=("t6",)), channel=f"C0BUSY{index:02d}")
            )
        await slack.wait_for(lambda s: len(plan_posts(s)) == 20)
        gate.set()
        for thread in threads:
            await stack.settle(thread.run_id)
        for thread in threads:
            [message] = [
                m
                for m in slack.replies(thread.channel, thread.ts)
                if event_type(m) == "dagbot_plan"
            ]
            assert set(card_statuses(message).values()) == {"complete"}
            assert action_ids(message) == []
    assert slack.tier_limited == 0


async def test_planning_status_is_set_again_before_slack_drops_it(
    slack: FakeSlack, db_path: str
) -> None:
    release = asyncio.Event()

    async def planner(request: PlanRequest) -> Plan:
        await release.wait()
        return make_plan(1)

    # Slack's two minutes last two seconds here; the status is renewed every 1.5 of them.
    refresh = 90.0 / SPEED
    async with running(db_path, slack, planner=planner, status_refresh=refresh) as stack:
        thread = await stack.submit(slack)
        await slack.wait_for_call(
            "assistant.threads.setStatus",
            lambda c: c.body["status"] == PLANNING_STATUS,
            count=3,
        )
        assert slack.status_of(CHANNEL, thread.ts) == PLANNING_STATUS
        release.set()
        await stack.settle(thread.run_id)
        assert len(summaries(slack, thread)) == 1
    assert slack.expired_statuses == []


async def test_every_run_finished_during_an_outage_lands_after_a_restart(
    slack: FakeSlack, db_path: str
) -> None:
    """More runs than any start-up scan window: none is left without its plan and summary."""
    count = 60
    slack.fail("chat.postMessage", "service_unavailable")
    slack.fail("assistant.threads.setStatus", "service_unavailable")
    async with running(db_path, slack) as stack:
        threads = [
            await stack.submit(slack, make_plan(1), channel=f"C0OUT{index:02d}", team_id=None)
            for index in range(count)
        ]
        for thread in threads:
            await stack.engine.wait(thread.run_id)
    assert plan_posts(slack) == []
    slack.clear_failures()
    async with running(db_path, slack) as stack:
        await stack.publisher.wait_idle()
        for thread in threads:
            assert len(summaries(slack, thread)) == 1
            assert (await stack.delivery(thread.run_id)).landed_seq is not None
    assert len(plan_posts(slack)) == count


async def test_slack_down_then_back_the_thread_catches_up(slack: FakeSlack, db_path: str) -> None:
    slack.fail("chat.postMessage", "service_unavailable", times=4)
    async with running(db_path, slack) as stack:
        thread = await stack.submit(slack, make_plan(2))
        await stack.settle(thread.run_id)
        assert len(slack.calls_to("chat.postMessage", ok=False)) == 4
        assert len(plan_posts(slack)) == 1
        assert len(summaries(slack, thread)) == 1


async def test_a_deleted_plan_message_gets_a_fresh_final_one(
    slack: FakeSlack, db_path: str
) -> None:
    gate = asyncio.Event()
    async with running(db_path, slack, executors(gate=gate)) as stack:
        thread = await stack.submit(slack, make_plan(2, wait=("t2",)))
        await slack.wait_for(lambda s: len(plan_posts(s)) == 1)
        [first] = plan_posts(slack)
        assert action_ids(slack.message(CHANNEL, first.response["ts"])) == [CANCEL_ACTION]
        # Someone deletes the plan message while the run goes on.
        del slack.messages[(CHANNEL, first.response["ts"])]
        gate.set()
        await stack.settle(thread.run_id)
        posts = plan_posts(slack)
        assert len(posts) == 2
        final = slack.message(CHANNEL, posts[-1].response["ts"])
        assert set(card_statuses(final).values()) == {"complete"}
        assert action_ids(final) == []
        assert (await stack.delivery(thread.run_id)).plan_message == final.ts
        assert len(summaries(slack, thread)) == 1
    # A restart does not post it a third time.
    async with running(db_path, slack) as stack:
        await stack.publisher.wait_idle()
    assert len(plan_posts(slack)) == 2
    assert ALICE in str(slack.home_views)
