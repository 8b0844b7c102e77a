"""The rate budget: pure bucket arithmetic, and the per-workspace shell."""

from __future__ import annotations

import pytest

from bot.rate_budget import (
    RATE_WINDOW,
    TIER_2,
    TIER_3,
    TIER_4,
    RateBudget,
    bucket_for,
    take,
)


@pytest.mark.parametrize(
    ("method", "per_minute"),
    [
        ("chat.update", TIER_3),
        ("chat.startStream", TIER_2),
        ("chat.appendStream", TIER_4),
        ("reactions.add", TIER_3),
    ],
)
def test_no_rolling_minute_exceeds_the_tier(method: str, per_minute: int) -> None:
    """Greedy callers, urgent: count what one bucket lets through in every 61 s window."""
    bucket = bucket_for(method, 0.0)
    assert bucket is not None
    sent: list[float] = []
    now = 0.0
    while now < 5 * RATE_WINDOW:
        bucket, wait = take(bucket, now, urgent=True)
        if wait == 0.0:
            sent.append(now)
        else:
            now += wait
    for start in sent:
        assert sum(1 for t in sent if start <= t < start + RATE_WINDOW + 1) <= per_minute


def test_background_calls_leave_the_reserve_to_urgent_ones() -> None:
    bucket = bucket_for("chat.update", 0.0)
    assert bucket is not None
    background = 0
    while True:
        bucket, wait = take(bucket, 0.0, urgent=False)
        if wait:
            break
        background += 1
    assert background == bucket.capacity - bucket.reserve
    urgent = 0
    while take(bucket, 0.0, urgent=True)[1] == 0.0:
        bucket, _ = take(bucket, 0.0, urgent=True)
        urgent += 1
    # Twenty runs finishing at once land their final states without waiting.
    assert urgent >= 20


def test_post_message_is_budgeted_per_channel_and_workspace() -> None:
    now = [0.0]
    budget = RateBudget(clock=lambda: now[0])
    assert budget.try_acquire("xoxb-a", "chat.postMessage", channel="C1") == 0.0
    assert budget.try_acquire("xoxb-a", "chat.postMessage", channel="C1") == 0.0
    assert budget.try_acquire("xoxb-a", "chat.postMessage", channel="C1") > 0.0
    assert budget.try_acquire("xoxb-a", "chat.postMessage", channel="C2") == 0.0
    assert budget.try_acquire("xoxb-b", "chat.postMessage", channel="C1") == 0.0
    now[0] = 2.0
    assert budget.try_acquire("xoxb-a", "chat.postMessage", channel="C1") == 0.0


def test_untiered_methods_are_free_and_speed_shortens_waits() -> None:
    now = [0.0]
    fast = RateBudget(speed=60.0, clock=lambda: now[0])
    assert fast.delay("xoxb-a", "auth.test") == 0.0
    for _ in range(10):
        fast.try_acquire("xoxb-a", "chat.startStream")
    slow_wait = RateBudget(clock=lambda: now[0])
    for _ in range(10):
        slow_wait.try_acquire("xoxb-a", "chat.startStream")
    assert fast.delay("xoxb-a", "chat.startStream") == pytest.approx(
        slow_wait.delay("xoxb-a", "chat.startStream") / 60
    )
