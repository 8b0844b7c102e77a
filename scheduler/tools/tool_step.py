"""The executor of `tool` tasks: one MCP `tools/call`."""

from __future__ import annotations

from typing import Any

from scheduler.dag.executors import TaskContext
from scheduler.dag.refs import references_in
from scheduler.dag.typed_refs import typed_arguments
from scheduler.errors import TaskError
from scheduler.tools.toolbox import Toolbox


class ToolExecutor:
    """Calls the task's tool with its arguments (references typed as its schema wants) and key.

    The engine substitutes every `{{tN}}` as text; where an argument is exactly one reference and
    the tool's input schema wants a number, boolean, object or array there, the output is passed
    as that JSON value instead (scheduler.dag.typed_refs), or the task fails saying why.

    `timeout` bounds each call at the protocol level, so a slow server yields a retryable
    "did not answer" failure and its session stays usable; None leaves the bound to the engine's
    task timeout.
    """

    def __init__(self, toolbox: Toolbox, *, timeout: float | None = None) -> None:
        self._toolbox = toolbox
        self._timeout = timeout

    async def __call__(self, context: TaskContext) -> str:
        task = context.task
        if not task.tool:
            raise TaskError(f"Task {task.id!r} is a tool task but names no tool.")
        return await self._toolbox.call(
            task.tool,
            self._arguments(context),
            timeout=self._timeout,
            idempotency_key=context.idempotency_key,
        )

    def _arguments(self, context: TaskContext) -> dict[str, Any]:
        task = context.task
        planned = context.results.get(task.id)
        if planned is None or not references_in(planned.spec.args):
            return task.args
        spec = self._toolbox.tool_spec(task.tool or "")
        if spec is None:
            return task.args  # server down or tool unknown: the call itself says which
        outputs = {
            ref: state.output
            for ref in references_in(planned.spec.args)
            if (state := context.results.get(ref)) is not None and state.output is not None
        }
        return typed_arguments(
            planned.spec.args, outputs, tool=task.tool or "", schema=spec.input_schema
        )
