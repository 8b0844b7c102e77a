"""Full disks, failed writes and database files that change under a running process."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from domain.vocabulary import Event, EventKind, RunStatus, Transition
from scheduler.dag.engine import Engine
from scheduler.dag.executors import TaskContext
from scheduler.dag.plan import TaskKind
from scheduler.dag.state import RunView
from storage.errors import DatabaseReplaced, StorageFull
from storage.faults import FaultPolicy, backoff, is_write_fault
from storage.records import NewRun
from storage.sqlite import SqliteStore
from tests.support.plans import plan, summary, tool

QUICK = FaultPolicy(budget=3600.0, first_delay=0.001, max_delay=0.01)
PLAN = {
    "title": "p",
    "tasks": [{"id": "t1", "kind": "tool", "title": "one", "tool": "x.y", "args": {}, "deps": []}],
}
BIG = "x" * 400_000


def big_event(run_id: str) -> Transition:
    return Transition(run_id=run_id, kind=EventKind.TASK_RETRIED, task_id="t1", data={"b": BIG})


@pytest.mark.parametrize(
    ("attempt", "waited", "expected"),
    [(1, 0.0, 0.05), (2, 0.1, 0.1), (10, 1.0, 5.0), (3, 119.9, pytest.approx(0.1)), (3, 120, None)],
)
def test_backoff(attempt: int, waited: float, expected: float | None) -> None:
    assert backoff(attempt, waited, FaultPolicy()) == expected


def test_which_errors_are_waited_out(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.sqlite3")
    db.execute("CREATE TABLE t (b BLOB)")
    db.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.Error) as full:
        db.execute("INSERT INTO t VALUES (zeroblob(100000))")
    with pytest.raises(sqlite3.Error) as syntax:
        db.execute("SELEC 1")
    db.close()
    assert is_write_fault(full.value)
    assert not is_write_fault(syntax.value)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(str(tmp_path / "faults.sqlite3"), faults=QUICK)
    yield opened
    await opened.close()


async def planned(store: SqliteStore) -> str:
    record, _ = await store.create_run(NewRun(goal="g"))
    await store.set_plan(record.id, PLAN)
    return record.id


async def test_a_full_disk_pauses_writes_until_space_returns(store: SqliteStore) -> None:
    run_id = await planned(store)
    await store.limit_size(1)  # no page beyond the file's present size: SQLITE_FULL
    write = asyncio.ensure_future(store.record(big_event(run_id)))
    await store.paused.wait()
    assert not write.done()
    await store.limit_size(1_000_000)
    event = await write
    assert not store.paused.is_set()
    assert (await store.events(run_id))[-1] == event


async def test_writes_that_keep_failing_fail_with_a_clear_message(tmp_path: Path) -> None:
    store = await SqliteStore.open(str(tmp_path / "full.sqlite3"), faults=FaultPolicy(budget=0))
    try:
        run_id = await planned(store)
        await store.limit_size(1)
        with pytest.raises(StorageFull, match=r"could not save a state change.*free disk space"):
            await store.record(big_event(run_id))
        with pytest.raises(StorageFull, match="could not write to its database"):
            await store.update_meta(run_id, {"b": BIG})
        await store.limit_size(1_000_000)
        assert (await store.update_meta(run_id, {"b": "small"})).meta == {"b": "small"}
    finally:
        await store.close()


async def failed_by_storage(
    store: SqliteStore, break_it: Callable[[], Awaitable[None]]
) -> tuple[Engine, RunView, list[Event]]:
    """Run a plan whose first outcome cannot be saved: `break_it` runs while t1 works."""
    release = asyncio.Event()

    async def big(context: TaskContext) -> str:
        await release.wait()
        return BIG

    engine = Engine(store, dict.fromkeys(TaskKind, big))
    with engine.bus.subscribe() as events:
        run = await engine.submit("g", plan=plan(tool("t1"), summary("s", "t1")))
        async for event in events:
            if event.kind is EventKind.TASK_STARTED:
                break
        await break_it()
        release.set()
        view = await engine.wait(run.id)
        finished = [e for e in events.drain() if e.kind is EventKind.RUN_FINISHED]
    await engine.close()
    return engine, view, finished


async def test_a_run_whose_progress_cannot_be_saved_is_failed_with_a_clear_message(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(str(tmp_path / "run.sqlite3"), faults=FaultPolicy(budget=0))

    async def fill_the_disk() -> None:
        await store.limit_size(1)

    try:
        engine, view, finished = await failed_by_storage(store, fill_the_disk)
        stored = await store.get_run(view.run.id)
    finally:
        await store.close()
    assert view.run.status is RunStatus.FAILED
    assert view.run.error is not None
    assert "could not save its progress" in view.run.error
    assert "free disk space" in view.run.error
    assert isinstance(engine.storage_failure, StorageFull)
    assert not engine.database_lost.is_set()  # space may come back: other runs go on
    # the small failure record still fitted: it is in the database, not only in memory
    assert stored is not None
    assert stored.status is RunStatus.FAILED
    assert [e.data["stage"] for e in finished if e.data] == ["storage"]


async def test_a_run_failed_by_a_replaced_file_is_failed_for_the_front_ends(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.sqlite3"
    store = await SqliteStore.open(str(path))

    async def delete_the_file() -> None:
        path.unlink()

    try:
        engine, view, finished = await failed_by_storage(store, delete_the_file)
    finally:
        await store.close()
    assert view.run.status is RunStatus.FAILED
    assert view.run.error is not None
    assert "was deleted while dagbot was using it" in view.run.error
    assert isinstance(engine.storage_failure, DatabaseReplaced)
    assert engine.database_lost.is_set()
    # nothing could be saved any more: the engine announces the failure itself
    assert [(e.seq, e.data) for e in finished] == [
        (0, {"status": "failed", "error": view.run.error, "saved": False})
    ]


@pytest.mark.parametrize("change", ["delete", "replace"])
async def test_a_database_file_changed_under_the_process_stops_every_write(
    tmp_path: Path, change: str
) -> None:
    path = tmp_path / "gone.sqlite3"
    store = await SqliteStore.open(str(path))
    try:
        run_id = await planned(store)
        assert await store.claim_delivery("E1")
        if change == "delete":
            path.unlink()
        else:
            other = tmp_path / "other.sqlite3"
            sqlite3.connect(other).close()
            os.replace(other, path)
        what = "deleted" if change == "delete" else "replaced by another file"
        with pytest.raises(DatabaseReplaced, match=f"was {what} while dagbot was using it"):
            await store.record(big_event(run_id))
        # a redelivered event can start nothing: the claim itself is refused
        with pytest.raises(DatabaseReplaced):
            await store.create_run(NewRun(goal="again"), delivery_id="E1")
        with pytest.raises(DatabaseReplaced):
            await store.claim_delivery("E2")
    finally:
        await store.close()
