"""The process-wide task slots, granted across runs by a policy: earliest run first, or FIFO.

A run asks for one slot per task it could start (a ticket); a slot is granted synchronously,
inside the call that frees it (or asks for it), so the start it pays for is queued in the same
stretch of the event loop as the outcome that freed it: both share one group commit.
"""

from __future__ import annotations

import heapq
import itertools
from enum import StrEnum
from typing import Protocol


class SlotPolicy(StrEnum):
    EARLIEST_RUN = "earliest_run"
    """Free slots go to the ready tasks of the run created first: runs finish one after another
    instead of all together at the end of a burst."""
    FIFO = "fifo"
    """Free slots go to tickets in the order they were asked for (the old semaphore)."""


class Claimant(Protocol):
    """A run that asks for slots."""

    @property
    def order(self) -> tuple[float, str]:
        """Its place under EARLIEST_RUN: (created_at, run id)."""
        ...

    def take_slot(self) -> bool:
        """Use a granted slot at once; False if it no longer can (the slot goes to the next)."""
        ...


class SlotPool:
    def __init__(self, size: int, policy: SlotPolicy = SlotPolicy.EARLIEST_RUN) -> None:
        self.size = size
        self.free = size
        self.policy = policy
        self._tickets: list[tuple[tuple[float, str], int, Claimant]] = []
        self._sequence = itertools.count()
        self._granting = False

    def request(self, claimant: Claimant) -> None:
        """Ask for one slot: granted now if one is free and the ticket comes first, else later."""
        key = claimant.order if self.policy is SlotPolicy.EARLIEST_RUN else (0.0, "")
        heapq.heappush(self._tickets, (key, next(self._sequence), claimant))
        self._grant()

    def release(self) -> None:
        """Give a slot back; it goes to the next ticket at once."""
        self.free += 1
        self._grant()

    @property
    def waiting(self) -> int:
        """Tickets not yet granted (some may belong to runs that no longer need them)."""
        return len(self._tickets)

    def _grant(self) -> None:
        if self._granting:
            return  # a claimant asked or released while taking a slot: the loop below goes on
        self._granting = True
        try:
            while self.free > 0 and self._tickets:
                _, _, claimant = heapq.heappop(self._tickets)
                self.free -= 1
                if not claimant.take_slot():
                    self.free += 1
        finally:
            self._granting = False
