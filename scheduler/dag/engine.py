"""The engine: plans goals, starts, cancels, resumes and finishes runs, records everything.

The tasks of one run are driven by an Execution (execution.py). Every transition is committed
to the store before it is published.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeVar, overload

from domain.vocabulary import Decision, Event, EventKind, RunStatus, TaskStatus, Transition
from scheduler.dag.approvals import (
    DEFAULT_APPROVAL_POLL,
    DEFAULT_APPROVAL_TIMEOUT,
    ApprovalRules,
    never,
)
from scheduler.dag.bus import EventBus
from scheduler.dag.drafts import Drafts
from scheduler.dag.durations import KIND_WEIGHT, LearnedDurations, estimate_by_kind
from scheduler.dag.execution import Execution, task_states
from scheduler.dag.executors import (
    Executor,
    History,
    Planner,
    PlanRequest,
    Revision,
    RevisionCause,
    UsageSink,
)
from scheduler.dag.kinds import rules
from scheduler.dag.ownership import LeaseKeeper
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from scheduler.dag.retry import PLANNING, RetryPolicies, retry_delay
from scheduler.dag.run_records import RunRecords
from scheduler.dag.slots import SlotPolicy, SlotPool
from scheduler.dag.state import Run, RunView, TaskState
from scheduler.dag.validation import DEFAULT_MAX_TASKS, validate_plan
from scheduler.errors import PlanInvalid, PlanningFailed, RunNotFound, TaskError
from storage.errors import DatabaseReplaced, LeaseLost, StorageError
from storage.records import (
    Approval,
    NewRun,
    NewSteering,
    SteeringRecord,
    UsageRecord,
)
from storage.store import Store

log = logging.getLogger("dagbot.engine")

Estimator = Callable[[PlanTask], float]

__all__ = ["KIND_WEIGHT", "Engine", "EngineConfig", "Estimator", "estimate_by_kind"]

HISTORY_DEPTH = 5
LEARNED_SAMPLES = 500
"""Successful tool tasks read back at start-up to learn durations from (newest first)."""
_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    max_concurrency: int = 8
    """Tasks of one run at once."""
    max_total_concurrency: int = 32
    """Tasks of all runs at once, process-wide."""
    task_timeout: float = 300.0
    retry: RetryPolicies = field(default_factory=RetryPolicies)
    """Per task kind and for planning; the only retry layer (the LLM client does not retry)."""
    max_tasks: int = DEFAULT_MAX_TASKS
    slot_policy: SlotPolicy = SlotPolicy.EARLIEST_RUN
    """Who gets a free process-wide slot: the earliest run's ready tasks, or first come."""
    take_over: bool = False
    """Keep claiming runs whose lease expired (their process died), as bots do; a terminal
    only ever works on its own runs."""
    max_replans: int = 2
    """Rounds of planning the final step may ask for after the first (DAGBOT_MAX_REPLANS)."""
    approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT
    """How long a task waits for approval before it counts as denied."""
    approval_poll: float = DEFAULT_APPROVAL_POLL
    """How often a run with tasks awaiting approval reads decisions taken by other processes."""


