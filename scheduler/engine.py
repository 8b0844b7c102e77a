"""The run loop: plans goals, runs every ready task at once within limits, records everything.

Event-driven: a task starts the moment its last dependency settles, from inside that dependency's
own coroutine; nothing polls. Every transition is committed to the store before it is published.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from scheduler.bus import EventBus
from scheduler.errors import PlanInvalid, PlanningFailed, RunNotFound, TaskError
from scheduler.executor import (
    Executor,
    History,
    Planner,
    PlanRequest,
    TaskContext,
    UsageSink,
)
from scheduler.graph import critical_path_priorities
from scheduler.plan import Plan, PlanTask, TaskKind
from scheduler.refs import references_in, substitute
from scheduler.retry import RetryPolicy, retry_delay
from scheduler.state import Run, RunView, TaskState
from scheduler.validation import DEFAULT_MAX_TASKS, validate_plan
from storage.records import (
    Event,
    EventKind,
    NewRun,
    RunStatus,
    TaskStatus,
    Transition,
    UsageRecord,
)
from storage.store import Store

log = logging.getLogger("dagbot.engine")

Estimator = Callable[[PlanTask], float]

KIND_WEIGHT: Mapping[TaskKind, float] = MappingProxyType(
    {TaskKind.TOOL: 1.0, TaskKind.LLM: 3.0, TaskKind.SUMMARY: 3.0}
)
HISTORY_DEPTH = 5


def estimate_by_kind(task: PlanTask) -> float:
    """Relative cost of a task before it has run: LLM calls are slower than most tool calls."""
    return KIND_WEIGHT[task.kind]


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    max_concurrency: int = 8
    """Tasks of one run at once."""
    max_total_concurrency: int = 32
    """Tasks of all runs at once, process-wide."""
    task_timeout: float = 300.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_tasks: int = DEFAULT_MAX_TASKS


class Engine:
    def __init__(
        self,
        store: Store,
        executors: Mapping[TaskKind, Executor],
        *,
        planner: Planner | None = None,
        config: EngineConfig | None = None,
        bus: EventBus | None = None,
        estimate: Estimator = estimate_by_kind,
    ) -> None:
        self.store = store
        self.bus = bus or EventBus()
        self.config = config or EngineConfig()
        self._executors = dict(executors)
        self._planner = planner
        self._estimate = estimate
        self._slots = asyncio.Semaphore(self.config.max_total_concurrency)
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()

    # -- public API ------------------------------------------------------------------------------

    async def submit(
        self,
        goal: str,
        *,
        plan: Plan | None = None,
        requester: str | None = None,
        thread_key: str | None = None,
        parent_run_id: str | None = None,
        meta: dict[str, object] | None = None,
    ) -> Run:
        """Record a run and start it in the background: planned by the planner unless given."""
        record, event = await self.store.create_run(
            NewRun(
                goal=goal,
                requester=requester,
                thread_key=thread_key,
                parent_run_id=parent_run_id,
                meta=dict(meta or {}),
            )
        )
        self.bus.publish(event)
        self._start(record.id, given_plan=plan, resumed=False)
        return Run.from_record(record)

    async def resume_all(self) -> list[str]:
        """Pick up every run that a previous process left unfinished."""
        resumed = [
            run_id for run_id in await self.store.unfinished_runs() if run_id not in self._drivers
        ]
        for run_id in resumed:
            self._start(run_id, given_plan=None, resumed=True)
        return resumed

    async def cancel(self, run_id: str) -> bool:
        """Cancel a run: running tasks are cancelled, the rest marked cancelled. False if idle."""
        driver = self._drivers.get(run_id)
        if driver is None:
            return False
        self._cancelling.add(run_id)
        driver.cancel()
        await asyncio.wait([driver])
        try:
            for task in await self.store.get_tasks(run_id):
                if not task.status.finished:
                    self._publish(
                        await self.store.record(
                            Transition(
                                run_id=run_id,
                                kind=EventKind.TASK_CANCELLED,
                                task_id=task.id,
                                task_status=TaskStatus.CANCELLED,
                            )
                        )
                    )
            self._publish(
                await self.store.record(
                    Transition(
                        run_id=run_id,
                        kind=EventKind.RUN_CANCELLED,
                        run_status=RunStatus.CANCELLED,
                        error="Cancelled.",
                    )
                )
            )
        finally:
            self._cancelling.discard(run_id)
        return True

    async def retry_failed(self, run_id: str) -> bool:
        """Run again the failed, skipped and cancelled tasks of a finished run, then the summary."""
        if run_id in self._drivers:
            return False
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        if record.status not in (RunStatus.FAILED, RunStatus.CANCELLED) or record.plan is None:
            return False
        tasks = [TaskState.from_record(t) for t in await self.store.get_tasks(run_id)]
        redo = [
            t for t in tasks if t.status is not TaskStatus.SUCCEEDED or t.kind is TaskKind.SUMMARY
        ]
        for task in redo:
            self._publish(
                await self.store.record(
                    Transition(
                        run_id=run_id,
                        kind=EventKind.TASK_RETRIED,
                        task_id=task.id,
                        task_status=TaskStatus.PENDING,
                        data={"manual": True},
                    )
                )
            )
        self._publish(
            await self.store.record(
                Transition(
                    run_id=run_id,
                    kind=EventKind.RUN_RESUMED,
                    run_status=RunStatus.RUNNING,
                    data={"reason": "retry"},
                )
            )
        )
        self._start(run_id, given_plan=None, resumed=False)
        return True

    def is_active(self, run_id: str) -> bool:
        return run_id in self._drivers

    async def view(self, run_id: str) -> RunView:
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        tasks = await self.store.get_tasks(run_id)
        return RunView(
            run=Run.from_record(record), tasks=tuple(TaskState.from_record(t) for t in tasks)
        )

    async def wait(self, run_id: str) -> RunView:
        """Wait until the run stops being worked on here, then return it as stored."""
        driver = self._drivers.get(run_id)
        if driver is not None:
            await asyncio.wait([driver])
        return await self.view(run_id)

    async def run_until_idle(self) -> None:
        """Return once no run is being worked on, including runs started meanwhile."""
        while self._drivers:
            await asyncio.wait(list(self._drivers.values()))

    async def close(self) -> None:
        """Stop working without marking anything: unfinished runs resume on the next start."""
        drivers = list(self._drivers.values())
        for driver in drivers:
            driver.cancel()
        if drivers:
            await asyncio.wait(drivers)

    # -- driving one run -------------------------------------------------------------------------

    def _publish(self, event: Event) -> None:
        self.bus.publish(event)

    def _start(self, run_id: str, *, given_plan: Plan | None, resumed: bool) -> None:
        driver = asyncio.create_task(
            self._drive(run_id, given_plan, resumed), name=f"dagbot run {run_id}"
        )
        self._drivers[run_id] = driver
        driver.add_done_callback(lambda done: self._driver_done(run_id, done))

    def _driver_done(self, run_id: str, driver: asyncio.Task[None]) -> None:
        if self._drivers.get(run_id) is driver:
            del self._drivers[run_id]
        if not driver.cancelled() and (error := driver.exception()) is not None:
            log.error("run %s stopped by an internal error", run_id, exc_info=error)

    async def _drive(self, run_id: str, given_plan: Plan | None, resumed: bool) -> None:
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        run = Run.from_record(record)
        if resumed:
            self._publish(
                await self.store.record(Transition(run_id=run_id, kind=EventKind.RUN_RESUMED))
            )
        if run.status is RunStatus.PLANNING:
            plan = given_plan or await self._make_plan(run)
            if plan is None:
                return
            self._publish(await self.store.set_plan(run_id, plan.model_dump(mode="json")))
        tasks = [TaskState.from_record(t) for t in await self.store.get_tasks(run_id)]
        await _Execution(self, run, tasks).run()

    async def _make_plan(self, run: Run) -> Plan | None:
        error: str | None = None
        plan: Plan | None = None
        try:
            if self._planner is None:
                raise PlanningFailed("No planner is configured, so this goal cannot be planned.")
            plan = await self._planner(
                PlanRequest(
                    run_id=run.id,
                    goal=run.goal,
                    history=await self._history(run),
                    record_usage=self._usage_sink(run.id, None),
                )
            )
            problems = validate_plan(plan, max_tasks=self.config.max_tasks)
            if problems:
                raise PlanInvalid(problems)
        except (PlanningFailed, PlanInvalid) as failure:
            error = str(failure)
        except Exception as failure:
            log.exception("planning run %s failed", run.id)
            error = f"Planning failed: {type(failure).__name__}: {failure}"
        if error is None:
            return plan
        self._publish(
            await self.store.record(
                Transition(
                    run_id=run.id,
                    kind=EventKind.RUN_FINISHED,
                    run_status=RunStatus.FAILED,
                    error=error,
                    data={"status": RunStatus.FAILED.value, "stage": "planning"},
                )
            )
        )
        return None

    async def _history(self, run: Run) -> tuple[History, ...]:
        earlier: list[History] = []
        parent_id = run.parent_run_id
        while parent_id is not None and len(earlier) < HISTORY_DEPTH:
            parent = await self.store.get_run(parent_id)
            if parent is None:
                break
            summary = next(
                (
                    task.output
                    for task in await self.store.get_tasks(parent_id)
                    if task.spec.get("kind") == TaskKind.SUMMARY and task.output is not None
                ),
                None,
            )
            earlier.append(History(goal=parent.goal, summary=summary))
            parent_id = parent.parent_run_id
        return tuple(reversed(earlier))

    def _usage_sink(self, run_id: str, task_id: str | None) -> UsageSink:
        async def record_usage(model: str, prompt_tokens: int, completion_tokens: int) -> None:
            await self.store.record_usage(
                UsageRecord(
                    run_id=run_id,
                    task_id=task_id,
                    model=model,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                )
            )

        return record_usage


class _Execution:
    """The in-memory state of one run while it executes."""

    def __init__(self, engine: Engine, run: Run, tasks: list[TaskState]) -> None:
        self.engine = engine
        self.run_id = run.id
        self.goal = run.goal
        self.states: dict[str, TaskState] = {t.id: t for t in tasks}
        self.children: dict[str, list[str]] = {t.id: [] for t in tasks}
        for task in tasks:
            for dep in task.spec.deps:
                self.children[dep].append(task.id)
        self.priority = critical_path_priorities(
            {t.id: t.spec.deps for t in tasks}, {t.id: engine._estimate(t.spec) for t in tasks}
        )
        self.waiting: dict[str, int] = {}
        self.ready: list[tuple[float, int, str]] = []
        self.slots_used = 0
        self.alive = 0
        self.idle = asyncio.Event()
        self.group: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        await self._settle_initial()
        async with asyncio.TaskGroup() as group:
            self.group = group
            self._fill()
            if self.alive == 0:
                self.idle.set()
            await self.idle.wait()
        await self._finish()

    async def _settle_initial(self) -> None:
        """Rebuild readiness from stored states (fresh runs and resumed ones alike)."""
        for task in self.states.values():
            if not task.status.finished:
                self.waiting[task.id] = sum(
                    1 for d in task.spec.deps if not self.states[d].status.finished
                )
        for task_id in list(self.waiting):
            task = self.states[task_id]
            if task.status.finished:
                continue  # skipped by an earlier iteration
            blocked_by = next(
                (
                    d
                    for d in task.spec.deps
                    if self.states[d].status.finished
                    and self.states[d].status is not TaskStatus.SUCCEEDED
                ),
                None,
            )
            if blocked_by is not None and task.kind is not TaskKind.SUMMARY:
                await self._skip(task_id, blocked_by)
            elif self.waiting[task_id] == 0:
                self._push(task_id)

    def _push(self, task_id: str) -> None:
        heapq.heappush(
            self.ready, (-self.priority[task_id], self.states[task_id].position, task_id)
        )

    def _fill(self) -> None:
        assert self.group is not None
        limit = self.engine.config.max_concurrency
        while self.ready and self.slots_used < limit:
            _, _, task_id = heapq.heappop(self.ready)
            self.slots_used += 1
            self.alive += 1
            self.group.create_task(self._task_main(task_id), name=f"{self.run_id}/{task_id}")

    async def _task_main(self, task_id: str) -> None:
        try:
            async with self.engine._slots:
                await self._attempts(task_id)
            self.slots_used -= 1
            await self._settle(task_id)
            self._fill()
        finally:
            self.alive -= 1
            if self.alive == 0 and not self.ready:
                self.idle.set()

    async def _attempts(self, task_id: str) -> None:
        engine = self.engine
        config = engine.config
        attempt = 0
        while True:
            attempt += 1
            state = await self._transition(
                task_id, EventKind.TASK_STARTED, TaskStatus.RUNNING, new_attempt=True
            )
            spec = state.spec
            context = TaskContext(
                run_id=self.run_id,
                goal=self.goal,
                task=self._substituted(spec),
                attempt=state.attempts,
                results=MappingProxyType(self.states),
                record_usage=engine._usage_sink(self.run_id, task_id),
            )
            executor = engine._executors.get(spec.kind)
            try:
                if executor is None:
                    raise TaskError(f"No executor is configured for {spec.kind} tasks.")
                async with asyncio.timeout(config.task_timeout):
                    output = await executor(context)
            except Exception as error:
                message = _describe(error, config.task_timeout)
                delay = retry_delay(error, attempt, config.retry)
                if delay is None:
                    await self._transition(
                        task_id, EventKind.TASK_FAILED, TaskStatus.FAILED, error=message
                    )
                    return
                await self._transition(
                    task_id,
                    EventKind.TASK_RETRIED,
                    None,
                    error=message,
                    data={"attempt": state.attempts, "delay": round(delay, 3)},
                )
                await asyncio.sleep(delay)
                continue
            await self._transition(
                task_id, EventKind.TASK_SUCCEEDED, TaskStatus.SUCCEEDED, output=output
            )
            return

    def _substituted(self, spec: PlanTask) -> PlanTask:
        refs = references_in([spec.args, spec.prompt or ""])
        if not refs:
            return spec
        outputs = {
            ref: output
            for ref in refs
            if ref in self.states and (output := self.states[ref].output) is not None
        }
        return spec.model_copy(
            update={
                "args": substitute(spec.args, outputs),
                "prompt": substitute(spec.prompt, outputs) if spec.prompt is not None else None,
            }
        )

    async def _settle(self, task_id: str) -> None:
        """A task reached a final status: release, or skip, the tasks that wait on it."""
        succeeded = self.states[task_id].status is TaskStatus.SUCCEEDED
        for child_id in self.children[task_id]:
            child = self.states[child_id]
            if child.status.finished or child_id not in self.waiting:
                continue
            if succeeded or child.kind is TaskKind.SUMMARY:
                self.waiting[child_id] -= 1
                if self.waiting[child_id] == 0:
                    self._push(child_id)
            else:
                await self._skip(child_id, task_id)

    async def _skip(self, task_id: str, because: str) -> None:
        self.waiting.pop(task_id, None)
        await self._transition(
            task_id,
            EventKind.TASK_SKIPPED,
            TaskStatus.SKIPPED,
            error=f"Skipped because {because} did not succeed.",
            data={"because": because},
        )
        await self._settle(task_id)

    async def _transition(
        self,
        task_id: str,
        kind: EventKind,
        status: TaskStatus | None,
        *,
        output: str | None = None,
        error: str | None = None,
        new_attempt: bool = False,
        data: dict[str, object] | None = None,
    ) -> TaskState:
        event = await self.engine.store.record(
            Transition(
                run_id=self.run_id,
                kind=kind,
                task_id=task_id,
                task_status=status,
                output=output,
                error=error,
                new_attempt=new_attempt,
                data=data,
            )
        )
        state = self.states[task_id]
        if status is not None:
            state = replace(
                state,
                status=status,
                attempts=state.attempts + (1 if new_attempt else 0),
                started_at=event.at if status is TaskStatus.RUNNING else state.started_at,
                finished_at=event.at if status.finished else None,
                output=output if status is TaskStatus.SUCCEEDED else None,
                error=error,
            )
            self.states[task_id] = state
        self.engine._publish(event)
        return state

    async def _finish(self) -> None:
        failed = [t.id for t in self.states.values() if t.status is TaskStatus.FAILED]
        skipped = [t.id for t in self.states.values() if t.status is TaskStatus.SKIPPED]
        status = RunStatus.FAILED if failed or skipped else RunStatus.SUCCEEDED
        error = None
        if status is RunStatus.FAILED:
            error = f"{len(failed)} task(s) failed and {len(skipped)} were skipped."
        self.engine._publish(
            await self.engine.store.record(
                Transition(
                    run_id=self.run_id,
                    kind=EventKind.RUN_FINISHED,
                    run_status=status,
                    error=error,
                    data={"status": status.value, "failed": failed, "skipped": skipped},
                )
            )
        )


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, TaskError):
        return str(error)
    if isinstance(error, TimeoutError):
        return f"Timed out after {timeout:g} s."
    return f"{type(error).__name__}: {error}"
