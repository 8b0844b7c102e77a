"""DATABASE_URL -> the store it names: SQLite (embedded, the default) or PostgreSQL."""

from __future__ import annotations

from storage.errors import UnsupportedDatabaseURL
from storage.leases import Owner
from storage.postgres import is_postgres_url, open_postgres
from storage.sqlite import open_store as open_sqlite
from storage.store import Store


async def open_store(database_url: str, *, owner: Owner | None = None) -> Store:
    """Open and migrate the store named by `database_url`, its runs leased to `owner`."""
    if is_postgres_url(database_url):
        return await open_postgres(database_url, owner=owner)
    if database_url.startswith("sqlite:"):
        return await open_sqlite(database_url, owner=owner)
    raise UnsupportedDatabaseURL(
        f"DATABASE_URL {database_url!r} is not supported: use sqlite:///path/to/file.sqlite3 "
        "or postgresql://user:password@host:5432/database"
    )
