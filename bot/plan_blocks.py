"""The plan message: a native `plan` of task cards (or classic sections) that always fits.

Slack caps one message at 50 blocks and about 12,000 characters of text across its blocks
(`msg_blocks_too_long`). The plan is rendered at the richest level of detail that fits that
budget: outputs, errors and details shrink as the plan grows, then tasks fold into an
"N more" line. No text is ever blank (Slack refuses empty task-card titles and rich text).
Pure functions of a `RunView`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    PlanBlock,
    SectionBlock,
    TaskCardBlock,
)

from bot.approval_blocks import approval_blocks, awaiting_output, denial_mrkdwn, denial_output
from bot.block_kit import (
    MAX_BLOCKS,
    MAX_BLOCKS_TEXT,
    MAX_CONTEXT_TEXT,
    MAX_HEADER_TEXT,
    MAX_MESSAGE_TEXT,
    MAX_SECTION_TEXT,
    SlackMessage,
    blocks_text_length,
    defuse_mentions,
    short_id,
    truncate_mrkdwn,
)
from bot.rich_text import plain_rich_text, rich_text, url_sources
from bot.wording import (
    TASK_WORDS,
    excerpt,
    more_tasks,
    one_line,
    progress_line,
    round_line,
    truncate,
)
from scheduler.dag.plan import TaskKind
from scheduler.dag.state import Run, RunView, TaskState
from storage.records import RunStatus, TaskStatus

MAX_TITLE = 150
MAX_SNIPPET = 280
MAX_ERROR = 500
SUMMARY_EXCERPT = 150
"""The summary task's card shows one line of the summary: the summary itself follows below."""

CANCEL_ACTION = "dagbot_cancel"
RETRY_ACTION = "dagbot_retry"

TASK_CARD_STATUS: Mapping[TaskStatus, str] = MappingProxyType(
    {
        TaskStatus.PENDING: "pending",
        TaskStatus.AWAITING_APPROVAL: "pending",
        TaskStatus.RUNNING: "in_progress",
        TaskStatus.SUCCEEDED: "complete",
        TaskStatus.FAILED: "error",
        TaskStatus.SKIPPED: "error",
        TaskStatus.CANCELLED: "error",
    }
)

TASK_EMOJI: Mapping[TaskStatus, str] = MappingProxyType(
    {
        TaskStatus.PENDING: ":white_circle:",
        TaskStatus.AWAITING_APPROVAL: ":raised_hand:",
        TaskStatus.RUNNING: ":arrows_counterclockwise:",
        TaskStatus.SUCCEEDED: ":white_check_mark:",
        TaskStatus.FAILED: ":x:",
        TaskStatus.SKIPPED: ":heavy_minus_sign:",
        TaskStatus.CANCELLED: ":no_entry_sign:",
    }
)

RUN_EMOJI: Mapping[RunStatus, str] = MappingProxyType(
    {
        RunStatus.PLANNING: ":hourglass_flowing_sand:",
        RunStatus.RUNNING: ":arrows_counterclockwise:",
        RunStatus.SUCCEEDED: ":white_check_mark:",
        RunStatus.FAILED: ":warning:",
        RunStatus.CANCELLED: ":no_entry_sign:",
    }
)

# What the card says about a task whose card status is just "error".
ERROR_LABEL: Mapping[TaskStatus, str] = MappingProxyType(
    {TaskStatus.FAILED: "Failed", TaskStatus.SKIPPED: "Skipped", TaskStatus.CANCELLED: "Cancelled"}
)


@dataclass(frozen=True, kw_only=True)
class Detail:
    """How much of each task a plan message shows; the plan picks the richest that fits."""

    title: int
    output: int
    error: int
    details: bool
    sources: int


DETAIL_LEVELS: tuple[Detail, ...] = (
    Detail(title=MAX_TITLE, output=MAX_SNIPPET, error=MAX_ERROR, details=True, sources=5),
    Detail(title=MAX_TITLE, output=120, error=200, details=True, sources=3),
    Detail(title=100, output=60, error=100, details=False, sources=0),
    Detail(title=60, output=0, error=60, details=False, sources=0),
)
SMALLEST = DETAIL_LEVELS[-1]


# ---- the message -----------------------------------------------------------------------------


