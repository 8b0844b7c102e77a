"""The embedded store: aiosqlite in WAL mode, with group commit for state transitions."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiosqlite

from storage.errors import DatabaseUnusable, StorageError, UnsupportedDatabaseURL
from storage.records import (
    Event,
    EventKind,
    NewRun,
    RunRecord,
    RunStatus,
    TaskRecord,
    TaskStatus,
    Transition,
    UsageRecord,
    UsageTotal,
)
from storage.sql import migrations, query

SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 10_000
INBOX_RETENTION_SECONDS = 7 * 24 * 3600

_Pending = tuple[Transition, float, "asyncio.Future[Event]"]


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


async def open_store(database_url: str) -> SqliteStore:
    """Open (creating if needed) and migrate the store named by DATABASE_URL."""
    return await SqliteStore.open(sqlite_path(database_url))


class SqliteStore:
    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        memory = path == ":memory:"
        if not memory:
            _check_header(Path(path))
        writer = await _connect(path)
        try:
            await _migrate(writer, path)
            reader = writer if memory else await _connect(path)
        except BaseException:
            await writer.close()
            raise
        store = cls(writer, reader)
        await store._prune_inbox()
        return store

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._reader is not self._writer:
            await self._reader.close()
        await self._writer.close()

    # -- writes -------------------------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def create_run(self, new: NewRun) -> tuple[RunRecord, Event]:
        now = time.time()
        run_id = uuid.uuid4().hex[:10]
        async with self._transaction() as db:
            await db.execute(
                query("insert_run"),
                {
                    "id": run_id,
                    "goal": new.goal,
                    "status": RunStatus.PLANNING.value,
                    "requester": new.requester,
                    "thread_key": new.thread_key,
                    "parent_run_id": new.parent_run_id,
                    "meta_json": json.dumps(new.meta),
                    "at": now,
                },
            )
            event = await self._insert_event(
                db, Transition(run_id=run_id, kind=EventKind.RUN_CREATED), now
            )
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
        return record, event

    async def set_plan(self, run_id: str, plan: dict[str, Any]) -> Event:
        now = time.time()
        tasks = plan.get("tasks", [])
        async with self._transaction() as db:
            await db.execute(
                query("set_plan"),
                {
                    "id": run_id,
                    "plan_json": json.dumps(plan),
                    "status": RunStatus.RUNNING.value,
                    "at": now,
                },
            )
            await db.executemany(
                query("insert_task"),
                [
                    {
                        "run_id": run_id,
                        "id": task["id"],
                        "position": position,
                        "spec_json": json.dumps(task),
                    }
                    for position, task in enumerate(tasks)
                ],
            )
            return await self._insert_event(
                db,
                Transition(run_id=run_id, kind=EventKind.RUN_PLANNED, data={"tasks": len(tasks)}),
                now,
            )

    async def record(self, transition: Transition) -> Event:
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._pending.append((transition, time.time(), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="store-group-commit")
        return await future

    async def _flush(self) -> None:
        # Transitions that arrive while a batch is being written wait for the next batch: under
        # load every transaction carries many transitions, which is what keeps persistence cheap.
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                events = await self._write_batch(batch)
            except BaseException as error:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(
                            StorageError(f"could not save a state change: {error}")
                        )
                if not isinstance(error, Exception):
                    raise
                continue
            for (_, _, future), event in zip(batch, events, strict=True):
                if not future.done():
                    future.set_result(event)

    async def _write_batch(self, batch: Sequence[_Pending]) -> list[Event]:
        run_updates = [
            {"run_id": t.run_id, "status": t.run_status.value, "error": t.error, "at": at}
            for t, at, _ in batch
            if t.run_status is not None
        ]
        task_updates = [
            {
                "run_id": t.run_id,
                "task_id": t.task_id,
                "status": t.task_status.value,
                "attempt_increment": 1 if t.new_attempt else 0,
                "output": t.output,
                "error": t.error,
                "at": at,
            }
            for t, at, _ in batch
            if t.task_status is not None
        ]
        async with self._transaction() as db:
            if task_updates:
                await db.executemany(query("update_task"), task_updates)
            if run_updates:
                await db.executemany(query("update_run_status"), run_updates)
            await db.executemany(query("insert_event"), [_event_row(t, at) for t, at, _ in batch])
            last = await _scalar(db, "SELECT last_insert_rowid()")
        first = last - len(batch) + 1
        return [_event(seq, t, at) for seq, (t, at, _) in enumerate(batch, start=first)]

    async def _insert_event(
        self, db: aiosqlite.Connection, transition: Transition, at: float
    ) -> Event:
        cursor = await db.execute(query("insert_event"), _event_row(transition, at))
        seq = cursor.lastrowid
        if seq is None:
            raise StorageError("the event log did not return a sequence number")
        return _event(seq, transition, at)

    async def update_meta(self, run_id: str, patch: dict[str, Any]) -> RunRecord:
        async with self._transaction() as db:
            row = await _one(db, query("select_run"), {"id": run_id})
            if row is None:
                raise StorageError(f"no run {run_id!r}")
            meta = json.loads(row["meta_json"])
            for key, value in patch.items():
                if value is None:
                    meta.pop(key, None)
                else:
                    meta[key] = value
            await db.execute(
                query("update_meta"),
                {"id": run_id, "meta_json": json.dumps(meta), "at": time.time()},
            )
            updated = await _one(db, query("select_run"), {"id": run_id})
        assert updated is not None
        return _run(updated)

    async def claim_delivery(self, event_id: str) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                query("insert_inbox"), {"event_id": event_id, "at": time.time()}
            )
            return cursor.rowcount == 1

    async def _prune_inbox(self) -> None:
        async with self._transaction() as db:
            await db.execute(
                query("prune_inbox"), {"before": time.time() - INBOX_RETENTION_SECONDS}
            )

    async def record_usage(self, usage: UsageRecord) -> None:
        async with self._transaction() as db:
            await db.execute(
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

    # -- reads --------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await _one(self._reader, query("select_run"), {"id": run_id})
        return _run(row) if row is not None else None

    async def get_tasks(self, run_id: str) -> list[TaskRecord]:
        rows = await self._reader.execute_fetchall(query("select_tasks"), {"run_id": run_id})
        return [_task(row) for row in rows]

    async def find_run(self, id_or_prefix: str) -> RunRecord | None:
        if not id_or_prefix:
            return None
        rows = list(
            await self._reader.execute_fetchall(
                query("select_runs_by_prefix"), {"prefix": id_or_prefix}
            )
        )
        exact = [row for row in rows if row["id"] == id_or_prefix]
        if exact:
            return _run(exact[0])
        return _run(rows[0]) if len(rows) == 1 else None

    async def unfinished_runs(self) -> list[str]:
        rows = await self._reader.execute_fetchall(query("select_unfinished_runs"))
        return [row["id"] for row in rows]

    async def recent_runs(
        self, *, requester: str | None = None, limit: int = 20
    ) -> list[RunRecord]:
        rows = await self._reader.execute_fetchall(
            query("select_recent_runs"), {"requester": requester, "limit": limit}
        )
        return [_run(row) for row in rows]

    async def latest_run_in_thread(self, thread_key: str) -> RunRecord | None:
        row = await _one(
            self._reader, query("select_latest_run_in_thread"), {"thread_key": thread_key}
        )
        return _run(row) if row is not None else None

    async def events(self, run_id: str) -> list[Event]:
        rows = await self._reader.execute_fetchall(query("select_events"), {"run_id": run_id})
        return [
            Event(
                seq=row["seq"],
                run_id=row["run_id"],
                kind=EventKind(row["kind"]),
                at=row["at"],
                task_id=row["task_id"],
                data=json.loads(row["data_json"]) if row["data_json"] else None,
            )
            for row in rows
        ]

    async def usage(self, run_id: str) -> list[UsageTotal]:
        rows = await self._reader.execute_fetchall(query("select_usage"), {"run_id": run_id})
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


# -- opening and migrating ----------------------------------------------------------------------


def _check_header(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as error:
        raise DatabaseUnusable(f"cannot read the database file {path}: {error}") from error
    if header != SQLITE_HEADER:
        raise DatabaseUnusable(
            f"{path} is not a SQLite database (corrupt or another kind of file); "
            "dagbot leaves it untouched. Move it aside or point DATABASE_URL elsewhere."
        )


async def _connect(path: str) -> aiosqlite.Connection:
    try:
        db = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as error:
        raise DatabaseUnusable(f"cannot open the database {path}: {error}") from error
    db.row_factory = aiosqlite.Row
    try:
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path != ":memory:":
            await db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode keeps every commit atomic and durable across process crashes;
        # only an OS crash or power loss can lose the last transactions.
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as error:
        await db.close()
        raise DatabaseUnusable(
            f"the database {path} is unusable ({error}); dagbot leaves it untouched. "
            "Move it aside or point DATABASE_URL elsewhere."
        ) from error
    return db


async def _migrate(db: aiosqlite.Connection, path: str) -> None:
    try:
        version = await _scalar(db, "PRAGMA user_version")
        check = await _scalar_text(db, "PRAGMA quick_check")
        if check != "ok":
            raise DatabaseUnusable(
                f"the database {path} is corrupt (integrity check: {check}); dagbot leaves it "
                "untouched. Restore a backup or point DATABASE_URL elsewhere."
            )
        tables = await _scalar(
            db, "SELECT COUNT(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        )
    except sqlite3.DatabaseError as error:
        raise DatabaseUnusable(
            f"the database {path} is unusable ({error}); dagbot leaves it untouched."
        ) from error
    steps = migrations()
    latest = steps[-1][0]
    if version > latest:
        raise DatabaseUnusable(
            f"the database {path} has schema version {version}, newer than this dagbot "
            f"understands ({latest}); upgrade dagbot or point DATABASE_URL elsewhere."
        )
    if version == 0 and tables:
        raise DatabaseUnusable(
            f"{path} holds tables that are not dagbot's; dagbot leaves it untouched."
        )
    for step, script in steps:
        if step <= version:
            continue
        try:
            await db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {step};\nCOMMIT;"
            )
        except sqlite3.Error as error:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise StorageError(f"migrating {path} to schema {step} failed: {error}") from error


# -- rows <-> records ---------------------------------------------------------------------------


async def _one(db: aiosqlite.Connection, sql: str, params: dict[str, Any]) -> aiosqlite.Row | None:
    async with db.execute(sql, params) as cursor:
        row: aiosqlite.Row | None = await cursor.fetchone()
        return row


async def _scalar(db: aiosqlite.Connection, sql: str) -> int:
    async with db.execute(sql) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _scalar_text(db: aiosqlite.Connection, sql: str) -> str:
    async with db.execute(sql) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


def _event_row(transition: Transition, at: float) -> dict[str, Any]:
    data = dict(transition.data or {})
    if transition.error is not None:
        data.setdefault("error", transition.error)
    return {
        "run_id": transition.run_id,
        "task_id": transition.task_id,
        "kind": transition.kind.value,
        "at": at,
        "data_json": json.dumps(data) if data else None,
    }


def _event(seq: int, transition: Transition, at: float) -> Event:
    data = dict(transition.data or {})
    if transition.error is not None:
        data.setdefault("error", transition.error)
    return Event(
        seq=seq,
        run_id=transition.run_id,
        kind=transition.kind,
        at=at,
        task_id=transition.task_id,
        data=data or None,
    )


def _run(row: aiosqlite.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        goal=row["goal"],
        status=RunStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        plan=json.loads(row["plan_json"]) if row["plan_json"] else None,
        error=row["error"],
        requester=row["requester"],
        thread_key=row["thread_key"],
        parent_run_id=row["parent_run_id"],
        meta=json.loads(row["meta_json"]),
    )


def _task(row: aiosqlite.Row) -> TaskRecord:
    return TaskRecord(
        run_id=row["run_id"],
        id=row["id"],
        position=row["position"],
        spec=json.loads(row["spec_json"]),
        status=TaskStatus(row["status"]),
        attempts=row["attempts"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        output=row["output"],
        error=row["error"],
    )
