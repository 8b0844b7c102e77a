"""One SQLite connection on a thread of its own; each call runs a whole function there.

aiosqlite hops to its thread once per statement, and each hop costs about as much as a whole
small commit (tens of microseconds of wake-ups). A write transaction here is one hop however
many statements it holds, and, once handed to the thread, it runs to COMMIT or ROLLBACK even if
the awaiting coroutine is cancelled: no transaction is ever left half-open.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from storage.errors import DatabaseUnusable, StorageError

BUSY_TIMEOUT_MS = 10_000

_T = TypeVar("_T")
Work = Callable[[sqlite3.Connection], _T]


class Connection:
    def __init__(self, thread: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
        self._thread = thread
        self._db = db

    @classmethod
    async def open(cls, path: str, *, name: str) -> Connection:
        """Connect with per-connection settings only: nothing here writes to the file."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        loop = asyncio.get_running_loop()
        try:
            db = await loop.run_in_executor(thread, _connect, path)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(thread, db)

    async def run(self, work: Work[_T]) -> _T:
        """Run `work(connection)` on the connection's thread; SQLite errors become StorageError."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, _guarded, work, self._db)

    async def transaction(self, work: Work[_T]) -> _T:
        """Run `work` inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK if it raises)."""
        return await self.run(partial(_in_transaction, work))

    async def fetchall(self, sql: str, params: dict[str, Any] | None = None) -> list[sqlite3.Row]:
        return await self.run(partial(_fetchall, sql, params or {}))

    async def fetchone(self, sql: str, params: dict[str, Any] | None = None) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def close(self) -> None:
        """Close after every call already handed to the thread has finished."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._db.close)
        finally:
            self._thread.shutdown(wait=False)


def _connect(path: str) -> sqlite3.Connection:
    try:
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), never implicit.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise DatabaseUnusable(f"cannot open the database {path}: {error}") from error
    db.row_factory = sqlite3.Row
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}").fetchall()
        # NORMAL in WAL mode keeps every commit atomic and durable across process crashes;
        # only an OS crash or power loss can lose the last transactions.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as error:
        db.close()
        raise DatabaseUnusable(
            f"the database {path} is unusable ({error}); dagbot leaves it untouched. "
            "Move it aside or point DATABASE_URL elsewhere."
        ) from error
    return db


def _guarded(work: Work[_T], db: sqlite3.Connection) -> _T:
    try:
        return work(db)
    except sqlite3.Error as error:
        raise StorageError(f"the database failed: {error}") from error


def _in_transaction(work: Work[_T], db: sqlite3.Connection) -> _T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def _fetchall(sql: str, params: dict[str, Any], db: sqlite3.Connection) -> list[sqlite3.Row]:
    rows: list[sqlite3.Row] = db.execute(sql, params).fetchall()
    return rows
