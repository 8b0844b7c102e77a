from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from storage.connect import open_store as open_any
from storage.errors import DatabaseUnusable, LeaseLost, StorageError, UnsupportedDatabaseURL
from storage.leases import Owner, OwnerKind
from storage.records import (
    Delivery,
    EventKind,
    NewRun,
    RunStatus,
    TaskStatus,
    Transition,
    UsageRecord,
)
from storage.sql import migrations
from storage.sqlite import SqliteStore, open_store, sqlite_path
from storage.store import Store
from tests.support.postgres import fresh_database, terminate_connections

LATEST = migrations()[-1][0]
PLAN = {
    "title": "p",
    "tasks": [
        {"id": "t1", "kind": "tool", "title": "one", "tool": "x.y", "args": {}, "deps": []},
        {"id": "t2", "kind": "summary", "title": "two", "deps": ["t1"]},
    ],
}


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """Every test taking `store` runs against both stores: SQLite and PostgreSQL."""
    opened = await open_any(database_url)
    yield opened
    await opened.close()


async def planned_run(store: Store, goal: str = "goal", **fields: object) -> str:
    record, _ = await store.create_run(NewRun(goal=goal, **fields))  # type: ignore[arg-type]
    await store.set_plan(record.id, PLAN)
    return record.id


def task_transition(run_id: str, task_id: str, kind: EventKind, **fields: object) -> Transition:
    return Transition(run_id=run_id, task_id=task_id, kind=kind, **fields)  # type: ignore[arg-type]


# -- opening -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///dagbot.sqlite3", "dagbot.sqlite3"),
        ("sqlite:///data/runs.db", "data/runs.db"),
        ("sqlite:////var/lib/dagbot.db", "/var/lib/dagbot.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_path(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize(
    "url", ["postgres://localhost/dagbot", "dagbot.sqlite3", "sqlite:///", "sqlite://"]
)
def test_unsupported_urls_are_refused_with_the_expected_shape(url: str) -> None:
    with pytest.raises(UnsupportedDatabaseURL, match="sqlite:///"):
        sqlite_path(url)


async def test_fresh_file_is_migrated_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    store = await open_store(f"sqlite:///{path}")
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (LATEST,)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert {"runs", "tasks", "events", "inbox", "usage"} <= tables


async def test_reopening_keeps_everything(database_url: str) -> None:
    first = await open_any(database_url)
    run_id = await planned_run(first, requester="U1", thread_key="C1:1.0", meta={"ts": "1.0"})
    await first.record(
        task_transition(
            run_id, "t1", EventKind.TASK_STARTED, task_status=TaskStatus.RUNNING, new_attempt=True
        )
    )
    await first.record(
        task_transition(
            run_id, "t1", EventKind.TASK_SUCCEEDED, task_status=TaskStatus.SUCCEEDED, output="done"
        )
    )
    assert await first.claim_delivery("Ev1")
    events_before = await first.events(run_id)
    await first.close()

    second = await open_any(database_url)
    try:
        run = await second.get_run(run_id)
        assert run is not None
        assert (run.goal, run.status, run.requester, run.meta) == (
            "goal",
            RunStatus.RUNNING,
            "U1",
            {"ts": "1.0"},
        )
        assert run.plan == PLAN
        tasks = await second.get_tasks(run_id)
        assert [(t.id, t.status, t.attempts, t.output) for t in tasks] == [
            ("t1", TaskStatus.SUCCEEDED, 1, "done"),
            ("t2", TaskStatus.PENDING, 0, None),
        ]
        assert await second.events(run_id) == events_before
        assert not await second.claim_delivery("Ev1")
        assert await second.unfinished_runs() == [run_id]
    finally:
        await second.close()


def write_foreign_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.execute("INSERT INTO notes VALUES ('keep me')")
    db.commit()
    db.close()


def write_newer_dagbot(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY)")
    db.execute(f"PRAGMA user_version = {LATEST + 1}")
    db.commit()
    db.close()


