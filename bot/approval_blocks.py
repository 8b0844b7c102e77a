"""The part of a plan message that asks for approval: the exact call, Approve and Deny.

A task card cannot hold buttons, so each task awaiting approval gets, under the plan, one rich
text block (who may decide and by when, then its arguments exactly as they will be sent,
preformatted: rich text is inert, nothing in it is parsed) and an actions block with Approve
and Deny. A press arrives as a block action whose value is
`<run id>:<task id>`. Pure functions of a `RunView`; the sizes keep the message within Slack's
limits whatever the arguments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    PlainTextObject,
)

from bot.payloads import APPROVE_ACTION, DENY_ACTION
from bot.wording import one_line, plural, truncate
from scheduler.dag.state import RunView, TaskState
from storage.records import Approval, TaskStatus

MAX_SHOWN = 2
"""Tasks asked about at once in one message (two blocks each, taken from the plan's 50); more
are counted, and shown as earlier ones are decided."""
MAX_TITLE = 150
MAX_ARGS = 1500
"""Characters of one task's arguments: with MAX_SHOWN, well inside the message's text budget."""


def awaiting(view: RunView) -> list[TaskState]:
    """The run's tasks awaiting approval, in plan order."""
    return [task for task in view.tasks if task.status is TaskStatus.AWAITING_APPROVAL]


def approval_blocks(view: RunView) -> list[dict[str, Any]]:
    """For each task awaiting approval (at most MAX_SHOWN): what it will do, Approve, Deny."""
    tasks = awaiting(view)
    if not tasks or view.run.status.finished:
        return []
    requests: Mapping[str, Approval] = {a.task_id: a for a in view.approvals}
    blocks: list[dict[str, Any]] = []
    for task in tasks[:MAX_SHOWN]:
        request = requests.get(task.id)
        args = request.args if request is not None else task.spec.args
        deadline = request.deadline if request is not None else None
        blocks.append(request_block(task, args, view.run.requester, deadline))
        blocks.append(_buttons(view.run.id, task.id))
    hidden = len(tasks) - MAX_SHOWN
    if hidden > 0:
        more = f"… and {plural(hidden, 'more task')} awaiting approval (shown as these are decided)"
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=more)]).to_dict())
    return blocks


def arguments_json(args: Mapping[str, Any]) -> str:
    """The arguments as the tool receives them, indented, cut to MAX_ARGS with a marker."""
    return truncate(json.dumps(dict(args), indent=2, ensure_ascii=False), MAX_ARGS)


def request_block(
    task: TaskState, args: Mapping[str, Any], requester: str | None, deadline: float | None
) -> dict[str, Any]:
    """`✋ <title> (t2) will call files.delete with these arguments. @alice or an approver may
    approve it before <date>; otherwise it counts as denied.`, then the arguments."""
    title = truncate(one_line(task.spec.title), MAX_TITLE) or f"Task {task.id}"
    line: list[dict[str, Any]] = [
        {"type": "emoji", "name": "raised_hand"},
        {"type": "text", "text": " "},
        {"type": "text", "text": title, "style": {"bold": True}},
        {"type": "text", "text": f" ({task.id}) will call "},
        {"type": "text", "text": task.spec.tool or "its tool", "style": {"code": True}},
        {"type": "text", "text": " with these arguments. "},
    ]
    if requester:
        line += [{"type": "user", "user_id": requester}, {"type": "text", "text": " or an"}]
    else:
        line.append({"type": "text", "text": "An"})
    line.append({"type": "text", "text": " approver may approve it"})
    if deadline is not None:
        line += [
            {"type": "text", "text": " before "},
            {
                "type": "date",
                "timestamp": int(deadline),
                "format": "{date_short_pretty} at {time}",
                "fallback": "the deadline",
            },
        ]
    line.append({"type": "text", "text": "; otherwise it counts as denied."})
    arguments = arguments_json(args) or "{}"
    return {
        "type": "rich_text",
        "elements": [
            {"type": "rich_text_section", "elements": line},
            {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": arguments}]},
        ],
    }


def _buttons(run_id: str, task_id: str) -> dict[str, Any]:
    value = f"{run_id}:{task_id}"
    # One actions block per task: action ids need only be unique within their block.
    return ActionsBlock(
        elements=[
            ButtonElement(
                text=PlainTextObject(text="Approve"),
                action_id=APPROVE_ACTION,
                value=value,
                style="primary",
            ),
            ButtonElement(
                text=PlainTextObject(text="Deny"),
                action_id=DENY_ACTION,
                value=value,
                style="danger",
            ),
        ]
    ).to_dict()


_DENIAL = re.compile(r"^Denied by <@([UW][A-Z0-9]+)>\.$")


def denial_output(error: str) -> dict[str, Any] | None:
    """A denied task's card output naming who denied it as a user (rich text shows mentions only
    as user elements); None for any other error, which is shown as written."""
    match = _DENIAL.match(error)
    if match is None:
        return None
    section = {
        "type": "rich_text_section",
        "elements": [
            {"type": "text", "text": "Denied by "},
            {"type": "user", "user_id": match.group(1)},
        ],
    }
    return {"type": "rich_text", "elements": [section]}


def denial_mrkdwn(error: str) -> str | None:
    """A denial as mrkdwn with the person as a live name (classic plans); None for any other
    error, which is escaped as usual."""
    match = _DENIAL.match(error)
    return f"Denied by <@{match.group(1)}>." if match is not None else None


def awaiting_output(task: TaskState, limit: int) -> dict[str, Any]:
    """The card output of a task awaiting approval: the call it will make, on one line."""
    call = f"{task.spec.tool or task.id} {json.dumps(task.spec.args, ensure_ascii=False)}"
    text = truncate(one_line(f"Awaiting approval: {call}"), max(limit, 40))
    section = {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
    return {"type": "rich_text", "elements": [section]}
