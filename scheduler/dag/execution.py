"""One run while it executes: readiness, priorities, limits, attempts and transitions.

Event-driven: a task starts the moment its last dependency settles (and a slot is granted),
from inside the coroutine that settled it or freed the slot; nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType

from domain.vocabulary import (
    Decision,
    Event,
    EventKind,
    TaskFields,
    TaskStatus,
    Transition,
    apply_task_transition,
)
from scheduler.dag.approvals import ApprovalRules, refusal
from scheduler.dag.drafts import Drafts
from scheduler.dag.executors import Executor, TaskContext, UsageSink
from scheduler.dag.graph import critical_path_priorities
from scheduler.dag.kinds import rules
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from scheduler.dag.refs import references_in, substitute
from scheduler.dag.retry import RetryPolicies, retry_delay
from scheduler.dag.revision import merge_revision, plan_change
from scheduler.dag.slots import SlotPool
from scheduler.dag.state import Run, TaskState
from scheduler.dag.validation import DEFAULT_MAX_TASKS, validate_plan
from scheduler.errors import AnotherRound, PlanInvalid, TaskError
from storage.records import Approval, TaskRecord
from storage.store import Store

CRASH_RESTARTS = 2
"""Starts a crash-interrupted task may have beyond its retry budget before it is given up."""


class Execution:
    """The in-memory state of one run while it executes.

    A transition is applied here at once and queued for commit; whoever must not go on before
    it is durable awaits it (a task's executor starts only once its start is committed). The
    store commits in the order transitions are queued. When a task finishes, its outcome is
    queued, its dependants become ready, and the slot it frees is granted (slots.py) in the
    same synchronous stretch, where the granted task's start is queued too: the outcome and the
    starts it releases share one commit, and no dependant can start on an outcome that may
    still be lost.
    """

    def __init__(
        self,
        *,
        run: Run,
        tasks: list[TaskState],
        store: Store,
        executors: Mapping[TaskKind, Executor],
        slots: SlotPool,
        limit: int,
        timeout: float,
        retry: RetryPolicies,
        estimate: Callable[[PlanTask], float],
        usage_sink: Callable[[str, str | None], UsageSink],
        publish: Callable[[Event], None],
        drafts: Drafts | None = None,
        learn: Callable[[PlanTask, float], None] | None = None,
        plan: Plan | None = None,
        replans_left: int = 0,
        max_tasks: int = DEFAULT_MAX_TASKS,
        approvals: ApprovalRules | None = None,
    ) -> None:
        self.store = store
        self.executors = executors
        self.slots = slots
        """Process-wide: shared by every run."""
        self.limit = limit
        """Tasks of this run at once."""
        self.timeout = timeout
        self.retry = retry
        self.usage_sink = usage_sink
        self.publish = publish
        self.drafts = drafts or Drafts()
        self.learn = learn
        self.run_id = run.id
        self.order = (run.created_at, run.id)
        self.goal = run.goal
        self.estimate = estimate
        self.states: dict[str, TaskState] = {t.id: t for t in tasks}
        self.results = MappingProxyType(self.states)
        self.plan = plan or run.plan or Plan(title=run.goal, tasks=[t.spec for t in tasks])
        self.max_tasks = max_tasks
        self.replans_left = replans_left
        """Rounds the final step may still ask for."""
        self.replan: str | None = None
        """Set when the final step asked for another round: its reason (the engine plans it)."""
        self.revising = 0
        """Revisions being worked out (see hold): the final step waits, and the run stays."""
        self.paused = False
        """Set while a revision is being written: no task starts meanwhile."""
        self.held: list[str] = []
        """Ready final steps waiting for the revisions in progress."""
        self.children: dict[str, list[str]] = {}
        self.priority: dict[str, float] = {}
        self._link()
        # Tasks a crash interrupted, with the attempts they had. Such a task always runs again,
        # its retries going on from the attempts already spent; only one that keeps being in
        # flight when the process dies (CRASH_RESTARTS past its budget) is given up on.
        self.interrupted = {t.id: t.attempts for t in tasks if t.status is TaskStatus.RUNNING}
        self.waiting: dict[str, int] = {}
        self.ready: list[tuple[float, int, str]] = []
        self.slots_used = 0
        self.tickets = 0
        """Slots asked of the pool and not yet granted."""
        self.first_starts: dict[str, asyncio.Future[Event]] = {}
        self.closed = True
        """Set while the run is not running (before run(), between rounds, once left): a slot
        granted then is passed on."""
        self.alive = 0
        self.idle = asyncio.Event()
        self.group: asyncio.TaskGroup | None = None
        self.writes: set[asyncio.Future[Event]] = set()
        self.approvals = approvals or ApprovalRules()
        self.requests: dict[str, Approval] = {}
        """Approval requests as stored when the run was (re)started."""
        self.awaiting: dict[str, asyncio.Future[Event] | None] = {}
        """Tasks waiting for a decision, each with its request's commit until it has landed."""
        self.decided = asyncio.Event()
        """Set when a decision may have been recorded: the waiter reads them again."""
        self.waiter: asyncio.Task[None] | None = None

    def _link(self) -> None:
        """Dependants and critical-path priorities, from the tasks as they are now."""
        tasks = list(self.states.values())
        self.children = {t.id: [] for t in tasks}
        for task in tasks:
            for dep in task.spec.deps:
                self.children[dep].append(task.id)
        self.priority = critical_path_priorities(
            {t.id: t.spec.deps for t in tasks}, {t.id: self.estimate(t.spec) for t in tasks}
        )

    async def run(self) -> None:
        """Run every task that can run; return once none is left running or ready.

        Called again after a revision of an idle run (a new round), it runs what that added.
        """
        self.closed = False
        self.idle.clear()
        self.approvals.wakeups[self.run_id] = self.decided.set
        try:
            if any(
                t.status is TaskStatus.AWAITING_APPROVAL or self.approvals.needs(t.spec)
                for t in self.states.values()
            ):
                self.requests = {a.task_id: a for a in await self.store.approvals(self.run_id)}
            for write in self._settle_initial():
                await asyncio.shield(write)
            async with asyncio.TaskGroup() as group:
                self.group = group
                self._fill()
                self._watch_decisions()
                self._check_idle()
                await self.idle.wait()
                self.closed = True
        finally:
            if self.approvals.wakeups.get(self.run_id) == self.decided.set:
                del self.approvals.wakeups[self.run_id]
            self.closed = True
            # Cancelled or not, let every queued transition land before the run is left: a
            # cancellation is recorded from what the store holds.
            if self.writes:
                await asyncio.wait(set(self.writes))

    def _settle_initial(self, *, pending_only: bool = False) -> list[asyncio.Future[Event]]:
        """Rebuild readiness from the states (fresh runs, resumed ones and revised ones alike).

        `pending_only` while tasks run (a live revision): only pending tasks are worked out
        again; tasks running, awaiting approval or approved and queued stay as they are.
        """
        announced: list[asyncio.Future[Event]] = []
        queued = [
            task_id
            for _, _, task_id in self.ready
            if pending_only
            and task_id in self.states
            and self.states[task_id].status is not TaskStatus.PENDING
        ]
        self.waiting = {}
        self.ready = []
        self.held = []
        for task_id in queued:
            self._queue(task_id)
        for task in self.states.values():
            if task.status is TaskStatus.PENDING or (not pending_only and not task.status.finished):
                self.waiting[task.id] = sum(
                    1 for d in task.spec.deps if not self.states[d].status.finished
                )
        for task_id in list(self.waiting):
            if task_id not in self.waiting:
                continue  # skipped, or made ready, by an earlier iteration
            task = self.states[task_id]
            blocked_by = next(
                (
                    d
                    for d in task.spec.deps
                    if self.states[d].status.finished
                    and self.states[d].status is not TaskStatus.SUCCEEDED
                ),
                None,
            )
            if blocked_by is not None and not rules(task.kind).joins_failures:
                self._skip(task_id, blocked_by, announced)
            elif self.waiting[task_id] == 0:
                self._push(task_id, announced)
        return announced

    def _push(self, task_id: str, announced: list[asyncio.Future[Event]]) -> None:
        # Leaving `waiting` is what keeps a task from being queued twice (see _settle_initial).
        del self.waiting[task_id]
        if self._needs_approval(task_id):
            self._ask(task_id, announced)
            return
        if self.revising and rules(self.states[task_id].kind).final_step:
            # The revision being worked out may give it more to wait for.
            self.held.append(task_id)
            return
        self._queue(task_id)

    def _queue(self, task_id: str) -> None:
        heapq.heappush(
            self.ready, (-self.priority[task_id], self.states[task_id].position, task_id)
        )

    def _check_idle(self) -> None:
        if self.alive == 0 and not self.ready and not self.awaiting and not self.revising:
            self.idle.set()

    # -- approval ------------------------------------------------------------------------------

    def _needs_approval(self, task_id: str) -> bool:
        state = self.states[task_id]
        if state.status is TaskStatus.AWAITING_APPROVAL:
            return True  # asked before a restart: the request stands, whatever the rules now
        if not self.approvals.needs(state.spec):
            return False
        request = self.requests.get(task_id)
        # Interrupted by a crash after its approval: the approval covers the run again.
        approved = request is not None and request.decision is Decision.APPROVED
        return not (state.status is TaskStatus.RUNNING and approved)

    def _ask(self, task_id: str, announced: list[asyncio.Future[Event]]) -> None:
        """Hold the task for a decision, asking for one unless it was asked before a restart."""
        state = self.states[task_id]
        if state.status is TaskStatus.AWAITING_APPROVAL and task_id in self.requests:
            self.awaiting[task_id] = None
        else:
            sent = self._substituted(state.spec)
            request = self._transition(
                task_id,
                EventKind.TASK_AWAITING_APPROVAL,
                TaskStatus.AWAITING_APPROVAL,
                # The store keeps the request (deadline, exact arguments) in the same commit.
                data={
                    "args": sent.args,
                    "tool": sent.tool,
                    "timeout": self.approvals.timeout,
                },
            )
            announced.append(request)
            self.awaiting[task_id] = request
        self._watch_decisions()

    def _watch_decisions(self) -> None:
        if not self.awaiting or self.group is None or self.closed:
            return
        if self.waiter is None or self.waiter.done():
            self.waiter = self.group.create_task(
                self._await_decisions(), name=f"{self.run_id} approvals"
            )
        else:
            self.decided.set()

    async def _await_decisions(self) -> None:
        """Read the decisions on waiting tasks until none waits: when woken, at each deadline,
        and every `poll` seconds (a decision recorded by another process)."""
        while self.awaiting:
            self.decided.clear()
            for task_id, request in list(self.awaiting.items()):
                if request is not None:
                    await asyncio.shield(request)  # decisions are read once it is stored
                    if task_id in self.awaiting:
                        self.awaiting[task_id] = None
            stored = {a.task_id: a for a in await self.store.approvals(self.run_id)}
            deadlines: list[float] = []
            for task_id in list(self.awaiting):
                approval = stored.get(task_id)
                if approval is None:
                    continue
                if approval.decision is None and approval.deadline <= time.time():
                    # Recorded, so that a press that comes now finds it decided.
                    decided = await self.store.decide(self.run_id, task_id, Decision.EXPIRED, None)
                    approval = decided[0] if decided is not None else approval
                if approval.decision is None:
                    deadlines.append(approval.deadline)
                elif task_id in self.awaiting:
                    await self._resolve(task_id, approval)
            if not self.awaiting:
                break
            wait = min([self.approvals.poll, *(d - time.time() for d in deadlines)])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await self.decided.wait()

    async def _resolve(self, task_id: str, approval: Approval) -> None:
        del self.awaiting[task_id]
        announced: list[asyncio.Future[Event]] = []
        if approval.decision is Decision.APPROVED:
            announced.append(
                self._transition(
                    task_id, EventKind.TASK_APPROVED, None, data={"by": approval.decided_by}
                )
            )
            self._queue(task_id)
        else:
            assert approval.decision is not None
            announced.append(
                self._transition(
                    task_id,
                    EventKind.TASK_FAILED,
                    TaskStatus.FAILED,
                    error=refusal(approval),
                    data={"decision": approval.decision.value, "by": approval.decided_by},
                )
            )
            self._settle(task_id, announced)
        self._fill()
        self._check_idle()
        for write in announced:
            await asyncio.shield(write)

    def _fill(self) -> None:
        """Ask the pool for a slot per ready task this run may still start."""
        while (
            not self.closed
            # A slot granted while paused is refused at once and would be asked for again, for
            # ever, without returning to the event loop: the revision's end fills instead.
            and not self.paused
            and self.tickets < min(len(self.ready), self.limit - self.slots_used)
        ):
            self.tickets += 1
            self.slots.request(self)

    def take_slot(self) -> bool:
        """Start the best ready task in a slot the pool just granted (see slots.Claimant)."""
        self.tickets -= 1
        if self.closed or self.paused or not self.ready or self.slots_used >= self.limit:
            return False
        assert self.group is not None
        _, _, task_id = self.ready[0]
        budget = self.retry.of(self.states[task_id].kind).max_attempts
        given_up = self.interrupted.get(task_id, 0) >= budget + CRASH_RESTARTS
        main = self._task_main(task_id)
        try:
            self.group.create_task(main, name=f"{self.run_id}/{task_id}")
        except RuntimeError:
            # The run is being cancelled and its task group no longer takes tasks: the slot
            # goes to another run (this is called from another run's task; never raise there).
            main.close()
            self.closed = True
            return False
        heapq.heappop(self.ready)
        self.slots_used += 1
        self.alive += 1
        if not given_up:
            # Queued now, in the stretch that freed the slot: it shares that outcome's commit.
            self.first_starts[task_id] = self._start(task_id)
        return True

    def _start(self, task_id: str) -> asyncio.Future[Event]:
        sent = self._substituted(self.states[task_id].spec)
        return self._transition(
            task_id,
            EventKind.TASK_STARTED,
            TaskStatus.RUNNING,
            new_attempt=True,
            # What this attempt is sent, after substitution: `runs <id>` shows it.
            data={"args": sent.args} if sent.args else None,
        )

    async def _task_main(self, task_id: str) -> None:
        holding = True
        try:
            outcome = await self._attempts(task_id)
            self._observe(task_id)
            announced = [outcome]
            self._settle(task_id, announced)
            self.slots_used -= 1
            holding = False
            # Ask for this run's newly ready tasks first, then free the slot: the pool gives it
            # to whichever ticket the policy puts first, and that start joins this commit.
            self._fill()
            self.slots.release()
            for write in announced:
                await asyncio.shield(write)  # surfaces a storage failure
        except BaseException:
            self.closed = True  # the run is being left: no slot may start more of it
            raise
        finally:
            if holding:
                self.slots_used -= 1
                self.slots.release()
            self.alive -= 1
            self._check_idle()

    def _observe(self, task_id: str) -> None:
        state = self.states[task_id]
        if (
            self.learn is not None
            and state.status is TaskStatus.SUCCEEDED
            and state.started_at is not None
            and state.finished_at is not None
        ):
            self.learn(state.spec, state.finished_at - state.started_at)

    async def _attempts(self, task_id: str) -> asyncio.Future[Event]:
        """Run the task until it succeeds or may not be retried; returns its queued outcome.

        Its first start was queued by take_slot, in the stretch that granted the slot; a task
        given up on has none and is failed instead.
        """
        attempt = self.interrupted.pop(task_id, 0)
        policy = self.retry.of(self.states[task_id].kind)
        start = self.first_starts.pop(task_id, None)
        if start is None:
            return self._transition(
                task_id,
                EventKind.TASK_FAILED,
                TaskStatus.FAILED,
                error=(
                    f"dagbot stopped while this task was running, {attempt} attempt(s) in all; "
                    "it is not started again, in case it is what stops dagbot."
                ),
            )
        while True:
            attempt += 1
            # The executor starts only once the start is durable: a task found running after a
            # crash has really been started, and its attempt counted.
            await asyncio.shield(start if start is not None else self._start(task_id))
            start = None
            sent = self._substituted(self.states[task_id].spec)
            state = self.states[task_id]
            context = TaskContext(
                run_id=self.run_id,
                goal=self.goal,
                task=sent,
                attempt=state.attempts,
                results=self.results,
                record_usage=self.usage_sink(self.run_id, task_id),
                emit_text=self.drafts.sink(self.run_id, task_id, state.attempts),
                replans_left=self.replans_left if rules(state.kind).final_step else 0,
            )
            executor = self.executors.get(state.kind)
            failure: Exception
            try:
                if executor is None:
                    raise TaskError(f"No executor is configured for {state.kind} tasks.")
                async with asyncio.timeout(self.timeout):
                    output = await executor(context)
            except asyncio.CancelledError:
                if _cancelling():
                    raise
                # Raised inside the executor, not by a cancellation of the run: left to
                # propagate it would end the task silently and leave it running forever.
                failure = TaskError("The executor was cancelled from inside, without a result.")
            except AnotherRound as another:
                if rules(state.kind).final_step and self.replans_left > 0:
                    # Back to pending until the next round's tasks are done; the reason is
                    # recorded with it, so a restart plans that round before anything else.
                    self.replan = another.reason
                    return self._transition(
                        task_id,
                        EventKind.RUN_REPLANNING,
                        TaskStatus.PENDING,
                        data={"reason": another.reason, "round": len(self.plan.rounds) + 2},
                    )
                failure = TaskError(
                    "The final step asked for another round, but no more rounds are allowed."
                )
            except Exception as error:
                failure = error
            else:
                return self._transition(
                    task_id, EventKind.TASK_SUCCEEDED, TaskStatus.SUCCEEDED, output=output
                )
            message = describe(failure, self.timeout)
            delay = retry_delay(failure, attempt, policy)
            if delay is None:
                return self._transition(
                    task_id, EventKind.TASK_FAILED, TaskStatus.FAILED, error=message
                )
            self._transition(
                task_id,
                EventKind.TASK_RETRIED,
                None,
                error=message,
                data={"attempt": state.attempts, "delay": round(delay, 3)},
            )
            await asyncio.sleep(delay)

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

    def _settle(self, task_id: str, announced: list[asyncio.Future[Event]]) -> None:
        """A task reached a final status: release, or skip, the tasks that wait on it."""
        if not self.states[task_id].status.finished:
            return  # a final step that asked for another round waits for it
        succeeded = self.states[task_id].status is TaskStatus.SUCCEEDED
        for child_id in self.children[task_id]:
            child = self.states[child_id]
            if child.status.finished or child_id not in self.waiting:
                continue
            if succeeded or rules(child.kind).joins_failures:
                self.waiting[child_id] -= 1
                if self.waiting[child_id] == 0:
                    self._push(child_id, announced)
            else:
                self._skip(child_id, task_id, announced)

    def _skip(self, task_id: str, because: str, announced: list[asyncio.Future[Event]]) -> None:
        self.waiting.pop(task_id, None)
        announced.append(
            self._transition(
                task_id,
                EventKind.TASK_SKIPPED,
                TaskStatus.SKIPPED,
                error=f"Skipped because {because} did not succeed.",
                data={"because": because},
            )
        )
        self._settle(task_id, announced)

    def _transition(
        self,
        task_id: str,
        kind: EventKind,
        status: TaskStatus | None,
        *,
        output: str | None = None,
        error: str | None = None,
        new_attempt: bool = False,
        data: dict[str, object] | None = None,
    ) -> asyncio.Future[Event]:
        """Apply a transition in memory and queue it for commit; it is announced once committed.

        Await the result (shielded) to go on only once the transition is durable.
        """
        write = asyncio.ensure_future(
            self.store.record(
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
        )
        self.writes.add(write)
        # Registered before anyone awaits the write, so the event is published before an
        # awaiting task resumes; futures complete in commit order, so events go out in it too.
        write.add_done_callback(self._committed)
        if status is not None:
            state = self.states[task_id]
            after = apply_task_transition(
                TaskFields(
                    status=state.status,
                    attempts=state.attempts,
                    started_at=state.started_at,
                    finished_at=state.finished_at,
                    output=state.output,
                    error=state.error,
                ),
                status,
                at=time.time(),
                output=output,
                error=error,
                new_attempt=new_attempt,
            )
            # Built directly: dataclasses.replace() costs several times more, twice per task.
            self.states[task_id] = TaskState(
                run_id=state.run_id,
                spec=state.spec,
                position=state.position,
                status=after.status,
                attempts=after.attempts,
                started_at=after.started_at,
                finished_at=after.finished_at,
                output=after.output,
                error=after.error,
            )
        return write

    # -- revisions ---------------------------------------------------------------------------

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """While a revision is worked out (the planner thinks): the run does not end and its
        final step does not start, since the revision may give it more to wait for."""
        self.revising += 1
        try:
            yield
        finally:
            self.revising -= 1
            if not self.revising:
                for task_id in self.held:
                    self._queue(task_id)
                self.held = []
                self._fill()
                self._check_idle()

    async def revise(
        self,
        proposed: Plan,
        *,
        record: Callable[[Plan, dict[str, object]], Awaitable[Event]],
        data: dict[str, object],
        new_round: str | None = None,
    ) -> Event:
        """Replace the part of the plan that has not started by `proposed`, durably.

        The one way a running plan changes (a new round, a steering message). The revision is
        merged with the tasks as they stand at this moment (scheduler.dag.revision) and
        validated like any plan (PlanInvalid otherwise); `record(plan, data)` writes it with its
        event, before any task it adds or changes may start.
        """
        current = list(self.states.values())
        merged = merge_revision(current, self.plan, proposed, new_round=new_round)
        if isinstance(merged, list):
            raise PlanInvalid(merged)
        problems = validate_plan(merged, max_tasks=self.max_tasks)
        if problems:
            raise PlanInvalid(problems)
        change = plan_change(current, merged)
        data = {
            **data,
            "added": change.added,
            "removed": change.removed,
            "changed": change.changed,
            "round": len(merged.rounds) + 1,
        }
        # Nothing starts until the revision is durable: a task start recorded before its row
        # exists (or for a row about to go) would be lost.
        self.paused = True
        try:
            event = await asyncio.shield(asyncio.ensure_future(record(merged, data)))
        finally:
            self.paused = False
        previous = dict(self.states)
        # Changed in place: executors at work read the run's tasks through `results`.
        self.states.clear()
        for position, spec in enumerate(merged.tasks):
            before = previous.get(spec.id)
            if before is None:
                self.states[spec.id] = TaskState(run_id=self.run_id, spec=spec, position=position)
            else:
                self.states[spec.id] = dataclasses.replace(before, spec=spec, position=position)
        self.plan = merged
        self.replans_left = max(0, self.replans_left - (1 if new_round is not None else 0))
        self._link()
        self.publish(event)
        announced = self._settle_initial(pending_only=True)
        self._fill()
        self._check_idle()
        for write in announced:
            await asyncio.shield(write)
        return event

    def _committed(self, write: asyncio.Future[Event]) -> None:
        self.writes.discard(write)
        if not write.cancelled() and write.exception() is None:
            self.publish(write.result())


def task_states(plan: Plan | None, records: list[TaskRecord]) -> list[TaskState]:
    """Task states from rows, taking each spec from the already validated plan when it has it
    (validating every spec a second time costs as much as the rest of the read)."""
    specs = plan.tasks if plan is not None else []
    states: list[TaskState] = []
    for record in records:
        position = record.position
        if position < len(specs) and specs[position].id == record.id:
            spec = specs[position]
        else:
            spec = PlanTask.model_validate(record.spec)
        states.append(
            TaskState(
                run_id=record.run_id,
                spec=spec,
                position=position,
                status=record.status,
                attempts=record.attempts,
                started_at=record.started_at,
                finished_at=record.finished_at,
                output=record.output,
                error=record.error,
            )
        )
    return states


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def describe(error: BaseException, timeout: float) -> str:
    """The message recorded for a failed attempt."""
    if isinstance(error, TaskError):
        return str(error)
    if isinstance(error, TimeoutError):
        return f"Timed out after {timeout:g} s."
    return f"{type(error).__name__}: {error}"
