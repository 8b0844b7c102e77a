from __future__ import annotations

import asyncio

from scheduler.dag.bus import EventBus
from storage.records import Event, EventKind


def event(seq: int, run_id: str = "r1", kind: EventKind = EventKind.TASK_STARTED) -> Event:
    return Event(seq=seq, run_id=run_id, kind=kind, at=float(seq), task_id=f"t{seq}")


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    first, second = bus.subscribe(), bus.subscribe()
    events = [event(n, run_id=f"r{n % 2}") for n in range(5)]
    for published in events:
        bus.publish(published)
    assert first.drain() == events
    assert second.drain() == events


async def test_a_run_subscription_only_sees_its_run() -> None:
    bus = EventBus()
    mine = bus.subscribe("r1")
    bus.publish(event(1, "r1"))
    bus.publish(event(2, "r2"))
    bus.publish(event(3, "r1"))
    assert [e.seq for e in mine.drain()] == [1, 3]


async def test_publishing_never_waits_for_a_subscriber_that_does_not_read() -> None:
    bus = EventBus()
    stuck = bus.subscribe()
    for n in range(10_000):
        bus.publish(event(n))  # synchronous: returns without any reader
    assert len(stuck.drain()) == 10_000


async def test_closing_ends_iteration_after_the_events_already_queued() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    bus.publish(event(1))
    bus.publish(event(2))
    subscription.close()
    bus.publish(event(3))  # after close: not delivered
    assert [e.seq async for e in subscription] == [1, 2]
    assert await subscription.get() is None


async def test_drain_keeps_the_closed_marker() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    bus.publish(event(1))
    subscription.close()
    assert [e.seq for e in subscription.drain()] == [1]
    assert subscription.drain() == []
    assert await subscription.get() is None


async def test_context_manager_unsubscribes() -> None:
    bus = EventBus()
    with bus.subscribe() as subscription:
        bus.publish(event(1))
    bus.publish(event(2))
    assert [e.seq for e in subscription.drain()] == [1]


async def test_a_waiting_reader_is_woken_by_a_publish() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    reader = asyncio.ensure_future(subscription.get())
    await asyncio.sleep(0)
    assert not reader.done()
    bus.publish(event(7))
    assert await reader == event(7)


async def test_unsubscribing_inside_publish_is_safe() -> None:
    bus = EventBus()
    subscriptions = [bus.subscribe() for _ in range(3)]
    bus.publish(event(1))
    for subscription in subscriptions:
        subscription.close()
    bus.publish(event(2))
    assert all([e.seq for e in s.drain()] == [1] for s in subscriptions)
