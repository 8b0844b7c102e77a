"""The narrow interface the scheduler depends on: every store (SQLite, PostgreSQL) provides it.

Front ends do not use it directly: they go through the engine's read API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection
from typing import Any, Protocol, overload

from storage.leases import CLAIM_BATCH, Lease, Owner
from storage.records import (
    Approval,
    Decision,
    Delivery,
    Event,
    EventKind,
    NewRun,
    NewSteering,
    RunRecord,
    SteeringRecord,
    TaskRecord,
    Transition,
    UsageRecord,
    UsageTotal,
)


class Store(Protocol):
    owner: Owner
    """Who this handle works for: the runs it creates or claims are leased to this owner."""

    @overload
    async def create_run(self, new: NewRun) -> tuple[RunRecord, Event]: ...

    @overload
    async def create_run(
        self, new: NewRun, *, delivery_id: str | None
    ) -> tuple[RunRecord, Event] | None: ...

    async def create_run(
        self, new: NewRun, *, delivery_id: str | None = None
    ) -> tuple[RunRecord, Event] | None:
        """Record a run in status planning, with its RUN_CREATED event; both are returned.

        With `delivery_id` (an external event id), claiming it (see claim_delivery) and
        creating the run are one transaction: if the id was claimed before, nothing is created
        and the result is None. A crash can then never claim a delivery without its run.
        """
        ...

    async def set_plan(self, run_id: str, plan: dict[str, Any]) -> Event:
        """Store the plan and one pending row per task; the run becomes running.

        One transaction, with the RUN_PLANNED event it returns.
        """
        ...

    def record(self, transition: Transition) -> Awaitable[Event]:
        """Commit one transition with its event; concurrent calls share one transaction.

        The transition is queued when record() is called (not when the result is awaited), so
        transitions queued in one stretch of the event loop share a commit. `await
        store.record(t)` returns once it is committed. Transitions commit in the order record()
        is called, and a transition is committed even if its caller is cancelled while
        waiting: the engine relies on all three. A transition of a run this owner no longer
        leases is not committed: it raises LeaseLost (checked inside the commit).
        """
        ...

    async def revise_plan(
        self,
        run_id: str,
        plan: dict[str, Any],
        transition: Transition,
        *,
        handled: Collection[int] = (),
    ) -> Event:
        """Store a running run's revised plan, in one transaction with `transition`'s event.

        Tasks the plan no longer lists are deleted (only pending ones ever are), new ones are
        added pending, kept ones take their new position (and, pending ones, their new spec);
        the steering messages `handled` (by seq) are closed. Raises LeaseLost for a run this
        owner does not lease.
        """
        ...

    async def add_steering(
        self, new: NewSteering, *, delivery_id: str | None = None
    ) -> bool | None:
        """Record a message for the process that owns a running run (any process may).

        False, recording nothing, when the run has ended (or is unknown); None when
        `delivery_id` was claimed before (it is claimed in the same transaction); else True.
        A run that ends meanwhile waits for this commit, so its owner sees the message.
        """
        ...

    async def open_steering(self, run_id: str) -> list[SteeringRecord]:
        """The run's steering messages not yet handled, oldest first."""
        ...

    async def close_steering(self, seq: int) -> None:
        """Mark a steering message handled."""
        ...

    async def late_steering(self, limit: int = 50) -> list[SteeringRecord]:
        """Steering messages still open on runs that have ended, oldest first (at most `limit`)."""
        ...

    async def update_meta(self, run_id: str, patch: dict[str, Any]) -> RunRecord:
        """Merge `patch` into the run's front-end metadata (None values delete keys).

        Read-modify-write in one transaction; returns the run after. Raises StorageError for
        an unknown run.
        """
        ...

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this exact id, or None."""
        ...

    async def get_tasks(self, run_id: str) -> list[TaskRecord]:
        """The run's tasks in plan order (by position); empty before it is planned."""
        ...

    async def find_run(self, id_or_prefix: str) -> RunRecord | None:
        """A run by id or unambiguous id prefix; None if none or several match (by index)."""
        ...

    async def unfinished_runs(self) -> list[str]:
        """Ids of runs in status planning or running, oldest first: what a start-up resumes."""
        ...

    async def recent_runs(
        self, *, requester: str | None = None, limit: int = 20
    ) -> list[RunRecord]:
        """At most `limit` runs, newest first, of one requester or of everyone (by index)."""
        ...

    async def latest_run_in_thread(self, thread_key: str) -> RunRecord | None:
        """The newest run whose thread_key is this one, or None."""
        ...

    async def events(self, run_id: str) -> list[Event]:
        """Every committed event of the run, in commit order."""
        ...

    async def last_event(self, run_id: str, kinds: Collection[EventKind]) -> Event | None:
        """The run's latest committed event whose kind is one of `kinds`, or None (by index)."""
        ...

    async def recent_tool_durations(self, limit: int) -> list[tuple[str, float]]:
        """(tool, seconds) of the last successful attempt of the most recently finished tool
        tasks, newest first, at most `limit` (by index): what learned durations start from."""
        ...

    async def claim_delivery(self, event_id: str) -> bool:
        """True the first time an external event id is seen, False on every redelivery.

        Claims are kept for a week (a start-up prunes older ones): longer than any redelivery.
        """
        ...

    async def record_usage(self, usage: UsageRecord) -> None:
        """Append the token usage of one LLM call."""
        ...

    async def usage(self, run_id: str) -> list[UsageTotal]:
        """The run's token usage summed per task and model, in order of first use."""
        ...

    async def record_feedback(self, run_id: str, user_id: str, value: str) -> bool:
        """Record a person's vote on a run (their latest counts); False when nothing changed,
        as when Slack replays a press."""
        ...

    async def feedback(self, run_id: str) -> dict[str, int]:
        """Votes on a run by value, e.g. `{"good": 3, "bad": 1}`."""
        ...

    # -- approvals (of tasks whose tool needs a person's go-ahead) ------------------------------

    async def decide(
        self, run_id: str, task_id: str, decision: Decision, by: str | None
    ) -> tuple[Approval, bool] | None:
        """Record a decision on the task's approval request, unless one is recorded already.

        Any process may call it, owner of the run or not: the owner reads decisions back. Returns
        the request as it stands after, and whether this call decided it; None when the task
        has no request. A decision at or after the deadline is recorded as EXPIRED.
        """
        ...

    async def approvals(self, run_id: str) -> list[Approval]:
        """The run's approval requests, decided or not, oldest first."""
        ...

    # -- delivery (what a front end has shown of a run; see records.Delivery) ---------------

    async def delivery(self, run_id: str) -> Delivery:
        """The run's delivery state with its posts; an empty Delivery when nothing was shown."""
        ...

    async def save_delivery(self, delivery: Delivery) -> None:
        """Write the delivery's own fields (not `posts`) in one statement, creating the row."""
        ...

    async def record_post_intent(self, run_id: str, key: str) -> None:
        """Record that message `key` of the run is about to be posted (kept if already known)."""
        ...

    async def record_post(self, run_id: str, key: str, message: str) -> None:
        """Record the id of posted message `key`: from now on it is never posted again."""
        ...

    async def unlanded_runs(self) -> list[str]:
        """Every finished run with a delivery that does not show its last terminal event yet,
        oldest first, however many there are: those leased to this owner or whose lease ran
        out (a live process landing a run keeps its lease: see `renew_leases`)."""
        ...

    async def runs_in_plan_style(self, plan_style: str, *, limit: int) -> list[RunRecord]:
        """The newest runs whose delivery draws the plan in `plan_style`."""
        ...

    # -- leases (storage/leases.py) ---------------------------------------------------------

    async def claim_expired(self, *, limit: int = CLAIM_BATCH) -> list[str]:
        """Lease to this owner the unfinished runs of its kind whose lease has expired.

        Atomic across processes: each run is claimed by exactly one claimer.
        """
        ...

    async def claim_run(self, run_id: str) -> bool:
        """Lease one run (finished or not) of this owner's kind to it: when its lease expired
        or is already this owner's. False otherwise."""
        ...

    async def renew_leases(self, also: Collection[str] = ()) -> set[str]:
        """Extend this owner's leases by its lease time: those of the unfinished runs it still
        owns, and of the runs in `also` it still owns whatever their status (finished runs whose
        messages it is still delivering). Returns the runs renewed."""
        ...

    async def lease(self, run_id: str) -> Lease | None:
        """A run's lease as stored (None for an unknown run)."""
        ...

    async def close(self) -> None:
        """Commit the writes handed in, release this owner's leases (a clean stop hands its
        runs to the next process at once), and close."""
        ...
