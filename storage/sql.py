"""Loads the named SQL blocks of queries.sql once."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    text = files("storage").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def query(name: str) -> str:
    return queries()[name]


def migrations() -> list[tuple[int, str]]:
    """(version, script) pairs in order."""
    found = [
        (int(name.removeprefix("migration_")), body)
        for name, body in queries().items()
        if name.startswith("migration_")
    ]
    return sorted(found)
