"""Block Kit rendering: runs, plans, summaries and the App Home, as pure functions.

Everything is built with slack_sdk's model classes, whose `to_dict()` validates what Slack
would reject (a bad task_card status, a section over 3,000 characters), and everything stays
within Slack's message limits: long text is truncated with a visible marker and a plan too large
for one message still renders, as the first tasks plus a line counting the rest.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownBlock,
    MarkdownTextObject,
    PlainTextObject,
    PlanBlock,
    RichTextBlock,
    RichTextElementParts,
    RichTextSectionElement,
    SectionBlock,
    TaskCardBlock,
)
from slack_sdk.models.views import View

from bot.markdown import escape_mrkdwn, markdown_to_mrkdwn, split_markdown
from scheduler.dag.plan import TaskKind
from scheduler.dag.state import Run, RunView, TaskState
from storage.records import RunStatus, TaskStatus

MAX_BLOCKS = 50
MAX_HOME_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_MESSAGE_TEXT = 3900
"""Slack answers msg_too_long a little above 4,000 characters of `text`; keep a margin."""
MAX_MARKDOWN_TEXT = 12000
SUMMARY_PART_LIMIT = 11000
"""Characters of markdown per summary message (a markdown block holds 12,000)."""
MAX_TITLE = 150
MAX_SNIPPET = 280
MAX_ERROR = 500
MAX_CONTEXT_TEXT = 2000
TRUNCATED = "… (truncated)"

CANCEL_ACTION = "dagbot_cancel"
RETRY_ACTION = "dagbot_retry"

TASK_CARD_STATUS: Mapping[TaskStatus, str] = MappingProxyType(
    {
        TaskStatus.PENDING: "pending",
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
_ERROR_LABEL: Mapping[TaskStatus, str] = MappingProxyType(
    {TaskStatus.FAILED: "Failed", TaskStatus.SKIPPED: "Skipped", TaskStatus.CANCELLED: "Cancelled"}
)


@dataclass(frozen=True, kw_only=True)
class SlackMessage:
    """What a chat.postMessage / chat.update sends: fallback `text` plus block dicts."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


# ---- text helpers ----------------------------------------------------------------------------


def truncate(text: str, limit: int, marker: str = TRUNCATED) -> str:
    """`text` cut to at most `limit` characters, ending with `marker` when anything was cut."""
    if len(text) <= limit:
        return text
    if limit <= len(marker):
        return marker[:limit]
    return text[: limit - len(marker)].rstrip() + marker


def truncate_mrkdwn(text: str, limit: int) -> str:
    """Escape then truncate, never leaving half an entity (`&am`) before the marker."""
    escaped = escape_mrkdwn(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: max(0, limit - len(TRUNCATED))]
    cut = re.sub(r"&[a-z]*$", "", cut)
    return cut.rstrip() + TRUNCATED