def plan_message(view: RunView, *, classic: bool = False, smallest: bool = False) -> SlackMessage:
    """The plan message of a run: a native `plan` of task cards, or classic sections.

    Before the run has a plan this is the "planning…" placeholder that later becomes the plan.
    `smallest` renders the least detail (what to try after Slack refused a richer one).
    """
    if view.run.plan is None:
        return placeholder_message(view.run)
    fixed: list[Block] = []
    rounds = _rounds_context(view)
    if rounds is not None:
        fixed.append(rounds)
    fixed.append(_status_context(view))
    actions = _actions(view)
    if actions is not None:
        fixed.append(actions)
    # Approve / Deny of tasks awaiting approval: under the plan, above the run's status line.
    fixed_dicts = [*approval_blocks(view), *(b.to_dict() for b in fixed)]
    budget = MAX_BLOCKS_TEXT - blocks_text_length(fixed_dicts)
    room = MAX_BLOCKS - len(fixed_dicts)
    levels = (SMALLEST,) if smallest else DETAIL_LEVELS
    body = (
        _classic_body(view, room, budget, levels)
        if classic
        else _native_body(view, room, budget, levels)
    )
    return SlackMessage(text=plan_text(view), blocks=[*body, *fixed_dicts])


def placeholder_message(run: Run) -> SlackMessage:
    """Shown while the planner works, when the thread status cannot be set."""
    if run.status is RunStatus.PLANNING:
        line = f"{RUN_EMOJI[RunStatus.PLANNING]} Planning: {one_line(run.goal)}"
    elif run.status is RunStatus.CANCELLED:
        line = f"{RUN_EMOJI[RunStatus.CANCELLED]} Cancelled before a plan was made."
    else:
        line = f"{RUN_EMOJI[RunStatus.FAILED]} No plan could be made (see below)."
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=truncate_mrkdwn(line, 2900)))]
    if not run.status.finished:
        blocks.append(ActionsBlock(elements=[_cancel_button(run.id)]))
    text = defuse_mentions(truncate(line, MAX_MESSAGE_TEXT))
    return SlackMessage(text=text, blocks=[b.to_dict() for b in blocks])


def plan_text(view: RunView) -> str:
    """The plain-text fallback of the plan message (notifications, screen readers)."""
    title = view.run.plan.title if view.run.plan is not None else view.run.goal
    head = f"Plan: {one_line(title)} ({status_line(view)})"
    lines = [truncate(head, 400)]
    rounds = view.run.plan.rounds if view.run.plan is not None else []
    lines += [truncate(round_line(n, r.reason), 400) for n, r in enumerate(rounds, start=2)]
    size = len(lines[0])
    for index, task in enumerate(view.tasks):
        line = f"• [{task.status.value}] {truncate(task_title(task), 120)}"
        rest = len(view.tasks) - index
        if size + len(line) + 1 > MAX_MESSAGE_TEXT - 200:
            lines.append(f"… and {rest} more task{'s' if rest != 1 else ''}")
            break
        lines.append(line)
        size += len(line) + 1
    # Escaping may lengthen the text: the margin above leaves room for it.
    return truncate(defuse_mentions("\n".join(lines)), MAX_MESSAGE_TEXT)


def status_line(view: RunView) -> str:
    """One line on where the run stands, e.g. `Running · 3 of 7 tasks done · 1 failed`."""
    return progress_line(view.run.status, (task.status for task in view.tasks))


def task_title(task: TaskState) -> str:
    """The task's title on one line, mentions defused; never blank (Slack refuses those)."""
    return defuse_mentions(one_line(task.spec.title)) or f"Task {task.id}"


def round_of(view: RunView, task: TaskState) -> int:
    """The planning round that added the task (1 unless the final step asked for more)."""
    return view.run.plan.round_of(task.id) if view.run.plan is not None else 1


MAX_ROUND_REASON = 300


def _rounds_context(view: RunView) -> ContextBlock | None:
    """One line per round after the first, with the reason the final step gave for it."""
    plan = view.run.plan
    if plan is None or not plan.rounds:
        return None
    lines = [
        defuse_mentions(truncate(round_line(number, planned.reason), MAX_ROUND_REASON))
        for number, planned in enumerate(plan.rounds, start=2)
    ]
    text = truncate_mrkdwn("\n".join(lines), MAX_CONTEXT_TEXT)
    return ContextBlock(elements=[MarkdownTextObject(text=text)])


def _status_context(view: RunView) -> ContextBlock:
    run = view.run
    line = f"{RUN_EMOJI[run.status]} {status_line(view)} · run `{short_id(run.id)}`"
    if run.requester:
        line += f" · requested by <@{run.requester}>"
    return ContextBlock(elements=[MarkdownTextObject(text=truncate(line, MAX_CONTEXT_TEXT))])


