"""Revised plans and steering messages in both stores (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from storage.connect import open_store as open_any
from storage.errors import LeaseLost
from storage.leases import Owner
from storage.records import EventKind, NewSteering, RunStatus, TaskStatus, Transition
from storage.store import Store
from tests.unit.test_store import PLAN, planned_run, task_transition


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await open_any(database_url)
    yield opened
    await opened.close()


REVISED = {
    "title": "p2",
    "tasks": [
        PLAN["tasks"][0],
        {"id": "t3", "kind": "tool", "title": "three", "tool": "x.y", "args": {}, "deps": []},
        {"id": "t2", "kind": "summary", "title": "two", "deps": ["t1", "t3"]},
    ],
    "rounds": [],
}


async def test_a_revision_moves_keeps_adds_and_closes_in_one_commit(store: Store) -> None:
    run_id = await planned_run(store)
    await store.record(
        task_transition(
            run_id, "t1", EventKind.TASK_SUCCEEDED, task_status=TaskStatus.SUCCEEDED, output="o"
        )
    )
    assert await store.add_steering(
        NewSteering(run_id=run_id, message="add t3", requester="U1", meta={"k": 1}),
        delivery_id="ev-1",
    )
    [message] = await store.open_steering(run_id)
    assert (message.message, message.requester, message.meta) == ("add t3", "U1", {"k": 1})

    event = await store.revise_plan(
        run_id,
        REVISED,
        Transition(run_id=run_id, kind=EventKind.RUN_REVISED, data={"added": ["t3"]}),
        handled=[message.seq],
    )
    assert event.kind is EventKind.RUN_REVISED
    tasks = await store.get_tasks(run_id)
    assert [(t.id, t.position, t.status) for t in tasks] == [
        ("t1", 0, TaskStatus.SUCCEEDED),
        ("t3", 1, TaskStatus.PENDING),
        ("t2", 2, TaskStatus.PENDING),
    ]
    assert tasks[0].output == "o"
    assert tasks[2].spec["deps"] == ["t1", "t3"]
    run = await store.get_run(run_id)
    assert run is not None
    assert run.plan == REVISED
    assert await store.open_steering(run_id) == []

    # A revision that drops a pending task deletes its row.
    await store.revise_plan(
        run_id,
        {**REVISED, "tasks": [REVISED["tasks"][0], REVISED["tasks"][2]]},
        Transition(run_id=run_id, kind=EventKind.RUN_REVISED),
    )
    assert [t.id for t in await store.get_tasks(run_id)] == ["t1", "t2"]


async def test_steering_is_refused_once_the_run_has_ended_and_replays_are_ignored(
    store: Store,
) -> None:
    run_id = await planned_run(store)
    new = NewSteering(run_id=run_id, message="more")
    assert await store.add_steering(new, delivery_id="ev-1") is True
    assert await store.add_steering(new, delivery_id="ev-1") is None
    await store.record(
        Transition(run_id=run_id, kind=EventKind.RUN_FINISHED, run_status=RunStatus.SUCCEEDED)
    )
    # Refused without claiming the delivery: the caller starts a follow-up run with it.
    assert await store.add_steering(new, delivery_id="ev-2") is False
    assert await store.claim_delivery("ev-2")
    assert await store.add_steering(NewSteering(run_id="nope", message="x")) is False


async def test_only_the_owner_revises(database_url: str) -> None:
    owner = await open_any(database_url)
    other = await open_any(database_url, owner=Owner())
    try:
        run_id = await planned_run(owner)
        with pytest.raises(LeaseLost):
            await other.revise_plan(
                run_id, REVISED, Transition(run_id=run_id, kind=EventKind.RUN_REVISED)
            )
        # Anyone may hand the owner a message.
        assert await other.add_steering(NewSteering(run_id=run_id, message="hi"))
        assert [m.message for m in await owner.open_steering(run_id)] == ["hi"]
    finally:
        await other.close()
        await owner.close()
