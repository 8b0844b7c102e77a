"""The embedded store: SQLite in WAL mode, with group commit for state transitions.

Writes go through one connection on one thread, each transaction a single hop to it (see
connection.py); reads use a second connection and thread, so a long write never delays a read.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from storage.connection import Connection
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
    def __init__(self, writer: Connection, reader: Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        memory = path == ":memory:"
        if not memory:
            _check_header(Path(path))
        writer = await Connection.open(path, name="dagbot-sqlite-writer")
        try:
            await writer.run(partial(_migrate, path=path))
            # An in-memory database exists only for its own connection: read through it too.
            reader = writer if memory else await Connection.open(path, name="dagbot-sqlite-reader")
        except BaseException:
            await writer.close()
            raise
        store = cls(writer, reader)
        await writer.transaction(
            partial(
                _execute, query("prune_inbox"), {"before": time.time() - INBOX_RETENTION_SECONDS}
            )
        )
        return store

    async def close(self) -> None:
        """Commit the transitions already handed in (their callers may have gone), then close."""
        if self._flusher is not None:
            await asyncio.wait([self._flusher])
        if self._reader is not self._writer:
            await self._reader.close()
        await self._writer.close()

    # -- writes -------------------------------------------------------------------------------
    # Each write is one transaction run whole on the writer thread: a caller cancelled while
    # waiting does not stop it, and close() waits for it.

    async def create_run(self, new: NewRun) -> tuple[RunRecord, Event]:
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
        }
        created = Transition(run_id=run_id, kind=EventKind.RUN_CREATED)

        def work(db: sqlite3.Connection) -> int:
            db.execute(query("insert_run"), row)
            return _insert_event(db, created, now)

        seq = await self._writer.transaction(work)
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
        return record, _event(seq, created, now)

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
            db.execute(query("set_plan"), run_row)
            db.executemany(query("insert_task"), task_rows)
            return _insert_event(db, planned, now)

        return _event(await self._writer.transaction(work), planned, now)

    def record(self, transition: Transition) -> asyncio.Future[Event]:
        """Queue `transition` at once for the next group commit; the future gives its event.

        The transition is committed even if nobody awaits the future (or the awaiting task is
        cancelled), and transitions commit in the order record() was called.
        """
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._pending.append((transition, time.time(), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="store-group-commit")
        return future

    async def _flush(self) -> None:
        # Transitions that arrive while a batch is being written wait for the next batch: under
        # load every transaction carries many transitions, which is what keeps persistence cheap.
        # Batches are written in arrival order, so transitions commit in the order recorded.
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
        event_rows = [_event_row(t, at) for t, at, _ in batch]

        def work(db: sqlite3.Connection) -> int:
            if task_updates:
                db.executemany(query("update_task"), task_updates)
            if run_updates:
                db.executemany(query("update_run_status"), run_updates)
            db.executemany(query("insert_event"), event_rows)
            last: int = db.execute("SELECT last_insert_rowid()").fetchone()[0]
            return last

        # The write lock is held from BEGIN IMMEDIATE on, so the batch's rowids are contiguous.
        first = await self._writer.transaction(work) - len(batch) + 1
        return [_event(seq, t, at) for seq, (t, at, _) in enumerate(batch, start=first)]

    async def update_meta(self, run_id: str, patch: dict[str, Any]) -> RunRecord:
        def work(db: sqlite3.Connection) -> sqlite3.Row:
            row = db.execute(query("select_run"), {"id": run_id}).fetchone()
            if row is None:
                raise StorageError(f"no run {run_id!r}")
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

        return _run(await self._writer.transaction(work))

    async def claim_delivery(self, event_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(query("insert_inbox"), {"event_id": event_id, "at": time.time()})
            return cursor.rowcount == 1

        return await self._writer.transaction(work)

    async def record_usage(self, usage: UsageRecord) -> None:
        await self._writer.transaction(
            partial(
                _execute,
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

    # -- reads --------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._reader.fetchone(query("select_run"), {"id": run_id})
        return _run(row) if row is not None else None

    async def get_tasks(self, run_id: str) -> list[TaskRecord]:
        rows = await self._reader.fetchall(query("select_tasks"), {"run_id": run_id})
        return [_task(row) for row in rows]

    async def find_run(self, id_or_prefix: str) -> RunRecord | None:
        if not id_or_prefix:
            return None
        rows = await self._reader.fetchall(query("select_runs_by_prefix"), {"prefix": id_or_prefix})
        exact = [row for row in rows if row["id"] == id_or_prefix]
        if exact:
            return _run(exact[0])
        return _run(rows[0]) if len(rows) == 1 else None

    async def unfinished_runs(self) -> list[str]:
        rows = await self._reader.fetchall(query("select_unfinished_runs"))
        return [row["id"] for row in rows]

    async def recent_runs(
        self, *, requester: str | None = None, limit: int = 20
    ) -> list[RunRecord]:
        rows = await self._reader.fetchall(
            query("select_recent_runs"), {"requester": requester, "limit": limit}
        )
        return [_run(row) for row in rows]

    async def latest_run_in_thread(self, thread_key: str) -> RunRecord | None:
        row = await self._reader.fetchone(
            query("select_latest_run_in_thread"), {"thread_key": thread_key}
        )
        return _run(row) if row is not None else None

    async def events(self, run_id: str) -> list[Event]:
        rows = await self._reader.fetchall(query("select_events"), {"run_id": run_id})
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
        rows = await self._reader.fetchall(query("select_usage"), {"run_id": run_id})
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


# -- opening and migrating (these run on the writer thread) -------------------------------------


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


def _migrate(db: sqlite3.Connection, *, path: str) -> None:
    """Check that the file is dagbot's and current enough, then switch to WAL and migrate.

    Nothing is written before the checks pass: switching to WAL rewrites the file header, so a
    foreign or newer file must be refused first to stay byte-for-byte untouched.
    """
    steps = migrations()
    latest = steps[-1][0]
    try:
        # One read transaction, so a concurrent first start-up cannot show us a version from
        # before its migration and tables from after it.
        db.execute("BEGIN")
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            check = str(db.execute("PRAGMA quick_check").fetchone()[0])
            tables = int(
                db.execute(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                ).fetchone()[0]
            )
        finally:
            db.execute("COMMIT")
    except sqlite3.DatabaseError as error:
        raise DatabaseUnusable(
            f"the database {path} is unusable ({error}); dagbot leaves it untouched. "
            "Move it aside or point DATABASE_URL elsewhere."
        ) from error
    if check != "ok":
        raise DatabaseUnusable(
            f"the database {path} is corrupt (integrity check: {check}); dagbot leaves it "
            "untouched. Restore a backup or point DATABASE_URL elsewhere."
        )
    if version > latest:
        raise DatabaseUnusable(
            f"the database {path} has schema version {version}, newer than this dagbot "
            f"understands ({latest}); dagbot leaves it untouched. Upgrade dagbot or point "
            "DATABASE_URL elsewhere."
        )
    if version == 0 and tables:
        raise DatabaseUnusable(
            f"{path} holds tables that are not dagbot's; dagbot leaves it untouched. "
            "Point DATABASE_URL elsewhere."
        )
    if path != ":memory:":
        # Read the answer to the end: an unfinished statement holds a read snapshot, and
        # BEGIN IMMEDIATE then fails with "database is locked" at once instead of waiting.
        db.execute("PRAGMA journal_mode = WAL").fetchall()
    for step, script in steps:
        if step <= version:
            continue
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have migrated while we waited for the write lock.
                if int(db.execute("PRAGMA user_version").fetchone()[0]) < step:
                    for statement in _statements(script):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {step}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            raise StorageError(f"migrating {path} to schema {step} failed: {error}") from error


def _statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (executescript would commit on its own)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


# -- rows <-> records ---------------------------------------------------------------------------


def _execute(sql: str, params: dict[str, Any], db: sqlite3.Connection) -> None:
    db.execute(sql, params)


def _insert_event(db: sqlite3.Connection, transition: Transition, at: float) -> int:
    seq = db.execute(query("insert_event"), _event_row(transition, at)).lastrowid
    if seq is None:
        raise StorageError("the event log did not return a sequence number")
    return seq


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


def _run(row: sqlite3.Row) -> RunRecord:
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


def _task(row: sqlite3.Row) -> TaskRecord:
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