def _actions(view: RunView) -> ActionsBlock | None:
    run = view.run
    if not run.status.finished:
        return ActionsBlock(elements=[_cancel_button(run.id)])
    retryable = run.status in (RunStatus.FAILED, RunStatus.CANCELLED) and any(
        task.status is not TaskStatus.SUCCEEDED for task in view.tasks
    )
    if retryable:
        button = ButtonElement(
            text=PlainTextObject(text="Retry failed tasks"),
            action_id=RETRY_ACTION,
            value=run.id,
            style="primary",
        )
        return ActionsBlock(elements=[button])
    return None


def _cancel_button(run_id: str) -> ButtonElement:
    return ButtonElement(
        text=PlainTextObject(text="Cancel"),
        action_id=CANCEL_ACTION,
        value=run_id,
        style="danger",
        confirm=ConfirmObject(
            title="Cancel this run?",
            text="Running tasks are stopped and the rest are not started.",
            confirm="Cancel run",
            deny="Keep running",
        ),
    )


def _overflow_line(hidden: Sequence[TaskState]) -> dict[str, Any]:
    counts = Counter(TASK_CARD_STATUS[task.status] for task in hidden)
    order = ("complete", "in_progress", "pending", "error")
    names = {
        "complete": "complete",
        "in_progress": TASK_WORDS[TaskStatus.RUNNING],
        "pending": TASK_WORDS[TaskStatus.PENDING],
    }
    detail = ", ".join(
        f"{counts[status]} {names.get(status, 'with problems')}"
        for status in order
        if counts[status]
    )
    text = more_tasks(len(hidden), detail)
    return ContextBlock(elements=[MarkdownTextObject(text=text)]).to_dict()


def _fold(
    sized: Sequence[tuple[dict[str, Any] | str, int]], room: int, budget: int, reserve: int
) -> int:
    """How many leading items fit `room` slots and `budget` characters, keeping `reserve` for
    the "N more" line (and one slot for it)."""
    used = 0
    for count, (_, size) in enumerate(sized):
        if count + 1 > room - 1 or used + size > budget - reserve:
            return count
        used += size
    return len(sized)


# ---- native: a plan block of task cards ------------------------------------------------------


def _native_body(
    view: RunView, room: int, budget: int, levels: Iterable[Detail]
) -> list[dict[str, Any]]:
    assert view.run.plan is not None
    title = truncate(defuse_mentions(one_line(view.run.plan.title)), MAX_TITLE) or "Plan"
    budget -= len(title)
    room -= 1  # the plan block itself; every task card counts as a block too
    tasks = list(view.tasks)
    asked = {request.task_id: request.args for request in view.approvals}
    cards: list[dict[str, Any]] = []
    for level in levels:
        cards = [
            task_card(task, level, asked.get(task.id), round_of(view, task)).to_dict()
            for task in tasks
        ]
        if len(cards) <= room and sum(blocks_text_length([c]) for c in cards) <= budget:
            return [_plan_block(title, cards)]
    sized = [(card, blocks_text_length([card])) for card in cards]
    shown = _fold(sized, room, budget, reserve=120)
    return [_plan_block(title, cards[:shown]), _overflow_line(tasks[shown:])]


def _plan_block(title: str, cards: list[dict[str, Any]]) -> dict[str, Any]:
    return PlanBlock(title=title, tasks=cards).to_dict()


def task_card(
    task: TaskState,
    detail: Detail = DETAIL_LEVELS[0],
    asked: Mapping[str, Any] | None = None,
    round_number: int = 1,
) -> TaskCardBlock:
    """One task as a task_card: status, details (kind, tool, dependencies), output or error.

    Outputs are markdown shown as rich text; the summary's card holds one line of it (the
    summary itself is posted below the plan); a tool's cited URLs become the card's sources.
    A task awaiting approval shows the call it asks to make (`asked`: its arguments as they
    will be sent).
    """
    label = ERROR_LABEL.get(task.status)
    title = task_title(task)
    if label is not None and task.status is not TaskStatus.FAILED:
        title = f"{title} ({label.lower()})"
    if task.status is TaskStatus.AWAITING_APPROVAL:
        title = f"{title} (awaiting approval)"
    output: dict[str, Any] | None = None
    sources: list[dict[str, Any]] | None = None
    text = (task.output or "").strip()
    if task.status is TaskStatus.SUCCEEDED and text:
        if task.kind is TaskKind.SUMMARY:
            output = rich_text(excerpt(text, min(SUMMARY_EXCERPT, detail.output)), detail.output)
        elif detail.output:
            output = rich_text(text, detail.output)
        if task.kind is TaskKind.TOOL and detail.sources:
            sources = url_sources(text, detail.sources) or None
    elif task.status is TaskStatus.AWAITING_APPROVAL:
        shown = task if asked is None else _with_args(task, asked)
        output = awaiting_output(shown, detail.error)
    elif label is not None:
        reason = (task.error or "").strip() or label
        output = denial_output(reason)
        if output is None:
            if not reason.lower().startswith(label.lower()):
                reason = f"{label}: {reason}"
            output = plain_rich_text(truncate(reason, detail.error))
    return TaskCardBlock(
        task_id=task.id,
        title=truncate(title, detail.title),
        status=TASK_CARD_STATUS[task.status],
        details=plain_rich_text(task_details(task, round_number)) if detail.details else None,
        output=output,
        sources=sources,
    )


