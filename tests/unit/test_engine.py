from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from scheduler.dag.engine import Engine, EngineConfig
from scheduler.dag.executors import Executor, PlanRequest, TaskContext
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from scheduler.dag.retry import PLANNING, RetryPolicies, RetryPolicy
from scheduler.dag.slots import SlotPolicy
from scheduler.errors import AnotherRound, PlanningFailed, RunNotFound, TaskError
from storage.connect import open_store
from storage.leases import Owner
from storage.records import EventKind, NewRun, RunStatus, TaskStatus, Transition
from storage.sqlite import SqliteStore
from tests.support.executors import Echo, Gate, statuses
from tests.support.plans import chain_plan, fan_plan, llm, plan, summary, tool

ONE_ATTEMPT = RetryPolicies(default=RetryPolicy(max_attempts=1))

FAST_RETRY = RetryPolicies(default=RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002))

MakeEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "engine.sqlite3"


@pytest.fixture
async def make_engine(db_path: Path) -> AsyncIterator[MakeEngine]:
    """Engines on one real SQLite file; each with its own store, all closed at the end."""
    opened: list[tuple[Engine, SqliteStore]] = []

    async def make(
        executor: Executor | Mapping[TaskKind, Executor],
        *,
        planner: object = None,
        estimate: Callable[[PlanTask], float] | None = None,
        **config: object,
    ) -> Engine:
        store = await SqliteStore.open(str(db_path))
        executors = executor if isinstance(executor, Mapping) else dict.fromkeys(TaskKind, executor)
        settings = {"retry": FAST_RETRY, **config}
        extra = {} if estimate is None else {"estimate": estimate}
        engine = Engine(
            store,
            executors,
            planner=planner,  # type: ignore[arg-type]
            config=EngineConfig(**settings),  # type: ignore[arg-type]
            **extra,  # type: ignore[arg-type]
        )
        opened.append((engine, store))
        return engine

    yield make
    for engine, store in reversed(opened):
        await engine.close()
        await store.close()


async def run_plan(engine: Engine, the_plan: Plan, goal: str = "goal") -> str:
    run = await engine.submit(goal, plan=the_plan)
    await engine.wait(run.id)
    return run.id


# -- running a plan ----------------------------------------------------------------------------


async def test_a_plan_runs_to_success_with_outputs_substituted(make_engine: MakeEngine) -> None:
    echo = Echo()
    engine = await make_engine(echo)
    the_plan = plan(
        tool("t1", city="Tokyo"),
        tool("t2", "t1", q="after {{t1}}"),
        llm("t3", "t2", prompt="compare {{t1}} and {{ t2 }}"),
        summary("s", "t3"),
    )
    run = await engine.submit("weather", plan=the_plan, requester="U1", meta={"k": "v"})
    assert run.status is RunStatus.PLANNING
    view = await engine.wait(run.id)

    assert view.run.status is RunStatus.SUCCEEDED
    assert view.run.plan == the_plan
    assert (view.run.requester, view.run.meta) == ("U1", {"k": "v"})
    assert statuses(view.tasks) == dict.fromkeys(["t1", "t2", "t3", "s"], "succeeded")
    assert view.task("t1").output == "t1({'city': 'Tokyo'})"
    assert view.task("t2").output == "t2({'q': \"after t1({'city': 'Tokyo'})\"})"
    assert echo.calls[2].task.prompt == (
        f"compare {view.task('t1').output} and {view.task('t2').output}"
    )
    assert all(t.attempts == 1 for t in view.tasks)
    assert all(t.started_at is not None and t.finished_at is not None for t in view.tasks)
    assert echo.order == ["t1", "t2", "t3", "s"]
    assert not engine.is_active(run.id)


