"""What the intake says: short answers, help, run lists and refusals, as pure functions of data."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from bot.markdown import escape_mrkdwn
from bot.payloads import COMMAND, Press, PressKind
from bot.wording import run_word
from domain.vocabulary import Decision, RunStatus
from scheduler.dag.state import Run
from storage.records import Approval

PREVIEW_CHARS = 80
ECHO_CHARS = 3_000
"""The goal shown in the /dagbot message is cut here (the run keeps all of it): Slack's limits."""


def escape(text: str) -> str:
    """Slack's three control characters, so a goal is shown as typed and cannot ping @channel."""
    return escape_mrkdwn(text)


def preview(goal: str, limit: int = PREVIEW_CHARS) -> str:
    """The first line of a goal, cut to `limit` characters, escaped for mrkdwn."""
    first_line = goal.strip().splitlines()[0] if goal.strip() else ""
    if len(first_line) > limit or first_line != goal.strip():
        first_line = first_line[: limit - 1].rstrip() + "…"
    return escape(first_line)


def goal_problem(goal: str, max_chars: int, *, source: str) -> str | None:
    """Why a goal cannot be run, in one short answer; None when it can."""
    # A mention of someone (or of the bot, by another name) is no goal by itself.
    if not re.sub(r"<@[^<>]*>", "", goal).strip():
        if source == "command":
            return f"Tell me what you want done: `{COMMAND} <goal>`. `{COMMAND} help` shows more."
        return (
            "Tell me what you want done after the mention, for example "
            "_compare the weather in Tokyo and Paris_."
        )
    if len(goal) > max_chars:
        return (
            f"That goal is {len(goal):,} characters long; the limit is {max_chars:,}. "
            "Please shorten it and ask again: nothing was started."
        )
    return None


def help_text(max_goal_chars: int) -> str:
    return "\n".join(
        [
            "*dagbot* plans a goal as a graph of tasks, runs them in parallel and posts a summary.",
            "• Mention me with a goal, or use `/dagbot <goal>`: I reply in a thread.",
            "• Mention me again in that thread to follow up: I remember its earlier goals "
            "and summaries. While the run is still going, the mention changes the part of "
            "its plan that has not started.",
            "• `/dagbot list`: your recent runs, with links to their threads.",
            "• `/dagbot cancel <run id>`: stop one of your runs (a unique prefix of the id "
            "is enough).",
            "• `/dagbot help`: this message.",
            f"Goals may be up to {max_goal_chars:,} characters long.",
        ]
    )


def requested_text(user: str, goal: str) -> str:
    """The channel message a /dagbot goal becomes: the requester named, the goal as typed."""
    shown = goal if len(goal) <= ECHO_CHARS else goal[: ECHO_CHARS - 1].rstrip() + "…"
    return f"<@{user}> asked dagbot:\n>{escape(shown).replace(chr(10), chr(10) + '>')}"


def list_text(runs: Sequence[Run], permalinks: Mapping[str, str]) -> str:
    """The reply to `/dagbot list`: newest first, each run linked to its thread when known."""
    if not runs:
        return f"You have no runs yet. Start one with `{COMMAND} <goal>` or by mentioning me."
    lines = ["*Your recent runs*"]
    for run in runs:
        when = f"<!date^{int(run.created_at)}^{{date_short_pretty}} {{time}}|recently>"
        goal = preview(run.goal)
        link = permalinks.get(run.id)
        shown = f"<{link}|{goal}>" if link else goal
        lines.append(f"• `{run.id}` {_status_word(run.status)} · {when} · {shown}")
    return "\n".join(lines)


def _status_word(status: RunStatus) -> str:
    return run_word(status)


def cancel_refusal(argument: str, run: Run | None, user: str) -> str | None:
    """Why `/dagbot cancel <argument>` cannot cancel anything; None when it may try."""
    if not argument:
        return f"Say which run to cancel: `{COMMAND} cancel <run id>` (`{COMMAND} list` shows ids)."
    if run is None:
        return (
            f"No run matches `{escape(argument)}` (or more than one does): "
            f"`{COMMAND} list` shows your runs' ids."
        )
    if run.requester != user:
        return f"Run `{run.id}` was started by someone else; only they can cancel it."
    if run.status.finished:
        return f"Run `{run.id}` already finished ({_status_word(run.status)})."
    return None


def cancel_result(run: Run, cancelled: bool) -> str:
    if cancelled:
        return f"Cancelled run `{run.id}`: {preview(run.goal)}"
    return f"Run `{run.id}` is not running right now, so there was nothing to cancel."


def press_refusal(press: Press, run: Run | None) -> str | None:
    """Why a button press is refused (said only to the presser); None when it is the requester's."""
    if run is None:
        return "That run no longer exists."
    if run.requester != press.user:
        verb = "cancel" if press.kind is PressKind.CANCEL else "retry"
        if press.kind is PressKind.FEEDBACK:
            return None  # anyone who sees the answer may say what they think of it
        who = f"<@{run.requester}>" if run.requester else "the person who started it"
        return f"Only {who} can {verb} this run."
    return None


def press_noop(press: Press, run: Run) -> str:
    """What to say when the engine had nothing to do for a requester's press."""
    if press.kind is PressKind.CANCEL:
        return f"Run `{run.id}` is not running, so there is nothing to cancel."
    return f"Run `{run.id}` has nothing to retry right now (it is {_status_word(run.status)})."


def approval_refusal(press: Press, run: Run | None, approvers: frozenset[str]) -> str | None:
    """Why a press of Approve or Deny is refused (said only to the presser); None when the
    presser is the run's requester or one of DAGBOT_APPROVERS."""
    if run is None:
        return "That run no longer exists."
    if press.user == run.requester or press.user in approvers:
        return None
    who = f"<@{run.requester}>" if run.requester else "the person who started the run"
    return f"Only {who} or an approver can approve or deny this task."


def mention(user: str) -> str:
    """How a decision records who took it: a Slack mention, shown as the person's name."""
    return f"<@{user}>"


def decision_reply(press: Press, decided: tuple[Approval, bool] | None) -> str | None:
    """What the presser is told privately when the press did not decide; None when it did (the
    plan message shows the outcome) or when it repeats their own decision (a double click)."""
    if decided is None:
        return "This task is not waiting for approval."
    approval, changed = decided
    if changed and approval.decision is not Decision.EXPIRED:
        return None
    if approval.decision is Decision.EXPIRED:
        return "Too late: nobody decided in time, so the task counted as denied."
    pressed = Decision.APPROVED if press.kind is PressKind.APPROVE else Decision.DENIED
    if approval.decided_by == mention(press.user) and approval.decision is pressed:
        return None
    return f"This task was already {approval.decision} by {approval.decided_by or 'someone'}."
