"""What a Slack channel was shown to refuse (plan blocks, markdown blocks, streaming), for a while.

One refusal is usually about one channel (a shared channel, an old client, a policy), not the
whole workspace, and workspaces gain features: so each fact is kept per (team, channel) and
forgotten after `ttl` seconds, when dagbot tries the richer form again. Facts live in memory: a
restart starts afresh, which costs at most one refused call per channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

DEFAULT_TTL = 3600.0
"""Seconds a refusal is remembered before the richer form is tried again."""

REFUSED_CONTENT = frozenset({"invalid_blocks", "msg_blocks_too_long"})
"""Error codes meaning "these blocks, as sent, are refused": try smaller or plainer blocks."""


class Feature(StrEnum):
    PLAN_BLOCKS = "plan_blocks"
    MARKDOWN_BLOCK = "markdown_block"
    STREAMING = "streaming"


class ChannelFacts:
    """Refusals remembered per (feature, team, channel) until they expire."""

    def __init__(
        self, *, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._until: dict[tuple[Feature, str, str], float] = {}

    def refuses(self, feature: Feature, team_id: str | None, channel: str) -> bool:
        """Whether `channel` refused `feature` less than `ttl` seconds ago."""
        key = (feature, team_id or "", channel)
        until = self._until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[key]
            return False
        return True

    def remember(self, feature: Feature, team_id: str | None, channel: str) -> None:
        """Record that `channel` refused `feature` just now."""
        self._until[(feature, team_id or "", channel)] = self._clock() + self._ttl
