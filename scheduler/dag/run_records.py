"""What front ends read and write about runs, through the engine: they never see the store.

The bot shows runs and keeps its own bookkeeping (which Slack messages show a run, votes,
delivery ids); every such read and write goes through these methods, which the `Engine`
inherits, so `bot/` depends on the scheduler's API and the store stays behind it (a rule that
import-linter checks: no module of `bot` but the runtime imports `storage.store`).
"""

from __future__ import annotations

from collections.abc import Collection

from domain.vocabulary import Event, EventKind
from scheduler.dag.state import Run
from storage.leases import Lease
from storage.records import Delivery, UsageTotal
from storage.store import Store


class RunRecords:
    """Reads of runs, and the front ends' own records; see the module docstring."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get_run(self, run_id: str) -> Run | None:
        """The run as stored, or None."""
        record = await self.store.get_run(run_id)
        return Run.from_record(record) if record is not None else None

    async def find_run(self, id_or_prefix: str) -> Run | None:
        """A run by id or unambiguous id prefix (what `runs <prefix>` and cancel accept)."""
        record = await self.store.find_run(id_or_prefix) if id_or_prefix else None
        return Run.from_record(record) if record is not None else None

    async def recent_runs(self, *, requester: str | None = None, limit: int = 20) -> list[Run]:
        """The newest runs first, of one requester or of everyone."""
        records = await self.store.recent_runs(requester=requester, limit=limit)
        return [Run.from_record(record) for record in records]

    async def latest_run_in_thread(self, thread_key: str) -> Run | None:
        """The newest run started in a thread (a follow-up mention continues it)."""
        record = await self.store.latest_run_in_thread(thread_key)
        return Run.from_record(record) if record is not None else None

    async def events(self, run_id: str) -> list[Event]:
        """The run's committed events in order."""
        return await self.store.events(run_id)

    async def last_event(self, run_id: str, kinds: Collection[EventKind]) -> Event | None:
        """The run's latest committed event of one of `kinds`, or None."""
        return await self.store.last_event(run_id, kinds)

    async def usage(self, run_id: str) -> list[UsageTotal]:
        """LLM token usage of the run, per task and model."""
        return await self.store.usage(run_id)

    async def lease(self, run_id: str) -> Lease | None:
        """Who holds the run (owner, kind, expiry), or None for an unknown run."""
        return await self.store.lease(run_id)

    async def claim_delivery(self, delivery_id: str) -> bool:
        """True the first time an external event id is seen, False on every redelivery."""
        return await self.store.claim_delivery(delivery_id)

    async def update_meta(self, run_id: str, patch: dict[str, object]) -> Run:
        """Merge `patch` into the run's front-end metadata (None deletes a key); the run after."""
        return Run.from_record(await self.store.update_meta(run_id, dict(patch)))

    async def record_feedback(self, run_id: str, user_id: str, value: str) -> bool:
        """Record a person's vote on a run's answer; False when it changes nothing."""
        return await self.store.record_feedback(run_id, user_id, value)

    # -- where a run is shown (a front end's delivery state; see storage.records.Delivery) ----

    async def delivery(self, run_id: str) -> Delivery:
        """The run's delivery state as stored (empty when none was saved)."""
        return await self.store.delivery(run_id)

    async def save_delivery(self, delivery: Delivery) -> None:
        """Store the delivery's own fields (its posts are written one by one, below)."""
        await self.store.save_delivery(delivery)

    async def record_post_intent(self, run_id: str, key: str) -> None:
        """Note, before sending it, that message `key` of the run may be posted."""
        await self.store.record_post_intent(run_id, key)

    async def record_post(self, run_id: str, key: str, message: str) -> None:
        """Record the id of posted message `key`: from now on it is never posted again."""
        await self.store.record_post(run_id, key, message)

    async def unlanded_runs(self) -> list[str]:
        """Finished runs whose last state their front end does not show yet, that this process
        may land (see Store.unlanded_runs), oldest first."""
        return await self.store.unlanded_runs()
