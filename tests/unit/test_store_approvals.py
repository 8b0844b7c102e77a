"""Approval requests in both stores: stored with the move that asks, decided once, by anyone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from storage.connect import open_store as open_any
from storage.records import Decision, EventKind, NewRun, TaskStatus, Transition
from storage.store import Store

PLAN = {
    "title": "p",
    "tasks": [
        {"id": "t1", "kind": "tool", "title": "one", "tool": "x.y", "args": {}, "deps": []},
        {"id": "t2", "kind": "summary", "title": "two", "deps": ["t1"]},
    ],
}


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await open_any(database_url)
    yield opened
    await opened.close()


async def asked(store: Store, wait: float = 3600.0) -> str:
    record, _ = await store.create_run(NewRun(goal="g"))
    await store.set_plan(record.id, PLAN)
    await store.record(
        Transition(
            run_id=record.id,
            kind=EventKind.TASK_AWAITING_APPROVAL,
            task_id="t1",
            task_status=TaskStatus.AWAITING_APPROVAL,
            data={"args": {"path": "/tmp/x"}, "tool": "x.y", "timeout": wait},
        )
    )
    return record.id


async def test_the_request_is_stored_with_the_move_and_its_deadline(store: Store) -> None:
    run_id = await asked(store)
    [request] = await store.approvals(run_id)
    assert (request.task_id, request.args, request.decision) == ("t1", {"path": "/tmp/x"}, None)
    assert request.deadline == pytest.approx(request.requested_at + 3600.0)
    [task, _] = await store.get_tasks(run_id)
    assert task.status is TaskStatus.AWAITING_APPROVAL


async def test_the_first_decision_is_kept(store: Store) -> None:
    run_id = await asked(store)
    first = await store.decide(run_id, "t1", Decision.APPROVED, "U1")
    second = await store.decide(run_id, "t1", Decision.DENIED, "U2")
    assert first is not None
    assert first[1]
    assert first[0].decision is Decision.APPROVED
    assert second is not None
    assert not second[1]
    assert (second[0].decision, second[0].decided_by) == (Decision.APPROVED, "U1")
    assert await store.decide(run_id, "t2", Decision.APPROVED, "U1") is None


async def test_a_decision_after_the_deadline_is_an_expiry(store: Store) -> None:
    run_id = await asked(store, wait=0.0)
    decided = await store.decide(run_id, "t1", Decision.APPROVED, "U1")
    assert decided is not None
    assert decided[1]
    assert (decided[0].decision, decided[0].decided_by) == (Decision.EXPIRED, None)


async def test_asking_again_starts_an_undecided_request(store: Store) -> None:
    run_id = await asked(store)
    await store.decide(run_id, "t1", Decision.DENIED, "U1")
    await store.record(
        Transition(
            run_id=run_id,
            kind=EventKind.TASK_AWAITING_APPROVAL,
            task_id="t1",
            task_status=TaskStatus.AWAITING_APPROVAL,
            data={"args": {"path": "/tmp/y"}, "timeout": 60.0},
        )
    )
    [request] = await store.approvals(run_id)
    assert (request.args, request.decision, request.decided_by) == ({"path": "/tmp/y"}, None, None)
