"""The tools a plan may call, as the planner and validator see them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """One callable tool, named `<server>.<tool>` (the server being its key in mcp.json)."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    output_schema: dict[str, Any] | None = None
    """The tool's `outputSchema`, when it declares one: validation reads the type of its output."""


Catalogue = dict[str, ToolSpec]
