"""Real PostgreSQL for tests: a database of its own per test, created and dropped here.

The server is `DAGBOT_TEST_POSTGRES` (default: the project's 127.0.0.1:5432, user postgres).
Under CI (`CI` set) a missing server fails the tests that need it; elsewhere they are skipped
and the run's summary says so in one line (tests/conftest.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache

import psycopg
import pytest
from psycopg import sql

ADMIN_URL = os.environ.get("DAGBOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
SKIPPED_BECAUSE: list[str] = []
"""What tests/conftest.py left out for want of a server, for the run's summary."""


@cache
def unavailable_reason() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"no PostgreSQL at {ADMIN_URL.split('@')[-1]} ({first})"
    return None


def require_postgres() -> None:
    """Fail under CI, skip elsewhere, when the server is missing."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI needs it (.ci/run starts it)", pytrace=False)
    pytest.skip(reason)


def database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty database with a unique name; dropped (connections and all) afterwards."""
    require_postgres()
    name = f"dagbot_test_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(name)
    finally:
        async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
            await admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def terminate_connections(url: str) -> int:
    """Kill every server process serving `url`'s database: what a restart or failover does."""
    name = url.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(ADMIN_URL, autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        return len(await cursor.fetchall())