def one_line(text: str) -> str:
    """Whitespace (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


def short_id(run_id: str) -> str:
    return run_id[:8]


# ---- the plan message ------------------------------------------------------------------------


def plan_message(view: RunView, *, classic: bool = False) -> SlackMessage:
    """The plan message of a run: a native `plan` of task cards, or classic sections.

    Before the run has a plan this is the "planning…" placeholder that later becomes the plan.
    """
    if view.run.plan is None:
        return placeholder_message(view.run)
    fixed: list[Block] = [_status_context(view)]
    actions = _actions(view)
    if actions is not None:
        fixed.append(actions)
    body = _classic_body(view, MAX_BLOCKS - len(fixed)) if classic else _native_body(view, fixed)
    return SlackMessage(text=plan_text(view), blocks=[b.to_dict() for b in [*body, *fixed]])


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
    return SlackMessage(text=truncate(line, MAX_MESSAGE_TEXT), blocks=[b.to_dict() for b in blocks])


def plan_text(view: RunView) -> str:
    """The plain-text fallback of the plan message (notifications, screen readers)."""
    title = view.run.plan.title if view.run.plan is not None else view.run.goal
    head = f"Plan: {one_line(title)} ({status_line(view)})"
    lines = [truncate(head, 400)]
    size = len(lines[0])
    for index, task in enumerate(view.tasks):
        line = f"• [{task.status.value}] {truncate(one_line(task.spec.title), 120)}"
        rest = len(view.tasks) - index
        if size + len(line) + 1 > MAX_MESSAGE_TEXT - 40:
            lines.append(f"… and {rest} more task{'s' if rest != 1 else ''}")
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def status_line(view: RunView) -> str:
    """One line on where the run stands, e.g. `Running · 3 of 7 tasks done · 1 failed`."""
    counts = Counter(task.status for task in view.tasks)
    total = len(view.tasks)
    done = sum(n for status, n in counts.items() if status.finished)
    label = {
        RunStatus.PLANNING: "Planning",
        RunStatus.RUNNING: "Running",
        RunStatus.SUCCEEDED: "Done",
        RunStatus.FAILED: "Finished with problems",
        RunStatus.CANCELLED: "Cancelled",
    }[view.run.status]
    parts = [label, f"{done} of {total} task{'s' if total != 1 else ''} done"]
    for status in (
        TaskStatus.RUNNING,
        TaskStatus.FAILED,
        TaskStatus.SKIPPED,
        TaskStatus.CANCELLED,
    ):
        if counts[status]:
            parts.append(f"{counts[status]} {status.value}")
    return " · ".join(parts)


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


def _overflow_line(hidden: Sequence[TaskState]) -> ContextBlock:
    counts = Counter(TASK_CARD_STATUS[task.status] for task in hidden)
    order = ("complete", "in_progress", "pending", "error")
    names = {"complete": "complete", "in_progress": "running", "pending": "pending"}
    detail = ", ".join(
        f"{counts[status]} {names.get(status, 'with problems')}"
        for status in order
        if counts[status]
    )
    n = len(hidden)
    text = f"… and {n} more task{'s' if n != 1 else ''} not shown: {detail}"
    return ContextBlock(elements=[MarkdownTextObject(text=text)])


# ---- native: a plan block of task cards ------------------------------------------------------


def _native_body(view: RunView, fixed: Sequence[Block]) -> list[Block]:
    assert view.run.plan is not None
    # Every task card counts as a block: the plan block, the cards and the fixed blocks share 50.
    room = MAX_BLOCKS - len(fixed) - 1
    tasks = list(view.tasks)
    shown, hidden = (tasks, []) if len(tasks) <= room else (tasks[: room - 1], tasks[room - 1 :])
    plan = PlanBlock(
        title=truncate(one_line(view.run.plan.title) or "Plan", MAX_TITLE),
        tasks=[task_card(task) for task in shown],
    )
    return [plan, _overflow_line(hidden)] if hidden else [plan]


def task_card(task: TaskState) -> TaskCardBlock:
    """One task as a task_card: status, details (kind, tool, dependencies), output or error."""
    label = _ERROR_LABEL.get(task.status)
    title = one_line(task.spec.title)
    if label is not None and task.status is not TaskStatus.FAILED:
        title = f"{title} ({label.lower()})"
    output: RichTextBlock | None = None
    if task.status is TaskStatus.SUCCEEDED and task.output:
        output = _rich(truncate(task.output.strip(), MAX_SNIPPET))
    elif label is not None:
        reason = task.error or label
        if not reason.lower().startswith(label.lower()):
            reason = f"{label}: {reason}"
        output = _rich(truncate(reason, MAX_ERROR))
    return TaskCardBlock(
        task_id=task.id,
        title=truncate(title, MAX_TITLE),
        status=TASK_CARD_STATUS[task.status],
        details=_rich(task_details(task)),
        output=output,
    )


def task_details(task: TaskState) -> str:
    """`tool · time.get_current_time · after t1, t2 · attempt 2` (what the card's details say)."""
    spec = task.spec
    parts = [spec.kind.value]
    if spec.kind is TaskKind.TOOL and spec.tool:
        parts.append(spec.tool)
    parts.append(f"after {', '.join(spec.deps)}" if spec.deps else "no dependencies")
    if task.attempts > 1:
        parts.append(f"attempt {task.attempts}")
    label = _ERROR_LABEL.get(task.status)
    if label is not None:
        parts.append(label.lower())
    return truncate(" · ".join(parts), MAX_ERROR)


def _rich(text: str) -> RichTextBlock:
    return RichTextBlock(
        elements=[RichTextSectionElement(elements=[RichTextElementParts.Text(text=text)])]
    )


# ---- classic: header, sections with status emoji ---------------------------------------------


def _classic_body(view: RunView, room: int) -> list[Block]:
    assert view.run.plan is not None
    header = HeaderBlock(
        text=PlainTextObject(
            text=truncate(one_line(view.run.plan.title) or "Plan", MAX_HEADER_TEXT)
        )
    )
    room -= 1
    tasks = list(view.tasks)
    for brief in (False, True):
        lines = [classic_task_line(task, brief=brief) for task in tasks]
        sections = pack_lines(lines, MAX_SECTION_TEXT)
        if len(sections) <= room:
            return [header, *(_section(text) for text in sections)]
    # Even one-line-per-task sections do not fit: show what fits and count the rest.
    lines = [classic_task_line(task, brief=True) for task in tasks]
    shown: list[str] = []
    for count in range(len(lines), 0, -1):
        if len(pack_lines(lines[:count], MAX_SECTION_TEXT)) <= room - 1:
            shown = lines[:count]
            break
    sections = pack_lines(shown, MAX_SECTION_TEXT)
    return [header, *(_section(t) for t in sections), _overflow_line(tasks[len(shown) :])]


def classic_task_line(task: TaskState, *, brief: bool = False) -> str:
    """A task as mrkdwn: status emoji, title, details; then its output or error unless brief."""
    title = truncate_mrkdwn(one_line(task.spec.title), MAX_TITLE)
    line = f"{TASK_EMOJI[task.status]} *{title}* `{task.id}`"
    if brief:
        return truncate(line, 400)
    line += f"\n{truncate_mrkdwn(task_details(task), MAX_ERROR)}"
    if task.status is TaskStatus.SUCCEEDED and task.output:
        snippet = truncate_mrkdwn(one_line(task.output), MAX_SNIPPET)
        line += f"\n>{snippet}"
    elif task.status in _ERROR_LABEL and task.error:
        line += f"\n>{truncate_mrkdwn(one_line(task.error), MAX_ERROR)}"
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


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text))


