"""Keeping the leases of the runs this process works on, and taking over runs left behind.

One named, supervised task per engine renews this process's leases every third of the lease
time, and nothing else: the rest of a round (taking over, the hooks) runs beside it in a task
of its own, so a slow round (hundreds of runs to land, a busy database) never delays a renewal
past the lease and hands live runs to another process. Finished runs whose last messages are
still being sent here stay leased too (`also_kept`). A run whose lease another process took
(this one was paused, or cut off from the database, past its lease) is dropped here at once:
its commits are refused by the store anyway (the lease is checked in every commit), so working
on it would only repeat tool calls. An engine that takes over work (a bot) also claims, on
every round, runs whose lease expired: those of a process that died.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection

from storage.errors import StorageError
from storage.store import Store

log = logging.getLogger("dagbot.ownership")

MIN_INTERVAL = 0.02
CURRENT_SHARE = 0.8
"""Share of the lease time after the last renewal during which this process may still speak
for its runs: past it, another process may have taken them (this one was paused, or its
renewals stalled) until a renewal says otherwise."""


class LeaseKeeper:
    def __init__(
        self,
        store: Store,
        *,
        working_on: Callable[[], set[str]],
        drop: Callable[[str, str], None],
        take_over: Callable[[], Awaitable[object]] | None,
    ) -> None:
        """`working_on`: runs being driven here; `drop(run_id, why)` stops driving one;
        `take_over`: claims and starts runs whose lease expired (None: never take over)."""
        self._store = store
        self._working_on = working_on
        self._drop = drop
        self._take_over = take_over
        self._lease = store.owner.lease_seconds
        self.interval = max(self._lease / 3, MIN_INTERVAL)
        self._task: asyncio.Task[None] | None = None
        self._round: asyncio.Task[None] | None = None
        self._rounds = True
        self._renewed_at: float | None = None
        """When the last successful renewal started (monotonic)."""
        self.lost: set[str] = set()
        """Runs this process held and another process took (until it takes them back)."""
        self.hooks: list[Callable[[], Awaitable[object]]] = []
        """Called after each round, e.g. to land what a dead process left unposted."""
        self.also_kept: list[Callable[[], Collection[str]]] = []
        """Runs whose leases are renewed even once finished (their messages still being sent)."""

    def start(self) -> None:
        if self._renewed_at is None:
            self._renewed_at = time.monotonic()  # the leases were just taken or claimed
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._keep(), name="dagbot lease keeper")
            self._task.add_done_callback(self._stopped)

    async def stop_rounds(self) -> None:
        """Only renew from now on: take nothing over, call no hook (the process is stopping)."""
        self._rounds = False
        if self._round is not None:
            self._round.cancel()
            await asyncio.wait([self._round])
            self._round = None

    async def stop(self) -> None:
        for task in (self._task, self._round):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        self._task = self._round = None

    async def tick(self) -> None:
        """Renew, drop what was lost, and take over what expired: one round."""
        await self.renew()
        await self.round()

    def holds(self, run_id: str | None) -> bool:
        """Whether this process surely still holds `run_id` (None: all of its runs), by its
        own clock and its last renewal.

        False once the last renewal started more than CURRENT_SHARE of a lease ago: a process
        paused past its lease (SIGSTOP, a frozen VM) must not post or edit anything for runs
        another process may have taken meanwhile, until a renewal has told which are still its;
        and false for a run that renewal found taken.
        """
        started = self._renewed_at
        if started is not None and time.monotonic() - started >= self._lease * CURRENT_SHARE:
            return False
        return run_id is None or run_id not in self.lost

    async def renew(self) -> None:
        """Renew this process's leases; stop driving the runs another process took."""
        started = time.monotonic()
        before = self._working_on()
        also = {run_id for runs in self.also_kept for run_id in runs()}
        owned = await self._store.renew_leases(also)
        for run_id in (before | also) - owned - self.lost:
            # Not renewed: finished meanwhile (still ours, its driver is ending on its own),
            # or taken by another process.
            lease = await self._store.lease(run_id)
            if lease is not None and lease.owner != self._store.owner.id:
                self.lost.add(run_id)
                if run_id in before:
                    self._drop(run_id, f"its lease was taken over by {lease.owner}")
        self._renewed_at = started  # only now: `lost` tells which runs are no longer ours

    async def round(self) -> None:
        """Take over what expired, then call the hooks."""
        if self._take_over is not None:
            await self._take_over()
        for hook in self.hooks:
            try:
                await hook()
            except Exception:
                log.exception("a lease-round hook failed")  # the leases must still be kept

    async def _keep(self) -> None:
        while True:
            # The leases were just taken or claimed: the first round is one interval away.
            await asyncio.sleep(self.interval)
            try:
                await self.renew()
            except StorageError as error:
                # The store retries lost connections itself; this round is simply missed.
                log.warning("could not renew this process's leases: %s", error)
                if time.monotonic() - (self._renewed_at or 0.0) > self._lease:
                    for run_id in self._working_on():
                        self._drop(run_id, "its lease could not be renewed in time")
                continue
            if self._rounds and (self._round is None or self._round.done()):
                self._round = asyncio.create_task(self._one_round(), name="dagbot lease round")

    async def _one_round(self) -> None:
        try:
            await self.round()
        except StorageError as error:
            log.warning("could not take over expired runs this round: %s", error)
        except Exception:
            log.exception("a lease round failed")  # the next round tries again

    def _stopped(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        # Supervised: without its keeper no run here is safe to continue.
        log.error("the lease keeper stopped; dropping every run here", exc_info=error)
        for run_id in self._working_on():
            self._drop(run_id, "the lease keeper stopped")
