"""Steering messages and the bound on rounds hold across restarts and cancellations."""

from __future__ import annotations

import asyncio
from pathlib import Path

from scheduler.dag.engine import Engine, EngineConfig
from scheduler.dag.executors import PlanRequest, TaskContext
from scheduler.dag.plan import Plan, TaskKind
from scheduler.dag.retry import RetryPolicies, RetryPolicy
from scheduler.errors import AnotherRound, PlanningFailed
from storage.connect import open_store
from storage.leases import Owner
from storage.records import EventKind, NewRun, NewSteering, RunStatus, Transition
from storage.sqlite import SqliteStore
from storage.store import Store
from tests.support.executors import Echo, Gate
from tests.support.plans import plan, summary, tool

ONE_ATTEMPT = RetryPolicies(default=RetryPolicy(max_attempts=1))


async def simple_planner(request: PlanRequest) -> Plan:
    return plan(tool("x"), summary("xs", "x"))


async def follow_ups(store: Store, parent_id: str) -> list[tuple[str, str | None]]:
    return [
        (run.goal, run.requester)
        for run in await store.recent_runs(limit=50)
        if run.parent_run_id == parent_id
    ]


async def test_a_message_left_waiting_by_a_process_that_stopped_becomes_one_follow_up(
    database_url: str,
) -> None:
    """The process ended the run but stopped before starting the follow-up the message was
    waiting for: the next start-up starts it, once, even with two replicas starting at once."""
    dead = await open_store(database_url, owner=Owner(lease_seconds=0.2))
    created = await dead.create_run(NewRun(goal="goal", thread_key="T1", meta={"k": 1}))
    assert created is not None
    run = created[0]
    assert await dead.add_steering(
        NewSteering(run_id=run.id, message="also Berlin", requester="U2", meta={"ts": "9.9"})
    )
    await dead.record(
        Transition(
            run_id=run.id,
            kind=EventKind.RUN_FINISHED,
            run_status=RunStatus.SUCCEEDED,
            data={"status": RunStatus.SUCCEEDED.value},
        )
    )
    await dead.close()  # ...and the process stops here, before the follow-up

    stores = [await open_store(database_url) for _ in range(2)]
    engines = [
        Engine(s, dict.fromkeys(TaskKind, Echo()), planner=simple_planner, config=EngineConfig())
        for s in stores
    ]
    try:
        await asyncio.gather(*(engine.resume_all() for engine in engines))
        for engine in engines:
            await engine.run_until_idle()
        # A later round finds nothing more to do.
        await engines[0].resume_all()
        await engines[0].run_until_idle()
        assert await follow_ups(stores[0], run.id) == [("also Berlin", "U2")]
        child = next(r for r in await stores[0].recent_runs() if r.parent_run_id == run.id)
        assert child.thread_key == "T1"
        assert child.meta == {"ts": "9.9"}
        assert child.status is RunStatus.SUCCEEDED
        assert await stores[0].open_steering(run.id) == []
        assert await stores[0].late_steering() == []
    finally:
        for engine in engines:
            await engine.close()
        for store in stores:
            await store.close()


async def test_a_message_waiting_when_the_run_is_cancelled_becomes_a_follow_up(
    tmp_path: Path,
) -> None:
    gate = Gate()
    calls: list[str] = []

    async def planner(request: PlanRequest) -> Plan:
        calls.append(request.goal)
        if request.goal == "goal":
            return plan(tool("a"), summary("s", "a"))
        return plan(tool("x"), summary("xs", "x"))

    store = await SqliteStore.open(str(tmp_path / "db.sqlite3"))
    engine = Engine(store, dict.fromkeys(TaskKind, gate), planner=planner)
    try:
        run = await engine.submit("goal", thread_key="T1")
        gate.release("a")
        await gate.started["s"].wait()
        # The final step is writing the answer: the message waits for the run to end...
        assert await engine.steer(run.id, "also Berlin", requester="U2")
        # ...which is cancelled instead.
        assert await engine.cancel(run.id)
        assert (await engine.view(run.id)).run.status is RunStatus.CANCELLED
        assert await follow_ups(store, run.id) == [("also Berlin", "U2")]
        assert await store.open_steering(run.id) == []
        gate.release("x")
        gate.release("xs")
        await engine.run_until_idle()
        assert calls == ["goal", "also Berlin"]
    finally:
        await engine.close()
        await store.close()


async def test_a_round_that_could_not_be_planned_is_not_asked_for_again_after_a_restart(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "db.sqlite3")
    final_step = asyncio.Event()
    hold = asyncio.Event()
    allowed: list[int] = []

    async def work(context: TaskContext) -> str:
        if context.task.kind is TaskKind.SUMMARY:
            allowed.append(context.replans_left)
            if context.replans_left > 0:
                raise AnotherRound("c is missing")
            final_step.set()
            await hold.wait()
            return "answer with what there is"
        return "a out"

    async def planner(request: PlanRequest) -> Plan:
        if request.revision is None:
            return plan(tool("a"), summary("s", "a"))
        raise PlanningFailed("The planner is out of ideas.")

    config = EngineConfig(retry=ONE_ATTEMPT)
    first = await SqliteStore.open(db)
    engine = Engine(first, dict.fromkeys(TaskKind, work), planner=planner, config=config)
    run = await engine.submit("goal")
    await final_step.wait()  # answering after the refused round when the process stops
    await engine.close()
    await first.close()
    assert allowed == [2, 0]

    hold.set()
    second = await SqliteStore.open(db)
    engine = Engine(second, dict.fromkeys(TaskKind, work), planner=planner, config=config)
    try:
        assert await engine.resume_all() == [run.id]
        view = await engine.wait(run.id)
        events = await engine.events(run.id)
    finally:
        await engine.close()
        await second.close()
    assert allowed == [2, 0, 0]
    assert view.run.status is RunStatus.SUCCEEDED
    assert view.task("s").output == "answer with what there is"
    assert [e.kind for e in events].count(EventKind.RUN_REPLANNING) == 1
