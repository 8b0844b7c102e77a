"""The narrow interface the scheduler and front ends depend on."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, overload

from storage.records import (
    Delivery,
    Event,
    NewRun,
    RunRecord,
    TaskRecord,
    Transition,
    UsageRecord,
    UsageTotal,
)


class Store(Protocol):
    @overload
    async def create_run(self, new: NewRun) -> tuple[RunRecord, Event]: ...

    @overload
    async def create_run(
        self, new: NewRun, *, delivery_id: str | None
    ) -> tuple[RunRecord, Event] | None: ...

    async def create_run(
        self, new: NewRun, *, delivery_id: str | None = None
    ) -> tuple[RunRecord, Event] | None:
        """Record a run in status planning.

        With `delivery_id` (an external event id), claiming it (see claim_delivery) and
        creating the run are one transaction: if the id was claimed before, nothing is created
        and the result is None. A crash can then never claim a delivery without its run.
        """
        ...

    async def set_plan(self, run_id: str, plan: dict[str, Any]) -> Event:
        """Store the plan and one pending row per task; the run becomes running."""
        ...

    def record(self, transition: Transition) -> Awaitable[Event]:
        """Commit one transition with its event; concurrent calls share one transaction.

        `await store.record(t)` returns once it is committed. Transitions commit in the order
        record() is called, and a transition is committed even if its caller is cancelled while
        waiting: the engine relies on both.
        """
        ...

    async def update_meta(self, run_id: str, patch: dict[str, Any]) -> RunRecord:
        """Merge `patch` into the run's front-end metadata (None values delete keys)."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def get_tasks(self, run_id: str) -> list[TaskRecord]: ...

    async def find_run(self, id_or_prefix: str) -> RunRecord | None:
        """A run by id or unambiguous id prefix."""
        ...

    async def unfinished_runs(self) -> list[str]: ...

    async def recent_runs(
        self, *, requester: str | None = None, limit: int = 20
    ) -> list[RunRecord]: ...

    async def latest_run_in_thread(self, thread_key: str) -> RunRecord | None: ...

    async def events(self, run_id: str) -> list[Event]: ...

    async def claim_delivery(self, event_id: str) -> bool:
        """True the first time an external event id is seen, False on every redelivery."""
        ...

    async def record_usage(self, usage: UsageRecord) -> None: ...

    async def usage(self, run_id: str) -> list[UsageTotal]: ...

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
        oldest first, however many there are."""
        ...

    async def runs_in_plan_style(self, plan_style: str, *, limit: int) -> list[RunRecord]:
        """The newest runs whose delivery draws the plan in `plan_style`."""
        ...

    async def close(self) -> None: ...
