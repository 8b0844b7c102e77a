"""`{{tN}}` references: finding them and substituting task outputs. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

REFERENCE = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


def references_in(value: Any) -> set[str]:
    """Every task id referenced anywhere inside a string, list or dict (keys excluded)."""
    found: set[str] = set()
    if isinstance(value, str):
        found.update(REFERENCE.findall(value))
    elif isinstance(value, Mapping):
        for item in value.values():
            found |= references_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found |= references_in(item)
    return found


def exact_reference(value: Any) -> str | None:
    """The task id when `value` is a string that is exactly one `{{id}}` (spaces aside)."""
    if not isinstance(value, str):
        return None
    match = REFERENCE.fullmatch(value.strip())
    return match.group(1) if match else None


def string_positions(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string inside `value` (dict values and list items, recursively) with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from string_positions(item, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from string_positions(item, (*path, index))


def substitute(value: Any, outputs: Mapping[str, str]) -> Any:
    """Replace every `{{id}}` with outputs[id]; unknown ids are left as written.

    A string that is exactly one reference becomes the output itself, so a tool argument such as
    `"{{t1}}"` receives the earlier output verbatim.
    """
    if isinstance(value, str):
        return REFERENCE.sub(lambda m: outputs.get(m.group(1), m.group(0)), value)
    if isinstance(value, Mapping):
        return {key: substitute(item, outputs) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(item, outputs) for item in value]
    return value
