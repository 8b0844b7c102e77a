"""Plans that adapt, end to end: another round when the results fall short, its bound, and
steering a running plan from its thread (the real bot over HTTP, fake Slack and OpenAI, the
MCP test server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from bot.wording import STEERING_RECEIVED
from scheduler.dag.plan import Plan
from storage.records import EventKind, RunStatus, TaskStatus
from tests.e2e.slack_harness import (
    CHANNEL,
    STEP,
    SUMMARY,
    SlackBot,
    slack_bot_running,
    wire_plan,
    wire_task,
)
from tests.fakes.openai_server import ChatRequest, Reply

TOKYO = "Tokyo: sunny, 24C"
PARIS = "Paris: rain, 14C"
FIRST_ROUND = wire_plan(
    "Weather in Tokyo and Paris",
    wire_task("t1", "tool", "Tokyo weather", tool="test.echo", args={"text": TOKYO}),
    wire_task("t2", "summary", "Report", deps=["t1"]),
)
SECOND_ROUND = wire_plan(
    "Weather in Tokyo and Paris",
    wire_task("t3", "tool", "Paris weather", tool="test.echo", args={"text": PARIS}),
    wire_task("t4", "llm", "Compare", prompt="Compare {{t1}} with {{t3}}.", deps=["t1", "t3"]),
    wire_task("t5", "summary", "Report", deps=["t4"]),
)
MISSING = "The results have Tokyo's weather but nothing on Paris."


@pytest_asyncio.fixture
async def bot(tmp_path: Path) -> AsyncIterator[SlackBot]:
    async with slack_bot_running(tmp_path) as running:
        yield running


def may_replan(request: ChatRequest) -> bool:
    schema = request.body["response_format"]["json_schema"]["schema"]
    return "replan" in schema["properties"]["action"]["enum"]


async def test_a_second_round_reuses_the_first_rounds_output_without_running_it_again(
    bot: SlackBot,
) -> None:
    async def respond(request: ChatRequest) -> Reply | str:
        if request.is_plan_request:
            return Reply.json(SECOND_ROUND if "<reason>" in request.last_user else FIRST_ROUND)
        if request.is_decision:
            done = '<result task="t4"' in request.last_user
            return Reply.answer(SUMMARY) if done else Reply.replan(MISSING)
        return STEP

    bot.openai.respond_with(respond)
    delivery = await bot.mention("compare the weather in Tokyo and Paris")
    await bot.wait_idle()

    run = await bot.run_in_thread(delivery.ts)
    assert run.status is RunStatus.SUCCEEDED
    assert run.plan is not None
    plan = Plan.model_validate(run.plan)
    # The second round's summary took the place of the first's: one summary, shown throughout.
    assert [t.id for t in plan.tasks] == ["t1", "t3", "t4", "t2"]
    assert [(r.reason, r.tasks) for r in plan.rounds] == [(MISSING, ["t3", "t4"])]
    tasks = {t.id: t for t in await bot.store.get_tasks(run.id)}
    assert {i: t.status for i, t in tasks.items()} == dict.fromkeys(tasks, TaskStatus.SUCCEEDED)
    assert tasks["t2"].output == SUMMARY
    events = await bot.store.events(run.id)
    # t1 ran once, in round 1; its output was reused in round 2.
    assert [e.task_id for e in events if e.kind is EventKind.TASK_STARTED].count("t1") == 1
    assert tasks["t1"].attempts == 1
    [step] = bot.openai.text_requests
    assert TOKYO in step.transcript
    assert PARIS in step.transcript
    # The replanner saw the goal, every result so far and the reason.
    replanning = bot.openai.plan_requests[1]
    assert "compare the weather in Tokyo and Paris" in replanning.last_user
    assert TOKYO in replanning.last_user
    assert MISSING in replanning.last_user
    revised = [e for e in events if e.kind is EventKind.RUN_REVISED]
    assert [(e.data or {}).get("round") for e in revised] == [2]
    # LLM calls: 2 plannings, 1 llm step, 2 final steps (the first decided on another round).
    kinds = [
        "plan" if r.is_plan_request else "decide" if r.is_decision else "step"
        for r in bot.openai.requests
    ]
    assert kinds == ["plan", "decide", "plan", "step", "decide"]

    # Slack: one plan message, grown with round 2 and its reason; the answer posted once.
    message = await bot.plan_message(run)
    assert "Paris weather" in message.text
    assert "Round 2" in message.rendered
    assert len(bot.messages_containing(CHANNEL, delivery.ts, "Paris has rain")) == 1


async def test_at_the_bound_the_final_step_answers_with_what_it_has(tmp_path: Path) -> None:
    rounds = 0

    async def respond(request: ChatRequest) -> Reply | str:
        nonlocal rounds
        if request.is_plan_request:
            if "<reason>" not in request.last_user:
                return Reply.json(FIRST_ROUND)
            rounds += 1
            new = f"t{rounds + 2}"
            return Reply.json(
                wire_plan(
                    "More",
                    wire_task(new, "tool", f"Try {rounds}", tool="test.echo", args={"text": new}),
                    wire_task("s", "summary", "Report", deps=["t1", new]),
                )
            )
        if request.is_decision:
            # Never satisfied while it may ask again.
            return Reply.replan(MISSING) if may_replan(request) else Reply.answer("Best effort.")
        return STEP

    async with slack_bot_running(
        tmp_path, responder=respond, env={"DAGBOT_MAX_REPLANS": "1"}
    ) as bot:
        delivery = await bot.mention("compare the weather in Tokyo and Paris")
        await bot.wait_idle()
        run = await bot.run_in_thread(delivery.ts)
        assert run.status is RunStatus.SUCCEEDED
        decisions = [r for r in bot.openai.requests if r.is_decision]
        assert [may_replan(r) for r in decisions] == [True, False]
        assert len(bot.openai.plan_requests) == 2
        tasks = {t.id: t for t in await bot.store.get_tasks(run.id)}
        assert tasks["t2"].output == "Best effort."
        assert "no more steps can be run" in decisions[-1].last_user
        assert len(bot.messages_containing(CHANNEL, delivery.ts, "Best effort.")) == 1


async def test_a_mention_while_the_plan_runs_adds_a_task_and_keeps_the_running_one(
    bot: SlackBot,
) -> None:
    step_gate = asyncio.Event()
    first = wire_plan(
        "Weather in Tokyo",
        wire_task("t1", "tool", "Tokyo weather", tool="test.echo", args={"text": TOKYO}),
        wire_task("t2", "llm", "Describe", prompt="Describe {{t1}}.", deps=["t1"]),
        wire_task("t3", "summary", "Report", deps=["t2"]),
    )
    steered = wire_plan(
        "Weather in Tokyo and Paris",
        wire_task("t4", "tool", "Paris weather", tool="test.echo", args={"text": PARIS}),
        wire_task("t3", "summary", "Report", deps=["t2", "t4"]),
    )

    async def respond(request: ChatRequest) -> Reply | str:
        if request.is_plan_request:
            return Reply.json(steered if "<message>" in request.last_user else first)
        if request.is_decision:
            return Reply.answer(SUMMARY)
        await step_gate.wait()
        return STEP

    bot.openai.respond_with(respond)
    with bot.engine.bus.subscribe() as events:
        delivery = await bot.mention("the weather in Tokyo")
        async for event in events:
            if event.kind is EventKind.TASK_STARTED and event.task_id == "t2":
                break
        steer_mention = await bot.mention("also Paris, please", thread_ts=delivery.ts)
        async for event in events:
            if event.kind is EventKind.RUN_REVISED:
                break
    run = await bot.run_in_thread(delivery.ts)
    # Still one run: the mention steered it. t2 was running all along.
    assert run.status is RunStatus.RUNNING
    tasks = {t.id: t for t in await bot.store.get_tasks(run.id)}
    assert tasks["t2"].status is TaskStatus.RUNNING
    assert "t4" in tasks
    step_gate.set()
    await bot.wait_idle()

    run = await bot.run_in_thread(delivery.ts)
    assert run.status is RunStatus.SUCCEEDED
    assert len(await bot.store.recent_runs()) == 1
    assert run.plan is not None
    assert [t["id"] for t in run.plan["tasks"]] == ["t1", "t2", "t4", "t3"]
    tasks = {t.id: t for t in await bot.store.get_tasks(run.id)}
    assert {i: t.status for i, t in tasks.items()} == dict.fromkeys(tasks, TaskStatus.SUCCEEDED)
    assert tasks["t4"].output == PARIS
    stored = await bot.store.events(run.id)
    starts = [str(e.task_id) for e in stored if e.kind is EventKind.TASK_STARTED]
    assert sorted(starts) == ["t1", "t2", "t3", "t4"]  # each ran once: t2 was not restarted
    [revised] = [e for e in stored if e.kind is EventKind.RUN_REVISED]
    assert revised.data is not None
    assert revised.data["cause"] == "steer"
    assert revised.data["message"] == "also Paris, please"
    assert revised.data["added"] == ["t4"]
    # The planner saw the plan with each task's status, and the message.
    steering = bot.openai.plan_requests[1]
    assert '"status": "running"' in steering.last_user
    assert "also Paris, please" in steering.last_user
    [decision] = [r for r in bot.openai.requests if r.is_decision]
    assert PARIS in decision.last_user
    # Shown in place: the one plan message now holds the added task.
    message = await bot.plan_message(run)
    assert "Paris weather" in message.text
    assert len([m for m in bot.slack.replies(CHANNEL, delivery.ts) if "Plan:" in m.text]) == 1
    # The steering mention was acknowledged with a reaction (no message); the goal was not.
    assert bot.slack.messages[(CHANNEL, steer_mention.ts)].reactions == {
        STEERING_RECEIVED: [bot.slack.bot_user_id]
    }
    assert bot.slack.messages[(CHANNEL, delivery.ts)].reactions == {}
    assert [c.ok for c in bot.slack.calls_to("reactions.add")] == [True]
