"""Opening a SQLite file safely: refuse what is not ours before writing a byte, then migrate."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar, cast

import aiosqlite

from storage.errors import DatabaseUnusable, StorageError
from storage.sql import migrations

SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 10_000
_T = TypeVar("_T")


def check_header(path: Path) -> None:
    """Refuse a non-empty file that is not SQLite at all, before SQLite opens it."""
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


def create_private(path: Path) -> None:
    """Create a missing database file readable by its owner only (0600).

    SQLite gives the -wal and -shm files it creates the database file's permissions, so they
    are private too. An existing file keeps the permissions its owner chose.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a missing directory and the like: connect() reports it with the right words
    os.close(descriptor)


def shut_down_uncleanly(path: Path) -> bool:
    """Whether the last process using the file may have died without closing it.

    The last connection to close checkpoints the WAL and deletes it, so a WAL file with
    content means the file is in use elsewhere or was left by a crash: only then is a full
    integrity check worth its cost, which grows with the file.
    """
    wal = path.with_name(path.name + "-wal")
    try:
        return wal.stat().st_size > 0
    except FileNotFoundError:
        return False


async def connect(path: str) -> aiosqlite.Connection:
    """Connect with per-connection settings only: nothing here writes to the file."""
    failures: list[sqlite3.Error] = []

    def open_file() -> sqlite3.Connection:
        try:
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), never implicit.
            return sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as error:
            # When its connector raises, aiosqlite does not wait for its thread to stop, and the
            # thread may then report to an event loop already closed. A stand-in connection
            # lets close() stop the thread properly before the error is raised.
            failures.append(error)
            return sqlite3.connect(":memory:")

    db = await aiosqlite.Connection(open_file, iter_chunk_size=64)
    if failures:
        await db.close()
        raise DatabaseUnusable(f"cannot open the database {path}: {failures[0]}") from failures[0]
    db.row_factory = sqlite3.Row
    try:
        # Every statement that returns rows is read to the end (execute_fetchall): an
        # unfinished statement holds a read snapshot, and BEGIN IMMEDIATE on a connection with
        # one fails with "database is locked" at once instead of waiting out busy_timeout.
        await db.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # NORMAL in WAL mode keeps every commit atomic and durable across process crashes;
        # only an OS crash or power loss can lose the last transactions.
        await db.execute_fetchall("PRAGMA synchronous = NORMAL")
        await db.execute_fetchall("PRAGMA foreign_keys = ON")
    except BaseException as error:
        await db.close()
        if isinstance(error, sqlite3.DatabaseError):
            raise _unusable(path, error) from error
        raise
    return db


async def in_thread(db: aiosqlite.Connection, call: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run `call` on the connection's own thread with its sqlite3 connection: one hop however
    many statements it runs (each aiosqlite method is a hop of its own)."""
    connection: sqlite3.Connection = db._conn
    # aiosqlite's queue of calls for its thread (Connection._execute), typed here.
    execute = cast(Callable[..., Awaitable[_T]], db._execute)
    return await execute(call, connection)


async def migrate(db: aiosqlite.Connection, path: str, *, integrity_check: bool = True) -> None:
    """Check that the file is dagbot's and current enough, then switch to WAL and migrate.

    Nothing is written before the checks pass: switching to WAL rewrites the file header, so a
    foreign or newer file must be refused first to stay byte-for-byte untouched. The full
    integrity check (`PRAGMA quick_check`, linear in the file's size) runs only when asked,
    after an unclean shutdown; reading the schema still refuses a file whose first pages are
    damaged.
    """
    steps = migrations()
    latest = steps[-1][0]
    try:
        # One read transaction, so a concurrent first start-up cannot show us a version from
        # before its migration and tables from after it.
        await db.execute("BEGIN")
        try:
            version = int((await _one(db, "PRAGMA user_version"))[0])
            check = str((await _one(db, "PRAGMA quick_check"))[0]) if integrity_check else "ok"
            tables = int(
                (
                    await _one(
                        db, "SELECT COUNT(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                    )
                )[0]
            )
        finally:
            await db.execute("COMMIT")
    except sqlite3.DatabaseError as error:
        raise _unusable(path, error) from error
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
        await _use_wal(db, path)
    for step, script in steps:
        if step > version:
            await _apply(db, path, step, script)


async def _use_wal(db: aiosqlite.Connection, path: str) -> None:
    """Switch the file to WAL, waiting out other processes opening it at the same moment.

    Switching needs the file to itself, and SQLite can answer "database is locked" at once,
    without its busy handler, while another connection is switching it too (seen in about one
    batch in forty of four simultaneous first start-ups). So wait here, for as long as
    busy_timeout would have waited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            [(mode,)] = await db.execute_fetchall("PRAGMA journal_mode = WAL")
            if str(mode).lower() == "wal":
                return
            failure = f"the journal mode stayed {mode}"
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise _unusable(path, error) from error
            failure = str(error)
        if loop.time() >= deadline:
            raise StorageError(f"could not switch {path} to WAL mode: {failure}")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)


async def _apply(db: aiosqlite.Connection, path: str, step: int, script: str) -> None:
    try:
        await db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the write lock.
            if int((await _one(db, "PRAGMA user_version"))[0]) < step:
                for statement in statements(script):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {step}")
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
    except sqlite3.Error as error:
        raise StorageError(f"migrating {path} to schema {step} failed: {error}") from error


def statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (executescript would commit on its own)."""
    found: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            found.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        found.append(buffer.strip())
    return found


async def _one(db: aiosqlite.Connection, sql: str) -> sqlite3.Row:
    [row] = await db.execute_fetchall(sql)
    return row


def _unusable(path: str, error: sqlite3.Error) -> DatabaseUnusable:
    return DatabaseUnusable(
        f"the database {path} is unusable ({error}); dagbot leaves it untouched. "
        "Move it aside or point DATABASE_URL elsewhere."
    )
