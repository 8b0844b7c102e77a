"""`runs <id>`: attempts read back from the event log, drawn with rich; the live board's fold."""

from __future__ import annotations

import io
from datetime import UTC

import pytest
from rich.console import Console

from bot.live_board import Board, fit_lines, line_status
from bot.run_details import Attempt, attempts_by_task, render_run_details
from storage.records import Event, EventKind, RunStatus, TaskStatus, UsageTotal
from tests.unit.test_cli_render import T0, WEATHER, view


def event(seq: int, kind: EventKind, at: float, task: str | None = None, **data: object) -> Event:
    return Event(seq=seq, run_id="r1", kind=kind, at=T0 + at, task_id=task, data=data or None)


EVENTS = [
    event(1, EventKind.RUN_CREATED, 0),
    event(2, EventKind.TASK_STARTED, 1, "t1", args={"city": "Tokyo"}),
    event(3, EventKind.TASK_STARTED, 1.5, "t2", args={"city": "Paris"}),
    event(4, EventKind.TASK_RETRIED, 2.5, "t2", error="Timed out after 1 s", delay=0.5),
    event(5, EventKind.TASK_SUCCEEDED, 3, "t1"),
    event(6, EventKind.TASK_STARTED, 3, "t2", args={"city": "Paris"}),
    event(7, EventKind.TASK_FAILED, 4.25, "t2", error="HTTP 500"),
    event(8, EventKind.TASK_STARTED, 5, "t3"),  # dagbot stopped here; t3 ran again on resume
    event(9, EventKind.RUN_RESUMED, 9),
    event(10, EventKind.TASK_STARTED, 10, "t3"),
    event(11, EventKind.TASK_SUCCEEDED, 12, "t3"),
    event(12, EventKind.TASK_SKIPPED, 4.25, "t4", error="Skipped", because="t2"),
]


def render(renderable: object, width: int = 160) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def test_attempts_come_from_the_event_log() -> None:
    attempts = attempts_by_task(EVENTS)

    assert attempts["t1"] == [
        Attempt(
            number=1,
            started_at=T0 + 1,
            args={"city": "Tokyo"},
            ended_at=T0 + 3,
            outcome="succeeded",
        )
    ]
    assert [(a.outcome, a.duration, a.error) for a in attempts["t2"]] == [
        ("retried", 1.0, "Timed out after 1 s"),
        ("failed", 1.25, "HTTP 500"),
    ]
    assert [(a.number, a.outcome, a.duration) for a in attempts["t3"]] == [
        (1, "interrupted", 5.0),
        (2, "succeeded", 2.0),
    ]
    assert "t4" not in attempts  # skipped: never started


def test_a_running_attempt_has_no_end_yet() -> None:
    [attempt] = attempts_by_task(EVENTS[:2])["t1"]
    assert (attempt.outcome, attempt.duration) == ("running", None)