# ---- summary and errors ----------------------------------------------------------------------


def summary_markdown(view: RunView) -> str:
    """The summary task's output, or (when it produced none) what went wrong, as markdown."""
    summary = next(
        (t for t in view.tasks if t.kind is TaskKind.SUMMARY and t.output is not None), None
    )
    if summary is not None and summary.output and summary.output.strip():
        return summary.output.strip()
    run = view.run
    lines = [f"**{status_line(view)}**"]
    if run.error:
        lines.append(run.error)
    problems = [t for t in view.tasks if t.status in _ERROR_LABEL]
    if problems:
        lines.append("")
        for task in problems:
            reason = one_line(task.error or _ERROR_LABEL[task.status])
            lines.append(f"- {one_line(task.spec.title)} ({task.id}): {truncate(reason, 300)}")
    return "\n".join(lines)


def summary_messages(markdown: str, *, classic: bool = False) -> list[SlackMessage]:
    """The summary as one or more messages: markdown blocks, or mrkdwn sections when classic."""
    return [
        (classic_markdown_message if classic else markdown_message)(part)
        for part in split_markdown(markdown, SUMMARY_PART_LIMIT)
    ]


def markdown_message(markdown: str) -> SlackMessage:
    """One message holding a `markdown` block (at most 12,000 characters)."""
    block = MarkdownBlock(text=truncate(markdown, MAX_MARKDOWN_TEXT))
    return SlackMessage(text=truncate(markdown, MAX_MESSAGE_TEXT), blocks=[block.to_dict()])


def classic_markdown_message(markdown: str) -> SlackMessage:
    """Markdown converted to mrkdwn sections, for workspaces without the markdown block."""
    mrkdwn = markdown_to_mrkdwn(markdown)
    sections = [_section(part) for part in split_markdown(mrkdwn, MAX_SECTION_TEXT)]
    return SlackMessage(
        text=truncate(mrkdwn, MAX_MESSAGE_TEXT),
        blocks=[s.to_dict() for s in sections[:MAX_BLOCKS]],
    )


def planning_failed_message(run: Run) -> SlackMessage:
    """Posted in the thread when no valid plan could be made."""
    reason = (run.error or "The planner gave no reason.").strip()
    head = ":warning: *I could not make a plan for this goal.*"
    quoted = "\n".join(f">{line}" for line in escape_mrkdwn(reason).splitlines() or [""])
    body = truncate(f"{head}\n{quoted}", MAX_SECTION_TEXT - 200)
    hint = "Try rephrasing the goal, or mention me again with more detail."
    blocks: list[Block] = [
        _section(body),
        ContextBlock(elements=[MarkdownTextObject(text=f"{hint} · run `{short_id(run.id)}`")]),
    ]
    text = truncate(f"I could not make a plan for this goal: {one_line(reason)}", MAX_MESSAGE_TEXT)
    return SlackMessage(text=text, blocks=[b.to_dict() for b in blocks])


# ---- App Home --------------------------------------------------------------------------------


def home_view(runs: Sequence[Run]) -> dict[str, Any]:
    """The App Home tab: the user's recent runs (goal, status, when, link to the thread)."""
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text="Your recent runs")),
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text="Mention me with a goal, or type `/dagbot <goal>`, to start a run."
                )
            ]
        ),
        DividerBlock(),
    ]
    if not runs:
        blocks.append(_section("No runs yet."))
    room = MAX_HOME_BLOCKS - len(blocks)
    for run in runs[:room]:
        blocks.append(_section(home_run_line(run)))
    return View(type="home", blocks=blocks).to_dict()


def home_run_line(run: Run) -> str:
    goal = truncate_mrkdwn(one_line(run.goal), 300)
    permalink = run.meta.get("permalink")
    title = f"<{permalink}|{goal}>" if isinstance(permalink, str) and permalink else goal
    when = int(run.created_at)
    stamp = f"<!date^{when}^{{date_short_pretty}} at {{time}}|{when}>"
    status = f"{RUN_EMOJI[run.status]} {run.status.value}"
    return truncate(f"*{title}*\n{status} · {stamp} · run `{short_id(run.id)}`", 2900)
