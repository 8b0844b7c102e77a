"""Fixtures shared by every test package. Fakes live in tests/fakes/; import their fixtures here."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.openai_server import fake_openai
from tests.support.postgres import SKIPPED_BECAUSE, fresh_database, unavailable_reason

__all__ = ["database_url", "fake_openai"]


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A DATABASE_URL of each kind: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dagbot.sqlite3'}"
        return
    async with fresh_database() as url:
        yield url


def _needs_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("database_url") == "postgres":
        return True
    return "postgres_url" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a PostgreSQL server (and outside CI), leave its tests out, said in one line."""
    if os.environ.get("CI") or not any(_needs_postgres(item) for item in items):
        return
    reason = unavailable_reason()
    if reason is None:
        return
    left_out = [item for item in items if _needs_postgres(item)]
    items[:] = [item for item in items if not _needs_postgres(item)]
    config.hook.pytest_deselected(items=left_out)
    SKIPPED_BECAUSE.append(f"{len(left_out)} PostgreSQL tests skipped: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in SKIPPED_BECAUSE:
        terminalreporter.write_line(
            f"{line}. Start PostgreSQL (or set DAGBOT_TEST_POSTGRES) to run them; CI does.",
            yellow=True,
        )
