"""The plan message fits Slack however large the plan, and refusals are remembered per channel."""

from __future__ import annotations

import json

import pytest

from bot.capabilities import ChannelFacts, Feature
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from tests.fakes.slack_api import FakeSlack
from tests.unit.test_plan_blocks import without_rich_text
from tests.unit.test_publisher import (
    CHANNEL,
    db_path,
    executors,
    make_plan,
    plan_message,
    running,
    slack,
)
from tests.unit.test_summary_stream import streaming_executors

__all__ = ["db_path", "slack"]  # fixtures shared with test_publisher


def worst_plan(count: int) -> Plan:
    """`count` tasks (the summary included) with the longest titles the planner may write."""
    tools = [
        PlanTask(
            id=f"t{i}",
            kind=TaskKind.TOOL,
            title=f"Step {i}: " + "a very long and detailed title " * 10,
            tool="time.get_current_time",
            args={"wait": False, "fail": ""},
        )
        for i in range(1, count)
    ]
    summary = PlanTask(id="s", kind=TaskKind.SUMMARY, title="Report", deps=[t.id for t in tools])
    return Plan(title="A big plan " * 20, tasks=[*tools, summary])


@pytest.mark.parametrize("count", [10, 25, 49, 50])
async def test_big_plans_with_long_outputs_are_never_refused(
    slack: FakeSlack, db_path: str, count: int
) -> None:
    long_output = "**Found** it: " + "https://example.com/page and more words " * 400
    engine_executors = executors()

    async def tool(_: object) -> str:
        return long_output

    engine_executors[TaskKind.TOOL] = tool  # type: ignore[assignment]
    async with running(db_path, slack, engine_executors) as stack:
        thread = await stack.submit(slack, worst_plan(count))
        await stack.settle(thread.run_id)
        refused = [c for c in slack.calls if not c.ok]
        assert refused == [], slack.describe()
        final = plan_message(slack, thread)
        assert "plan" in final.block_types
        assert "Done" in final.rendered


async def test_one_refusal_renders_smaller_not_classic(slack: FakeSlack, db_path: str) -> None:
    slack.fail("chat.postMessage", "msg_blocks_too_long", times=1)
    async with running(db_path, slack) as stack:
        first = await stack.submit(slack, make_plan(2))
        await stack.settle(first.run_id)
        assert [c.error for c in slack.calls_to("chat.postMessage", ok=False)] == [
            "msg_blocks_too_long"
        ]
        assert "plan" in plan_message(slack, first).block_types
        second = await stack.submit(slack, make_plan(1))
        await stack.settle(second.run_id)
        assert "plan" in plan_message(slack, second).block_types


async def test_classic_blocks_are_remembered_per_channel(slack: FakeSlack, db_path: str) -> None:
    slack.fail(
        "chat.postMessage",
        "invalid_blocks",
        when=lambda body: (
            body.get("channel") == CHANNEL
            and any(b.get("type") == "plan" for b in body.get("blocks") or [])
        ),
    )
    async with running(db_path, slack) as stack:
        refused = await stack.submit(slack, make_plan(1))
        await stack.settle(refused.run_id)
        other = await stack.submit(slack, make_plan(1), channel="C0OTHER")
        await stack.settle(other.run_id)
        assert "plan" not in plan_message(slack, refused).block_types
        [posted] = [
            m
            for m in slack.replies("C0OTHER", other.ts)
            if m.metadata and "plan" in str(m.metadata)
        ]
        assert "plan" in posted.block_types


def test_channel_facts_expire() -> None:
    now = [0.0]
    facts = ChannelFacts(ttl=60, clock=lambda: now[0])
    facts.remember(Feature.PLAN_BLOCKS, "T1", "C1")
    assert facts.refuses(Feature.PLAN_BLOCKS, "T1", "C1")
    assert not facts.refuses(Feature.PLAN_BLOCKS, "T1", "C2")
    assert not facts.refuses(Feature.MARKDOWN_BLOCK, "T1", "C1")
    now[0] = 59.9
    assert facts.refuses(Feature.PLAN_BLOCKS, "T1", "C1")
    now[0] = 60.0
    assert not facts.refuses(Feature.PLAN_BLOCKS, "T1", "C1")


@pytest.mark.parametrize("stream", [True, False])
async def test_mentions_the_model_writes_never_reach_slack_live(
    slack: FakeSlack, db_path: str, stream: bool
) -> None:
    written = "Done, <!channel>! Ask <@U0BOSS> or <!subteam^S1|@ops>; <!here> too."
    # Streamed while the model writes it, in pieces that cut through the mentions.
    pieces = [written[:12], written[12:30], written[30:]]
    engine_executors = (
        streaming_executors(slack, pieces) if stream else executors(summary=lambda _: written)
    )
    async with running(db_path, slack, engine_executors) as stack:
        thread = await stack.submit(slack, make_plan(1), team_id=slack.team_id if stream else None)
        await stack.settle(thread.run_id)
        assert bool(slack.calls_to("chat.startStream")) == stream
        # Rich text (the summary's card) is never parsed for mentions: left out of the check.
        sent = json.dumps(without_rich_text([c.body for c in slack.calls]))
        for live in ("<!channel>", "<@U0BOSS>", "<!subteam^S1|@ops>", "<!here>"):
            assert live not in sent
        assert "&lt;!channel&gt;" in sent
