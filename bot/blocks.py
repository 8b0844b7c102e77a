"""Block Kit rendering: runs, plans, summaries and the App Home, as pure functions.

Everything is built with slack_sdk's model classes, whose `to_dict()` validates what Slack
would reject, and everything stays within Slack's message limits: long text is truncated with a
visible marker, and the plan message (`bot.plan_blocks`, re-exported here) always fits.
Model and tool text passes through `defuse_mentions` (or mrkdwn escaping) before it reaches
Slack, so only the mentions dagbot adds itself are live.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ContextActionsBlock,
    ContextBlock,
    DividerBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
    HeaderBlock,
    MarkdownBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.block_kit import (
    MAX_BLOCKS,
    MAX_BLOCKS_TEXT,
    MAX_CONTEXT_TEXT,
    MAX_HEADER_TEXT,
    MAX_HOME_BLOCKS,
    MAX_MARKDOWN_TEXT,
    MAX_MESSAGE_TEXT,
    MAX_SECTION_TEXT,
    SlackMessage,
    blocks_text_length,
    defuse_mentions,
    short_id,
    truncate_mrkdwn,
)
from bot.markdown import escape_mrkdwn, markdown_to_mrkdwn, split_markdown
from bot.payloads import FEEDBACK_ACTION
from bot.plan_blocks import (
    CANCEL_ACTION,
    DETAIL_LEVELS,
    ERROR_LABEL,
    MAX_ERROR,
    MAX_SNIPPET,
    MAX_TITLE,
    RETRY_ACTION,
    RUN_EMOJI,
    TASK_CARD_STATUS,
    TASK_EMOJI,
    Detail,
    classic_task_line,
    pack_lines,
    placeholder_message,
    plan_message,
    plan_text,
    status_line,
    task_card,
    task_details,
    task_title,
)
from bot.wording import FEEDBACK_BAD, FEEDBACK_GOOD, TRUNCATED, one_line, run_word, truncate
from scheduler.dag.plan import TaskKind
from scheduler.dag.state import Run, RunView

__all__ = [
    "CANCEL_ACTION",
    "DETAIL_LEVELS",
    "FEEDBACK_ACTION",
    "MAX_BLOCKS",
    "MAX_BLOCKS_TEXT",
    "MAX_CONTEXT_TEXT",
    "MAX_ERROR",
    "MAX_HEADER_TEXT",
    "MAX_HOME_BLOCKS",
    "MAX_MARKDOWN_TEXT",
    "MAX_MESSAGE_TEXT",
    "MAX_SECTION_TEXT",
    "MAX_SNIPPET",
    "MAX_TITLE",
    "RETRY_ACTION",
    "RUN_EMOJI",
    "SUMMARY_PART_LIMIT",
    "TASK_CARD_STATUS",
    "TASK_EMOJI",
    "TRUNCATED",
    "Detail",
    "SlackMessage",
    "blocks_text_length",
    "classic_markdown_message",
    "classic_task_line",
    "defuse_mentions",
    "feedback_blocks",
    "home_run_line",
    "home_view",
    "markdown_message",
    "one_line",
    "pack_lines",
    "placeholder_message",
    "plan_message",
    "plan_text",
    "planning_failed_message",
    "short_id",
    "status_line",
    "summary_markdown",
    "summary_messages",
    "task_card",
    "task_details",
    "task_title",
    "truncate",
    "truncate_mrkdwn",
]

SUMMARY_PART_LIMIT = 11000
"""Characters of markdown per summary message (a markdown block holds 12,000)."""


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
    problems = [t for t in view.tasks if t.status in ERROR_LABEL]
    if problems:
        lines.append("")
        for task in problems:
            reason = one_line(task.error or ERROR_LABEL[task.status])
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
    safe = defuse_mentions(markdown)
    block = MarkdownBlock(text=truncate(safe, MAX_MARKDOWN_TEXT))
    return SlackMessage(text=truncate(safe, MAX_MESSAGE_TEXT), blocks=[block.to_dict()])


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
    text = truncate(
        defuse_mentions(f"I could not make a plan for this goal: {one_line(reason)}"),
        MAX_MESSAGE_TEXT,
    )
    return SlackMessage(text=text, blocks=[b.to_dict() for b in blocks])


def feedback_blocks(run_id: str) -> list[dict[str, Any]]:
    """A `context_actions` block of 👍/👎 `feedback_buttons` for a run's summary message.

    A press arrives as a block action with `action_id` FEEDBACK_ACTION and the value
    `<good|bad>:<run id>`, which the intake records with the run (once per person).
    """
    buttons = FeedbackButtonsElement(
        action_id=FEEDBACK_ACTION,
        positive_button=FeedbackButtonObject(
            text="👍", value=f"{FEEDBACK_GOOD}:{run_id}", accessibility_label="Good answer"
        ),
        negative_button=FeedbackButtonObject(
            text="👎", value=f"{FEEDBACK_BAD}:{run_id}", accessibility_label="Bad answer"
        ),
    )
    return [ContextActionsBlock(elements=[buttons]).to_dict()]


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text))


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
    status = f"{RUN_EMOJI[run.status]} {run_word(run.status)}"
    return truncate(f"*{title}*\n{status} · {stamp} · run `{short_id(run.id)}`", 2900)
