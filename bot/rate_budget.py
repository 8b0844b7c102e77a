"""One Slack rate budget per workspace and method, shared by every run, urgent calls first.

Slack limits each Web API method per workspace (and `chat.postMessage` also per channel): Tier 2
about 20 calls a minute, Tier 3 about 50, Tier 4 about 100, a post about one a second per
channel. Every call dagbot makes draws from a token bucket per (workspace, method[, channel])
sized so that no rolling minute can exceed Slack's number, even with network jitter. Urgent
calls (first posts, final states, anything not marked) may use the whole bucket; background
calls (a running plan's intermediate edits) leave a reserve untouched, so a burst of runs
finishing together still lands at once while the edits of running plans wait or coalesce.

The bucket arithmetic is pure (`take`); `RateBudget` is the thin async shell that sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

RATE_WINDOW = 60.0
# Slack's documented per-minute numbers per method and workspace (api.slack.com/docs/rate-limits
# and each method's reference page).
TIER_2, TIER_3, TIER_4 = 20, 50, 100
METHOD_TIERS: dict[str, int] = {
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.startStream": TIER_2,
    "chat.stopStream": TIER_2,
    "chat.appendStream": TIER_4,
    "chat.postEphemeral": TIER_4,
    "chat.getPermalink": TIER_4,
    "conversations.replies": TIER_3,
    "views.publish": TIER_4,
    "users.info": TIER_4,
    "reactions.add": TIER_3,
}
PER_CHANNEL_METHODS = frozenset({"chat.postMessage"})
# "One message per second per channel, short bursts allowed": two at once, then 0.9 a second.
POST_BURST = 2.0
POST_RATE = 0.9
# Calls are counted when they reach Slack, a little after we send them: budget this much longer
# than Slack's minute so that jitter cannot squeeze one more call into its window.
JITTER_MARGIN = 3.0
# Share of a method's bucket that background calls leave for urgent ones.
URGENT_SHARE = 0.8


@dataclass(frozen=True, kw_only=True)
class Bucket:
    """A token bucket: up to `capacity` tokens, refilled at `rate` a second (Slack's time)."""

    capacity: float
    rate: float
    reserve: float
    tokens: float
    at: float


def bucket_for(method: str, now: float) -> Bucket | None:
    """A full bucket for `method`, or None when dagbot does not budget it (not rate-tiered)."""
    if method in PER_CHANNEL_METHODS:
        return Bucket(capacity=POST_BURST, rate=POST_RATE, reserve=0.0, tokens=POST_BURST, at=now)
    per_minute = METHOD_TIERS.get(method)
    if per_minute is None:
        return None
    # capacity + rate * (window + margin) stays under Slack's number in any rolling minute.
    capacity = per_minute / 2
    rate = (per_minute - capacity - 1) / (RATE_WINDOW + JITTER_MARGIN)
    reserve = int(capacity * URGENT_SHARE)
    return Bucket(capacity=capacity, rate=rate, reserve=reserve, tokens=capacity, at=now)


def refill(bucket: Bucket, now: float) -> Bucket:
    """The bucket as it stands at `now`."""
    tokens = min(bucket.capacity, bucket.tokens + max(0.0, now - bucket.at) * bucket.rate)
    return replace(bucket, tokens=tokens, at=max(now, bucket.at))


def take(bucket: Bucket, now: float, *, urgent: bool) -> tuple[Bucket, float]:
    """Take one token: (bucket after, 0.0), or (bucket, seconds to wait) when it cannot yet.

    A background call may not take the bucket below its reserve.
    """
    bucket = refill(bucket, now)
    floor = 0.0 if urgent else bucket.reserve
    # A hair of tolerance: refills are floating point, and a wait computed to reach exactly one
    # token must find it there.
    if bucket.tokens >= floor + 1.0 - 1e-9:
        return replace(bucket, tokens=max(0.0, bucket.tokens - 1.0)), 0.0
    return bucket, (floor + 1.0 - bucket.tokens) / bucket.rate


Key = tuple[str, str, str]


class RateBudget:
    """The buckets of every workspace this process talks to; see the module docstring.

    `speed` runs the budget's minute faster than the wall clock (tests and benchmarks against a
    fake Slack whose clock runs at the same speed); production leaves it at 1.
    """

    def __init__(self, *, speed: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._speed = speed
        self._clock = clock
        self._buckets: dict[Key, Bucket] = {}
        self.waited = 0

    def _now(self) -> float:
        return self._clock() * self._speed

    def _key(self, workspace: str, method: str, channel: str | None) -> Key:
        per_channel = method in PER_CHANNEL_METHODS
        return (workspace, method, (channel or "") if per_channel else "")

    def _bucket(self, key: Key, now: float) -> Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = bucket_for(key[1], now)
            if bucket is not None:
                self._buckets[key] = bucket
        return bucket

    def delay(
        self, workspace: str, method: str, *, channel: str | None = None, urgent: bool = True
    ) -> float:
        """Seconds (wall clock) until a call could be made, without taking anything."""
        now = self._now()
        bucket = self._bucket(self._key(workspace, method, channel), now)
        if bucket is None:
            return 0.0
        return take(bucket, now, urgent=urgent)[1] / self._speed

    def try_acquire(
        self, workspace: str, method: str, *, channel: str | None = None, urgent: bool = True
    ) -> float:
        """Take a token now (0.0) or say how many seconds (wall clock) to wait first."""
        now = self._now()
        key = self._key(workspace, method, channel)
        bucket = self._bucket(key, now)
        if bucket is None:
            return 0.0
        bucket, wait = take(bucket, now, urgent=urgent)
        self._buckets[key] = bucket
        return wait / self._speed

    async def acquire(
        self, workspace: str, method: str, *, channel: str | None = None, urgent: bool = True
    ) -> None:
        """Wait until the call fits in the budget, then take its token."""
        while (wait := self.try_acquire(workspace, method, channel=channel, urgent=urgent)) > 0:
            self.waited += 1
            await asyncio.sleep(wait)
