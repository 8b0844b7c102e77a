"""Group commit, shared by both stores: transitions queued at once, written in batches.

`record()` queues a transition and returns a future of its event at once; one named flusher
task per store writes everything queued so far in one transaction (the store's `write`), then
whatever arrived meanwhile in the next. Under load every transaction carries many transitions,
which is what keeps persistence cheap. Batches are written in arrival order, so transitions
commit in the order they were recorded, and a transition is committed even if nobody awaits its
future (the flusher writes it, not the caller).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from storage.errors import LeaseLost, StorageError
from storage.records import Event, Transition

Pending = tuple[Transition, float, "asyncio.Future[Event]"]
"""A queued transition, the time it was recorded, and the future of its event."""
WriteBatch = Callable[[Sequence[Pending]], Awaitable[list[Event | LeaseLost]]]
"""Writes a batch in one transaction: each transition's event, or LeaseLost for a run no
longer owned (the others of the batch are written all the same)."""


class GroupCommit:
    def __init__(self, write: WriteBatch) -> None:
        self._write = write
        self._pending: list[Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    def record(self, transition: Transition) -> asyncio.Future[Event]:
        """Queue `transition` for the next batch; the future gives its event."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._pending.append((transition, time.time(), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="store-group-commit")
        return future

    @property
    def flushing(self) -> asyncio.Task[None] | None:
        """The flusher while it is writing (a store waits for it before closing)."""
        return self._flusher if self._flusher is not None and not self._flusher.done() else None

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                outcomes = await self._write(batch)
            except BaseException as error:
                # The same kind of error (full, file replaced...) so callers can tell them apart.
                kind = type(error) if isinstance(error, StorageError) else StorageError
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(kind(f"could not save a state change: {error}"))
                if not isinstance(error, Exception):
                    raise
                continue
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, LeaseLost):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
