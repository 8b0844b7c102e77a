"""The event bus: committed events fanned out to any number of subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from domain.vocabulary import Event


class Subscription:
    """An unbounded queue of events, so the engine never waits for a subscriber."""

    def __init__(self, bus: EventBus, run_id: str | None) -> None:
        self._bus = bus
        self.run_id = run_id
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def offer(self, event: Event) -> None:
        if self.run_id is None or event.run_id == self.run_id:
            self._queue.put_nowait(event)

    def close(self) -> None:
        self._bus.unsubscribe(self)
        self._queue.put_nowait(None)

    async def get(self) -> Event | None:
        """The next event, or None once the subscription is closed (and on every later call)."""
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # keep the marker for whoever reads next
        return event

    def drain(self) -> list[Event]:
        """Every event already waiting, without blocking (a closed marker is kept)."""
        events: list[Event] = []
        while not self._queue.empty():
            event = self._queue.get_nowait()
            if event is None:
                self._queue.put_nowait(None)
                break
            events.append(event)
        return events

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class EventBus:
    """Publishing is synchronous and never blocks; each subscriber drains its own queue."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, run_id: str | None = None) -> Subscription:
        """Events of one run, or of every run when run_id is None."""
        subscription = Subscription(self, run_id)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, event: Event) -> None:
        for subscription in tuple(self._subscriptions):
            subscription.offer(event)
