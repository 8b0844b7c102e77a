"""Loads the named SQL blocks of queries.sql (and PostgreSQL's versions of some) once."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import Literal

Dialect = Literal["sqlite", "postgres"]

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def _blocks(filename: str) -> dict[str, str]:
    text = files("storage").joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def pyformat(sql: str) -> str:
    """`:name` parameters as psycopg's `%(name)s` (and a literal `%` doubled)."""
    return _PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%"))


@cache
def queries(dialect: Dialect = "sqlite") -> dict[str, str]:
    """Every named block; for PostgreSQL, postgres.sql's blocks replace those they name."""
    shared = _blocks("queries.sql")
    if dialect == "sqlite":
        return shared
    return {name: pyformat(body) for name, body in {**shared, **_blocks("postgres.sql")}.items()}


def query(name: str, dialect: Dialect = "sqlite") -> str:
    return queries(dialect)[name]


def migrations(dialect: Dialect = "sqlite") -> list[tuple[int, str]]:
    """(version, script) pairs in order."""
    found = [
        (int(name.removeprefix("migration_")), body)
        for name, body in queries(dialect).items()
        if name.startswith("migration_")
    ]
    return sorted(found)