def _with_args(task: TaskState, args: Mapping[str, Any]) -> TaskState:
    return replace(task, spec=task.spec.model_copy(update={"args": dict(args)}))


def task_details(task: TaskState, round_number: int = 1) -> str:
    """`tool · time.get_current_time · after t1, t2 · attempt 2` (what the card's details say);
    a task a later round added starts with it (`round 2 · llm · ...`)."""
    spec = task.spec
    parts = [f"round {round_number}"] if round_number > 1 else []
    parts.append(spec.kind.value)
    if spec.kind is TaskKind.TOOL and spec.tool:
        parts.append(spec.tool)
    parts.append(f"after {', '.join(spec.deps)}" if spec.deps else "no dependencies")
    if task.attempts > 1:
        parts.append(f"attempt {task.attempts}")
    label = ERROR_LABEL.get(task.status)
    if label is not None:
        parts.append(label.lower())
    elif task.status is TaskStatus.AWAITING_APPROVAL:
        parts.append("awaiting approval")
    return truncate(" · ".join(parts), MAX_ERROR)


# ---- classic: header, sections with status emoji ---------------------------------------------


def _classic_body(
    view: RunView, room: int, budget: int, levels: Iterable[Detail]
) -> list[dict[str, Any]]:
    assert view.run.plan is not None
    title = truncate(defuse_mentions(one_line(view.run.plan.title)), MAX_HEADER_TEXT) or "Plan"
    header = HeaderBlock(text=PlainTextObject(text=title)).to_dict()
    room -= 1
    budget -= len(title)
    tasks = list(view.tasks)
    lines: list[str] = []
    for level in levels:
        lines = [classic_task_line(task, level, round_of(view, task)) for task in tasks]
        sections = pack_lines(lines, MAX_SECTION_TEXT)
        if len(sections) <= room and sum(len(s) for s in sections) <= budget:
            return [header, *(_section(text) for text in sections)]
    # Even the least detail does not fit: show what fits and count the rest.
    shown = 0
    for count in range(len(lines), -1, -1):
        sections = pack_lines(lines[:count], MAX_SECTION_TEXT)
        if len(sections) <= room - 1 and sum(len(s) for s in sections) <= budget - 120:
            shown = count
            break
    sections = pack_lines(lines[:shown], MAX_SECTION_TEXT)
    return [header, *(_section(t) for t in sections), _overflow_line(tasks[shown:])]


def classic_task_line(
    task: TaskState, detail: Detail | None = DETAIL_LEVELS[0], round_number: int = 1
) -> str:
    """A task as mrkdwn: status emoji, title, then (as `detail` allows) details and output."""
    detail = detail or SMALLEST
    # mrkdwn escaping defuses mentions (and more) by itself.
    title = truncate_mrkdwn(one_line(task.spec.title) or f"Task {task.id}", detail.title)
    line = f"{TASK_EMOJI[task.status]} *{title}* `{task.id}`"
    if detail.details:
        line += f"\n{truncate_mrkdwn(task_details(task, round_number), MAX_ERROR)}"
    output = (task.output or "").strip()
    if task.status is TaskStatus.SUCCEEDED and output and detail.output:
        line += f"\n>{truncate_mrkdwn(one_line(output), detail.output)}"
    elif task.status in ERROR_LABEL and task.error and task.error.strip():
        error = denial_mrkdwn(task.error) or truncate_mrkdwn(one_line(task.error), detail.error)
        line += f"\n>{error}"
    return line


def pack_lines(lines: Iterable[str], limit: int) -> list[str]:
    """Join lines into as few texts as possible, each at most `limit` characters."""
    packed: list[str] = []
    current = ""
    for line in lines:
        line = truncate(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            packed.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        packed.append(current)
    return packed


def _section(text: str) -> dict[str, Any]:
    return SectionBlock(text=MarkdownTextObject(text=text)).to_dict()
