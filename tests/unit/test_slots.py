from __future__ import annotations

import pytest

from scheduler.dag.slots import SlotPolicy, SlotPool


class Run:
    """A claimant with `ready` tasks that records the slots it takes."""

    def __init__(self, name: str, created_at: float, ready: int, log: list[str]) -> None:
        self.name = name
        self.order = (created_at, name)
        self.ready = ready
        self.log = log

    def take_slot(self) -> bool:
        if self.ready == 0:
            return False
        self.ready -= 1
        self.log.append(self.name)
        return True


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (SlotPolicy.FIFO, ["late", "late", "early", "early"]),
        (SlotPolicy.EARLIEST_RUN, ["early", "early", "late", "late"]),
    ],
)
def test_freed_slots_follow_the_policy(policy: SlotPolicy, expected: list[str]) -> None:
    log: list[str] = []
    pool = SlotPool(0, policy)
    late, early = Run("late", 2.0, 2, log), Run("early", 1.0, 2, log)
    for run in (late, late, early, early):
        pool.request(run)
    for _ in range(4):
        pool.release()
    assert log == expected
    assert pool.free == 0


def test_a_ticket_that_cannot_be_used_passes_its_slot_on() -> None:
    log: list[str] = []
    pool = SlotPool(0)
    done, other = Run("done", 1.0, 0, log), Run("other", 2.0, 1, log)
    pool.request(done)
    pool.request(other)
    pool.release()
    assert log == ["other"]
    assert (pool.free, pool.waiting) == (0, 0)


def test_a_free_slot_is_granted_at_once_and_never_more_than_the_size() -> None:
    log: list[str] = []
    pool = SlotPool(2)
    run = Run("r", 1.0, 5, log)
    for _ in range(5):
        pool.request(run)
    assert log == ["r", "r"]
    assert (pool.free, pool.waiting) == (0, 3)