def test_run_details_show_start_times_arguments_and_every_attempt() -> None:
    finished = view(
        status=RunStatus.FAILED,
        error="1 task(s) failed.",
        updated=T0 + 12,
        tasks={
            "t1": {
                "status": TaskStatus.SUCCEEDED,
                "attempts": 1,
                "started_at": T0 + 1,
                "finished_at": T0 + 3,
                "output": "line one\nline two",
            },
            "t2": {
                "status": TaskStatus.FAILED,
                "attempts": 2,
                "started_at": T0 + 3,
                "finished_at": T0 + 4.25,
                "error": "HTTP 500",
            },
            "t3": {"status": TaskStatus.SUCCEEDED, "attempts": 2, "output": "z" * 700},
        },
    )
    usage = [
        UsageTotal(task_id=None, model="m", prompt_tokens=100, completion_tokens=20, calls=1),
        UsageTotal(task_id="t3", model="m", prompt_tokens=50, completion_tokens=10, calls=2),
    ]

    text = render(render_run_details(finished, usage, EVENTS, UTC))
    lines = [line.rstrip() for line in text.splitlines()]

    assert lines[:5] == [
        "Run r1 · failed · started 2026-01-01 00:00:00 · took 12.0 s",
        "Goal: Compare the weather in Tokyo and Paris",
        "Plan: Compare the weather in Tokyo and Paris",
        "Error: 1 task(s) failed.",
        "Planning: 120 tokens (100 prompt + 20 completion, 1 call, m)",
    ]
    assert '✓ t1 Tokyo weather · weather.forecast {"city": "Tokyo"}' in lines
    assert "    succeeded · 1 attempt · started 2026-01-01 00:00:01 · 2.0 s" in lines
    assert "    failed · 2 attempts · started 2026-01-01 00:00:03 · 1.2 s" in lines
    rows = [line.split() for line in lines if line.strip().startswith(("1 ", "2 "))]
    assert ["1", "2026-01-01", "00:00:01.5", "1.0", "s", "retried", '{"city":', '"Paris"}']
    assert any(
        row[:6] == ["1", "2026-01-01", "00:00:01", "1.0", "s", "retried"]
        and " ".join(row[6:]) == '{"city": "Paris"} · Timed out after 1 s'
        for row in rows
    ), text
    assert any(
        row[:6] == ["2", "2026-01-01", "00:00:03", "1.2", "s", "failed"]
        and " ".join(row[6:]) == '{"city": "Paris"} · HTTP 500'
        for row in rows
    ), text
    assert any(row[4:6] == ["s", "interrupted"] for row in rows), text
    assert "    output: line one" in lines
    assert "            line two" in lines
    assert "    error:  HTTP 500" in lines or "    error: HTTP 500" in lines
    assert "z" * 600 + "…(100morecharacters)" in text.replace("\n", "").replace(" ", "")
    assert lines[-1] == "Tokens in all: 180 tokens (150 prompt + 30 completion, 3 calls, m)"


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("Plan: Compare", None),
        ("✓ t4 Report · summary", TaskStatus.SUCCEEDED),
        ("    ├── ▶ t1 Tokyo weather", TaskStatus.RUNNING),
        ("│   └── ○ t2 x", TaskStatus.PENDING),
        ("    └── ✗ t3 x — HTTP 500", TaskStatus.FAILED),
    ],
)
def test_line_status(line: str, status: TaskStatus | None) -> None:
    assert line_status(line) == status


TALL = [
    "Plan: tall",
    *(f"├── ✓ t{i} done" for i in range(1, 11)),
    "├── ▶ t11 running",
    "├── ✗ t12 failed",
    *(f"├── ○ t{i} waiting" for i in range(13, 21)),
]


def test_a_tree_that_fits_is_left_alone() -> None:
    assert fit_lines(TALL, 21) == TALL


@pytest.mark.parametrize("height", [20, 15, 10, 6, 4, 2])
def test_a_tall_tree_folds_finished_tasks_first_then_waiting_ones(height: int) -> None:
    fitted = fit_lines(TALL, height)

    assert len(fitted) <= height
    assert fitted[0] == "Plan: tall"
    if height >= 6:
        assert "├── ▶ t11 running" in fitted
        assert "├── ✗ t12 failed" in fitted
    if height >= 15:
        assert "├── ○ t20 waiting" in fitted  # nothing waiting folded while done ones can be
    assert any("…" in line for line in fitted)


def test_the_board_is_never_taller_than_the_window() -> None:
    tall_view = view(
        tasks={task.id: {"status": TaskStatus.SUCCEEDED} for task in WEATHER.tasks[:2]}
    )
    for height in (3, 4, 5, 8):
        out = io.StringIO()
        console = Console(file=out, width=60, height=height, color_system=None)
        console.print(Board(tall_view), height=height)
        assert len(out.getvalue().splitlines()) <= height, out.getvalue()
