"""Fixtures shared by every test package. Fakes live in tests/fakes/; import their fixtures here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.openai_server import fake_openai
from tests.support.postgres import SKIPPED_BECAUSE, fresh_database

__all__ = ["database_url", "fake_openai"]


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A DATABASE_URL of each kind: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dagbot.sqlite3'}"
        return
    async with fresh_database() as url:
        yield url


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for reason in SKIPPED_BECAUSE:
        terminalreporter.write_line(
            f"PostgreSQL tests skipped: {reason}. Start PostgreSQL (or set "
            "DAGBOT_TEST_POSTGRES) to run them; CI always does.",
            yellow=True,
        )
