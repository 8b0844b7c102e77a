"""The executor of `tool` tasks: one MCP `tools/call`."""

from __future__ import annotations

from scheduler.dag.executors import TaskContext
from scheduler.errors import TaskError
from scheduler.tools.toolbox import Toolbox


class ToolExecutor:
    """Calls the task's tool with its (already substituted) arguments and idempotency key.

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
            task.args,
            timeout=self._timeout,
            idempotency_key=context.idempotency_key,
        )