async def test_each_start_records_the_arguments_sent_after_substitution(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(Echo())
    the_plan = plan(
        tool("t1", city="Tokyo"), tool("t2", "t1", q="after {{t1}}"), summary("s", "t2")
    )

    run_id = await run_plan(engine, the_plan)

    started = {
        event.task_id: event.data
        for event in await engine.store.events(run_id)
        if event.kind is EventKind.TASK_STARTED
    }
    assert started == {
        "t1": {"args": {"city": "Tokyo"}},
        "t2": {"args": {"q": "after t1({'city': 'Tokyo'})"}},
        "s": None,
    }


async def test_context_gives_attempt_idempotency_key_and_read_only_results(
    make_engine: MakeEngine,
) -> None:
    echo = Echo(failures={"t1": [TaskError("try again", retryable=True)]})
    engine = await make_engine(echo)
    run_id = await run_plan(engine, plan(tool("t1"), summary("s", "t1")))
    first, second, final = echo.calls
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.idempotency_key == second.idempotency_key == f"{run_id}:t1"
    assert final.results["t1"].status is TaskStatus.SUCCEEDED
    with pytest.raises(TypeError):
        final.results["t1"] = final.results["s"]  # type: ignore[index]


async def test_a_task_starts_as_soon_as_its_last_dependency_succeeds(
    make_engine: MakeEngine,
) -> None:
    gate = Gate()
    engine = await make_engine(gate)
    the_plan = plan(
        tool("a"), tool("b"), tool("slow"), tool("c", "a", "b"), summary("s", "c", "slow")
    )
    run = await engine.submit("g", plan=the_plan)
    await gate.until(lambda: set(gate.running) == {"a", "b", "slow"})
    gate.release("a")
    await gate.until(lambda: "a" not in gate.running)
    assert not gate.started["c"].is_set()
    gate.release("b")
    await gate.started["c"].wait()
    assert "slow" in gate.running  # c did not wait for the unrelated slow task
    gate.release("c")
    gate.release("slow")
    await gate.started["s"].wait()
    gate.release("s")
    assert (await engine.wait(run.id)).run.status is RunStatus.SUCCEEDED


async def test_a_delivery_starts_one_run_and_its_redelivery_none(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(Echo())
    the_plan = plan(tool("t1"), summary("s", "t1"))
    run = await engine.submit("g", plan=the_plan, delivery_id="Ev1")
    assert run is not None
    assert (await engine.wait(run.id)).run.status is RunStatus.SUCCEEDED
    again = await engine.submit("g", plan=the_plan, delivery_id="Ev1")
    assert again is None
    assert [r.id for r in await engine.store.recent_runs()] == [run.id]
    assert not engine.is_active(run.id)


async def hold_at_the_limit(gate: Gate, limit: int, releases: int) -> None:
    """Release running tasks one by one; after each, the next task must take the freed slot."""
    await gate.until(lambda: len(gate.running) == limit)
    for released in range(1, releases + 1):
        gate.release(next(iter(gate.running)))
        await gate.until(
            lambda released=released: (
                len(gate.order) == limit + released  # type: ignore[misc]
                and len(gate.running) == limit
            )
        )


async def test_the_per_run_limit_is_reached_and_never_exceeded(make_engine: MakeEngine) -> None:
    gate = Gate()
    engine = await make_engine(gate, max_concurrency=3)
    run = await engine.submit("g", plan=fan_plan(10))
    await hold_at_the_limit(gate, 3, releases=7)
    for task_id in [f"t{n}" for n in range(1, 11)] + ["s"]:
        gate.release(task_id)
    assert (await engine.wait(run.id)).run.status is RunStatus.SUCCEEDED
    assert gate.max_running == 3


async def test_the_process_wide_limit_holds_across_runs(make_engine: MakeEngine) -> None:
    gate = Gate()
    engine = await make_engine(gate, max_concurrency=4, max_total_concurrency=5)
    ids = {prefix: [f"{prefix}{n}" for n in range(6)] for prefix in ("a", "b")}
    runs = [
        await engine.submit("g", plan=plan(*map(tool, tasks), summary(f"{prefix}s", *tasks)))
        for prefix, tasks in ids.items()
    ]
    await hold_at_the_limit(gate, 5, releases=7)
    for task_id in [*ids["a"], *ids["b"], "as", "bs"]:
        gate.release(task_id)
    for run in runs:
        assert (await engine.wait(run.id)).run.status is RunStatus.SUCCEEDED
    assert gate.max_running == 5
    assert sorted(gate.max_running_by_run.values()) == [4, 4]


PRIORITY_PLAN = plan(
    tool("a"),
    tool("b", "a"),
    tool("c", "b"),
    tool("d", "c"),
    tool("m"),
    tool("n", "m"),
    tool("x", cost=10),
    summary("s", "d", "n", "x"),
)


async def test_with_one_slot_the_longest_remaining_path_goes_first(
    make_engine: MakeEngine,
) -> None:
    echo = Echo()
    engine = await make_engine(echo, max_concurrency=1)
    await run_plan(engine, PRIORITY_PLAN)
    # kind weights: tool 1, summary 3. a=7 b=6 c=5 m=5 d=4 n=4 x=4; ties go by plan order
    assert echo.order == ["a", "b", "c", "m", "d", "n", "x", "s"]


async def test_a_duration_aware_estimate_changes_the_order(make_engine: MakeEngine) -> None:
    echo = Echo()
    engine = await make_engine(
        echo, max_concurrency=1, estimate=lambda task: float(task.args.get("cost", 1))
    )
    await run_plan(engine, PRIORITY_PLAN)
    assert echo.order[0] == "x"


# -- failures, timeouts, retries -----------------------------------------------------------


async def test_a_task_that_outlives_its_timeout_fails(make_engine: MakeEngine) -> None:
    gate = Gate()
    gate.release("s")  # t1 is never released
    engine = await make_engine(gate, task_timeout=0.05, retry=ONE_ATTEMPT)
    view = await engine.wait(await run_plan(engine, plan(tool("t1"), summary("s", "t1"))))
    assert view.task("t1").status is TaskStatus.FAILED
    assert view.task("t1").error == "Timed out after 0.05 s."
    assert gate.cancelled == ["t1"]


async def test_timeouts_are_retried(make_engine: MakeEngine) -> None:
    gate = Gate()
    gate.release("s")
    engine = await make_engine(gate, task_timeout=0.05)
    view = await engine.wait(await run_plan(engine, plan(tool("t1"), summary("s", "t1"))))
    assert view.task("t1").attempts == 3
    assert gate.cancelled == ["t1", "t1", "t1"]


@pytest.mark.parametrize(
    ("errors", "status", "attempts", "error"),
    [
        ([TaskError("429", retryable=True)], TaskStatus.SUCCEEDED, 2, None),
        ([ConnectionResetError("reset"), TimeoutError()], TaskStatus.SUCCEEDED, 3, None),
        ([TaskError("503", retryable=True)] * 3, TaskStatus.FAILED, 3, "503"),
        ([TaskError("bad arguments")], TaskStatus.FAILED, 1, "bad arguments"),
        ([ValueError("broken")], TaskStatus.FAILED, 1, "ValueError: broken"),
    ],
    ids=["one 429", "connection then timeout", "retries used up", "not retryable", "a bug"],
)
async def test_only_retryable_errors_are_retried(
    make_engine: MakeEngine,
    errors: list[BaseException],
    status: TaskStatus,
    attempts: int,
    error: str | None,
) -> None:
    echo = Echo(failures={"t1": errors})
    engine = await make_engine(echo)
    run_id = await run_plan(engine, plan(tool("t1"), summary("s", "t1")))
    view = await engine.view(run_id)
    assert (view.task("t1").status, view.task("t1").attempts, view.task("t1").error) == (
        status,
        attempts,
        error,
    )
    retried = [e for e in await engine.store.events(run_id) if e.kind is EventKind.TASK_RETRIED]
    # every attempt but the last is followed by a retry
    assert [e.data["attempt"] for e in retried if e.data] == list(range(1, attempts))
    assert all(0 <= e.data["delay"] <= 0.002 for e in retried if e.data)


async def test_failure_skips_dependents_and_the_summary_still_runs(
    make_engine: MakeEngine,
) -> None:
    echo = Echo(failures={"a": [TaskError("no such city")]})
    engine = await make_engine(echo)
    the_plan = plan(tool("a"), tool("b", "a"), tool("c", "b"), tool("d"), summary("s", "c", "d"))
    run_id = await run_plan(engine, the_plan)
    view = await engine.view(run_id)

    assert statuses(view.tasks) == {
        "a": "failed",
        "b": "skipped",
        "c": "skipped",
        "d": "succeeded",
        "s": "succeeded",
    }
    assert view.task("b").error == "Skipped because a did not succeed."
    assert view.task("c").error == "Skipped because b did not succeed."
    assert echo.count("b") == echo.count("c") == 0
    seen = echo.results_seen[-1]
    assert echo.calls[-1].task.id == "s"
    assert {k: v.status for k, v in seen.items()} == {
        "a": TaskStatus.FAILED,
        "b": TaskStatus.SKIPPED,
        "c": TaskStatus.SKIPPED,
        "d": TaskStatus.SUCCEEDED,
        "s": TaskStatus.RUNNING,
    }
    assert seen["a"].error == "no such city"
    assert view.run.status is RunStatus.FAILED
    assert view.run.error == "1 task(s) failed and 2 were skipped."
    finished = (await engine.store.events(run_id))[-1]
    assert finished.kind is EventKind.RUN_FINISHED
    assert finished.data == {
        "status": "failed",
        "failed": ["a"],
        "skipped": ["b", "c"],
        "error": "1 task(s) failed and 2 were skipped.",
    }


async def test_a_failed_summary_fails_the_run(make_engine: MakeEngine) -> None:
    engine = await make_engine(Echo(failures={"s": [TaskError("model refused")]}))
    view = await engine.view(await run_plan(engine, plan(tool("t1"), summary("s", "t1"))))
    assert view.run.status is RunStatus.FAILED
    assert view.task("s").error == "model refused"


async def test_an_executor_cancelled_from_inside_fails_its_task(make_engine: MakeEngine) -> None:
    async def cancels_itself(context: TaskContext) -> str:
        if context.task.id == "t1":
            raise asyncio.CancelledError
        return "ok"

    engine = await make_engine(cancels_itself)
    view = await engine.view(await run_plan(engine, plan(tool("t1"), summary("s", "t1"))))
    assert statuses(view.tasks) == {"t1": "failed", "s": "succeeded"}
    assert view.task("t1").error == "The executor was cancelled from inside, without a result."
    assert view.run.status is RunStatus.FAILED


async def test_a_kind_without_an_executor_fails_its_tasks(make_engine: MakeEngine) -> None:
    engine = await make_engine({TaskKind.TOOL: Echo(), TaskKind.SUMMARY: Echo()})
    view = await engine.view(await run_plan(engine, plan(llm("t1"), summary("s", "t1"))))
    assert view.task("t1").error == "No executor is configured for llm tasks."
    assert view.task("s").status is TaskStatus.SUCCEEDED


# -- cancelling and retrying ---------------------------------------------------------------


async def test_cancel_stops_running_tasks_and_marks_the_rest(make_engine: MakeEngine) -> None:
    gate = Gate()
    engine = await make_engine(gate)
    the_plan = plan(tool("a"), tool("b"), tool("c", "a"), summary("s", "b", "c"))
    with engine.bus.subscribe() as events:
        run = await engine.submit("g", plan=the_plan)
        await gate.until(lambda: set(gate.running) == {"a", "b"})
        assert await engine.cancel(run.id)

        assert sorted(gate.cancelled) == ["a", "b"]
        view = await engine.view(run.id)
        assert statuses(view.tasks) == dict.fromkeys("abcs", "cancelled")
        assert (view.run.status, view.run.error) == (RunStatus.CANCELLED, "Cancelled.")
        assert not engine.is_active(run.id)
        assert [t for t in asyncio.all_tasks() if run.id in t.get_name()] == []
        published = events.drain()
    assert published[-1].kind is EventKind.RUN_CANCELLED
    cancelled = [e.task_id for e in published if e.kind is EventKind.TASK_CANCELLED]
    assert sorted(filter(None, cancelled)) == ["a", "b", "c", "s"]
    assert published == (await engine.store.events(run.id))[: len(published)]
    assert not await engine.cancel(run.id)  # nothing left to cancel


async def test_a_task_finishing_as_the_run_is_cancelled_keeps_its_success(
    make_engine: MakeEngine,
) -> None:
    box: list[Engine] = []
    cancels: list[asyncio.Future[bool]] = []

    async def finish_then_cancel(context: TaskContext) -> str:
        if context.task.id == "t1":
            # the cancellation arrives while t1's success is still on its way to the store
            cancels.append(asyncio.ensure_future(box[0].cancel(context.run_id)))
            return "made it"
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    engine = await make_engine(finish_then_cancel)
    box.append(engine)
    view = await engine.wait(await run_plan(engine, plan(tool("t1"), tool("t2"), summary("s"))))
    assert await cancels[0]
    view = await engine.view(view.run.id)
    assert view.run.status is RunStatus.CANCELLED
    assert statuses(view.tasks) == {"t1": "succeeded", "t2": "cancelled", "s": "cancelled"}
    assert view.task("t1").output == "made it"


async def test_cancel_while_planning(make_engine: MakeEngine) -> None:
    planning = asyncio.Event()

    async def stuck_planner(request: PlanRequest) -> Plan:
        planning.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    engine = await make_engine(Echo(), planner=stuck_planner)
    run = await engine.submit("g")
    await planning.wait()
    assert await engine.cancel(run.id)
    view = await engine.view(run.id)
    assert (view.run.status, view.tasks) == (RunStatus.CANCELLED, ())


async def test_cancel_right_after_submit(make_engine: MakeEngine) -> None:
    engine = await make_engine(Echo())
    run = await engine.submit("g", plan=fan_plan(3))
    assert await engine.cancel(run.id)
    view = await engine.view(run.id)
    assert view.run.status is RunStatus.CANCELLED
    assert all(t.status.finished for t in view.tasks)


async def test_concurrent_cancels_record_the_cancellation_once(make_engine: MakeEngine) -> None:
    gate = Gate()
    engine = await make_engine(gate)
    run = await engine.submit("g", plan=fan_plan(2))
    await gate.until(lambda: len(gate.running) == 2)
    assert list(await asyncio.gather(engine.cancel(run.id), engine.cancel(run.id))) == [True, True]
    kinds = [e.kind for e in await engine.store.events(run.id)]
    assert kinds.count(EventKind.RUN_CANCELLED) == 1
    assert kinds.count(EventKind.TASK_CANCELLED) == 3


async def test_retry_failed_reruns_what_did_not_succeed_and_the_summary(
    make_engine: MakeEngine,
) -> None:
    echo = Echo(failures={"a": [TaskError("flaky")]})
    engine = await make_engine(echo, retry=ONE_ATTEMPT)
    the_plan = plan(tool("a"), tool("b", "a"), tool("d"), summary("s", "b", "d"))
    run_id = await run_plan(engine, the_plan)
    assert (await engine.view(run_id)).run.status is RunStatus.FAILED

    assert await engine.retry_failed(run_id)
    view = await engine.wait(run_id)
    assert view.run.status is RunStatus.SUCCEEDED
    assert {t.id: (echo.count(t.id), t.attempts) for t in view.tasks} == {
        "a": (2, 2),
        "b": (1, 1),
        "d": (1, 1),
        "s": (2, 2),
    }
    assert not await engine.retry_failed(run_id)  # it succeeded: nothing to retry


async def test_retry_failed_of_a_cancelled_run(make_engine: MakeEngine) -> None:
    gate = Gate()
    engine = await make_engine(gate)
    run = await engine.submit("g", plan=fan_plan(1))
    await gate.started["t1"].wait()
    await engine.cancel(run.id)
    gate.release("t1")
    gate.release("s")
    assert await engine.retry_failed(run.id)
    assert (await engine.wait(run.id)).run.status is RunStatus.SUCCEEDED


async def test_retry_failed_refuses_active_and_unknown_runs(make_engine: MakeEngine) -> None:
    gate = Gate()
    engine = await make_engine(gate)
    run = await engine.submit("g", plan=fan_plan(1))
    await gate.started["t1"].wait()
    assert not await engine.retry_failed(run.id)
    with pytest.raises(RunNotFound):
        await engine.retry_failed("no-such-run")
    with pytest.raises(RunNotFound):
        await engine.view("no-such-run")
    gate.release("t1")
    gate.release("s")
    await engine.wait(run.id)


# -- events ------------------------------------------------------------------------------------


async def test_every_transition_is_committed_before_it_is_announced(
    make_engine: MakeEngine, db_path: Path
) -> None:
    engine = await make_engine(Echo(failures={"t2": [TaskError("x", retryable=True)]}))
    reader = sqlite3.connect(db_path)
    checked: list[EventKind] = []

    def stored_task_status(run_id: str, task_id: str | None) -> str:
        row = reader.execute(
            "SELECT status FROM tasks WHERE run_id = ? AND id = ?", (run_id, task_id)
        ).fetchone()
        return str(row[0])

    expected_task_status = {
        EventKind.TASK_SUCCEEDED: {"succeeded"},
        EventKind.TASK_FAILED: {"failed"},
        EventKind.TASK_SKIPPED: {"skipped"},
        EventKind.TASK_STARTED: {"running", "succeeded", "failed"},
    }

    async def subscriber() -> None:
        with engine.bus.subscribe() as events:
            async for event in events:
                # synchronous reads: nothing else runs between waking up and looking
                logged = reader.execute(
                    "SELECT kind FROM events WHERE seq = ?", (event.seq,)
                ).fetchone()
                assert logged == (event.kind.value,)
                if event.kind in expected_task_status:
                    status = stored_task_status(event.run_id, event.task_id)
                    assert status in expected_task_status[event.kind]
                if event.kind is EventKind.RUN_FINISHED:
                    run_status = reader.execute(
                        "SELECT status FROM runs WHERE id = ?", (event.run_id,)
                    ).fetchone()
                    assert run_status == ("succeeded",)
                checked.append(event.kind)
                if event.kind is EventKind.RUN_FINISHED:
                    return

    watcher = asyncio.ensure_future(subscriber())
    await asyncio.sleep(0)  # let it subscribe
    await run_plan(engine, fan_plan(20))
    await watcher
    reader.close()
    assert checked.count(EventKind.TASK_SUCCEEDED) == 21
    assert checked.count(EventKind.TASK_RETRIED) == 1
    assert checked[:2] == [EventKind.RUN_CREATED, EventKind.RUN_PLANNED]


async def test_events_go_out_in_commit_order_and_no_start_precedes_its_dependencies(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(Echo(failures={"m": [TaskError("x")]}))
    the_plan = plan(
        tool("a"),
        tool("b"),
        tool("c", "a", "b"),
        tool("d", "c"),
        tool("m", "a"),
        tool("n", "m"),
        summary("s", "d", "n"),
    )
    with engine.bus.subscribe() as subscription:
        run_id = await run_plan(engine, the_plan)
        published = subscription.drain()
    assert published == await engine.store.events(run_id)
    assert [e.seq for e in published] == sorted(e.seq for e in published)
    seq_of = {(e.kind, e.task_id): e.seq for e in published}
    final = {EventKind.TASK_SUCCEEDED, EventKind.TASK_FAILED, EventKind.TASK_SKIPPED}
    finished_at = {e.task_id: e.seq for e in published if e.kind in final}
    for task in the_plan.tasks:
        if (EventKind.TASK_STARTED, task.id) in seq_of:
            for dep in task.deps:
                assert finished_at[dep] < seq_of[(EventKind.TASK_STARTED, task.id)]
    assert seq_of[(EventKind.TASK_FAILED, "m")] < seq_of[(EventKind.TASK_SKIPPED, "n")]


async def test_a_slow_subscriber_does_not_slow_the_engine(make_engine: MakeEngine) -> None:
    engine = await make_engine(Echo())
    never_reads = engine.bus.subscribe()
    unblock = asyncio.Event()
    got: list[EventKind] = []

    async def stuck_reader() -> None:
        with engine.bus.subscribe() as events:
            async for event in events:
                await unblock.wait()
                got.append(event.kind)
                if event.kind is EventKind.RUN_FINISHED:
                    return

    reader = asyncio.ensure_future(stuck_reader())
    await asyncio.sleep(0)
    run_id = await run_plan(engine, chain_plan(30))
    assert (await engine.view(run_id)).run.status is RunStatus.SUCCEEDED
    assert got == []  # the run finished while the reader was stuck on its first event
    unblock.set()
    await reader
    stored = [e.kind for e in await engine.store.events(run_id)]
    assert got == stored
    assert [e.kind for e in never_reads.drain()] == stored
    never_reads.close()


# -- planning ----------------------------------------------------------------------------------


def planner_returning(result: Plan | BaseException) -> Callable[[PlanRequest], Awaitable[Plan]]:
    async def planner(request: PlanRequest) -> Plan:
        if isinstance(result, BaseException):
            raise result
        return result

    return planner


@pytest.mark.parametrize(
    ("planner", "message"),
    [
        (
            planner_returning(PlanningFailed("I have no tool for flights.")),
            "I have no tool for flights.",
        ),
        (
            planner_returning(plan(tool("t1", "t2"), tool("t2", "t1"))),
            "The plan is not valid:\n- The plan has no summary task; add exactly one task of kind "
            "'summary'.\n- The dependencies form a cycle: t1 -> t2 -> t1. A task cannot wait on "
            "itself.",
        ),
        (
            planner_returning(RuntimeError("model exploded")),
            "Planning failed: RuntimeError: model exploded",
        ),
        (None, "No planner is configured, so this goal cannot be planned."),
    ],
    ids=["planner refuses", "invalid plan", "planner bug", "no planner"],
)
async def test_planning_failures_are_recorded_with_a_clear_message(
    make_engine: MakeEngine, planner: object, message: str
) -> None:
    engine = await make_engine(Echo(), planner=planner)
    run = await engine.submit("fly me to the moon")
    view = await engine.wait(run.id)
    assert (view.run.status, view.run.error, view.tasks) == (RunStatus.FAILED, message, ())
    last = (await engine.store.events(run.id))[-1]
    assert last.kind is EventKind.RUN_FINISHED
    assert last.data is not None
    assert last.data["stage"] == "planning"


async def test_a_given_plan_is_validated_too(make_engine: MakeEngine) -> None:
    engine = await make_engine(Echo(), max_tasks=3)
    view = await engine.wait(await run_plan(engine, plan(tool("t1", "zz"), summary("s"))))
    assert view.run.status is RunStatus.FAILED
    assert view.run.error is not None
    assert "Task 't1' depends on unknown task(s) zz." in view.run.error
    assert await engine.store.unfinished_runs() == []


class FlakyPlanner:
    """Raises the given errors on its first calls, then returns `result`."""

    def __init__(self, errors: list[BaseException], result: Plan) -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    async def __call__(self, request: PlanRequest) -> Plan:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


async def test_a_transient_planning_failure_is_retried(make_engine: MakeEngine) -> None:
    planner = FlakyPlanner([TaskError("HTTP 503", retryable=True)], plan(tool("t1"), summary("s")))
    engine = await make_engine(Echo(), planner=planner)
    view = await engine.wait((await engine.submit("g")).id)
    assert (view.run.status, planner.calls) == (RunStatus.SUCCEEDED, 2)


@pytest.mark.parametrize(
    ("error", "calls"),
    [(TaskError("HTTP 503", retryable=True), 2), (TaskError("HTTP 401", retryable=False), 1)],
    ids=["transient, until the planning budget is spent", "permanent, at once"],
)
async def test_planning_retries_follow_the_planning_policy(
    make_engine: MakeEngine, error: TaskError, calls: int
) -> None:
    planner = FlakyPlanner([error] * 5, plan(tool("t1"), summary("s")))
    fast = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)
    policies = RetryPolicies(default=fast, overrides={PLANNING: replace(fast, max_attempts=2)})
    engine = await make_engine(Echo(), planner=planner, retry=policies)
    view = await engine.wait((await engine.submit("g")).id)
    assert (view.run.status, planner.calls) == (RunStatus.FAILED, calls)
    assert view.run.error == (
        f"I could not plan this goal because the language model call failed ({calls} "
        f"attempt(s)): {error}"
    )


async def test_each_kind_retries_by_its_own_policy(make_engine: MakeEngine) -> None:
    boom = TaskError("flaky", retryable=True)
    echo = Echo(failures={"t1": [boom] * 5, "c": [boom] * 5})
    fast = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)
    policies = RetryPolicies(default=fast, overrides={"llm": replace(fast, max_attempts=1)})
    engine = await make_engine(echo, retry=policies)
    view = await engine.wait(
        await run_plan(engine, plan(tool("t1"), llm("c", prompt="x"), summary("s", "t1", "c")))
    )
    assert (echo.count("t1"), echo.count("c")) == (3, 1)
    assert statuses(view.tasks) == {"t1": "failed", "c": "failed", "s": "succeeded"}


async def test_an_internal_error_in_a_run_fails_it_instead_of_leaving_it_running(
    make_engine: MakeEngine,
) -> None:
    # A priority estimator that raises stands for any bug inside a run's driver (such as a kind
    # added without its rules): the run must end, say why, and not come back on the next start.
    def broken(task: PlanTask) -> float:
        raise KeyError(task.kind)

    engine = await make_engine(Echo(), estimate=broken)
    view = await engine.wait(await run_plan(engine, plan(tool("t1"), summary("s", "t1"))))
    assert view.run.status is RunStatus.FAILED
    assert view.run.error is not None
    assert view.run.error.startswith("dagbot stopped this run after an internal error (KeyError")
    assert statuses(view.tasks) == {"t1": "cancelled", "s": "cancelled"}
    assert await engine.store.unfinished_runs() == []
    assert await engine.resume_all() == []


async def test_the_planner_gets_the_goal_and_the_thread_history(make_engine: MakeEngine) -> None:
    requests: list[PlanRequest] = []

    async def planner(request: PlanRequest) -> Plan:
        requests.append(request)
        await request.record_usage("m", 10, 2)
        return plan(tool("t1"), summary("s", "t1"))

    engine = await make_engine(Echo(), planner=planner)
    first = await engine.submit("first goal")
    await engine.wait(first.id)
    second = await engine.submit("second goal", parent_run_id=first.id)
    await engine.wait(second.id)

    assert requests[1].goal == "second goal"
    [history] = requests[1].history
    assert history.goal == "first goal"
    assert history.summary == "s({})"
    assert [(u.task_id, u.prompt_tokens, u.calls) for u in await engine.store.usage(second.id)] == [
        (None, 10, 1)
    ]


async def test_executors_record_usage_per_task(make_engine: MakeEngine) -> None:
    async def counting(context: TaskContext) -> str:
        await context.record_usage("m", 3, 4)
        return "ok"

    engine = await make_engine(counting)
    run_id = await run_plan(engine, plan(llm("t1"), summary("s", "t1")))
    totals = [
        (u.task_id, u.prompt_tokens, u.completion_tokens) for u in await engine.store.usage(run_id)
    ]
    assert totals == [("t1", 3, 4), ("s", 3, 4)]


# -- idling, closing, resuming -----------------------------------------------------------------


async def test_run_until_idle_includes_runs_started_meanwhile(make_engine: MakeEngine) -> None:
    started: list[str] = []
    engine_box: list[Engine] = []

    async def spawning(context: TaskContext) -> str:
        if context.goal == "parent" and context.task.id == "s":
            child = await engine_box[0].submit("child", plan=fan_plan(2))
            started.append(child.id)
        return "ok"

    engine = await make_engine(spawning)
    engine_box.append(engine)
    parent = await engine.submit("parent", plan=fan_plan(2))
    await engine.run_until_idle()
    [child_id] = started
    for run_id in (parent.id, child_id):
        assert (await engine.view(run_id)).run.status is RunStatus.SUCCEEDED


async def test_close_leaves_unfinished_runs_for_the_next_start(make_engine: MakeEngine) -> None:
    gate = Gate()
    engine = await make_engine(gate)
    run = await engine.submit("g", plan=fan_plan(2))
    await gate.until(lambda: len(gate.running) == 2)
    await engine.close()
    view = await engine.view(run.id)
    assert view.run.status is RunStatus.RUNNING
    assert statuses(view.tasks) == {"t1": "running", "t2": "running", "s": "pending"}
    assert await engine.store.unfinished_runs() == [run.id]


async def stored_run(db_path: Path, the_plan: Plan, **states: tuple[TaskStatus, str | None]) -> str:
    """A run as a crashed process leaves it: each named task moved to (status, output)."""
    store = await SqliteStore.open(str(db_path))
    try:
        record, _ = await store.create_run(NewRun(goal="resume me"))
        await store.set_plan(record.id, the_plan.model_dump(mode="json"))
        for task_id, (status, output) in states.items():
            await store.record(
                Transition(
                    run_id=record.id,
                    kind=EventKind.TASK_STARTED,
                    task_id=task_id,
                    task_status=TaskStatus.RUNNING,
                    new_attempt=True,
                )
            )
            if status is not TaskStatus.RUNNING:
                kind = {
                    TaskStatus.SUCCEEDED: EventKind.TASK_SUCCEEDED,
                    TaskStatus.FAILED: EventKind.TASK_FAILED,
                }[status]
                await store.record(
                    Transition(
                        run_id=record.id,
                        kind=kind,
                        task_id=task_id,
                        task_status=status,
                        output=output,
                        error=None if output else "it broke",
                    )
                )
        return record.id
    finally:
        await store.close()


async def test_resume_keeps_succeeded_tasks_and_reruns_running_and_pending(
    make_engine: MakeEngine, db_path: Path
) -> None:
    the_plan = plan(
        tool("t1"),
        tool("t2"),
        tool("t3", "t1", city="{{t1}}"),
        tool("t4", "t2"),
        summary("s", "t3", "t4"),
    )
    run_id = await stored_run(
        db_path,
        the_plan,
        t1=(TaskStatus.SUCCEEDED, "kept output"),
        t2=(TaskStatus.RUNNING, None),
    )
    echo = Echo()
    engine = await make_engine(echo)
    with engine.bus.subscribe() as events:
        assert await engine.resume_all() == [run_id]
        assert await engine.resume_all() == []  # already being worked on
        await engine.run_until_idle()
        assert events.drain()[0].kind is EventKind.RUN_RESUMED

    view = await engine.view(run_id)
    assert view.run.status is RunStatus.SUCCEEDED
    assert sorted(echo.order) == ["s", "t2", "t3", "t4"]
    assert view.task("t1").output == "kept output"
    assert echo.calls[[c.task.id for c in echo.calls].index("t3")].task.args == {
        "city": "kept output"
    }
    assert {t.id: t.attempts for t in view.tasks} == {"t1": 1, "t2": 2, "t3": 1, "t4": 1, "s": 1}
    assert [c.attempt for c in echo.calls if c.task.id == "t2"] == [2]


async def test_resume_after_a_crash_between_a_failure_and_its_skips(
    make_engine: MakeEngine, db_path: Path
) -> None:
    the_plan = plan(tool("t1"), tool("t2", "t1"), tool("t3"), summary("s", "t2", "t3"))
    run_id = await stored_run(
        db_path, the_plan, t1=(TaskStatus.FAILED, None), t3=(TaskStatus.SUCCEEDED, "fine")
    )
    echo = Echo()
    engine = await make_engine(echo)
    await engine.resume_all()
    await engine.run_until_idle()
    view = await engine.view(run_id)
    assert statuses(view.tasks) == {
        "t1": "failed",
        "t2": "skipped",
        "t3": "succeeded",
        "s": "succeeded",
    }
    assert echo.order == ["s"]  # the summary exactly once
    assert view.run.status is RunStatus.FAILED


async def test_resume_of_a_run_whose_tasks_had_all_finished(
    make_engine: MakeEngine, db_path: Path
) -> None:
    the_plan = plan(tool("t1"), summary("s", "t1"))
    run_id = await stored_run(
        db_path, the_plan, t1=(TaskStatus.SUCCEEDED, "a"), s=(TaskStatus.SUCCEEDED, "b")
    )
    echo = Echo()
    engine = await make_engine(echo)
    await engine.resume_all()
    await engine.run_until_idle()
    assert echo.calls == []
    assert (await engine.view(run_id)).run.status is RunStatus.SUCCEEDED


async def test_resume_of_a_run_that_was_still_planning(
    make_engine: MakeEngine, db_path: Path
) -> None:
    store = await SqliteStore.open(str(db_path))
    record, _ = await store.create_run(NewRun(goal="plan me"))
    await store.close()
    engine = await make_engine(Echo(), planner=planner_returning(fan_plan(2)))
    assert await engine.resume_all() == [record.id]
    await engine.run_until_idle()
    view = await engine.view(record.id)
    assert view.run.status is RunStatus.SUCCEEDED
    assert len(view.tasks) == 3


async def test_resume_ignores_finished_runs(make_engine: MakeEngine) -> None:
    engine = await make_engine(Echo())
    await run_plan(engine, fan_plan(1))
    assert await engine.resume_all() == []


async def interrupted_run(db_path: Path, starts: int) -> str:
    """A run whose task t1 was started `starts` times, each time by a process that died."""
    store = await SqliteStore.open(str(db_path))
    try:
        record, _ = await store.create_run(NewRun(goal="crash loop"))
        await store.set_plan(record.id, plan(tool("t1"), summary("s", "t1")).model_dump())
        for _ in range(starts):
            await store.record(
                Transition(
                    run_id=record.id,
                    kind=EventKind.TASK_STARTED,
                    task_id="t1",
                    task_status=TaskStatus.RUNNING,
                    new_attempt=True,
                )
            )
        return record.id
    finally:
        await store.close()


async def test_a_task_interrupted_by_crashes_keeps_its_retry_budget(
    make_engine: MakeEngine, db_path: Path
) -> None:
    run_id = await interrupted_run(db_path, starts=2)
    echo = Echo(failures={"t1": [TaskError("flaky", retryable=True)]})
    engine = await make_engine(echo)  # three attempts in all
    await engine.resume_all()
    await engine.run_until_idle()
    view = await engine.view(run_id)
    # Two starts were spent before the crashes: one is left, and its retryable failure is final.
    assert [c.attempt for c in echo.calls if c.task.id == "t1"] == [3]
    assert view.task("t1").status is TaskStatus.FAILED
    assert view.task("t1").attempts == 3


async def test_a_task_that_keeps_stopping_dagbot_is_not_started_again(
    make_engine: MakeEngine, db_path: Path
) -> None:
    run_id = await interrupted_run(db_path, starts=5)  # three allowed, plus two crash restarts
    echo = Echo()
    engine = await make_engine(echo)
    await engine.resume_all()
    await engine.run_until_idle()
    view = await engine.view(run_id)
    assert echo.order == ["s"]  # t1 never ran again; the summary still reports
    t1 = view.task("t1")
    assert t1.status is TaskStatus.FAILED
    assert t1.attempts == 5
    assert t1.error is not None
    assert "stopped while this task was running" in t1.error
    assert view.run.status is RunStatus.FAILED


async def test_a_crash_interrupted_task_runs_again_even_with_no_retries(
    make_engine: MakeEngine, db_path: Path
) -> None:
    run_id = await interrupted_run(db_path, starts=1)
    echo = Echo()
    engine = await make_engine(echo, retry=ONE_ATTEMPT)
    await engine.resume_all()
    await engine.run_until_idle()
    view = await engine.view(run_id)
    assert echo.order == ["t1", "s"]
    assert view.run.status is RunStatus.SUCCEEDED


# -- the read API front ends use ----------------------------------------------------------------


async def test_the_read_api_gives_domain_runs(make_engine: MakeEngine) -> None:
    engine = await make_engine(Echo())
    first = await engine.submit(
        "first", plan=chain_plan(2), requester="U1", thread_key="T1", meta={"k": 1}
    )
    await engine.wait(first.id)
    second = await engine.submit("second", plan=chain_plan(2), requester="U2", thread_key="T1")
    await engine.wait(second.id)

    found = await engine.get_run(first.id)
    assert found is not None
    assert found.plan is not None
    assert found.goal == "first"
    assert await engine.get_run("nope") is None
    assert (await engine.find_run(first.id[:6])) == found
    assert await engine.find_run("") is None
    assert [r.id for r in await engine.recent_runs()] == [second.id, first.id]
    assert [r.id for r in await engine.recent_runs(requester="U1")] == [first.id]
    latest = await engine.latest_run_in_thread("T1")
    assert latest is not None
    assert latest.id == second.id
    assert await engine.claim_delivery("E1") is True
    assert await engine.claim_delivery("E1") is False
    updated = await engine.update_meta(first.id, {"k": None, "ts": "1.2"})
    assert updated.meta == {"ts": "1.2"}
    events = await engine.events(first.id)
    assert events[-1].kind is EventKind.RUN_FINISHED
    last = await engine.last_event(first.id, {EventKind.RUN_FINISHED, EventKind.RUN_CANCELLED})
    assert last == events[-1]
    started = await engine.last_event(first.id, [EventKind.TASK_STARTED])
    assert started == [e for e in events if e.kind is EventKind.TASK_STARTED][-1]
    assert await engine.last_event(first.id, [EventKind.RUN_CANCELLED]) is None
    assert await engine.usage(first.id) == []


# -- slots across runs, commits, learned durations ------------------------------------------


CHAIN_A = plan(tool("a1"), tool("a2", "a1"), tool("a3", "a2"), summary("as", "a3"))
FAN_B = plan(tool("b1"), tool("b2"), tool("b3"), summary("bs", "b1", "b2", "b3"))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (SlotPolicy.EARLIEST_RUN, ["a1", "a2", "a3", "as", "b1", "b2", "b3", "bs"]),
        # the old semaphore: a2 queues behind every task b asked for while a1 ran
        (SlotPolicy.FIFO, ["a1", "b1", "b2", "b3", "a2", "bs", "a3", "as"]),
    ],
)
async def test_free_slots_go_to_the_earliest_run_first(
    make_engine: MakeEngine, policy: SlotPolicy, expected: list[str]
) -> None:
    gate = Gate()
    engine = await make_engine(gate, max_total_concurrency=1, slot_policy=policy)
    with engine.bus.subscribe() as events:
        first = await engine.submit("a", plan=CHAIN_A)
        await gate.started["a1"].wait()
        second = await engine.submit("b", plan=FAN_B)
        # Once b's plan is published its driver has already asked for its slots: the plan's
        # commit and the tickets are one synchronous stretch of the driver.
        async for event in events:
            if event.run_id == second.id and event.kind is EventKind.RUN_PLANNED:
                break
    assert engine.slots.waiting == 3
    for task_id in expected:
        gate.release(task_id)
    assert (await engine.wait(first.id)).run.status is RunStatus.SUCCEEDED
    assert (await engine.wait(second.id)).run.status is RunStatus.SUCCEEDED
    assert gate.order == expected


