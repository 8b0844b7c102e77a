"""The Slack side of approval, pure: presses parsed, who may decide, what is said, the blocks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.approval_blocks import MAX_ARGS, approval_blocks, denial_output
from bot.payloads import APPROVE_ACTION, DENY_ACTION, Press, PressKind, parse_press
from bot.plan_blocks import classic_task_line, plan_message, task_card
from bot.replies import approval_refusal, decision_reply
from bot.terminal_approval import approves, question
from storage.records import Approval, Decision, RunStatus, TaskStatus
from tests.fakes.slack_api import MAX_BLOCKS, MAX_BLOCKS_TEXT, block_shape_problems
from tests.unit.test_blocks import RUN_ID, make_task, make_view, walk


def _body(action_id: str, value: str) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": "U0BOB"},
        "channel": {"id": "C1"},
        "container": {"type": "message", "message_ts": "5.5", "channel_id": "C1"},
        "message": {"ts": "5.5", "thread_ts": "5.1"},
        "trigger_id": "9.9",
        "actions": [{"action_id": action_id, "value": value}],
    }


@pytest.mark.parametrize(
    ("action_id", "kind"), [(APPROVE_ACTION, PressKind.APPROVE), (DENY_ACTION, PressKind.DENY)]
)
def test_an_approval_press_names_the_run_and_the_task(action_id: str, kind: PressKind) -> None:
    press = parse_press(_body(action_id, "run1:t2"))
    assert press is not None
    assert (press.kind, press.run_id, press.task_id, press.user) == (kind, "run1", "t2", "U0BOB")
    assert press.delivery_id == f"press:{kind}:run1:t2:U0BOB:9.9"


@pytest.mark.parametrize("value", ["run1", "run1:", ":t2", ""])
def test_an_approval_press_without_run_and_task_is_ignored(value: str) -> None:
    assert parse_press(_body(APPROVE_ACTION, value)) is None


def _press(kind: PressKind = PressKind.APPROVE, user: str = "U0BOB") -> Press:
    return Press(kind=kind, run_id=RUN_ID, task_id="t1", user=user, channel="C1", thread_ts="1.1")


@pytest.mark.parametrize(
    ("user", "approvers", "refused"),
    [
        ("U0ALICE", frozenset(), False),  # the requester
        ("U0CAROL", frozenset({"U0CAROL"}), False),  # an approver
        ("U0BOB", frozenset({"U0CAROL"}), True),
        ("U0BOB", frozenset(), True),
    ],
)
def test_only_the_requester_and_approvers_may_decide(
    user: str, approvers: frozenset[str], refused: bool
) -> None:
    run = make_view([make_task(1)]).run
    refusal = approval_refusal(_press(user=user), run, approvers)
    assert (refusal is not None) is refused
    if refused:
        assert refusal == "Only <@U0ALICE> or an approver can approve or deny this task."
    assert approval_refusal(_press(), None, approvers) == "That run no longer exists."


def _approval(decision: Decision | None, by: str | None = None) -> Approval:
    return Approval(
        run_id=RUN_ID,
        task_id="t1",
        requested_at=0.0,
        deadline=60.0,
        args={},
        decision=decision,
        decided_by=by,
    )


@pytest.mark.parametrize(
    ("kind", "decided", "reply"),
    [
        (PressKind.APPROVE, (_approval(Decision.APPROVED, "<@U0BOB>"), True), None),
        (PressKind.APPROVE, (_approval(Decision.APPROVED, "<@U0BOB>"), False), None),
        (
            PressKind.DENY,
            (_approval(Decision.APPROVED, "<@U0ALICE>"), False),
            "This task was already approved by <@U0ALICE>.",
        ),
        (
            PressKind.APPROVE,
            (_approval(Decision.EXPIRED), True),
            "Too late: nobody decided in time, so the task counted as denied.",
        ),
        (PressKind.APPROVE, None, "This task is not waiting for approval."),
    ],
)
def test_what_the_presser_is_told(
    kind: PressKind, decided: tuple[Approval, bool] | None, reply: str | None
) -> None:
    assert decision_reply(_press(kind), decided) == reply


def _awaiting_view(count: int, args: dict[str, Any]) -> Any:
    tasks = [make_task(i, TaskStatus.AWAITING_APPROVAL) for i in range(1, count + 1)]
    view = make_view(tasks)
    requests = tuple(
        Approval(run_id=RUN_ID, task_id=t.id, requested_at=0.0, deadline=86400.0, args=args)
        for t in tasks
    )
    return view.__class__(run=view.run, tasks=view.tasks, approvals=requests)


def test_the_request_shows_the_exact_arguments_and_the_buttons() -> None:
    view = _awaiting_view(1, {"path": "/tmp/<@U1> & co", "n": 3})
    request, buttons = approval_blocks(view)
    [line, preformatted] = request["elements"]
    assert {"type": "user", "user_id": "U0ALICE"} in line["elements"]
    assert {
        "type": "date",
        "timestamp": 86400,
        "format": "{date_short_pretty} at {time}",
        "fallback": "the deadline",
    } in line["elements"]
    assert json.loads(preformatted["elements"][0]["text"]) == {"path": "/tmp/<@U1> & co", "n": 3}
    assert [(b["action_id"], b["value"]) for b in buttons["elements"]] == [
        (APPROVE_ACTION, f"{RUN_ID}:t1"),
        (DENY_ACTION, f"{RUN_ID}:t1"),
    ]
    card = task_card(view.tasks[0], asked=view.approvals[0].args).to_dict()
    assert card["status"] == "pending"
    assert card["title"].endswith("(awaiting approval)")
    assert "/tmp/<@U1> & co" in card["output"]["elements"][0]["elements"][0]["text"]


@pytest.mark.parametrize("count", [1, 2, 3, 10, 50])
@pytest.mark.parametrize("classic", [False, True])
def test_huge_arguments_and_many_waiting_tasks_still_fit(count: int, classic: bool) -> None:
    view = _awaiting_view(count, {"text": "x" * 50_000, "list": list(range(5000))})
    message = plan_message(view, classic=classic)
    assert block_shape_problems(message.blocks) == []
    assert len(list(walk(message.blocks))) <= MAX_BLOCKS
    assert sum(len(json.dumps(b)) for b in approval_blocks(view)) < 2 * (MAX_ARGS + 2000)
    text = json.dumps(message.blocks)
    assert "(truncated)" in text
    assert len(text) < 4 * MAX_BLOCKS_TEXT
    shown = [
        b
        for b in message.blocks
        if b["type"] == "actions" and b["elements"][0]["action_id"] == APPROVE_ACTION
    ]
    assert len(shown) == min(count, 2)


def test_no_buttons_once_the_run_has_ended() -> None:
    view = _awaiting_view(1, {})
    ended = view.__class__(
        run=make_view([], status=RunStatus.CANCELLED).run,
        tasks=view.tasks,
        approvals=view.approvals,
    )
    assert approval_blocks(ended) == []


def test_a_denial_names_the_person_as_a_user_element() -> None:
    output = denial_output("Denied by <@U0CAROL>.")
    assert output is not None
    assert output["elements"][0]["elements"][1] == {"type": "user", "user_id": "U0CAROL"}
    assert denial_output("Denied by <@U0CAROL> and <!channel>.") is None
    assert denial_output("Traceback <@U123>") is None
    denied = make_task(1, TaskStatus.FAILED, error="Denied by <@U0CAROL>.")
    assert classic_task_line(denied).endswith("\n>Denied by <@U0CAROL>.")
    other = make_task(1, TaskStatus.FAILED, error="Denied by <@U0CAROL> <!channel>.")
    assert "&lt;!channel&gt;" in classic_task_line(other)


def test_the_terminal_question_and_its_answers() -> None:
    assert question("t2", "Publish\n it", "test.echo", {"text": "hi"}) == (
        'Approve t2 "Publish it" (test.echo {"text": "hi"})? [y/N]'
    )
    assert [approves(a) for a in ("y", "Yes", " y ", "", "n", "no", "maybe")] == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
