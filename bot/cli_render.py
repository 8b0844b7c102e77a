"""What the terminal shows, as pure functions of plain data (plans, runs, events, usage)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo

from bot import wording
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from scheduler.dag.state import RunView, TaskState
from storage.records import Event, EventKind, RunRecord, RunStatus, TaskStatus

MARK = {
    TaskStatus.PENDING: "○",
    TaskStatus.AWAITING_APPROVAL: "?",
    TaskStatus.RUNNING: "▶",
    TaskStatus.SUCCEEDED: "✓",
    TaskStatus.FAILED: "✗",
    TaskStatus.SKIPPED: "↷",
    TaskStatus.CANCELLED: "⊘",
}
RETRY_MARK = "↻"
ARGS_CHARS = 60
LINE_CHARS = 160
OUTPUT_CHARS = 600
GOAL_CHARS = 70


# -- small pieces ---------------------------------------------------------------------------------


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, ending with the same marker as in Slack when anything was cut."""
    return wording.truncate(text, limit)


def one_line(text: str, limit: int = LINE_CHARS) -> str:
    """The text on one line (newlines shown as ' ⏎ '), cut to `limit` characters."""
    flat = " ⏎ ".join(part.strip() for part in text.strip().splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_when(timestamp: float, tz: tzinfo | None = None) -> str:
    """Local time by default; tests pass a zone."""
    return datetime.fromtimestamp(timestamp, tz).strftime("%Y-%m-%d %H:%M:%S")


def task_label(task: PlanTask) -> str:
    """`t1 Tokyo weather · weather.forecast {"city": "Tokyo"}`, `t3 Compare · llm`."""
    if task.kind is TaskKind.TOOL:
        args = json.dumps(task.args, ensure_ascii=False) if task.args else ""
        detail = f"{task.tool or '?'} {one_line(args, ARGS_CHARS)}".rstrip()
    else:
        detail = task.kind.value
    return f"{task.id} {task.title} · {detail}"


# -- the plan as a tree ---------------------------------------------------------------------------


def render_plan_tree(
    plan: Plan,
    statuses: Mapping[str, TaskStatus] | None = None,
    notes: Mapping[str, str] | None = None,
) -> str:
    """The plan as a tree, each task under the task that needs it (the summary at the top).

    A task that several tasks need is drawn in full once and named "(see above)" after that.
    With `statuses`, each line starts with its status mark; `notes` are appended to lines.
    """
    by_id = {task.id: task for task in plan.tasks}
    needed = {dep for task in plan.tasks for dep in task.deps}
    roots = [task for task in plan.tasks if task.id not in needed] or plan.tasks[:1]
    lines = [f"Plan: {plan.title}"]
    shown: set[str] = set()

    def line(task: PlanTask, prefix: str, branch: str, repeat: bool) -> str:
        mark = f"{MARK[statuses.get(task.id, TaskStatus.PENDING)]} " if statuses is not None else ""
        label = f"{task.id} {task.title} (see above)" if repeat else task_label(task)
        note = (notes or {}).get(task.id)
        return f"{prefix}{branch}{mark}{label}" + (f" — {note}" if note and not repeat else "")

    def draw(task: PlanTask, prefix: str, branch: str, child_prefix: str) -> None:
        repeat = task.id in shown
        lines.append(line(task, prefix, branch, repeat))
        if repeat:
            return
        shown.add(task.id)
        deps = [by_id[dep] for dep in task.deps if dep in by_id]
        for index, dep in enumerate(deps):
            last = index == len(deps) - 1
            draw(
                dep,
                prefix + child_prefix,
                "└── " if last else "├── ",
                "    " if last else "│   ",
            )

    for root in roots:
        draw(root, "", "", "")
    # Tasks only reachable through a cycle (an invalid plan) would otherwise be missing.
    for task in plan.tasks:
        if task.id not in shown:
            draw(task, "", "", "")
    return "\n".join(lines)


def render_run_tree(view: RunView) -> str:
    """The run's plan with each task's status, and a short note for finished tasks."""
    if view.run.plan is None:
        return f"Planning: {view.run.goal}"
    plan = view.run.plan
    statuses = {task.id: task.status for task in view.tasks}
    notes = {task.id: note for task in view.tasks if (note := _task_note(task))}
    for task in view.tasks:
        number = plan.round_of(task.id)
        if number > 1:
            notes[task.id] = f"round {number}" + (f", {notes[task.id]}" if task.id in notes else "")
    tree = render_plan_tree(plan, statuses, notes).split("\n")
    rounds = [wording.round_line(n, r.reason) for n, r in enumerate(plan.rounds, start=2)]
    return "\n".join([tree[0], *rounds, *tree[1:]])


def _task_note(task: TaskState) -> str | None:
    if task.status is TaskStatus.AWAITING_APPROVAL:
        return "awaiting approval"
    if task.status is TaskStatus.RUNNING:
        return f"running (attempt {task.attempts})" if task.attempts > 1 else "running"
    if task.status in (TaskStatus.FAILED, TaskStatus.SKIPPED) and task.error:
        return one_line(task.error, 80)
    if task.status is TaskStatus.SUCCEEDED and task.started_at and task.finished_at:
        return format_duration(task.finished_at - task.started_at)
    return None


def render_progress(view: RunView) -> str:
    """`Run r1 · Running · 3 of 5 tasks done · 1 running · 1 failed`: the Slack plan's line."""
    if not view.tasks:
        return f"Run {view.run.id} · {wording.RUN_WORDS[view.run.status]}"
    line = wording.progress_line(view.run.status, (task.status for task in view.tasks))
    return f"Run {view.run.id} · {line}"


# -- one line per event (when stdout is not a terminal) -------------------------------------------


def render_event(event: Event, view: RunView) -> str | None:
    """One line for a progress event, or None for events that say nothing new here."""
    data = event.data or {}
    error = str(data.get("error") or "")
    task = _find(view, event.task_id)
    title = f"{task.id} {task.spec.title}" if task else str(event.task_id)
    stamp = f"[+{max(0.0, event.at - view.run.created_at):.1f}s]"
    match event.kind:
        case EventKind.RUN_CREATED:
            text = f"run {event.run_id} planning: {one_line(view.run.goal, GOAL_CHARS)}"
        case EventKind.RUN_PLANNED:
            plan = view.run.plan
            text = f"run {event.run_id} planned: {len(plan.tasks) if plan else 0} tasks"
        case EventKind.RUN_RESUMED:
            text = f"run {event.run_id} resumed"
        case EventKind.TASK_AWAITING_APPROVAL:
            args = json.dumps(data.get("args") or {}, ensure_ascii=False)
            text = f"{MARK[TaskStatus.AWAITING_APPROVAL]} {title} awaits approval: {args}"
        case EventKind.TASK_APPROVED:
            text = f"{MARK[TaskStatus.PENDING]} {title} approved"
        case EventKind.TASK_STARTED:
            attempt = f" (attempt {task.attempts})" if task and task.attempts > 1 else ""
            text = f"{MARK[TaskStatus.RUNNING]} {title} started{attempt}"
        case EventKind.TASK_SUCCEEDED:
            output = one_line(task.output or "", 100) if task else ""
            took = (
                f" in {format_duration(task.finished_at - task.started_at)}"
                if task and task.started_at and task.finished_at
                else ""
            )
            text = f"{MARK[TaskStatus.SUCCEEDED]} {title} succeeded{took}: {output}".rstrip(": ")
        case EventKind.TASK_RETRIED:
            if data.get("manual"):
                text = f"{RETRY_MARK} {title} will run again"
            else:
                delay = f" in {float(data['delay']):.1f} s" if "delay" in data else ""
                text = f"{RETRY_MARK} {title} retrying{delay} after: {one_line(error)}"
        case EventKind.TASK_FAILED:
            text = f"{MARK[TaskStatus.FAILED]} {title} failed: {one_line(error)}"
        case EventKind.TASK_SKIPPED:
            text = f"{MARK[TaskStatus.SKIPPED]} {title} skipped: {one_line(error)}"
        case EventKind.TASK_CANCELLED:
            text = f"{MARK[TaskStatus.CANCELLED]} {title} cancelled"
        case EventKind.RUN_FINISHED:
            status = str(data.get("status") or view.run.status.value)
            text = f"run {event.run_id} {status}" + (f": {one_line(error)}" if error else "")
        case EventKind.RUN_CANCELLED:
            text = f"run {event.run_id} cancelled"
        case EventKind.RUN_REPLANNING:
            text = f"run {event.run_id} needs another round: {one_line(str(data.get('reason')))}"
        case EventKind.RUN_REVISED:
            text = f"run {event.run_id}: {wording.revision_line(data)}"
        case _:
            return None
    return f"{stamp} {text}"


def _find(view: RunView, task_id: str | None) -> TaskState | None:
    return next((task for task in view.tasks if task.id == task_id), None)


# -- the outcome ----------------------------------------------------------------------------------


def summary_task(view: RunView) -> TaskState | None:
    return next((task for task in view.tasks if task.kind is TaskKind.SUMMARY), None)


def render_outcome(view: RunView) -> str:
    """What a finished run came to: the summary, what failed, or why it could not be planned."""
    run = view.run
    blocks: list[str] = []
    summary = summary_task(view)
    if summary is not None and summary.output:
        blocks.append(f"Summary:\n{summary.output.strip()}")
    problems = [
        f"  {MARK[task.status]} {task.id} {task.spec.title}: {one_line(task.error or '')}"
        if task.error
        else f"  {MARK[task.status]} {task.id} {task.spec.title} ({task.status.value})"
        for task in view.tasks
        if task.status in (TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED)
        and task.kind is not TaskKind.SUMMARY
    ]
    if problems:
        blocks.append("Tasks that did not succeed:\n" + "\n".join(problems))
    if run.status is RunStatus.SUCCEEDED:
        blocks.append(f"Run {run.id} succeeded.")
    elif run.status is RunStatus.CANCELLED:
        blocks.append(f"Run {run.id} was cancelled.")
    else:
        # A planning failure's message lists the problems over several lines: keep them.
        error = (run.error or "").strip()
        reason = f":\n{error}" if "\n" in error else f": {error}" if error else "."
        blocks.append(f"Run {run.id} {run.status.value}{reason}")
    return "\n\n".join(blocks)


# -- `python -m bot runs` -------------------------------------------------------------------------


def render_runs_table(runs: Sequence[RunRecord], tz: tzinfo | None = None) -> str:
    """Recent runs, newest first: id, status, when, goal."""
    if not runs:
        return 'No runs yet. Start one with: dagbot run "<goal>"'
    rows = [("ID", "STATUS", "STARTED", "GOAL")] + [
        (run.id, run.status.value, format_when(run.created_at, tz), one_line(run.goal, GOAL_CHARS))
        for run in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    )