async def test_the_per_run_limit_still_holds_when_a_run_comes_first(
    make_engine: MakeEngine,
) -> None:
    gate = Gate()
    engine = await make_engine(gate, max_concurrency=2, max_total_concurrency=3)
    first = await engine.submit("a", plan=fan_plan(4))
    await gate.until(lambda: len(gate.running) == 2)
    second = await engine.submit("b", plan=plan(tool("b1"), summary("bs", "b1")))
    # the third slot goes to the later run: the earlier one is at its own limit
    await gate.until(lambda: "b1" in gate.running)
    assert gate.max_running_by_run[first.id] == 2
    for task_id in ["t1", "t2", "t3", "t4", "s", "b1", "bs"]:
        gate.release(task_id)
    await engine.run_until_idle()
    assert gate.max_running_by_run[first.id] == 2
    assert (await engine.view(second.id)).run.status is RunStatus.SUCCEEDED


async def test_an_outcome_and_the_starts_it_releases_share_one_commit(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(Echo())
    store = engine.store
    assert isinstance(store, SqliteStore)
    before = store.commits
    await run_plan(engine, chain_plan(10))
    # created, planned, the first start, one per edge (10), the summary's outcome, finished;
    # two commits per edge would be 25
    assert store.commits - before == 15


async def test_default_priorities_use_durations_learned_from_history(
    make_engine: MakeEngine, db_path: Path
) -> None:
    history = await make_engine(Echo())
    await run_plan(
        history,
        plan(
            tool("f", name="x.fast"),
            tool("s", name="x.slow"),
            tool("n", name="x.new"),
            summary("sum", "f", "s", "n"),
        ),
    )
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE tasks SET finished_at = started_at + 0.01 WHERE id = 'f'")
        db.execute("UPDATE tasks SET finished_at = started_at + 4.0 WHERE id = 's'")
        db.execute("UPDATE tasks SET finished_at = started_at + 0.5 WHERE id = 'n'")
    echo = Echo()
    engine = await make_engine(echo, max_concurrency=1)
    await run_plan(
        engine,
        plan(
            tool("fast", name="x.fast"),
            tool("slow", name="x.slow"),
            tool("unknown", name="x.unknown"),
            summary("sum", "fast", "slow", "unknown"),
        ),
    )
    # slow (4 s learned) before unknown (1 s, the tool weight) before fast (0.01 s learned)
    assert echo.order == ["slow", "unknown", "fast", "sum"]
    assert engine.durations.mean("x.slow") is not None
    assert engine.durations.mean("x.unknown") is not None  # learned from this run too


async def test_a_steering_message_recorded_by_another_process_reaches_the_runs_owner(
    database_url: str,
) -> None:
    """Any replica may receive the mention; only the owner changes the run, on its next round."""
    gate = Gate()

    async def planner(request: PlanRequest) -> Plan:
        if request.revision is None:
            return plan(tool("a"), tool("b", "a"), summary("s", "b"))
        assert request.revision.text == "add c"
        statuses = {t.id: t.status for t in request.revision.tasks}
        assert statuses["a"] is TaskStatus.RUNNING
        return plan(tool("b", "a"), tool("c"), summary("s", "b", "c"))

    # Both stores: on PostgreSQL the processes are replicas of one bot.
    owner = await open_store(database_url, owner=Owner(lease_seconds=0.3))
    other = await open_store(database_url, owner=Owner(lease_seconds=0.3))
    engine = Engine(owner, dict.fromkeys(TaskKind, gate), planner=planner)
    elsewhere = Engine(other, dict.fromkeys(TaskKind, gate))
    try:
        with engine.bus.subscribe() as events:
            run = await engine.submit("goal")
            await gate.started["a"].wait()
            # Recorded by a process that does not own the run (nor drive it)...
            assert await elsewhere.steer(run.id, "add c", requester="U2", delivery_id="ev-9")
            assert await elsewhere.steer(run.id, "add c", delivery_id="ev-9") is None
            assert not elsewhere.is_active(run.id)
            # ...and applied by the owner, which finds it on a lease round.
            async for event in events:
                if event.kind is EventKind.RUN_REVISED:
                    break
        assert event.data is not None
        assert event.data["added"] == ["c"]
        for task_id in ("a", "b", "c", "s"):
            gate.release(task_id)
        view = await engine.wait(run.id)
        assert view.run.status is RunStatus.SUCCEEDED
        assert [t.id for t in view.tasks] == ["a", "b", "c", "s"]
        assert await owner.open_steering(run.id) == []
        # A run that has ended takes no more steering: the caller starts a follow-up.
        assert await elsewhere.steer(run.id, "too late") is False
    finally:
        await engine.close()
        await elsewhere.close()
        await owner.close()
        await other.close()


async def test_a_round_asked_for_before_a_restart_is_planned_after_it(db_path: Path) -> None:
    """Rounds are durable: the final step's request survives a restart, earlier work is kept."""
    planning = asyncio.Event()
    hold = asyncio.Event()
    ran: list[str] = []

    async def work(context: TaskContext) -> str:
        ran.append(context.task.id)
        if context.task.kind is TaskKind.SUMMARY:
            if "c" not in context.results:
                raise AnotherRound("c is missing")
            return f"answer from {context.results['c'].output}"
        return f"{context.task.id} out"

    async def planner(request: PlanRequest) -> Plan:
        if request.revision is None:
            return plan(tool("a"), summary("s", "a"))
        planning.set()
        await hold.wait()
        assert request.revision.text == "c is missing"
        return plan(tool("c", "a", text="{{a}}"), summary("s", "c"))

    first = await SqliteStore.open(str(db_path))
    engine = Engine(first, dict.fromkeys(TaskKind, work), planner=planner)
    run = await engine.submit("goal")
    await planning.wait()  # the round is being planned when the process stops
    await engine.close()
    await first.close()
    assert ran == ["a", "s"]

    hold.set()
    second = await SqliteStore.open(str(db_path))
    engine = Engine(second, dict.fromkeys(TaskKind, work), planner=planner)
    try:
        assert await engine.resume_all() == [run.id]
        view = await engine.wait(run.id)
    finally:
        await engine.close()
        await second.close()
    assert view.run.status is RunStatus.SUCCEEDED
    assert ran == ["a", "s", "c", "s"]  # a ran once, before the restart
    assert view.task("s").output == "answer from c out"
    assert view.run.plan is not None
    assert [(r.reason, r.tasks) for r in view.run.plan.rounds] == [("c is missing", ["c"])]


async def test_a_restart_in_the_middle_of_round_two_goes_on_from_where_it_was(
    db_path: Path,
) -> None:
    gate = Gate()
    ran: list[str] = []

    async def work(context: TaskContext) -> str:
        ran.append(context.task.id)
        if context.task.kind is TaskKind.SUMMARY:
            if "c" not in context.results:
                raise AnotherRound("c is missing")
            return "answer"
        if context.task.id == "c":
            return await gate(context)
        return f"{context.task.id} out"

    async def planner(request: PlanRequest) -> Plan:
        if request.revision is None:
            return plan(tool("a"), summary("s", "a"))
        return plan(tool("c", "a"), summary("s", "c"))

    first = await SqliteStore.open(str(db_path))
    engine = Engine(first, dict.fromkeys(TaskKind, work), planner=planner)
    run = await engine.submit("goal")
    await gate.started["c"].wait()  # round 2 is running when the process stops
    await engine.close()
    await first.close()

    gate.release("c")
    second = await SqliteStore.open(str(db_path))
    engine = Engine(second, dict.fromkeys(TaskKind, work), planner=planner)
    try:
        assert await engine.resume_all() == [run.id]
        view = await engine.wait(run.id)
        events = await engine.events(run.id)
    finally:
        await engine.close()
        await second.close()
    assert view.run.status is RunStatus.SUCCEEDED
    assert ran == ["a", "s", "c", "c", "s"]  # c was in flight, so it ran again; a did not
    assert view.task("s").output == "answer"
    assert [e.kind for e in events].count(EventKind.RUN_REVISED) == 1


async def test_a_steering_revision_that_is_not_a_valid_plan_leaves_the_run_as_planned(
    make_engine: MakeEngine,
) -> None:
    gate = Gate()

    async def planner(request: PlanRequest) -> Plan:
        if request.revision is None:
            return plan(tool("a"), tool("b", "a"), summary("s", "b"))
        # Depends on a task that does not exist: refused like any plan.
        return plan(tool("c", "zz"), summary("s", "b", "c"))

    engine = await make_engine(gate, planner=planner)
    with engine.bus.subscribe() as events:
        run = await engine.submit("goal")
        await gate.started["a"].wait()
        assert await engine.steer(run.id, "add c")
        async for event in events:
            if event.kind is EventKind.RUN_REVISED:
                break
    assert event.data is not None
    assert "depends on unknown task(s) zz" in str(event.data["failed"])
    for task_id in ("a", "b", "s"):
        gate.release(task_id)
    view = await engine.wait(run.id)
    assert view.run.status is RunStatus.SUCCEEDED
    assert [t.id for t in view.tasks] == ["a", "b", "s"]
    assert await engine.store.open_steering(run.id) == []
