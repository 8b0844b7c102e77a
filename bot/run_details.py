"""`runs <id>`: one run task by task, each attempt with its start, arguments, duration and error.

Pure functions of stored data: the attempts are read back from the event log (a task_started
event carries the arguments actually sent, after `{{tN}}` substitution), and drawn with rich.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from bot.cli_render import MARK, format_duration, format_when, task_label, truncate
from bot.wording import revision_line, round_line
from scheduler.dag.state import RunView, TaskState
from storage.records import Event, EventKind, UsageTotal

OUTPUT_CHARS = 600
ARGS_CHARS = 300

# Events that end an attempt, and what the attempt came to.
_ENDS = {
    EventKind.TASK_SUCCEEDED: "succeeded",
    EventKind.TASK_FAILED: "failed",
    EventKind.TASK_RETRIED: "retried",
    EventKind.TASK_CANCELLED: "cancelled",
}


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One try of a task: when it started, what it was sent, how it ended (if it did)."""

    number: int
    started_at: float
    args: dict[str, Any] | None = None
    ended_at: float | None = None
    outcome: str = "running"
    error: str | None = None

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else max(0.0, self.ended_at - self.started_at)


def attempts_by_task(events: Iterable[Event]) -> dict[str, list[Attempt]]:
    """Each task's attempts, in order, from the run's event log.

    An attempt still open when the next one starts was cut short by a stop of dagbot.
    """
    attempts: dict[str, list[Attempt]] = {}
    for event in events:
        if event.task_id is None:
            continue
        data = event.data or {}
        tried = attempts.setdefault(event.task_id, [])
        open_attempt = tried[-1] if tried and tried[-1].ended_at is None else None
        if event.kind is EventKind.TASK_STARTED:
            if open_attempt is not None:
                tried[-1] = _ended(open_attempt, event.at, "interrupted", "dagbot stopped")
            args = data.get("args")
            tried.append(
                Attempt(
                    number=len(tried) + 1,
                    started_at=event.at,
                    args=args if isinstance(args, dict) else None,
                )
            )
        elif event.kind in _ENDS and open_attempt is not None:
            error = data.get("error")
            tried[-1] = _ended(
                open_attempt, event.at, _ENDS[event.kind], str(error) if error else None
            )
    return {task_id: tried for task_id, tried in attempts.items() if tried}


def _ended(attempt: Attempt, at: float, outcome: str, error: str | None) -> Attempt:
    return Attempt(
        number=attempt.number,
        started_at=attempt.started_at,
        args=attempt.args,
        ended_at=at,
        outcome=outcome,
        error=error,
    )


def render_run_details(
    view: RunView,
    usage: Sequence[UsageTotal],
    events: Sequence[Event],
    tz: tzinfo | None = None,
) -> RenderableType:
    """The run's header, then each task: status, timing, tokens, attempts, output or error."""
    run = view.run
    took = (
        f" · took {format_duration(run.updated_at - run.created_at)}" if run.status.finished else ""
    )
    header: list[RenderableType] = [
        Text(
            f"Run {run.id} · {run.status.value} · started {format_when(run.created_at, tz)}{took}"
        ),
        Text(f"Goal: {run.goal}"),
    ]
    if run.requester:
        header.append(Text(f"Requested by: {run.requester}"))
    if run.plan is not None:
        header.append(Text(f"Plan: {run.plan.title}"))
        header.extend(
            Text(f"{round_line(number, planned.reason)} (added {', '.join(planned.tasks)})")
            for number, planned in enumerate(run.plan.rounds, start=2)
        )
    header.extend(
        Text(revision_line(event.data or {}))
        for event in events
        if event.kind is EventKind.RUN_REVISED and (event.data or {}).get("cause") == "steer"
    )
    if run.error:
        header.append(Text(f"Error: {run.error}"))
    planner = tokens_line([u for u in usage if u.task_id is None])
    if planner:
        header.append(Text(f"Planning: {planner}"))
    parts: list[RenderableType] = header
    attempts = attempts_by_task(events)
    for task in view.tasks:
        parts.append(Text(""))
        parts.extend(_task(task, attempts.get(task.id, []), usage, tz))
    total = tokens_line(list(usage))
    if total:
        parts += [Text(""), Text(f"Tokens in all: {total}")]
    return Group(*parts)


def _task(
    task: TaskState, attempts: Sequence[Attempt], usage: Sequence[UsageTotal], tz: tzinfo | None
) -> list[RenderableType]:
    facts = [task.status.value, f"{task.attempts} attempt{'s' if task.attempts != 1 else ''}"]
    if task.started_at:
        facts.append(f"started {format_when(task.started_at, tz)}")
    if task.started_at and task.finished_at:
        facts.append(format_duration(task.finished_at - task.started_at))
    if task.spec.deps:
        facts.append("after " + ", ".join(task.spec.deps))
    tokens = tokens_line([u for u in usage if u.task_id == task.id])
    if tokens:
        facts.append(tokens)
    lines: list[RenderableType] = [
        Text(f"{MARK[task.status]} {task_label(task.spec)}"),
        Padding(Text(" · ".join(facts)), (0, 0, 0, 4), expand=False),
    ]
    if attempts:
        lines.append(Padding(attempts_table(attempts, tz), (0, 0, 0, 4), expand=False))
    if task.output:
        lines.append(_labelled("output", truncate(task.output.strip(), OUTPUT_CHARS)))
    if task.error:
        lines.append(_labelled("error", truncate(task.error.strip(), OUTPUT_CHARS)))
    return lines


def attempts_table(attempts: Sequence[Attempt], tz: tzinfo | None = None) -> Table:
    """One row per attempt: number, start time, duration, outcome, arguments sent, error."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("started")
    table.add_column("took", justify="right")
    table.add_column("result")
    table.add_column("arguments sent · error", overflow="fold")
    for attempt in attempts:
        duration = attempt.duration
        detail = []
        if attempt.args:
            detail.append(truncate(json.dumps(attempt.args, ensure_ascii=False), ARGS_CHARS))
        if attempt.error:
            detail.append(truncate(attempt.error.strip(), ARGS_CHARS))
        table.add_row(
            str(attempt.number),
            format_when(attempt.started_at, tz),
            format_duration(duration) if duration is not None else "",
            attempt.outcome,
            " · ".join(detail),
        )
    return table


def _labelled(label: str, text: str) -> RenderableType:
    grid = Table.grid(padding=(0, 1), pad_edge=False)
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row(f"{label}:", text)
    return Padding(grid, (0, 0, 0, 4), expand=False)


def tokens_line(usage: Sequence[UsageTotal]) -> str:
    """`180 tokens (150 prompt + 30 completion, 3 calls, m)`, or "" without usage."""
    if not usage:
        return ""
    prompt = sum(u.prompt_tokens for u in usage)
    completion = sum(u.completion_tokens for u in usage)
    calls = sum(u.calls for u in usage)
    models = ", ".join(sorted({u.model for u in usage}))
    return (
        f"{prompt + completion} tokens ({prompt} prompt + {completion} completion, "
        f"{calls} call{'s' if calls != 1 else ''}, {models})"
    )