def write_random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def write_damaged_sqlite(path: Path) -> None:
    write_foreign_sqlite(path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {LATEST}")
    db.close()
    data = bytearray(path.read_bytes())
    # keep the 100-byte header, smash the schema page behind it
    data[100:4096] = os.urandom(3996)
    path.write_bytes(bytes(data))


def write_text(path: Path) -> None:
    path.write_text("this is a shopping list, not a database\n")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (write_random_bytes, "not a SQLite database"),
        (write_text, "not a SQLite database"),
        (write_damaged_sqlite, "unusable|corrupt"),
        (write_foreign_sqlite, "tables that are not dagbot's"),
        (write_newer_dagbot, f"schema version {LATEST + 1}, newer than this dagbot"),
    ],
    ids=["random bytes", "text file", "damaged sqlite", "someone else's sqlite", "newer schema"],
)
async def test_unusable_files_are_refused_and_left_untouched(
    tmp_path: Path, make: object, reason: str
) -> None:
    path = tmp_path / "unusable.sqlite3"
    make(path)  # type: ignore[operator]
    before = path.read_bytes()
    with pytest.raises(DatabaseUnusable, match=reason) as refused:
        await SqliteStore.open(str(path))
    assert str(path) in str(refused.value)
    assert "DATABASE_URL" in str(refused.value) or "untouched" in str(refused.value)
    assert path.read_bytes() == before


async def test_a_file_that_cannot_be_created_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "dagbot.sqlite3"
    with pytest.raises(DatabaseUnusable, match="cannot open the database"):
        await SqliteStore.open(str(path))
    assert not path.parent.exists()


