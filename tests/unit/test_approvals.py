"""Tasks that wait for approval: approve, deny, expire, restart, and decisions from elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from scheduler.dag.approvals import duration, refusal
from scheduler.dag.bus import Subscription
from scheduler.dag.engine import Engine, EngineConfig
from scheduler.dag.executors import PlanRequest
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from scheduler.dag.retry import RetryPolicies, RetryPolicy
from storage.connect import open_store as open_any
from storage.records import Approval, Decision, EventKind, RunStatus, TaskStatus
from storage.sqlite import SqliteStore
from tests.support.executors import Echo, statuses
from tests.support.plans import plan, summary, tool

ONE_ATTEMPT = RetryPolicies(default=RetryPolicy(max_attempts=1))
SENSITIVE = "danger.delete"

MakeEngine = Callable[..., Awaitable[Engine]]


def needs_approval(task: PlanTask) -> bool:
    return task.kind is TaskKind.TOOL and task.tool == SENSITIVE


@pytest.fixture
async def make_engine(tmp_path: Path) -> AsyncIterator[MakeEngine]:
    opened: list[tuple[Engine, SqliteStore]] = []

    async def make(executor: Echo, **config: object) -> Engine:
        store = await SqliteStore.open(str(tmp_path / "approvals.sqlite3"))
        engine = Engine(
            store,
            dict.fromkeys(TaskKind, executor),
            config=EngineConfig(**{"retry": ONE_ATTEMPT, **config}),  # type: ignore[arg-type]
            needs_approval=needs_approval,
        )
        opened.append((engine, store))
        return engine

    yield make
    for engine, store in reversed(opened):
        await engine.close()
        await store.close()


async def until(events: Subscription, kind: EventKind, task_id: str | None = None) -> None:
    async for event in events:
        if event.kind is kind and (task_id is None or event.task_id == task_id):
            return
    raise AssertionError(f"no {kind} event")


SENSITIVE_PLAN = plan(
    tool("t1", q="Tokyo"),
    tool("t2", "t1", name=SENSITIVE, path="/tmp/{{t1}}"),
    tool("t3", "t2"),
    tool("t4"),
    summary("s", "t3", "t4"),
)


async def test_an_approved_task_runs_with_the_arguments_shown_and_others_do_not_wait(
    make_engine: MakeEngine,
) -> None:
    echo = Echo()
    # One slot for the whole process: a task awaiting approval must not hold it.
    engine = await make_engine(echo, max_total_concurrency=1)
    with engine.bus.subscribe() as events:
        run = await engine.submit("g", plan=SENSITIVE_PLAN, requester="U1")
        await until(events, EventKind.TASK_AWAITING_APPROVAL, "t2")
        view = await engine.view(run.id)
        assert view.task("t2").status is TaskStatus.AWAITING_APPROVAL
        [request] = view.approvals
        assert request.args == {"path": "/tmp/t1({'q': 'Tokyo'})"}
        assert request.decision is None
        await until(events, EventKind.TASK_SUCCEEDED, "t4")
        assert "t2" not in echo.order

        decided = await engine.decide(run.id, "t2", approve=True, by="U1")
        assert decided is not None
        assert decided[1]
        assert decided[0].decision is Decision.APPROVED
        view = await engine.wait(run.id)

    assert view.run.status is RunStatus.SUCCEEDED
    assert echo.calls[echo.order.index("t2")].task.args == {"path": "/tmp/t1({'q': 'Tokyo'})"}
    kinds = [e.kind for e in await engine.events(run.id) if e.task_id == "t2"]
    assert kinds == [
        EventKind.TASK_AWAITING_APPROVAL,
        EventKind.TASK_APPROVED,
        EventKind.TASK_STARTED,
        EventKind.TASK_SUCCEEDED,
    ]


async def test_a_denied_task_fails_and_skips_its_dependants(make_engine: MakeEngine) -> None:
    echo = Echo()
    engine = await make_engine(echo)
    with engine.bus.subscribe() as events:
        run = await engine.submit("g", plan=SENSITIVE_PLAN)
        await until(events, EventKind.TASK_AWAITING_APPROVAL, "t2")
        decided = await engine.decide(run.id, "t2", approve=False, by="<@U2>")
        view = await engine.wait(run.id)

    assert decided is not None
    assert decided[0].decision is Decision.DENIED
    assert view.run.status is RunStatus.FAILED
    assert statuses(view.tasks) == {
        "t1": "succeeded",
        "t2": "failed",
        "t3": "skipped",
        "t4": "succeeded",
        "s": "succeeded",
    }
    assert view.task("t2").error == "Denied by <@U2>."
    assert "t2" not in echo.order
    assert "t3" not in echo.order


async def test_the_first_decision_stands(make_engine: MakeEngine) -> None:
    engine = await make_engine(Echo())
    with engine.bus.subscribe() as events:
        run = await engine.submit("g", plan=SENSITIVE_PLAN)
        await until(events, EventKind.TASK_AWAITING_APPROVAL, "t2")
        first = await engine.decide(run.id, "t2", approve=True, by="U1")
        again = await engine.decide(run.id, "t2", approve=True, by="U1")
        late = await engine.decide(run.id, "t2", approve=False, by="U2")
        view = await engine.wait(run.id)

    assert first is not None
    assert first[1]
    for other in (again, late):
        assert other is not None
        assert not other[1]
        assert (other[0].decision, other[0].decided_by) == (Decision.APPROVED, "U1")
    assert view.run.status is RunStatus.SUCCEEDED
    assert await engine.decide(run.id, "t1", approve=True, by="U1") is None  # never asked


async def test_an_approval_not_given_in_time_counts_as_denied(make_engine: MakeEngine) -> None:
    engine = await make_engine(Echo(), approval_timeout=0.05)
    run = await engine.submit("g", plan=SENSITIVE_PLAN)
    view = await engine.wait(run.id)

    assert view.task("t2").status is TaskStatus.FAILED
    assert view.task("t2").error == "Not approved within 0.05 s: denied."
    assert view.task("t3").status is TaskStatus.SKIPPED
    [request] = await engine.store.approvals(run.id)
    assert request.decision is Decision.EXPIRED
    # A press that comes after the deadline changes nothing.
    late = await engine.decide(run.id, "t2", approve=True, by="U1")
    assert late is not None
    assert not late[1]
    assert late[0].decision is Decision.EXPIRED


async def test_a_restart_keeps_waiting_with_the_same_deadline_and_takes_the_decision_then(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    store = await SqliteStore.open(str(tmp_path / "approvals.sqlite3"))
    first = Engine(store, dict.fromkeys(TaskKind, Echo()), needs_approval=needs_approval)
    with first.bus.subscribe() as events:
        run = await first.submit("g", plan=SENSITIVE_PLAN)
        await until(events, EventKind.TASK_AWAITING_APPROVAL, "t2")
    [before] = await store.approvals(run.id)
    await first.close()  # the process stops while t2 waits
    await store.close()

    echo = Echo()
    second = await make_engine(echo)
    assert await second.resume_all() == [run.id]
    view = await second.view(run.id)
    assert view.task("t2").status is TaskStatus.AWAITING_APPROVAL
    assert list(view.approvals) == [before]  # not asked again: same deadline
    await second.decide(run.id, "t2", approve=True, by="U1")
    view = await second.wait(run.id)

    assert view.run.status is RunStatus.SUCCEEDED
    assert "t2" in echo.order
    assert "t1" not in echo.order


async def test_a_decision_recorded_by_another_process_reaches_the_owner(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = await make_engine(Echo(), approval_poll=0.01)
    other = await SqliteStore.open(str(tmp_path / "approvals.sqlite3"))
    try:
        with engine.bus.subscribe() as events:
            run = await engine.submit("g", plan=SENSITIVE_PLAN)
            await until(events, EventKind.TASK_AWAITING_APPROVAL, "t2")
            # A replica that does not own the run records the decision; nobody wakes the owner.
            decided = await other.decide(run.id, "t2", Decision.DENIED, "U9")
            assert decided is not None
            assert decided[1]
            view = await engine.wait(run.id)
    finally:
        await other.close()
    assert view.task("t2").error == "Denied by U9."


async def test_a_replica_that_does_not_own_the_run_records_a_decision_the_owner_acts_on(
    database_url: str,
) -> None:
    """Two processes on one database (SQLite file or PostgreSQL): the press reaches the one
    that does not own the run; the owner reads the decision on its next poll."""
    owner_store = await open_any(database_url)
    replica_store = await open_any(database_url)
    echo = Echo()
    owner = Engine(
        owner_store,
        dict.fromkeys(TaskKind, echo),
        config=EngineConfig(retry=ONE_ATTEMPT, approval_poll=0.01),
        needs_approval=needs_approval,
    )
    replica = Engine(replica_store, dict.fromkeys(TaskKind, echo), needs_approval=needs_approval)
    try:
        with owner.bus.subscribe() as events:
            run = await owner.submit("g", plan=SENSITIVE_PLAN)
            await until(events, EventKind.TASK_AWAITING_APPROVAL, "t2")
            assert not await replica.owns(run.id)
            decided = await replica.decide(run.id, "t2", approve=True, by="U1")
            assert decided is not None
            assert decided[1]
            view = await owner.wait(run.id)
        assert view.run.status is RunStatus.SUCCEEDED
        assert "t2" in echo.order
    finally:
        for engine, store in ((owner, owner_store), (replica, replica_store)):
            await engine.close()
            await store.close()


async def test_retrying_a_denied_task_asks_again(make_engine: MakeEngine) -> None:
    engine = await make_engine(Echo())
    with engine.bus.subscribe() as events:
        run = await engine.submit("g", plan=SENSITIVE_PLAN)
        await until(events, EventKind.TASK_AWAITING_APPROVAL, "t2")
        await engine.decide(run.id, "t2", approve=False, by="U1")
        await engine.wait(run.id)
        assert await engine.retry_failed(run.id)
        await until(events, EventKind.TASK_AWAITING_APPROVAL, "t2")
        [request] = (await engine.view(run.id)).approvals
        assert request.decision is None
        await engine.decide(run.id, "t2", approve=True, by="U1")
        view = await engine.wait(run.id)
    assert view.run.status is RunStatus.SUCCEEDED


async def test_cancelling_a_run_cancels_its_waiting_task(make_engine: MakeEngine) -> None:
    engine = await make_engine(Echo())
    with engine.bus.subscribe() as events:
        run = await engine.submit("g", plan=SENSITIVE_PLAN)
        await until(events, EventKind.TASK_AWAITING_APPROVAL, "t2")
        assert await engine.cancel(run.id)
    view = await engine.view(run.id)
    assert view.run.status is RunStatus.CANCELLED
    assert view.task("t2").status is TaskStatus.CANCELLED


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(86400, "24 h"), (5400, "1.5 h"), (900, "15 min"), (30, "30 s"), (0.05, "0.05 s")],
)
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_the_refusal_names_who_denied_or_how_long_it_waited() -> None:
    base = Approval(run_id="r", task_id="t", requested_at=0.0, deadline=86400.0, args={})
    denied = Approval(**{**base.__dict__, "decision": Decision.DENIED, "decided_by": "<@U1>"})
    expired = Approval(**{**base.__dict__, "decision": Decision.EXPIRED})
    assert refusal(denied) == "Denied by <@U1>."
    assert refusal(expired) == "Not approved within 24 h: denied."


async def test_a_task_awaiting_approval_is_kept_by_steering_and_its_request_stands(
    tmp_path: Path,
) -> None:
    """A revision keeps every task that has left pending: one awaiting approval keeps waiting,
    with the same request (deadline, arguments), and runs once approved."""
    first = plan(
        tool("t1", q="Tokyo"),
        tool("t2", "t1", name=SENSITIVE, path="/tmp/{{t1}}"),
        summary("s", "t2"),
    )

    async def planner(request: PlanRequest) -> Plan:
        if request.revision is None:
            return first
        statuses = {t.id: t.status for t in request.revision.tasks}
        assert statuses["t2"] is TaskStatus.AWAITING_APPROVAL
        return plan(
            first.tasks[0],
            first.tasks[1],
            tool("t3", q="Paris"),
            summary("s", "t2", "t3"),
        )

    store = await SqliteStore.open(str(tmp_path / "steer.sqlite3"))
    echo = Echo()
    engine = Engine(
        store, dict.fromkeys(TaskKind, echo), planner=planner, needs_approval=needs_approval
    )
    try:
        with engine.bus.subscribe() as events:
            run = await engine.submit("goal")
            await until(events, EventKind.TASK_AWAITING_APPROVAL, "t2")
            [before] = await store.approvals(run.id)
            assert await engine.steer(run.id, "also Paris", requester="U1")
            await until(events, EventKind.TASK_SUCCEEDED, "t3")
            view = await engine.view(run.id)
            assert view.task("t2").status is TaskStatus.AWAITING_APPROVAL
            assert list(view.approvals) == [before]
            await engine.decide(run.id, "t2", approve=True, by="U1")
            view = await engine.wait(run.id)
        assert view.run.status is RunStatus.SUCCEEDED
        assert [t.id for t in view.tasks] == ["t1", "t2", "t3", "s"]
        assert echo.order.count("t2") == 1
    finally:
        await engine.close()
        await store.close()
