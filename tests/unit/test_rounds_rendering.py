"""Rounds and steering as every front end shows them: Slack's plan, the terminal, `runs <id>`."""

from __future__ import annotations

import dataclasses

import pytest

from bot.blocks import plan_message
from bot.cli_render import render_event, render_run_tree
from bot.run_details import render_run_details
from bot.wording import revision_line
from scheduler.dag.plan import PlanRound, TaskKind
from storage.records import EventKind, RunStatus, TaskStatus
from tests.unit.test_blocks import make_task, make_view, texts
from tests.unit.test_cli_render import WEATHER, view
from tests.unit.test_plan_blocks import assert_slack_accepts
from tests.unit.test_run_details import event, render

REASON = "Paris is missing: its weather server failed."


def two_rounds(classic: bool = False) -> str:
    tasks = [
        make_task(1, TaskStatus.SUCCEEDED, output="Tokyo: 24C"),
        make_task(2, TaskStatus.RUNNING),
        make_task(3, kind=TaskKind.SUMMARY, deps=["t1", "t2"]),
    ]
    base = make_view(tasks)
    assert base.run.plan is not None
    plan = base.run.plan.model_copy(update={"rounds": [PlanRound(reason=REASON, tasks=["t2"])]})
    rounds = dataclasses.replace(base, run=dataclasses.replace(base.run, plan=plan))
    message = plan_message(rounds, classic=classic)
    assert_slack_accepts(message.blocks, message.text)
    return f"{texts(message.blocks)}\n{message.text}"


@pytest.mark.parametrize("classic", [False, True])
def test_the_plan_message_shows_each_round_and_its_reason(classic: bool) -> None:
    shown = two_rounds(classic)
    assert f"Round 2: {REASON}" in shown
    assert "round 2 · tool" in shown


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (
            {"cause": "replan", "round": 2, "added": ["t5", "t6"], "removed": []},
            "Round 2 planned (+t5, +t6)",
        ),
        (
            {"cause": "steer", "message": "also\nParis", "added": ["t4"], "removed": ["t3"]},
            "Plan revised for “also Paris” (+t4, -t3)",
        ),
        (
            {"cause": "steer", "message": "x", "failed": "no plan"},
            "Could not revise the plan for “x”: no plan",
        ),
        (
            {"cause": "replan", "round": 3, "failed": "no plan"},
            "No further round could be planned: no plan",
        ),
    ],
)
def test_revision_lines(data: dict[str, object], line: str) -> None:
    assert revision_line(data) == line


def test_the_terminal_shows_rounds_in_the_tree_and_the_log() -> None:
    plan = WEATHER.model_copy(update={"rounds": [PlanRound(reason=REASON, tasks=["t3"])]})
    shown = view(plan, tasks={"t1": {"status": TaskStatus.SUCCEEDED}})
    tree = render_run_tree(shown)
    assert tree.split("\n")[1] == f"Round 2: {REASON}"
    [compare] = [line for line in tree.split("\n") if "t3 Compare" in line]
    assert "round 2" in compare
    replanning = event(5, EventKind.RUN_REPLANNING, 1.0, "t4", reason=REASON, round=2)
    assert f"needs another round: {REASON}" in (render_event(replanning, shown) or "")
    revised = event(6, EventKind.RUN_REVISED, 2.0, cause="replan", round=2, added=["t3"])
    assert "Round 2 planned (+t3)" in (render_event(revised, shown) or "")


def test_runs_details_list_the_rounds_and_steering() -> None:
    plan = WEATHER.model_copy(update={"rounds": [PlanRound(reason=REASON, tasks=["t3"])]})
    shown = view(plan, status=RunStatus.SUCCEEDED)
    steered = event(7, EventKind.RUN_REVISED, 3.0, cause="steer", message="add Paris", added=["t2"])
    out = render(render_run_details(shown, [], [steered]))
    assert f"Round 2: {REASON} (added t3)" in out
    assert "Plan revised for “add Paris” (+t2)" in out