class Engine(RunRecords):
    """Runs plans: submits, resumes, cancels and drives runs; front ends read runs and keep
    their own records through the methods it inherits from RunRecords."""

    def __init__(
        self,
        store: Store,
        executors: Mapping[TaskKind, Executor],
        *,
        planner: Planner | None = None,
        config: EngineConfig | None = None,
        bus: EventBus | None = None,
        estimate: Estimator | None = None,
        needs_approval: Callable[[PlanTask], bool] | None = None,
    ) -> None:
        """`estimate` gives a task's expected cost for critical-path priorities; by default,
        per-tool durations learned from the store's history, else weights by kind.
        `needs_approval` tells the tasks that wait for a person's approval before they run."""
        super().__init__(store)
        self.bus = bus or EventBus()
        self.drafts = Drafts()
        """Text tasks write while they run (summaries), for front ends to show live."""
        self.config = config or EngineConfig()
        self._executors = dict(executors)
        self._planner = planner
        self.durations = LearnedDurations()
        self._estimate = estimate or self.durations.estimate
        self._learned = False
        self.slots = SlotPool(self.config.max_total_concurrency, self.config.slot_policy)
        """The process-wide task slots, shared by every run."""
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self._unsaved_failures: dict[str, str] = {}
        self.storage_failure: StorageError | None = None
        """The last storage failure that stopped a run."""
        self.database_lost = asyncio.Event()
        """Set once the database file was deleted or replaced: the process should stop."""
        self._cancelling: set[str] = set()
        self._steering: dict[str, asyncio.Event] = {}
        """Per run driven here: set to make its driver read the run's steering messages."""
        self.approvals = ApprovalRules(
            needs=needs_approval or never,
            timeout=self.config.approval_timeout,
            poll=self.config.approval_poll,
        )
        self._keeper = LeaseKeeper(
            store,
            working_on=lambda: set(self._drivers),
            drop=self._drop,
            take_over=self._take_over if self.config.take_over else None,
        )
        # Steering messages may be recorded by another process (whichever received them): the
        # runs driven here look for them on every lease round.
        self._keeper.hooks.append(self._look_for_steering)

    # -- public API ------------------------------------------------------------------------------

    @overload
    async def submit(
        self,
        goal: str,
        *,
        plan: Plan | None = None,
        requester: str | None = None,
        thread_key: str | None = None,
        parent_run_id: str | None = None,
        meta: dict[str, object] | None = None,
    ) -> Run: ...

    @overload
    async def submit(
        self,
        goal: str,
        *,
        plan: Plan | None = None,
        requester: str | None = None,
        thread_key: str | None = None,
        parent_run_id: str | None = None,
        meta: dict[str, object] | None = None,
        delivery_id: str | None,
    ) -> Run | None: ...

    async def submit(
        self,
        goal: str,
        *,
        plan: Plan | None = None,
        requester: str | None = None,
        thread_key: str | None = None,
        parent_run_id: str | None = None,
        meta: dict[str, object] | None = None,
        delivery_id: str | None = None,
    ) -> Run | None:
        """Record a run and start it in the background: planned by the planner unless given.

        With `delivery_id` (an external event id such as Slack's), the delivery is claimed in
        the same transaction that records the run; a redelivery creates nothing and gives None.
        """
        created = await self.store.create_run(
            NewRun(
                goal=goal,
                requester=requester,
                thread_key=thread_key,
                parent_run_id=parent_run_id,
                meta=dict(meta or {}),
            ),
            delivery_id=delivery_id,
        )
        if created is None:
            return None
        record, event = created
        self.bus.publish(event)
        self._start(record.id, given_plan=plan, resumed=False)
        return Run.from_record(record)

    async def resume_all(self) -> list[str]:
        """Claim and resume the unfinished runs whose lease expired (their process is gone).

        Runs another live process owns are left to it; with `take_over`, runs whose owner dies
        later are claimed as their leases expire.
        """
        self._keeper.start()
        resumed = [
            run_id for run_id in await self.store.claim_expired() if run_id not in self._drivers
        ]
        for run_id in resumed:
            self._start(run_id, given_plan=None, resumed=True)
        await self._answer_late_steering()
        return resumed

    async def adopt(self, run_id: str) -> bool:
        """Claim one unfinished run of this process's kind whose owner is gone, and resume it.

        False when it is finished, or another live process still holds it.
        """
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        if run_id in self._drivers:
            return True
        if record.status.finished or not await self.store.claim_run(run_id):
            return False
        self._start(run_id, given_plan=None, resumed=True)
        return True

    async def cancel(self, run_id: str) -> bool:
        """Cancel a run: running tasks are cancelled, the rest marked cancelled. False if idle.

        Returns once the cancellation is recorded; concurrent calls for one run share it.
        """
        driver = self._drivers.get(run_id)
        if driver is None:
            return False
        if run_id not in self._cancelling:
            self._cancelling.add(run_id)
            driver.cancel()
        # The driver records the cancellation itself, after its tasks have unwound, so that
        # wait() and run_until_idle() only return once the run reads as cancelled.
        await asyncio.wait([driver])
        if run_id in self._cancelling:
            # Cancelled before its first step, the driver never ran a line; record it here.
            self._cancelling.discard(run_id)
            await self._record_cancelled(run_id)
        run = await self.store.get_run(run_id)
        if run is not None and run.status.finished:
            await self._follow_up(Run.from_record(run))
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
        if not await self.store.claim_run(run_id):
            return False
        tasks = [TaskState.from_record(t) for t in await self.store.get_tasks(run_id)]
        redo = [
            t
            for t in tasks
            if t.status is not TaskStatus.SUCCEEDED or rules(t.kind).reruns_on_retry
        ]
        transitions = [
            Transition(
                run_id=run_id,
                kind=EventKind.TASK_RETRIED,
                task_id=task.id,
                task_status=TaskStatus.PENDING,
                data={"manual": True},
            )
            for task in redo
        ]
        transitions.append(
            Transition(
                run_id=run_id,
                kind=EventKind.RUN_RESUMED,
                run_status=RunStatus.RUNNING,
                data={"reason": "retry"},
            )
        )
        await self._record_all(transitions)
        self._start(run_id, given_plan=None, resumed=False)
        return True

    async def steer(
        self,
        run_id: str,
        message: str,
        *,
        requester: str | None = None,
        meta: dict[str, object] | None = None,
        delivery_id: str | None = None,
    ) -> bool | None:
        """Hand a message about a running run to whichever process drives it, durably.

        The owner revises the part of the plan that has not started (see _apply_steering). True
        once recorded; False when the run has ended (nothing is recorded: start a follow-up
        run instead); None for a redelivery of `delivery_id`, which is claimed with the record.
        """
        recorded = await self.store.add_steering(
            NewSteering(run_id=run_id, message=message, requester=requester, meta=dict(meta or {})),
            delivery_id=delivery_id,
        )
        wake = self._steering.get(run_id)
        if recorded and wake is not None:
            wake.set()
        return recorded

    async def decide(
        self, run_id: str, task_id: str, *, approve: bool, by: str
    ) -> tuple[Approval, bool] | None:
        """Approve or deny a task awaiting approval, from any process (the run's owner acts on
        it). The first decision stands: returns the request as it stands after, and whether
        this call decided it; None when the task was never asked about."""
        decided = await self.store.decide(
            run_id, task_id, Decision.APPROVED if approve else Decision.DENIED, by
        )
        if decided is not None and decided[1]:
            self.approvals.wake(run_id)
        return decided

    def is_active(self, run_id: str) -> bool:
        return run_id in self._drivers

    async def owns(self, run_id: str) -> bool:
        """Whether this process holds the run's lease: only the owner speaks for a run."""
        lease = await self.store.lease(run_id)
        return lease is not None and lease.owner == self.store.owner.id

    def on_lease_round(self, hook: Callable[[], Awaitable[object]]) -> None:
        """Call `hook` after every lease round (every third of the lease time, once a run has
        been started or resumed here)."""
        self._keeper.hooks.append(hook)

    def holds(self, run_id: str | None) -> bool:
        """Whether this process may still speak for `run_id` (None: for the runs it holds), by
        its own clock, without asking the database (see LeaseKeeper.holds): front ends check it
        right before each write to the outside world."""
        return self._keeper.holds(run_id)

    def keep_leased(self, runs: Callable[[], Collection[str]]) -> None:
        """Keep renewing the leases this process holds on `runs()` (asked every round) even
        once they are finished: a front end still delivering a run's last messages must not
        have another process take the run and deliver them a second time."""
        self._keeper.also_kept.append(runs)

    async def take(self, run_id: str) -> bool:
        """Lease a run to this process without working on it (e.g. to land a finished run's
        last messages after its process died); False while another live process holds it."""
        self._keeper.start()  # the lease taken must be renewed while the run is landed here
        if not await self.store.claim_run(run_id):
            return False
        self._keeper.lost.discard(run_id)
        return True

    # -- reads and front-end bookkeeping: scheduler.dag.run_records (RunRecords) -------------

    async def view(self, run_id: str) -> RunView:
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        run = Run.from_record(record)
        unsaved = self._unsaved_failures.get(run_id)
        if unsaved is not None and not run.status.finished:
            run = dataclasses.replace(run, status=RunStatus.FAILED, error=unsaved)
        records = await self.store.get_tasks(run_id)
        approvals: tuple[Approval, ...] = ()
        if any(record.status is TaskStatus.AWAITING_APPROVAL for record in records):
            approvals = tuple(await self.store.approvals(run_id))
        return RunView(run=run, tasks=tuple(task_states(run.plan, records)), approvals=approvals)

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

    async def stop_runs(self) -> None:
        """Stop working on runs without marking anything (they resume on the next start); the
        leases are still renewed until `close`, so a front end can land what it has in hand."""
        await self._keeper.stop_rounds()  # nothing more is taken over
        drivers = list(self._drivers.values())
        for driver in drivers:
            driver.cancel()
        if drivers:
            await asyncio.wait(drivers)

    async def close(self) -> None:
        """Stop working without marking anything: unfinished runs resume on the next start."""
        await self.stop_runs()
        await self._keeper.stop()

    # -- driving one run -------------------------------------------------------------------------

    def _publish(self, event: Event) -> None:
        self.bus.publish(event)

    async def _record_all(self, transitions: list[Transition]) -> None:
        """Commit transitions together (concurrent records share a commit), then announce them."""
        events = await _to_the_end(
            asyncio.gather(*(self.store.record(transition) for transition in transitions))
        )
        for event in events:
            self._publish(event)

    async def _take_over(self) -> None:
        resumed = await self.resume_all()
        if resumed:
            log.info(
                "resumed %d unfinished run(s) whose process stopped: %s",
                len(resumed),
                ", ".join(resumed),
            )

    def _drop(self, run_id: str, why: str) -> None:
        """Stop driving a run this process no longer owns, recording nothing."""
        driver = self._drivers.get(run_id)
        if driver is not None and not driver.done():
            log.warning("run %s: stopped working on it here: %s", run_id, why)
            driver.cancel()

    def _start(self, run_id: str, *, given_plan: Plan | None, resumed: bool) -> None:
        self._keeper.start()
        self._keeper.lost.discard(run_id)  # claimed (back): ours again
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
        try:
            record = await self.store.get_run(run_id)
            if record is None:
                raise RunNotFound(run_id)
            run = Run.from_record(record)
            if resumed:
                self._publish(
                    await _to_the_end(
                        self.store.record(Transition(run_id=run_id, kind=EventKind.RUN_RESUMED))
                    )
                )
            if run.status is RunStatus.PLANNING:
                plan = await self._make_plan(run, given_plan)
                if plan is None:
                    return
                self._publish(
                    await _to_the_end(self.store.set_plan(run_id, plan.model_dump(mode="json")))
                )
                # Just stored as pending: no need to read it back.
                tasks = [
                    TaskState(run_id=run_id, spec=spec, position=position)
                    for position, spec in enumerate(plan.tasks)
                ]
            else:
                plan = run.plan
                tasks = task_states(run.plan, await self.store.get_tasks(run_id))
            await self._learn_from_history()
            rounds = len(plan.rounds) if plan is not None else 0
            execution = Execution(
                run=run,
                tasks=tasks,
                store=self.store,
                executors=self._executors,
                slots=self.slots,
                limit=self.config.max_concurrency,
                timeout=self.config.task_timeout,
                retry=self.config.retry,
                estimate=self._estimate,
                usage_sink=self._usage_sink,
                publish=self._publish,
                drafts=self.drafts,
                learn=self.durations.observe,
                plan=plan,
                replans_left=(
                    0
                    if run.status is not RunStatus.PLANNING
                    and await self._replanning_refused(run_id)
                    else max(0, self.config.max_replans - rounds)
                ),
                max_tasks=self.config.max_tasks,
                approvals=self.approvals,
            )
            # A run just planned has asked for no round yet; only a resumed one may have.
            replan = (
                None if run.status is RunStatus.PLANNING else await self._pending_replan(run_id)
            )
            await self._run_rounds(run, execution, replan)
            await self._record_finished(run_id, list(execution.states.values()))
            await self._follow_up(run)
        except StorageError as error:
            await self._fail_unsaved(run_id, error)
        except asyncio.CancelledError:
            if run_id in self._cancelling:
                await self._record_cancelled(run_id)
            raise
        except Exception as error:
            if _lease_lost(error):
                # Another process owns the run now (this one was paused or cut off past its
                # lease): nothing more was recorded here, and that process carries it on.
                log.warning("run %s: stopped working on it here: %s", run_id, LeaseLost.of(run_id))
                return
            # A bug, or a store that stopped answering. Left alone the run would read as
            # running for ever, could not be cancelled, and would fail the same way on every
            # start: end it, with a message that says what happened.
            log.exception("run %s stopped by an internal error", run_id)
            await self._record_stopped(run_id, error)
        finally:
            self._cancelling.discard(run_id)

    # -- rounds and steering -----------------------------------------------------------------

    async def _run_rounds(self, run: Run, execution: Execution, replan: str | None) -> None:
        """Run the plan, and another round each time the final step asks for one, while the
        run's steering messages are applied as they come."""
        wake = self._steering[run.id] = asyncio.Event()
        wake.set()  # messages recorded before this start (or while no process drove the run)
        lock = asyncio.Lock()
        watcher = asyncio.create_task(
            self._watch_steering(run, execution, wake, lock), name=f"dagbot steering {run.id}"
        )
        try:
            while True:
                if replan is not None:
                    async with lock:
                        await self._next_round(run, execution, replan)
                try:
                    await execution.run()
                except BaseExceptionGroup as group:
                    failure = _storage_failure(group)
                    if failure is group:
                        raise
                    raise failure from group
                replan, execution.replan = execution.replan, None
                if replan is None:
                    return
        finally:
            # Cancelled until it has stopped: a cancellation can be lost inside a library (on
            # Python 3.11, asyncio.wait_for swallows one that arrives as its wait ends, as
            # psycopg_pool's does), and the run would then never end.
            while not watcher.done():
                watcher.cancel()
                await asyncio.wait([watcher], timeout=1.0)
            if self._steering.get(run.id) is wake:
                del self._steering[run.id]

    async def _pending_replan(self, run_id: str) -> str | None:
        """The reason for a round asked for and not yet planned (a restart in between)."""
        last = await self.store.last_event(
            run_id, (EventKind.RUN_REPLANNING, EventKind.RUN_REVISED)
        )
        if last is None or last.kind is not EventKind.RUN_REPLANNING or last.data is None:
            return None
        reason = last.data.get("reason")
        return reason if isinstance(reason, str) else ""

    async def _replanning_refused(self, run_id: str) -> bool:
        """Whether a round could not be planned: then no more are allowed, even after a
        restart (the refusal is the run's event, so the bound does not live in memory only)."""
        return any(
            event.kind is EventKind.RUN_REVISED
            and event.data is not None
            and event.data.get("cause") == RevisionCause.REPLAN.value
            and "failed" in event.data
            for event in await self.store.events(run_id)
        )

    async def _next_round(self, run: Run, execution: Execution, reason: str) -> None:
        """Plan the round the final step asked for; if none can be made, it answers as it can."""
        data: dict[str, object] = {"cause": RevisionCause.REPLAN.value, "reason": reason}
        try:
            async with execution.hold():
                proposed = await self._revision(run, execution, RevisionCause.REPLAN, reason)
                await execution.revise(
                    proposed, record=self._reviser(run.id, ()), data=data, new_round=reason
                )
        except (PlanningFailed, PlanInvalid) as failure:
            log.info("run %s: no further round could be planned: %s", run.id, failure)
            execution.replans_left = 0
            await self._record_all(
                [
                    Transition(
                        run_id=run.id,
                        kind=EventKind.RUN_REVISED,
                        data={
                            **data,
                            "failed": str(failure),
                            "round": len(execution.plan.rounds) + 1,
                        },
                    )
                ]
            )

    async def _revision(
        self, run: Run, execution: Execution, cause: RevisionCause, text: str
    ) -> Plan:
        if self._planner is None:
            raise PlanningFailed("No planner is configured, so the plan cannot be revised.")
        revision = Revision(
            cause=cause,
            text=text,
            plan=execution.plan,
            tasks=tuple(sorted(execution.states.values(), key=lambda t: t.position)),
        )
        return await self._plan_with_retries(self._planner, run, revision)

    def _reviser(
        self, run_id: str, handled: Collection[int]
    ) -> Callable[[Plan, dict[str, object]], Awaitable[Event]]:
        def record(plan: Plan, data: dict[str, object]) -> Awaitable[Event]:
            return self.store.revise_plan(
                run_id,
                plan.model_dump(mode="json"),
                Transition(run_id=run_id, kind=EventKind.RUN_REVISED, data=data),
                handled=handled,
            )

        return record

    async def _look_for_steering(self) -> None:
        for wake in self._steering.values():
            wake.set()

    async def _watch_steering(
        self, run: Run, execution: Execution, wake: asyncio.Event, lock: asyncio.Lock
    ) -> None:
        while True:
            await wake.wait()
            wake.clear()
            try:
                for message in await self.store.open_steering(run.id):
                    await self._apply_steering(run, execution, message, lock)
            except LeaseLost:
                return
            except Exception:
                # The run goes on as planned; the message is read again on the next round.
                log.exception("run %s: could not apply a steering message", run.id)

    async def _apply_steering(
        self, run: Run, execution: Execution, message: SteeringRecord, lock: asyncio.Lock
    ) -> None:
        """Revise the part of the plan that has not started, as the message asks.

        Once the final step has started, the message waits for the run to end and then starts
        a follow-up run in the thread (`_follow_up`): the answer being written is not revised.
        """
        async with execution.hold(), lock:
            if _final_step_started(execution):
                return
            data: dict[str, object] = {
                "cause": RevisionCause.STEER.value,
                "message": message.message,
                "by": message.requester,
            }
            try:
                proposed = await self._revision(
                    run, execution, RevisionCause.STEER, message.message
                )
                await execution.revise(
                    proposed, record=self._reviser(run.id, (message.seq,)), data=data
                )
            except (LeaseLost, StorageError):
                raise
            except Exception as failure:
                # Planning failed, the revision was invalid, or a bug: the run goes on as
                # planned, and the message is answered (in the event) rather than tried forever.
                log.info("run %s: steering message not applied: %s", run.id, failure)
                await self.store.close_steering(message.seq)
                await self._record_all(
                    [
                        Transition(
                            run_id=run.id,
                            kind=EventKind.RUN_REVISED,
                            data={
                                **data,
                                "failed": str(failure),
                                "round": len(execution.plan.rounds) + 1,
                            },
                        )
                    ]
                )

    async def _follow_up(self, run: Run) -> None:
        """Start a follow-up run for each steering message that came too late to steer.

        So do cancelled runs: a mention that arrives just after a cancellation starts a
        follow-up, and one that arrived just before it is treated the same (it asks for work
        of its own, which the cancellation of the run's plan did not refuse).
        """
        for message in await self.store.open_steering(run.id):
            await self._start_follow_up(run, message)

    async def _start_follow_up(self, run: Run, message: SteeringRecord) -> None:
        # The follow-up is claimed by the message's seq in the transaction that records it, so
        # it starts exactly once, whichever process (or restart) gets here first; the message
        # is closed only after, so a stop in between leaves it for the next sweep.
        await self.submit(
            message.message,
            requester=message.requester,
            thread_key=run.thread_key,
            parent_run_id=run.id,
            meta=message.meta,
            delivery_id=f"dagbot-follow-up:{message.seq}",
        )
        await self.store.close_steering(message.seq)

    async def _answer_late_steering(self) -> None:
        """Start the follow-ups of steering messages left open on ended runs: their process
        stopped between the run's end and the follow-up (on start-up and every lease round)."""
        try:
            for message in await self.store.late_steering():
                record = await self.store.get_run(message.run_id)
                if record is not None:
                    await self._start_follow_up(Run.from_record(record), message)
        except Exception:
            # Neither start-up nor the lease keeper may stop for it: the next round tries again.
            log.exception("could not start the follow-ups of ended runs' steering messages")

    async def _fail_unsaved(self, run_id: str, error: StorageError) -> None:
        """The store failed this run for good: fail it where it can still be seen.

        The failure is recorded if the store takes it; otherwise the engine remembers it, view()
        shows it and the bus announces it, so no front end keeps showing the run as running.
        """
        message = f"dagbot stopped this run because it could not save its progress: {error}"
        log.error("run %s: %s", run_id, message)
        self.storage_failure = error
        if isinstance(error, DatabaseReplaced):
            self.database_lost.set()
        finished = Transition(
            run_id=run_id,
            kind=EventKind.RUN_FINISHED,
            run_status=RunStatus.FAILED,
            error=message,
            data={"status": RunStatus.FAILED.value, "stage": "storage"},
        )
        try:
            await self._end_unfinished(run_id, finished)
            return
        except StorageError:
            pass
        self._unsaved_failures[run_id] = message
        self._publish(
            Event(
                seq=0,  # never committed: no place in the log
                run_id=run_id,
                kind=EventKind.RUN_FINISHED,
                at=time.time(),
                data={"status": RunStatus.FAILED.value, "error": message, "saved": False},
            )
        )

    async def _learn_from_history(self) -> None:
        if self._learned:
            return
        self._learned = True
        self.durations.load(await self.store.recent_tool_durations(LEARNED_SAMPLES))

    async def _record_cancelled(self, run_id: str) -> None:
        await self._end_unfinished(
            run_id,
            Transition(
                run_id=run_id,
                kind=EventKind.RUN_CANCELLED,
                run_status=RunStatus.CANCELLED,
                error="Cancelled.",
            ),
        )

    async def _record_stopped(self, run_id: str, error: Exception) -> None:
        reason = (
            f"dagbot stopped this run after an internal error ({type(error).__name__}: "
            f"{error}); unfinished tasks were cancelled. Retry the run once the cause is fixed."
        )
        try:
            await self._end_unfinished(
                run_id,
                Transition(
                    run_id=run_id,
                    kind=EventKind.RUN_FINISHED,
                    run_status=RunStatus.FAILED,
                    error=reason,
                    data={"status": RunStatus.FAILED.value, "stage": "internal"},
                ),
            )
        except Exception:
            # The store itself is what failed: the run resumes on the next start.
            log.exception("could not record that run %s stopped", run_id)

    async def _end_unfinished(self, run_id: str, ending: Transition) -> None:
        """Cancel the run's unfinished tasks and record `ending`, in one commit."""
        # Every transition the run queued has landed (Execution.run waits for them on its way
        # out), so the store is current.
        run = await self.store.get_run(run_id)
        if run is None or run.status.finished:
            return  # it finished (or failed planning) just before this
        unfinished = [t for t in await self.store.get_tasks(run_id) if not t.status.finished]
        transitions = [
            Transition(
                run_id=run_id,
                kind=EventKind.TASK_CANCELLED,
                task_id=task.id,
                task_status=TaskStatus.CANCELLED,
            )
            for task in unfinished
        ]
        transitions.append(ending)
        await self._record_all(transitions)

    async def _record_finished(self, run_id: str, tasks: list[TaskState]) -> None:
        # A resumed run can hold tasks cancelled by a cancellation the process did not finish
        # recording; they did not succeed, so neither did the run.
        failed = [t.id for t in tasks if t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)]
        skipped = [t.id for t in tasks if t.status is TaskStatus.SKIPPED]
        status = RunStatus.FAILED if failed or skipped else RunStatus.SUCCEEDED
        error = None
        if status is RunStatus.FAILED:
            error = f"{len(failed)} task(s) failed and {len(skipped)} were skipped."
        await self._record_all(
            [
                Transition(
                    run_id=run_id,
                    kind=EventKind.RUN_FINISHED,
                    run_status=status,
                    error=error,
                    data={"status": status.value, "failed": failed, "skipped": skipped},
                )
            ]
        )

    async def _make_plan(self, run: Run, given_plan: Plan | None) -> Plan | None:
        error: str | None = None
        plan: Plan | None = given_plan
        try:
            if plan is None:
                if self._planner is None:
                    raise PlanningFailed(
                        "No planner is configured, so this goal cannot be planned."
                    )
                plan = await self._plan_with_retries(self._planner, run, None)
            # Given plans are checked too: one with a cycle or an unknown dependency would
            # otherwise stop the run loop with an internal error on every start.
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
        await self._record_all(
            [
                Transition(
                    run_id=run.id,
                    kind=EventKind.RUN_FINISHED,
                    run_status=RunStatus.FAILED,
                    error=error,
                    data={"status": RunStatus.FAILED.value, "stage": "planning"},
                )
            ]
        )
        return None

    async def _plan_with_retries(
        self, planner: Planner, run: Run, revision: Revision | None
    ) -> Plan:
        """Ask the planner, retrying transient failures by the planning policy."""
        request = PlanRequest(
            run_id=run.id,
            goal=run.goal,
            history=await self._history(run),
            record_usage=self._usage_sink(run.id, None),
            revision=revision,
        )
        policy = self.config.retry.of(PLANNING)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await planner(request)
            except TaskError as error:
                delay = retry_delay(error, attempt, policy)
                if delay is None:
                    raise PlanningFailed(
                        "I could not plan this goal because the language model call failed "
                        f"({attempt} attempt(s)): {error}"
                    ) from error
                log.info("planning run %s: attempt %d failed, retrying: %s", run.id, attempt, error)
                await asyncio.sleep(delay)

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


def _final_step_started(execution: Execution) -> bool:
    return any(
        rules(task.kind).final_step and task.status is not TaskStatus.PENDING
        for task in execution.states.values()
    )


def _storage_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The storage error a run's task group failed with, or the group itself if it is not one."""
    storage, rest = group.split(StorageError)
    if storage is None or rest is not None:
        return group
    leaf: BaseException = storage
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


async def _to_the_end(write: Awaitable[_T]) -> _T:
    """Await a store write; if cancelled meanwhile, let the write finish before re-raising.

    Cancellation then never leaves a write landing after the cancellation has been recorded
    (a plan stored after its run was marked cancelled would bring the run back to life).
    """
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _lease_lost(error: Exception) -> bool:
    if isinstance(error, ExceptionGroup):
        return error.subgroup(LeaseLost) is not None
    return isinstance(error, LeaseLost)
