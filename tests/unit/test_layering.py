"""Checked rules of layering that import-linter cannot see (see pyproject for the others)."""

from __future__ import annotations

import ast
from pathlib import Path

import bot


def test_no_module_of_bot_reaches_into_the_engine_s_store() -> None:
    # Front ends read and write runs through the engine's own methods (scheduler.dag.run_records);
    # `something.store` would bypass them, and import-linter sees only imports.
    found = [
        f"{path.name}:{node.lineno}"
        for path in Path(bot.__file__).parent.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "store"
    ]
    assert found == []