async def test_an_empty_file_is_treated_as_new(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite3"
    path.touch()
    store = await SqliteStore.open(str(path))
    try:
        assert await planned_run(store)
    finally:
        await store.close()


async def test_in_memory_store_works() -> None:
    store = await SqliteStore.open(":memory:")
    try:
        run_id = await planned_run(store)
        assert [t.id for t in await store.get_tasks(run_id)] == ["t1", "t2"]
    finally:
        await store.close()


async def test_processes_starting_on_a_new_database_at_once_all_succeed(
    database_url: str,
) -> None:
    stores = await asyncio.gather(*(open_any(database_url) for _ in range(4)))
    try:
        ids = [await planned_run(s) for s in stores]
        assert len(await stores[0].unfinished_runs()) == len(set(ids)) == 4
    finally:
        for opened in stores:
            await opened.close()


async def test_many_simultaneous_first_start_ups_on_one_new_file_all_succeed(
    tmp_path: Path,
) -> None:
    # Switching a new file to WAL can answer "database is locked" at once, bypassing
    # busy_timeout, while another process switches it too: about one batch of four in forty
    # failed so before the switch waited. Sixty batches catch that nearly always.
    for batch in range(60):
        url = f"sqlite:///{tmp_path}/start-{batch}.sqlite3"
        opened = await asyncio.gather(*(open_any(url) for _ in range(4)), return_exceptions=True)
        for store in opened:
            if not isinstance(store, BaseException):
                await store.close()
        assert [s for s in opened if isinstance(s, BaseException)] == []


# -- writes ------------------------------------------------------------------------------------


async def test_transitions_update_the_task_row(store: Store) -> None:
    run_id = await planned_run(store)

    async def t1() -> tuple[TaskStatus, int, bool, bool, str | None, str | None]:
        [task, _] = await store.get_tasks(run_id)
        return (
            task.status,
            task.attempts,
            task.started_at is not None,
            task.finished_at is not None,
            task.output,
            task.error,
        )

    await store.record(
        task_transition(
            run_id, "t1", EventKind.TASK_STARTED, task_status=TaskStatus.RUNNING, new_attempt=True
        )
    )
    assert await t1() == (TaskStatus.RUNNING, 1, True, False, None, None)
    await store.record(task_transition(run_id, "t1", EventKind.TASK_RETRIED, error="timeout"))
    assert await t1() == (TaskStatus.RUNNING, 1, True, False, None, None)
    await store.record(
        task_transition(
            run_id, "t1", EventKind.TASK_FAILED, task_status=TaskStatus.FAILED, error="boom"
        )
    )
    assert await t1() == (TaskStatus.FAILED, 1, True, True, None, "boom")
    await store.record(
        task_transition(run_id, "t1", EventKind.TASK_RETRIED, task_status=TaskStatus.PENDING)
    )
    assert await t1() == (TaskStatus.PENDING, 1, True, False, None, None)
    await store.record(
        task_transition(
            run_id, "t1", EventKind.TASK_STARTED, task_status=TaskStatus.RUNNING, new_attempt=True
        )
    )
    await store.record(
        task_transition(
            run_id, "t1", EventKind.TASK_SUCCEEDED, task_status=TaskStatus.SUCCEEDED, output="42"
        )
    )
    assert await t1() == (TaskStatus.SUCCEEDED, 2, True, True, "42", None)

    kinds = [(e.kind, e.task_id) for e in await store.events(run_id)]
    assert kinds == [
        (EventKind.RUN_CREATED, None),
        (EventKind.RUN_PLANNED, None),
        (EventKind.TASK_STARTED, "t1"),
        (EventKind.TASK_RETRIED, "t1"),
        (EventKind.TASK_FAILED, "t1"),
        (EventKind.TASK_RETRIED, "t1"),
        (EventKind.TASK_STARTED, "t1"),
        (EventKind.TASK_SUCCEEDED, "t1"),
    ]
    errors = [e.data and e.data.get("error") for e in await store.events(run_id)]
    assert errors[3:5] == ["timeout", "boom"]


async def test_run_status_transitions(store: Store) -> None:
    run_id = await planned_run(store)
    event = await store.record(
        Transition(
            run_id=run_id,
            kind=EventKind.RUN_FINISHED,
            run_status=RunStatus.FAILED,
            error="1 task(s) failed",
            data={"failed": ["t1"]},
        )
    )
    run = await store.get_run(run_id)
    assert run is not None
    assert (run.status, run.error) == (RunStatus.FAILED, "1 task(s) failed")
    assert event.data == {"failed": ["t1"], "error": "1 task(s) failed"}
    assert await store.unfinished_runs() == []


async def test_concurrent_records_share_commits_and_keep_their_order(store: Store) -> None:
    run_id = await planned_run(store)
    transitions = [
        Transition(run_id=run_id, kind=EventKind.TASK_RETRIED, task_id="t1", data={"n": n})
        for n in range(300)
    ]
    events = await asyncio.gather(*(store.record(t) for t in transitions))
    assert [e.data for e in events] == [{"n": n} for n in range(300)]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 300
    stored = await store.events(run_id)
    assert [(e.seq, e.data) for e in stored[2:]] == [(e.seq, e.data) for e in events]


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_still_commits(
    store: Store,
) -> None:
    run_id = await planned_run(store)
    bad = Transition(run_id=run_id, kind=EventKind.TASK_RETRIED, data={"x": object()})
    with pytest.raises(StorageError, match="could not save a state change"):
        await store.record(bad)
    event = await store.record(Transition(run_id=run_id, kind=EventKind.TASK_RETRIED))
    assert (await store.events(run_id))[-1] == event


async def test_a_recorded_transition_is_committed_even_if_nobody_waits_for_it(
    database_url: str,
) -> None:
    owner = Owner()  # the same owner reopens: the run stays its own
    store = await open_any(database_url, owner=owner)
    run_id = await planned_run(store)
    store.record(
        task_transition(
            run_id, "t1", EventKind.TASK_STARTED, task_status=TaskStatus.RUNNING, new_attempt=True
        )
    )
    waiter = asyncio.ensure_future(
        store.record(
            task_transition(
                run_id,
                "t1",
                EventKind.TASK_SUCCEEDED,
                task_status=TaskStatus.SUCCEEDED,
                output="kept",
            )
        )
    )
    await asyncio.sleep(0)
    waiter.cancel()
    await store.close()

    reopened = await open_any(database_url, owner=owner)
    try:
        [task, _] = await reopened.get_tasks(run_id)
        assert (task.status, task.attempts, task.output) == (TaskStatus.SUCCEEDED, 1, "kept")
    finally:
        await reopened.close()


async def test_claim_delivery_dedupes(store: Store, database_url: str) -> None:
    assert await store.claim_delivery("Ev1")
    assert not await store.claim_delivery("Ev1")
    assert await store.claim_delivery("Ev2")
    other = await open_any(database_url)
    try:
        results = await asyncio.gather(
            *(s.claim_delivery("Ev3") for s in (store, other, store, other))
        )
        assert sorted(results) == [False, False, False, True]
    finally:
        await other.close()


async def test_a_first_delivery_creates_its_run_and_claims_the_id(store: Store) -> None:
    created = await store.create_run(NewRun(goal="from slack"), delivery_id="Ev1")
    assert created is not None
    record, event = created
    assert (record.goal, record.status) == ("from slack", RunStatus.PLANNING)
    assert await store.get_run(record.id) == record
    assert await store.events(record.id) == [event]
    assert not await store.claim_delivery("Ev1")


async def test_a_redelivery_creates_nothing(store: Store) -> None:
    assert await store.create_run(NewRun(goal="first"), delivery_id="Ev1") is not None
    assert await store.create_run(NewRun(goal="again"), delivery_id="Ev1") is None
    assert await store.claim_delivery("Ev2")
    assert await store.create_run(NewRun(goal="claimed apart"), delivery_id="Ev2") is None
    assert [r.goal for r in await store.recent_runs()] == ["first"]


async def test_concurrent_deliveries_of_one_event_create_exactly_one_run(
    store: Store, database_url: str
) -> None:
    other = await open_any(database_url)
    try:
        results = await asyncio.gather(
            *(
                s.create_run(NewRun(goal=f"copy {n}"), delivery_id="Ev1")
                for n, s in enumerate((store, other, store, other))
            )
        )
        assert sum(result is not None for result in results) == 1
        assert len(await other.recent_runs()) == 1
    finally:
        await other.close()


async def test_a_run_that_cannot_be_created_leaves_its_delivery_unclaimed(
    store: Store,
) -> None:
    # The parent does not exist: the foreign key fails the run insert after the claim.
    with pytest.raises(StorageError, match=r"(?i)FOREIGN KEY"):
        await store.create_run(NewRun(goal="orphan", parent_run_id="nope"), delivery_id="Ev1")
    assert await store.recent_runs() == []
    created = await store.create_run(NewRun(goal="retried"), delivery_id="Ev1")
    assert created is not None


async def test_old_deliveries_are_pruned_on_open(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    first = await SqliteStore.open(str(path))
    assert await first.claim_delivery("old")
    assert await first.claim_delivery("recent")
    await first.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE inbox SET received_at = 0 WHERE event_id = 'old'")
    db.close()
    second = await SqliteStore.open(str(path))
    try:
        assert await second.claim_delivery("old")
        assert not await second.claim_delivery("recent")
    finally:
        await second.close()


async def test_update_meta_merges_and_deletes(store: Store) -> None:
    run_id = await planned_run(store, meta={"channel": "C1", "ts": "1.0"})
    updated = await store.update_meta(run_id, {"ts": "2.0", "message": "M", "channel": None})
    assert updated.meta == {"ts": "2.0", "message": "M"}
    stored = await store.get_run(run_id)
    assert stored is not None
    assert stored.meta == {"ts": "2.0", "message": "M"}
    assert stored.status is RunStatus.RUNNING


async def test_update_meta_of_an_unknown_run(store: Store) -> None:
    with pytest.raises(StorageError, match="no run 'nope'"):
        await store.update_meta("nope", {"a": 1})


async def test_usage_is_summed_per_task_and_model(store: Store) -> None:
    run_id = await planned_run(store)
    for task_id, prompt, completion in [(None, 10, 5), ("t1", 3, 4), ("t1", 7, 6)]:
        await store.record_usage(
            UsageRecord(
                run_id=run_id,
                task_id=task_id,
                model="m",
                prompt_tokens=prompt,
                completion_tokens=completion,
            )
        )
    totals = [
        (u.task_id, u.prompt_tokens, u.completion_tokens, u.calls)
        for u in await store.usage(run_id)
    ]
    assert totals == [(None, 10, 5, 1), ("t1", 10, 10, 2)]


async def test_two_store_instances_writing_at_once_never_see_locked(database_url: str) -> None:
    one, two = await open_any(database_url), await open_any(database_url)
    try:
        run_one, run_two = await planned_run(one), await planned_run(two)

        async def hammer(store: Store, run_id: str, tag: str) -> None:
            for n in range(40):
                await asyncio.gather(
                    store.record(
                        Transition(
                            run_id=run_id, kind=EventKind.TASK_RETRIED, task_id="t1", data={"n": n}
                        )
                    ),
                    store.create_run(NewRun(goal=f"{tag}{n}")),
                    store.claim_delivery(f"{tag}{n}"),
                    store.update_meta(run_id, {"n": n}),
                )

        await asyncio.gather(hammer(one, run_one, "a"), hammer(two, run_two, "b"))
        assert len(await one.events(run_one)) == 2 + 40
        assert len(await one.events(run_two)) == 2 + 40
        assert len(await two.recent_runs(limit=1000)) == 2 + 80
    finally:
        await one.close()
        await two.close()


async def test_a_cancelled_caller_never_leaves_a_transaction_open(store: Store) -> None:
    # Cancel writers at every point of their progress; the store must stay usable.
    for ticks in range(12):
        writer = asyncio.ensure_future(store.create_run(NewRun(goal=f"cancelled {ticks}")))
        for _ in range(ticks):
            await asyncio.sleep(0)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        run_id = await planned_run(store, goal=f"after {ticks}")
        assert (await store.get_run(run_id)) is not None


# -- reads -------------------------------------------------------------------------------------


async def test_find_run_by_id_or_unique_prefix(store: Store) -> None:
    ids = [await planned_run(store, goal=f"g{n}") for n in range(40)]
    target = ids[0]
    found = await store.find_run(target)
    assert found is not None
    assert found.id == target
    unique = next(
        n for n in range(1, 11) if sum(other.startswith(target[:n]) for other in ids) == 1
    )
    by_prefix = await store.find_run(target[:unique])
    assert by_prefix is not None
    assert by_prefix.id == target
    shared = next((i[:1] for i in ids if sum(other.startswith(i[:1]) for other in ids) > 1), None)
    assert shared is not None  # 40 ids over 16 hex digits always share a first digit
    assert await store.find_run(shared) is None
    assert await store.find_run("") is None
    assert await store.find_run("zzzz") is None
    assert await store.find_run("%") is None


async def test_recent_runs_and_thread_lookup(store: Store) -> None:
    first = await planned_run(store, goal="first", requester="U1", thread_key="C:1")
    second = await planned_run(store, goal="second", requester="U2", thread_key="C:1")
    third = await planned_run(store, goal="third", requester="U1", thread_key="C:2")
    assert [r.id for r in await store.recent_runs()] == [third, second, first]
    assert [r.id for r in await store.recent_runs(requester="U1")] == [third, first]
    assert [r.id for r in await store.recent_runs(limit=1)] == [third]
    latest = await store.latest_run_in_thread("C:1")
    assert latest is not None
    assert latest.id == second
    assert await store.latest_run_in_thread("C:9") is None


async def test_unknown_runs_read_as_nothing(store: Store) -> None:
    assert await store.get_run("nope") is None
    assert await store.get_tasks("nope") == []
    assert await store.events("nope") == []


# -- leases (both stores) -------------------------------------------------------------------


def running(run_id: str, task_id: str = "t1") -> Transition:
    return task_transition(
        run_id, task_id, EventKind.TASK_STARTED, task_status=TaskStatus.RUNNING, new_attempt=True
    )


async def test_a_new_run_is_leased_to_its_creator(store: Store) -> None:
    run_id = await planned_run(store)
    lease = await store.lease(run_id)
    assert lease is not None
    assert (lease.owner, lease.kind) == (store.owner.id, OwnerKind.BOT)
    assert lease.expires_at is not None
    assert await store.renew_leases() == {run_id}
    assert await store.lease("nope") is None


async def test_a_live_lease_is_not_claimed_and_an_expired_one_by_exactly_one(
    database_url: str,
) -> None:
    short = Owner(lease_seconds=0.0)  # expires as soon as it is written
    holder = await open_any(database_url, owner=short)
    live = await open_any(database_url)
    claimers = [await open_any(database_url) for _ in range(3)]
    try:
        expired_ids = {await planned_run(holder, goal=f"expired {n}") for n in range(5)}
        live_id = await planned_run(live)
        claims = await asyncio.gather(*(c.claim_expired() for c in claimers))
        claimed = [run_id for claim in claims for run_id in claim]
        assert sorted(claimed) == sorted(expired_ids)  # each run once, the live one never
        assert live_id not in claimed
        # The old holder lost them: its commits for them are refused, and it renews nothing.
        assert await holder.renew_leases() == set()
        with pytest.raises(LeaseLost, match="no longer owned by this process"):
            await holder.record(running(next(iter(expired_ids))))
        winner = next(c for c, claim in zip(claimers, claims, strict=True) if claim)
        renewed = await winner.renew_leases()
        mine = next(run_id for run_id in claimed if run_id in renewed)
        assert (await winner.record(running(mine))).kind is EventKind.TASK_STARTED
    finally:
        for opened in (holder, live, *claimers):
            await opened.close()


async def finished_unlanded(store: Store) -> str:
    run_id = await planned_run(store)
    await store.record(
        Transition(run_id=run_id, kind=EventKind.RUN_FINISHED, run_status=RunStatus.SUCCEEDED)
    )
    await store.save_delivery(Delivery(run_id=run_id))
    return run_id


async def test_a_finished_run_being_landed_stays_leased_and_is_not_offered_to_others(
    database_url: str,
) -> None:
    # A replica still posting a finished run's summary keeps its lease; another replica looking
    # for runs to land does not see it, and sees it again once that lease has run out.
    lander = await open_any(database_url, owner=Owner(lease_seconds=60.0))
    other = await open_any(database_url)
    try:
        landing = await finished_unlanded(lander)
        assert await lander.renew_leases() == set()  # finished: not renewed unless asked
        assert await lander.renew_leases(also={landing, "unknown"}) == {landing}
        assert await other.renew_leases(also={landing}) == set()  # not its run
        assert await lander.unlanded_runs() == [landing]
        assert await other.unlanded_runs() == []
        assert not await other.claim_run(landing)
    finally:
        await other.close()
        await lander.close()  # a clean stop releases the lease: another process may land it
    other = await open_any(database_url)
    try:
        assert await other.unlanded_runs() == [landing]
        assert await other.claim_run(landing)
    finally:
        await other.close()


async def test_a_group_commit_keeps_the_transitions_of_runs_still_owned(
    database_url: str,
) -> None:
    loser = await open_any(database_url, owner=Owner(lease_seconds=0.0))
    thief = await open_any(database_url)
    try:
        lost, kept = await planned_run(loser, goal="lost"), await planned_run(loser, goal="kept")
        assert await thief.claim_run(lost)
        outcomes = await asyncio.gather(
            loser.record(running(lost)), loser.record(running(kept)), return_exceptions=True
        )
        assert isinstance(outcomes[0], LeaseLost)
        assert not isinstance(outcomes[1], BaseException)
        assert outcomes[1].run_id == kept
        tasks = {r: (await loser.get_tasks(r))[0].status for r in (lost, kept)}
        assert tasks == {lost: TaskStatus.PENDING, kept: TaskStatus.RUNNING}
        with pytest.raises(LeaseLost):
            await loser.set_plan(lost, PLAN)
    finally:
        await loser.close()
        await thief.close()


async def test_terminal_runs_are_never_claimed_by_a_bot(database_url: str) -> None:
    terminal = await open_any(database_url, owner=Owner(kind=OwnerKind.TERMINAL, lease_seconds=0.0))
    bot = await open_any(database_url)
    other_terminal = await open_any(database_url, owner=Owner(kind=OwnerKind.TERMINAL))
    try:
        run_id = await planned_run(terminal)
        assert await bot.claim_expired() == []
        assert not await bot.claim_run(run_id)
        assert await other_terminal.claim_run(run_id)
        lease = await bot.lease(run_id)
        assert lease is not None
        assert (lease.owner, lease.kind) == (other_terminal.owner.id, OwnerKind.TERMINAL)
    finally:
        for opened in (terminal, bot, other_terminal):
            await opened.close()


async def test_a_clean_close_hands_unfinished_runs_over_at_once(database_url: str) -> None:
    first = await open_any(database_url)
    run_id = await planned_run(first)
    finished = await planned_run(first, goal="done")
    await first.record(
        Transition(run_id=finished, kind=EventKind.RUN_FINISHED, run_status=RunStatus.SUCCEEDED)
    )
    second = await open_any(database_url)
    try:
        assert await second.claim_expired() == []  # still leased to a live store
        assert not await second.claim_run(finished)  # a finished run stays with its finisher
        await first.close()
        assert await second.claim_expired() == [run_id]
        assert await second.claim_run(finished)  # ... until released: to run it again
    finally:
        await second.close()


# -- PostgreSQL only ---------------------------------------------------------------------------


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_both_postgres_url_forms_select_postgres(postgres_url: str, scheme: str) -> None:
    url = scheme + "://" + postgres_url.split("://", 1)[1]
    store = await open_any(url)
    try:
        assert type(store).__name__ == "PostgresStore"
        assert await planned_run(store)
    finally:
        await store.close()


async def test_unknown_url_schemes_are_refused_naming_both_forms() -> None:
    with pytest.raises(UnsupportedDatabaseURL, match=r"sqlite:///.*postgresql://"):
        await open_any("mysql://localhost/dagbot")


async def test_a_missing_postgres_database_is_one_clear_error(postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/dagbot_no_such_database"
    with pytest.raises(DatabaseUnusable, match="cannot connect to the database") as refused:
        await open_any(url.replace("postgres@", "postgres:s3cret@"))
    assert "s3cret" not in str(refused.value)


async def test_a_postgres_database_with_foreign_tables_is_left_untouched(
    postgres_url: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(DatabaseUnusable, match="tables that are not dagbot's"):
        await open_any(postgres_url)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert [row[0] for row in await cursor.fetchall()] == ["notes"]


async def test_a_newer_postgres_schema_is_refused(postgres_url: str) -> None:
    store = await open_any(postgres_url)
    await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO dagbot_schema (version) VALUES (%s)", (LATEST + 1,))
    with pytest.raises(DatabaseUnusable, match=f"schema version {LATEST + 1}, newer"):
        await open_any(postgres_url)


async def test_lost_connections_are_retried_not_fatal(postgres_url: str) -> None:
    store = await open_any(postgres_url)
    try:
        run_id = await planned_run(store)
        # A server restart or failover: every connection of the pool dies at once.
        assert await terminate_connections(postgres_url) >= 1
        event = await store.record(running(run_id))
        assert event.kind is EventKind.TASK_STARTED
        assert await terminate_connections(postgres_url) >= 1
        assert next(t.status for t in await store.get_tasks(run_id)) is TaskStatus.RUNNING
    finally:
        await store.close()
