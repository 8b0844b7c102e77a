"""What the terminal shows: pure rendering of plans, events, outcomes and stored runs."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest

from bot.cli_render import (
    format_duration,
    one_line,
    render_event,
    render_outcome,
    render_plan_tree,
    render_progress,
    render_run_tree,
    render_runs_table,
    task_label,
    truncate,
)
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from scheduler.dag.state import Run, RunView, TaskState
from storage.records import Event, EventKind, RunRecord, RunStatus, TaskStatus

T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


def tool(task_id: str, title: str, name: str, *deps: str, **args: Any) -> PlanTask:
    return PlanTask(
        id=task_id, kind=TaskKind.TOOL, title=title, tool=name, args=args, deps=list(deps)
    )


def llm(task_id: str, title: str, *deps: str) -> PlanTask:
    return PlanTask(id=task_id, kind=TaskKind.LLM, title=title, prompt="p", deps=list(deps))


def summary(task_id: str, *deps: str) -> PlanTask:
    return PlanTask(id=task_id, kind=TaskKind.SUMMARY, title="Report", deps=list(deps))


WEATHER = Plan(
    title="Compare the weather in Tokyo and Paris",
    tasks=[
        tool("t1", "Tokyo weather", "weather.forecast", city="Tokyo"),
        tool("t2", "Paris weather", "weather.forecast", city="Paris"),
        llm("t3", "Compare", "t1", "t2"),
        summary("t4", "t3"),
    ],
)


def state(task: PlanTask, position: int, **changes: Any) -> TaskState:
    return TaskState(run_id="r1", spec=task, position=position, **changes)


def view(
    plan: Plan | None = WEATHER,
    *,
    status: RunStatus = RunStatus.RUNNING,
    error: str | None = None,
    tasks: dict[str, dict[str, Any]] | None = None,
    updated: float = T0 + 5,
) -> RunView:
    run = Run(
        id="r1",
        goal="Compare the weather in Tokyo and Paris",
        status=status,
        created_at=T0,
        updated_at=updated,
        plan=plan,
        error=error,
    )
    states = tuple(
        state(task, i, **(tasks or {}).get(task.id, {}))
        for i, task in enumerate(plan.tasks if plan else [])
    )
    return RunView(run=run, tasks=states)


# -- small pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("a" * 12, 10, "aaaaaaaaaa… (2 more characters)"),
    ],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("one line", 20, "one line"),
        ("  two\n\n  lines  \n", 20, "two ⏎ lines"),
        ("a long line of text", 10, "a long li…"),
    ],
)
def test_one_line(text: str, limit: int, expected: str) -> None:
    assert one_line(text, limit) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.04, "0.0 s"), (1.25, "1.2 s"), (59.9, "59.9 s"), (61, "1 min 01 s"), (3725, "1 h 02 min")],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (WEATHER.tasks[0], 't1 Tokyo weather · weather.forecast {"city": "Tokyo"}'),
        (tool("t9", "Now", "time.now"), "t9 Now · time.now"),
        (WEATHER.tasks[2], "t3 Compare · llm"),
        (WEATHER.tasks[3], "t4 Report · summary"),
        (
            tool("t5", "Big", "x.y", text="z" * 100),
            't5 Big · x.y {"text": "' + "z" * 49 + "…",
        ),
    ],
)
def test_task_label(task: PlanTask, expected: str) -> None:
    assert task_label(task) == expected


# -- the plan tree --------------------------------------------------------------------------------


def test_the_plan_tree_hangs_each_task_under_the_task_that_needs_it() -> None:
    assert render_plan_tree(WEATHER) == "\n".join(
        [
            "Plan: Compare the weather in Tokyo and Paris",
            "t4 Report · summary",
            "└── t3 Compare · llm",
            '    ├── t1 Tokyo weather · weather.forecast {"city": "Tokyo"}',
            '    └── t2 Paris weather · weather.forecast {"city": "Paris"}',
        ]
    )


def test_a_task_needed_twice_is_drawn_once() -> None:
    plan = Plan(
        title="Shared",
        tasks=[
            tool("t1", "Fetch", "web.fetch"),
            llm("t2", "Extract", "t1"),
            llm("t3", "Judge", "t1"),
            summary("t4", "t2", "t3"),
        ],
    )

    assert render_plan_tree(plan) == "\n".join(
        [
            "Plan: Shared",
            "t4 Report · summary",
            "├── t2 Extract · llm",
            "│   └── t1 Fetch · web.fetch",
            "└── t3 Judge · llm",
            "    └── t1 Fetch (see above)",
        ]
    )


def test_tasks_nothing_needs_are_roots_too() -> None:
    plan = Plan(title="Loose", tasks=[tool("t1", "Orphan", "a.b"), summary("t2")])

    assert render_plan_tree(plan).splitlines()[1:] == ["t1 Orphan · a.b", "t2 Report · summary"]


def test_a_cyclic_plan_still_shows_every_task() -> None:
    plan = Plan(title="Loop", tasks=[llm("t1", "A", "t2"), llm("t2", "B", "t1")])

    lines = render_plan_tree(plan).splitlines()

    assert lines == ["Plan: Loop", "t1 A · llm", "└── t2 B · llm", "    └── t1 A (see above)"]


def test_the_run_tree_shows_statuses_and_notes() -> None:
    running = view(
        tasks={
            "t1": {"status": TaskStatus.SUCCEEDED, "started_at": T0, "finished_at": T0 + 1.5},
            "t2": {"status": TaskStatus.FAILED, "error": "HTTP 503\nfrom upstream"},
            "t3": {"status": TaskStatus.SKIPPED, "error": "Skipped because t2 did not succeed."},
        }
    )

    assert render_run_tree(running).splitlines()[1:] == [
        "○ t4 Report · summary",
        "└── ↷ t3 Compare · llm — Skipped because t2 did not succeed.",
        '    ├── ✓ t1 Tokyo weather · weather.forecast {"city": "Tokyo"} — 1.5 s',
        '    └── ✗ t2 Paris weather · weather.forecast {"city": "Paris"} — '
        "HTTP 503 ⏎ from upstream",
    ]


def test_a_run_being_planned_shows_its_goal() -> None:
    assert render_run_tree(view(None)) == "Planning: Compare the weather in Tokyo and Paris"


def test_progress_counts_tasks_by_status() -> None:
    running = view(
        tasks={
            "t1": {"status": TaskStatus.SUCCEEDED},
            "t2": {"status": TaskStatus.RUNNING, "attempts": 2},
        }
    )

    assert render_progress(running) == "Run r1 · running · 1 of 4 done · 1 running"


# -- one line per event ---------------------------------------------------------------------------


def event(kind: EventKind, task_id: str | None = None, at: float = 1.0, **data: Any) -> Event:
    return Event(seq=1, run_id="r1", kind=kind, at=T0 + at, task_id=task_id, data=data or None)


@pytest.mark.parametrize(
    ("happened", "tasks", "expected"),
    [
        (
            event(EventKind.RUN_CREATED, at=0),
            {},
            "[+0.0s] run r1 planning: Compare the weather in Tokyo and Paris",
        ),
        (event(EventKind.RUN_PLANNED), {}, "[+1.0s] run r1 planned: 4 tasks"),
        (event(EventKind.TASK_STARTED, "t1"), {}, "[+1.0s] ▶ t1 Tokyo weather started"),
        (
            event(EventKind.TASK_STARTED, "t1"),
            {"t1": {"attempts": 2}},
            "[+1.0s] ▶ t1 Tokyo weather started (attempt 2)",
        ),
        (
            event(EventKind.TASK_SUCCEEDED, "t1", at=2.5),
            {"t1": {"output": "Sunny\n24 C", "started_at": T0 + 1, "finished_at": T0 + 2.5}},
            "[+2.5s] ✓ t1 Tokyo weather succeeded in 1.5 s: Sunny ⏎ 24 C",
        ),
        (
            event(EventKind.TASK_SUCCEEDED, "t1"),
            {"t1": {"output": ""}},
            "[+1.0s] ✓ t1 Tokyo weather succeeded",
        ),
        (
            event(EventKind.TASK_RETRIED, "t2", attempt=1, delay=0.25, error="timed out"),
            {},
            "[+1.0s] ↻ t2 Paris weather retrying in 0.2 s after: timed out",
        ),
        (
            event(EventKind.TASK_RETRIED, "t2", manual=True),
            {},
            "[+1.0s] ↻ t2 Paris weather will run again",
        ),
        (
            event(EventKind.TASK_FAILED, "t2", error="weather.forecast failed: no such city"),
            {},
            "[+1.0s] ✗ t2 Paris weather failed: weather.forecast failed: no such city",
        ),
        (
            event(EventKind.TASK_SKIPPED, "t3", error="Skipped because t2 did not succeed."),
            {},
            "[+1.0s] ↷ t3 Compare skipped: Skipped because t2 did not succeed.",
        ),
        (event(EventKind.TASK_CANCELLED, "t1"), {}, "[+1.0s] ⊘ t1 Tokyo weather cancelled"),
        (
            event(EventKind.RUN_FINISHED, status="succeeded"),
            {},
            "[+1.0s] run r1 succeeded",
        ),
        (
            event(EventKind.RUN_FINISHED, status="failed", error="1 task(s) failed"),
            {},
            "[+1.0s] run r1 failed: 1 task(s) failed",
        ),
        (event(EventKind.RUN_CANCELLED), {}, "[+1.0s] run r1 cancelled"),
        (event(EventKind.RUN_RESUMED), {}, "[+1.0s] run r1 resumed"),
    ],
)
def test_render_event(happened: Event, tasks: dict[str, dict[str, Any]], expected: str) -> None:
    assert render_event(happened, view(tasks=tasks)) == expected


# -- the outcome ----------------------------------------------------------------------------------


def test_a_successful_outcome_is_the_summary() -> None:
    done = view(
        status=RunStatus.SUCCEEDED,
        tasks={"t4": {"status": TaskStatus.SUCCEEDED, "output": "  Tokyo is warmer.\n"}},
    )

    assert render_outcome(done) == "Summary:\nTokyo is warmer.\n\nRun r1 succeeded."


def test_a_failed_outcome_lists_what_did_not_succeed() -> None:
    failed = view(
        status=RunStatus.FAILED,
        error="1 task(s) failed and 1 were skipped.",
        tasks={
            "t2": {"status": TaskStatus.FAILED, "error": "no such city"},
            "t3": {"status": TaskStatus.SKIPPED, "error": "Skipped because t2 did not succeed."},
            "t4": {"status": TaskStatus.SUCCEEDED, "output": "Only Tokyo is known."},
        },
    )

    assert render_outcome(failed) == "\n\n".join(
        [
            "Summary:\nOnly Tokyo is known.",
            "Tasks that did not succeed:\n"
            "  ✗ t2 Paris weather: no such city\n"
            "  ↷ t3 Compare: Skipped because t2 did not succeed.",
            "Run r1 failed: 1 task(s) failed and 1 were skipped.",
        ]
    )


def test_a_planning_failure_keeps_its_list_of_problems() -> None:
    message = "I could not make a valid plan.\n- Task 't1' calls unknown tool 'x.y'."

    outcome = render_outcome(view(None, status=RunStatus.FAILED, error=message))

    assert outcome == f"Run r1 failed:\n{message}"


def test_a_cancelled_outcome() -> None:
    cancelled = view(
        status=RunStatus.CANCELLED,
        error="Cancelled.",
        tasks={"t1": {"status": TaskStatus.CANCELLED}, "t4": {"status": TaskStatus.CANCELLED}},
    )

    assert render_outcome(cancelled) == (
        "Tasks that did not succeed:\n  ⊘ t1 Tokyo weather (cancelled)\n\nRun r1 was cancelled."
    )


# -- stored runs ----------------------------------------------------------------------------------


def record(run_id: str, status: RunStatus, goal: str, at: float) -> RunRecord:
    return RunRecord(id=run_id, goal=goal, status=status, created_at=at, updated_at=at)


def test_the_runs_table() -> None:
    runs = [
        record("b2c3d4e5f6", RunStatus.RUNNING, "What time is it\nin Tokyo?", T0 + 3600),
        record("a1b2c3d4e5", RunStatus.SUCCEEDED, "x" * 100, T0),
    ]

    assert render_runs_table(runs, UTC).splitlines() == [
        "ID          STATUS     STARTED              GOAL",
        "b2c3d4e5f6  running    2026-01-01 01:00:00  What time is it ⏎ in Tokyo?",
        "a1b2c3d4e5  succeeded  2026-01-01 00:00:00  " + "x" * 69 + "…",
    ]


def test_no_runs_yet() -> None:
    assert render_runs_table([]).startswith("No runs yet.")
