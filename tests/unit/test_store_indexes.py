"""Query plans and start-up work that must not grow with history, checked on real SQLite."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage.connect import open_store as open_any
from storage.errors import DatabaseUnusable
from storage.opening import shut_down_uncleanly
from storage.records import NewRun
from storage.sql import query
from storage.sqlite import SqliteStore
from tests.support.postgres import fresh_database

# query name -> parameters; each must find its rows by index, without a temp B-tree sort.
INDEXED: dict[str, dict[str, Any]] = {
    "select_run": {"id": "abc"},
    "select_tasks": {"run_id": "abc"},
    "select_recent_runs": {"limit": 20},
    "select_recent_runs_of": {"requester": "U1", "limit": 20},
    "select_latest_run_in_thread": {"thread_key": "T1"},
    "select_runs_by_prefix": {"prefix": "ab", "prefix_end": "ab\U0010ffff"},
    "select_events": {"run_id": "abc"},
    "select_last_event": {"run_id": "abc", "kinds": '["run_finished"]'},
    "select_recent_tool_durations": {"limit": 500},
    "select_usage": {"run_id": "abc"},  # sorts one run's rows only
    "prune_inbox": {"before": 0.0},
}


@pytest.fixture
async def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "plans.sqlite3"
    store = await SqliteStore.open(str(path))
    await store.close()
    return path


@pytest.mark.parametrize("name", sorted(INDEXED))
def test_queries_use_indexes(db_file: Path, name: str) -> None:
    with sqlite3.connect(db_file) as db:
        steps = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {query(name)}", INDEXED[name])]
    detail = "\n".join(steps)
    if name != "select_usage":
        assert "TEMP B-TREE" not in detail, detail
    for table in ("runs", "tasks", "events", "inbox", "usage"):
        # a bare "SCAN <table>" reads every row; "SCAN <table> USING INDEX" walks an index
        assert not any(step == f"SCAN {table}" for step in steps), detail


def test_the_task_view_reads_tasks_in_order_from_an_index(db_file: Path) -> None:
    with sqlite3.connect(db_file) as db:
        steps = [
            row[3]
            for row in db.execute(f"EXPLAIN QUERY PLAN {query('select_tasks')}", {"run_id": "r"})
        ]
    assert any("tasks_position" in step for step in steps), steps


async def test_database_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "private.sqlite3"
    store = await SqliteStore.open(str(path))
    try:
        await store.create_run(NewRun(goal="secret goal"))
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        await store.close()


def crash_while_writing(path: Path) -> None:
    """A real process writes in WAL mode and dies without closing its connection."""
    script = (
        "import os, sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('INSERT INTO inbox (event_id, received_at) VALUES (\"E\", 1e12)')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)


def damage_index(path: Path, index: str) -> None:
    with sqlite3.connect(path) as db:
        [(root,)] = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (index,))
        [(page_size,)] = db.execute("PRAGMA page_size")
    db.close()
    data = bytearray(path.read_bytes())
    start = (root - 1) * page_size
    data[start : start + page_size] = b"\xff" * page_size
    path.write_bytes(bytes(data))


async def test_integrity_is_checked_only_after_an_unclean_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "check.sqlite3"
    store = await SqliteStore.open(str(path))
    for n in range(50):
        await store.create_run(NewRun(goal=f"goal {n}", requester=f"U{n}"))
    await store.close()
    assert not shut_down_uncleanly(path)
    damage_index(path, "runs_requester")

    # A clean shutdown: start-up reads the schema, not every page.
    reopened = await SqliteStore.open(str(path))
    await reopened.close()

    crash_while_writing(path)
    assert shut_down_uncleanly(path)
    with pytest.raises(DatabaseUnusable, match="corrupt"):
        await SqliteStore.open(str(path))


async def test_postgresql_finds_runs_by_id_prefix_through_an_index() -> None:
    async with fresh_database() as url:
        store = await open_any(url)
        await store.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            # An empty table is read whole whatever the indexes: ask for the plan it would use
            # were scanning costly, as on a table of many runs.
            await conn.execute("SET enable_seqscan = off")
            cursor = await conn.execute(
                "EXPLAIN " + query("select_runs_by_prefix", "postgres"),
                {"prefix": "ab", "prefix_end": "ab\U0010ffff"},
            )
            plan = "\n".join(str(row[0]) for row in await cursor.fetchall())
    assert "runs_id_bytewise" in plan, plan
    assert "Seq Scan" not in plan, plan
