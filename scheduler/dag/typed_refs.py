"""Typed references: `{{tN}}` as a JSON value where a tool's schema wants one. Pure functions.

An argument that is exactly one `{{tN}}`, where the tool's input schema wants a number, integer,
boolean, object, array or null (and not text), receives tN's output parsed as JSON. Everywhere else
(text arguments, references inside longer strings) the output is substituted as text, as before.
Before running, `reference_type_problems` tells the planner where a reference cannot fit: text
inside a number argument, or a tool output whose `outputSchema` says it is of another type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from scheduler.dag.catalogue import ToolSpec
from scheduler.dag.plan import PlanTask, TaskKind
from scheduler.dag.refs import REFERENCE, exact_reference, string_positions, substitute
from scheduler.dag.schemas import (
    BrokenSchema,
    Path,
    describe_types,
    output_types,
    schema_errors,
    types_at,
    types_fit,
)
from scheduler.errors import TaskError

EXCERPT_CHARS = 80
_FENCE = re.compile(r"\A```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\Z", re.DOTALL)


def typed_path(path: Path) -> str:
    """An argument's path as messages name it: `count`, `filter/0/min`."""
    return "/".join(str(part) for part in path) or "(arguments)"


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of `text` on one line, quoted, for messages."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def wanted_json(schema: Mapping[str, Any], path: Path) -> frozenset[str] | None:
    """The non-text types wanted at `path`, or None where text is acceptable (or anything is)."""
    types = types_at(schema, path)
    if types is None or "string" in types:
        return None
    return types


def parse_output(text: str) -> Any:
    """An output read as one JSON value; a single Markdown code fence around it is allowed.

    Raises ValueError when it is not JSON.
    """
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    return json.loads(fenced.group(1) if fenced else stripped)


def typed_arguments(
    args: Mapping[str, Any],
    outputs: Mapping[str, str],
    *,
    tool: str,
    schema: Mapping[str, Any],
) -> dict[str, Any]:
    """`args` with references substituted, typed where `schema` wants JSON; TaskError if unfit.

    The error names the argument, the type expected and the start of the output.
    """
    typed: dict[Path, str] = {}
    for path, value in string_positions(args):
        ref = exact_reference(value)
        if ref is not None and ref in outputs and wanted_json(schema, path) is not None:
            typed[path] = ref
    result: dict[str, Any] = substitute(dict(args), outputs)
    for path, ref in typed.items():
        wanted = wanted_json(schema, path)
        assert wanted is not None
        try:
            value = parse_output(outputs[ref])
        except ValueError:
            raise TaskError(
                f"Argument {typed_path(path)!r} of {tool} wants {describe_types(wanted)}, but "
                f"the output of {ref} is not JSON: {excerpt(outputs[ref])}."
            ) from None
        _put(result, path, value)
    if typed:
        try:
            errors = schema_errors(schema, result)
        except BrokenSchema:
            errors = []  # the server checks its own arguments; its schema cannot help here
        for error in errors:
            where = tuple(error.absolute_path)
            for path, ref in typed.items():
                if where[: len(path)] == path:
                    wanted = wanted_json(schema, path)
                    raise TaskError(
                        f"Argument {typed_path(path)!r} of {tool} wants "
                        f"{describe_types(wanted or frozenset())}, but the output of {ref} does "
                        f"not fit ({error.message}): {excerpt(outputs[ref])}."
                    )
    return result


def _put(container: Any, path: Path, value: Any) -> None:
    for part in path[:-1]:
        container = container[part]
    container[path[-1]] = value


def reference_type_problems(
    task: PlanTask, spec: ToolSpec, tasks: Mapping[str, PlanTask], catalogue: Mapping[str, ToolSpec]
) -> list[str]:
    """Where a reference in `task`'s arguments cannot give the type `spec`'s schema wants.

    Two cases are known before running: a reference inside longer text, which stays text, in an
    argument that does not take text; and a reference to a tool whose `outputSchema` gives a type
    the argument does not take.
    """
    problems: list[str] = []
    for path, value in string_positions(task.args):
        if not REFERENCE.search(value):
            continue
        wanted = wanted_json(spec.input_schema, path)
        if wanted is None:
            continue
        where = f"Task {task.id!r}: argument {typed_path(path)!r} of {spec.name} wants "
        ref = exact_reference(value)
        if ref is None:
            problems.append(
                f"{where}{describe_types(wanted)}, but {value!r} puts a reference inside longer "
                "text, which is passed as text. Write exactly one reference such as "
                '"{{t1}}" as the whole value to pass that output as JSON, or compute the value in '
                "an llm task first."
            )
            continue
        source = tasks.get(ref)
        if source is None or source.kind is not TaskKind.TOOL or not source.tool:
            continue  # an llm step's output type is only known once it has run
        source_spec = catalogue.get(source.tool)
        if source_spec is None or source_spec.output_schema is None:
            continue
        possible = output_types(source_spec.output_schema)
        if possible is not None and not types_fit(wanted, possible):
            problems.append(
                f"{where}{describe_types(wanted)}, but {{{{{ref}}}}} is the output of "
                f"{source.tool}, which gives {describe_types(possible)} (its output schema). "
                f"Add an llm task that extracts {describe_types(wanted)} from {ref}'s output and "
                "reference that task instead."
            )
    return problems
