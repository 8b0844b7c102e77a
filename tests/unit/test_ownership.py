"""The lease keeper: which runs this process may still speak for (both stores)."""

from __future__ import annotations

from scheduler.dag.ownership import LeaseKeeper
from storage.connect import open_store
from storage.leases import Owner
from storage.records import NewRun
from storage.store import Store


def keeper_of(store: Store, working_on: set[str]) -> tuple[LeaseKeeper, list[str]]:
    dropped: list[str] = []
    keeper = LeaseKeeper(
        store,
        working_on=lambda: working_on,
        drop=lambda run_id, why: dropped.append(run_id),
        take_over=None,
    )
    return keeper, dropped


async def test_a_run_taken_by_another_process_is_dropped_and_no_longer_held(
    database_url: str,
) -> None:
    # Leases that run out at once: the other process may take any run it wants.
    holder = await open_store(database_url, owner=Owner(lease_seconds=0.0))
    other = await open_store(database_url)
    try:
        taken, _ = await holder.create_run(NewRun(goal="taken"))
        kept, _ = await holder.create_run(NewRun(goal="kept"))
        finished_elsewhere, _ = await holder.create_run(NewRun(goal="landing"))
        keeper, dropped = keeper_of(holder, {taken.id, kept.id})
        keeper.also_kept.append(lambda: {finished_elsewhere.id})
        assert await other.claim_run(taken.id)
        assert await other.claim_run(finished_elsewhere.id)
        await keeper.renew()
        assert dropped == [taken.id]
        assert keeper.lost == {taken.id, finished_elsewhere.id}
    finally:
        await other.close()
        await holder.close()


async def test_leases_not_renewed_lately_hold_nothing_by_this_process_s_own_clock(
    database_url: str,
) -> None:
    fresh = await open_store(database_url, owner=Owner(lease_seconds=3600.0))
    stale = await open_store(database_url, owner=Owner(lease_seconds=0.0))
    try:
        run, _ = await fresh.create_run(NewRun(goal="g"))
        keeper, _ = keeper_of(fresh, {run.id})
        keeper.start()
        await keeper.renew()
        assert keeper.holds(run.id)
        keeper.lost.add(run.id)
        assert not keeper.holds(run.id)
        await keeper.stop()
        # A lease of no time at all is past the share of it that may be relied on at once: the
        # same as a process that wakes up after a pause longer than its lease.
        lapsed, _ = keeper_of(stale, set())
        lapsed.start()
        assert not lapsed.holds("any")
        await lapsed.stop()
    finally:
        await stale.close()
        await fresh.close()
