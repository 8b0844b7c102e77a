"""The embedded store: SQLite in WAL mode through aiosqlite, with group commit for transitions.

Writes go through one connection, one transaction at a time; reads use a second connection, so
a long write never delays a read. Every write transaction runs in a task of the store's own: a
caller cancelled while waiting does not interrupt it, and close() waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, overload
from urllib.parse import urlparse

import aiosqlite

from storage import rows as codec
from storage.errors import (
    DatabaseReplaced,
    LeaseLost,
    StorageError,
    StorageFull,
    UnsupportedDatabaseURL,
)
from storage.faults import FaultPolicy, FileIdentity, backoff, is_write_fault
from storage.group_commit import GroupCommit, Pending
from storage.leases import CLAIM_BATCH, Lease, Owner, OwnerKind
from storage.opening import (
    check_header,
    connect,
    create_private,
    in_thread,
    migrate,
    shut_down_uncleanly,
)
from storage.records import (
    Approval,
    Decision,
    Delivery,
    Event,
    EventKind,
    NewRun,
    NewSteering,
    RunRecord,
    RunStatus,
    SteeringRecord,
    TaskRecord,
    Transition,
    UsageRecord,
    UsageTotal,
)
from storage.rows import run_update_row, task_update_row
from storage.sql import query

INBOX_RETENTION_SECONDS = 7 * 24 * 3600
log = logging.getLogger("dagbot.storage")

_T = TypeVar("_T")
Work = Callable[[sqlite3.Connection], _T]
"""A write transaction's body: plain sqlite3 calls, run in the connection's thread in one hop."""


def sqlite_path(database_url: str) -> str:
    """The file path of a `sqlite:///relative` or `sqlite:////absolute` URL (or `:memory:`)."""
    parsed = urlparse(database_url)
    if parsed.scheme != "sqlite":
        raise UnsupportedDatabaseURL(
            f"DATABASE_URL {database_url!r} is not supported: use sqlite:///path/to/file.sqlite3"
        )
    path = database_url.removeprefix("sqlite://")
    path = path.removeprefix("/")
    if not path:
        raise UnsupportedDatabaseURL("DATABASE_URL names no file: use sqlite:///dagbot.sqlite3")
    return path


async def open_store(database_url: str, *, owner: Owner | None = None) -> SqliteStore:
    """Open (creating if needed) and migrate the store named by DATABASE_URL."""
    return await SqliteStore.open(sqlite_path(database_url), owner=owner)


class SqliteStore:
    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        identity: FileIdentity | None = None,
        faults: FaultPolicy | None = None,
        owner: Owner | None = None,
    ) -> None:
        self.owner = owner or Owner()
        self._writer = writer
        self._identity = identity
        self.faults = faults or FaultPolicy()
        self._broken: DatabaseReplaced | None = None
        self.paused = asyncio.Event()
        """Set while writes wait out a full disk or failed writes (every run waits with them)."""
        self._reader = reader
        self._write_lock = asyncio.Lock()
        # An in-memory database has one connection for both: a read then waits for the write
        # in progress, so it never sees a transaction half done.
        self._read_guard: contextlib.AbstractAsyncContextManager[Any] = (
            self._write_lock if reader is writer else contextlib.nullcontext()
        )
        self._writes: set[asyncio.Task[Any]] = set()
        self._commits = GroupCommit(self._write_batch)
        self.commits = 0
        """Write transactions committed by this store (tests and benchmarks count them)."""

    @classmethod
    async def open(
        cls, path: str, *, faults: FaultPolicy | None = None, owner: Owner | None = None
    ) -> SqliteStore:
        memory = path == ":memory:"
        unclean = False
        if not memory:
            check_header(Path(path))
            create_private(Path(path))
            unclean = shut_down_uncleanly(Path(path))
        writer = await connect(path)
        reader: aiosqlite.Connection | None = None
        try:
            await migrate(writer, path, integrity_check=unclean)
            # An in-memory database exists only for its own connection: read through it too.
            reader = writer if memory else await connect(path)
            identity = None if memory else FileIdentity.of(Path(path))
            store = cls(writer, reader, identity=identity, faults=faults, owner=owner)
            before = time.time() - INBOX_RETENTION_SECONDS
            await store._write(_statement(query("prune_inbox"), {"before": before}))
        except BaseException:
            if reader is not None and reader is not writer:
                await reader.close()
            await writer.close()
            raise
        return store

    async def close(self) -> None:
        """Commit the writes already handed in (their callers may have gone), then close."""
        while self._writes or self._commits.flushing is not None:
            flushing = self._commits.flushing
            waiting = [*self._writes, *([flushing] if flushing is not None else [])]
            await asyncio.wait(waiting)
        with contextlib.suppress(StorageError):
            # A clean stop hands this process's runs to the next one at once.
            release = {"owner": self.owner.id, "now": time.time()}
            await self._write(_statement(query("release_leases"), release))
        if self._reader is not self._writer:
            await self._reader.close()
        await self._writer.close()

    # -- transactions ------------------------------------------------------------------------------

    async def _transaction(self, work: Work[_T]) -> _T:
        """Run `work` inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK if it fails), in one hop.

        The whole transaction is one call in the connection's thread: a cancelled caller
        cannot interrupt it half way, and the next transaction is queued behind it.
        """
        async with self._write_lock:
            attempt, started = 0, time.monotonic()
            while True:
                if self._broken is not None:
                    raise self._broken
                attempt += 1
                try:
                    result = await in_thread(
                        self._writer, partial(_atomically, work, self._identity)
                    )
                except DatabaseReplaced as error:
                    self._broken = error
                    log.error("%s", error)
                    raise
                except sqlite3.Error as error:
                    if not is_write_fault(error):
                        raise StorageError(f"the database failed: {error}") from error
                    delay = backoff(attempt, time.monotonic() - started, self.faults)
                    if delay is None:
                        self.paused.clear()
                        raise StorageFull(
                            f"dagbot could not write to its database for {self.faults.budget:g} "
                            f"s ({error}); free disk space and retry the run."
                        ) from error
                    if not self.paused.is_set():
                        log.warning("database write failed (%s): pausing writes, retrying", error)
                        self.paused.set()
                    await asyncio.sleep(delay)
                    continue
                if self.paused.is_set():
                    log.warning("database writes work again after %d attempt(s)", attempt)
                    self.paused.clear()
                self.commits += 1
                return result

    async def _write(self, work: Work[_T]) -> _T:
        """One write transaction, run to its end even if the caller is cancelled meanwhile."""
        task = asyncio.create_task(self._transaction(work), name="store-write")
        self._writes.add(task)
        task.add_done_callback(self._write_done)
        return await asyncio.shield(task)

    def _write_done(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        # The caller may have been cancelled: its failure is then nobody's to report.
        if not task.cancelled():
            task.exception()

    # -- writes -------------------------------------------------------------------------------

    @overload
    async def create_run(self, new: NewRun) -> tuple[RunRecord, Event]: ...

    @overload
    async def create_run(
        self, new: NewRun, *, delivery_id: str | None
    ) -> tuple[RunRecord, Event] | None: ...

    async def create_run(
        self, new: NewRun, *, delivery_id: str | None = None
    ) -> tuple[RunRecord, Event] | None:
        """Record a run in status planning.

        With `delivery_id`, the delivery is claimed in the same transaction: None, and nothing
        created, if that id was claimed before.
        """
        now = time.time()
        run_id = uuid.uuid4().hex[:10]
        row = {
            "id": run_id,
            "goal": new.goal,
            "status": RunStatus.PLANNING.value,
            "requester": new.requester,
            "thread_key": new.thread_key,
            "parent_run_id": new.parent_run_id,
            "meta_json": json.dumps(new.meta),
            "at": now,
            "owner": self.owner.id,
            "owner_kind": self.owner.kind.value,
            "expires": now + self.owner.lease_seconds,
        }
        created = Transition(run_id=run_id, kind=EventKind.RUN_CREATED)

        def work(db: sqlite3.Connection) -> int | None:
            if delivery_id is not None and not _claim(db, delivery_id, now):
                return None
            db.execute(query("insert_run"), row)
            return _append_event(db, created, now)

        seq = await self._write(work)
        if seq is None:
            return None
        record = RunRecord(
            id=run_id,
            goal=new.goal,
            status=RunStatus.PLANNING,
            created_at=now,
            updated_at=now,
            requester=new.requester,
            thread_key=new.thread_key,
            parent_run_id=new.parent_run_id,
            meta=dict(new.meta),
        )
        return record, codec.event(seq, created, now)

    async def set_plan(self, run_id: str, plan: dict[str, Any]) -> Event:
        now = time.time()
        tasks = plan.get("tasks", [])
        planned = Transition(run_id=run_id, kind=EventKind.RUN_PLANNED, data={"tasks": len(tasks)})
        run_row = {
            "id": run_id,
            "plan_json": json.dumps(plan),
            "status": RunStatus.RUNNING.value,
            "at": now,
        }
        task_rows = [
            {
                "run_id": run_id,
                "id": task["id"],
                "position": position,
                "spec_json": json.dumps(task),
            }
            for position, task in enumerate(tasks)
        ]

        def work(db: sqlite3.Connection) -> int:
            if not self._owned(db, {run_id}):
                raise LeaseLost.of(run_id)
            db.execute(query("set_plan"), run_row)
            db.executemany(query("insert_task"), task_rows)
            return _append_event(db, planned, now)

        return codec.event(await self._write(work), planned, now)

    def record(self, transition: Transition) -> asyncio.Future[Event]:
        """Queue `transition` at once for the next group commit (storage.group_commit); the
        future gives its event. Committed even if nobody awaits the future."""
        return self._commits.record(transition)

    async def _write_batch(self, batch: Sequence[Pending]) -> list[Event | LeaseLost]:
        owned: set[str] = set()

        # One statement per kind of row; the whole transaction is one hop to the connection's
        # thread.
        def work(db: sqlite3.Connection) -> int:
            # The lease is checked in the commit itself: a process that lost a run records
            # nothing more for it, however long it was paused.
            owned.update(self._owned(db, {t.run_id for t, _, _ in batch}))
            kept = [(t, at) for t, at, _ in batch if t.run_id in owned]
            task_updates = [task_update_row(t, at) for t, at in kept if t.task_status is not None]
            run_updates = [run_update_row(t, at) for t, at in kept if t.run_status is not None]
            approvals = [r for t, at in kept if (r := codec.approval_request_row(t, at))]
            if task_updates:
                db.executemany(query("update_task"), task_updates)
            if approvals:
                db.executemany(query("upsert_approval"), approvals)
            if run_updates:
                db.executemany(query("update_run_status"), run_updates)
            if kept:
                db.executemany(query("insert_event"), [codec.event_row(t, at) for t, at in kept])
            [(last,)] = db.execute("SELECT last_insert_rowid()").fetchall()
            return int(last) - len(kept) + 1

        # The write lock is held from BEGIN IMMEDIATE on, so the batch's rowids are contiguous.
        seq = await self._transaction(work)
        results: list[Event | LeaseLost] = []
        for transition, at, _ in batch:
            if transition.run_id in owned:
                results.append(codec.event(seq, transition, at))
                seq += 1
            else:
                results.append(LeaseLost.of(transition.run_id))
        return results

    def _owned(self, db: sqlite3.Connection, run_ids: set[str]) -> set[str]:
        params = {"owner": self.owner.id, "ids": json.dumps(sorted(run_ids))}
        return {str(row[0]) for row in db.execute(query("select_owned"), params).fetchall()}

    # -- leases -------------------------------------------------------------------------------

    async def claim_expired(self, *, limit: int = CLAIM_BATCH) -> list[str]:
        """Lease to this owner the unfinished runs of its kind whose lease has expired."""
        now = time.time()
        params = {
            "owner": self.owner.id,
            "kind": self.owner.kind.value,
            "now": now,
            "expires": now + self.owner.lease_seconds,
            "limit": limit,
        }
        return await self._write(partial(_ids, query("claim_expired_runs"), params))

    async def claim_run(self, run_id: str) -> bool:
        """Lease one run of this owner's kind to it: when its lease expired or is ours."""
        now = time.time()
        params = {
            "id": run_id,
            "owner": self.owner.id,
            "kind": self.owner.kind.value,
            "now": now,
            "expires": now + self.owner.lease_seconds,
        }
        return bool(await self._write(partial(_ids, query("claim_run"), params)))

    async def renew_leases(self, also: Collection[str] = ()) -> set[str]:
        """Extend this owner's leases; the runs renewed (see Store.renew_leases)."""
        params = {
            "owner": self.owner.id,
            "expires": time.time() + self.owner.lease_seconds,
            "also": json.dumps(sorted(also)),
        }
        return set(await self._write(partial(_ids, query("renew_leases"), params)))

    async def lease(self, run_id: str) -> Lease | None:
        row = await self._fetchone(query("select_lease"), {"id": run_id})
        if row is None:
            return None
        return Lease(
            owner=row["owner"],
            kind=OwnerKind(row["owner_kind"]),
            expires_at=row["lease_expires_at"],
        )

    async def limit_size(self, max_pages: int) -> int:
        """Cap the database at `max_pages` pages for this process (PRAGMA max_page_count).

        Past the cap SQLite fails writes with SQLITE_FULL exactly as on a full disk, which is
        how the tests exercise that path; returns the cap in effect (never below the file's
        current size).
        """

        def cap(db: sqlite3.Connection) -> int:
            [(pages,)] = db.execute(f"PRAGMA max_page_count = {int(max_pages)}").fetchall()
            return int(pages)

        return await in_thread(self._writer, cap)

    async def update_meta(self, run_id: str, patch: dict[str, Any]) -> RunRecord:
        def work(db: sqlite3.Connection) -> sqlite3.Row:
            rows = db.execute(query("select_run"), {"id": run_id}).fetchall()
            if not rows:
                raise StorageError(f"no run {run_id!r}")
            [row] = rows
            meta = json.loads(row["meta_json"])
            for key, value in patch.items():
                if value is None:
                    meta.pop(key, None)
                else:
                    meta[key] = value
            db.execute(
                query("update_meta"),
                {"id": run_id, "meta_json": json.dumps(meta), "at": time.time()},
            )
            updated: sqlite3.Row = db.execute(query("select_run"), {"id": run_id}).fetchone()
            return updated

        return codec.run_from_row(await self._write(work))

    async def claim_delivery(self, event_id: str) -> bool:
        return await self._write(lambda db: _claim(db, event_id, time.time()))

    async def record_usage(self, usage: UsageRecord) -> None:
        await self._write(
            _statement(
                query("insert_usage"),
                {
                    "run_id": usage.run_id,
                    "task_id": usage.task_id,
                    "model": usage.model,
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "at": time.time(),
                },
            )
        )

    async def record_feedback(self, run_id: str, user_id: str, value: str) -> bool:
        params = {"run_id": run_id, "user_id": user_id, "value": value, "at": time.time()}
        return await self._write(
            lambda db: bool(db.execute(query("upsert_feedback"), params).fetchall())
        )

    async def decide(
        self, run_id: str, task_id: str, decision: Decision, by: str | None
    ) -> tuple[Approval, bool] | None:
        params = {
            "run_id": run_id,
            "task_id": task_id,
            "decision": decision.value,
            "decided_by": by,
            "at": time.time(),
        }

        def work(db: sqlite3.Connection) -> tuple[sqlite3.Row, bool] | None:
            changed = bool(db.execute(query("decide_approval"), params).fetchall())
            row: sqlite3.Row | None = db.execute(query("select_approval"), params).fetchone()
            return (row, changed) if row is not None else None

        found = await self._write(work)
        return (codec.approval_from_row(found[0]), found[1]) if found is not None else None

    async def approvals(self, run_id: str) -> list[Approval]:
        rows = await self._fetchall(query("select_approvals"), {"run_id": run_id})
        return [codec.approval_from_row(row) for row in rows]

    # -- revisions and steering ----------------------------------------------------------------

    async def revise_plan(
        self,
        run_id: str,
        plan: dict[str, Any],
        transition: Transition,
        *,
        handled: Collection[int] = (),
    ) -> Event:
        now = time.time()
        run_row, task_rows = codec.revision_rows(run_id, plan, now)
        keep = {row["id"] for row in task_rows}

        def work(db: sqlite3.Connection) -> int:
            if not self._owned(db, {run_id}):
                raise LeaseLost.of(run_id)
            db.execute(query("revise_plan"), run_row)
            ids = _ids(query("select_task_ids"), {"run_id": run_id}, db)
            db.executemany(
                query("delete_pending_task"),
                [{"run_id": run_id, "id": i} for i in ids if i not in keep],
            )
            db.executemany(query("upsert_task"), task_rows)
            db.executemany(query("close_steering"), [{"seq": s, "at": now} for s in handled])
            return _append_event(db, transition, now)

        return codec.event(await self._write(work), transition, now)

    async def add_steering(
        self, new: NewSteering, *, delivery_id: str | None = None
    ) -> bool | None:
        now = time.time()
        row = codec.steering_row(new, now)

        def work(db: sqlite3.Connection) -> bool | None:
            found = db.execute(query("select_run_status_for_update"), {"id": new.run_id}).fetchall()
            if not found or RunStatus(found[0][0]).finished:
                return False
            if delivery_id is not None and not _claim(db, delivery_id, now):
                return None
            db.execute(query("insert_steering"), row)
            return True

        return await self._write(work)

    async def open_steering(self, run_id: str) -> list[SteeringRecord]:
        rows = await self._fetchall(query("select_open_steering"), {"run_id": run_id})
        return [codec.steering_from_row(row) for row in rows]

    async def close_steering(self, seq: int) -> None:
        await self._write(_statement(query("close_steering"), {"seq": seq, "at": time.time()}))

    async def late_steering(self, limit: int = 50) -> list[SteeringRecord]:
        rows = await self._fetchall(query("select_late_steering"), {"limit": limit})
        return [codec.steering_from_row(row) for row in rows]

    # -- reads --------------------------------------------------------------------------------

    async def _fetchall(self, sql: str, params: dict[str, Any] | None = None) -> list[sqlite3.Row]:
        async with self._read_guard:
            try:
                return list(await self._reader.execute_fetchall(sql, params or {}))
            except sqlite3.Error as error:
                raise StorageError(f"the database failed: {error}") from error

    async def _fetchone(self, sql: str, params: dict[str, Any]) -> sqlite3.Row | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._fetchone(query("select_run"), {"id": run_id})
        return codec.run_from_row(row) if row is not None else None

    async def get_tasks(self, run_id: str) -> list[TaskRecord]:
        rows = await self._fetchall(query("select_tasks"), {"run_id": run_id})
        return [codec.task_from_row(row) for row in rows]

    async def find_run(self, id_or_prefix: str) -> RunRecord | None:
        if not id_or_prefix:
            return None
        rows = await self._fetchall(
            query("select_runs_by_prefix"),
            {"prefix": id_or_prefix, "prefix_end": id_or_prefix + "\U0010ffff"},
        )
        exact = [row for row in rows if row["id"] == id_or_prefix]
        if exact:
            return codec.run_from_row(exact[0])
        return codec.run_from_row(rows[0]) if len(rows) == 1 else None

    async def unfinished_runs(self) -> list[str]:
        rows = await self._fetchall(query("select_unfinished_runs"))
        return [row["id"] for row in rows]

    async def recent_runs(
        self, *, requester: str | None = None, limit: int = 20
    ) -> list[RunRecord]:
        if requester is None:
            rows = await self._fetchall(query("select_recent_runs"), {"limit": limit})
        else:
            rows = await self._fetchall(
                query("select_recent_runs_of"), {"requester": requester, "limit": limit}
            )
        return [codec.run_from_row(row) for row in rows]

    async def recent_tool_durations(self, limit: int) -> list[tuple[str, float]]:
        rows = await self._fetchall(query("select_recent_tool_durations"), {"limit": limit})
        return [(row["tool"], float(row["seconds"])) for row in rows if row["tool"]]

    async def latest_run_in_thread(self, thread_key: str) -> RunRecord | None:
        row = await self._fetchone(query("select_latest_run_in_thread"), {"thread_key": thread_key})
        return codec.run_from_row(row) if row is not None else None

    async def events(self, run_id: str) -> list[Event]:
        rows = await self._fetchall(query("select_events"), {"run_id": run_id})
        return [codec.event_from_row(row) for row in rows]

    async def last_event(self, run_id: str, kinds: Collection[EventKind]) -> Event | None:
        row = await self._fetchone(
            query("select_last_event"),
            {"run_id": run_id, "kinds": json.dumps([kind.value for kind in kinds])},
        )
        return codec.event_from_row(row) if row is not None else None

    async def feedback(self, run_id: str) -> dict[str, int]:
        rows = await self._fetchall(query("select_feedback_counts"), {"run_id": run_id})
        return {str(row["value"]): int(row["votes"]) for row in rows}

    # -- delivery ------------------------------------------------------------------------------

    async def delivery(self, run_id: str) -> Delivery:
        row = await self._fetchone(query("select_delivery"), {"run_id": run_id})
        posts = await self._fetchall(query("select_delivery_posts"), {"run_id": run_id})
        return codec.delivery_from_rows(run_id, row, posts)

    async def save_delivery(self, delivery: Delivery) -> None:
        row = codec.delivery_row(delivery, time.time())
        await self._write(_statement(query("upsert_delivery"), row))

    async def record_post_intent(self, run_id: str, key: str) -> None:
        row = {"run_id": run_id, "post_key": key}
        await self._write(_statement(query("insert_delivery_intent"), row))

    async def record_post(self, run_id: str, key: str, message: str) -> None:
        row = {"run_id": run_id, "post_key": key, "message": message}
        await self._write(_statement(query("upsert_delivery_post"), row))

    async def unlanded_runs(self) -> list[str]:
        params = {"owner": self.owner.id, "now": time.time()}
        rows = await self._fetchall(query("select_unlanded_runs"), params)
        return [row["id"] for row in rows]

    async def runs_in_plan_style(self, plan_style: str, *, limit: int) -> list[RunRecord]:
        rows = await self._fetchall(
            query("select_runs_in_plan_style"), {"plan_style": plan_style, "limit": limit}
        )
        return [codec.run_from_row(row) for row in rows]

    async def usage(self, run_id: str) -> list[UsageTotal]:
        rows = await self._fetchall(query("select_usage"), {"run_id": run_id})
        return [
            UsageTotal(
                task_id=row["task_id"],
                model=row["model"],
                prompt_tokens=row["prompt_tokens"],
                completion_tokens=row["completion_tokens"],
                calls=row["calls"],
            )
            for row in rows
        ]


# -- statements and rows <-> records ----------------------------------------------------------


def _atomically(work: Work[_T], identity: FileIdentity | None, db: sqlite3.Connection) -> _T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
        if identity is not None:
            identity.check()  # in the write lock's shadow: nothing commits to a stranger's file
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def _ids(sql: str, params: dict[str, Any], db: sqlite3.Connection) -> list[str]:
    return [str(row[0]) for row in db.execute(sql, params).fetchall()]


def _statement(sql: str, params: dict[str, Any]) -> Work[None]:
    def work(db: sqlite3.Connection) -> None:
        db.execute(sql, params)

    return work


def _claim(db: sqlite3.Connection, event_id: str, at: float) -> bool:
    return bool(db.execute(query("insert_inbox"), {"event_id": event_id, "at": at}).fetchall())


def _append_event(db: sqlite3.Connection, transition: Transition, at: float) -> int:
    [(seq,)] = db.execute(query("append_event"), codec.event_row(transition, at)).fetchall()
    return int(seq)
