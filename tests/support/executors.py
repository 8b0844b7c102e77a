"""Small real executors for engine tests: an echo, and a gate that holds tasks until released."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable

from scheduler.dag.executors import TaskContext
from scheduler.dag.state import TaskState


class Echo:
    """Returns `<id>(<prompt or args>)` at once and remembers every call."""

    def __init__(self, *, failures: dict[str, list[BaseException]] | None = None) -> None:
        self.calls: list[TaskContext] = []
        self.results_seen: list[dict[str, TaskState]] = []
        """`context.results` as each call saw it (the context holds a live view)."""
        # errors to raise, in order, on the first calls of a task id
        self.failures = {key: list(errors) for key, errors in (failures or {}).items()}

    async def __call__(self, context: TaskContext) -> str:
        self.calls.append(context)
        self.results_seen.append(dict(context.results))
        pending = self.failures.get(context.task.id)
        if pending:
            raise pending.pop(0)
        body = context.task.prompt if context.task.prompt is not None else context.task.args
        return f"{context.task.id}({body})"

    @property
    def order(self) -> list[str]:
        return [call.task.id for call in self.calls]

    def count(self, task_id: str) -> int:
        return sum(1 for call in self.calls if call.task.id == task_id)


class Gate:
    """Holds every task open until the test releases it, and tracks what runs at once."""

    def __init__(self) -> None:
        self.started: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._release: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._errors: dict[str, BaseException] = {}
        self.running: dict[str, str] = {}
        """task id -> run id, for tasks inside the executor now."""
        self.order: list[str] = []
        self.cancelled: list[str] = []
        self.seen: dict[str, TaskContext] = {}
        self.max_running = 0
        self.max_running_by_run: Counter[str] = Counter()
        self._changed = asyncio.Condition()

    async def __call__(self, context: TaskContext) -> str:
        task_id = context.task.id
        self.seen[task_id] = context
        self.order.append(task_id)
        self.running[task_id] = context.run_id
        self.max_running = max(self.max_running, len(self.running))
        in_run = sum(1 for run in self.running.values() if run == context.run_id)
        self.max_running_by_run[context.run_id] = max(
            self.max_running_by_run[context.run_id], in_run
        )
        self.started[task_id].set()
        await self._notify()
        try:
            await self._release[task_id].wait()
        except asyncio.CancelledError:
            self.cancelled.append(task_id)
            raise
        finally:
            del self.running[task_id]
            await self._notify()
        error = self._errors.pop(task_id, None)
        if error is not None:
            raise error
        return f"{task_id} done"

    def release(self, task_id: str, error: BaseException | None = None) -> None:
        if error is not None:
            self._errors[task_id] = error
        self._release[task_id].set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds, re-checked whenever a task starts or stops."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


def statuses(tasks: tuple[TaskState, ...]) -> dict[str, str]:
    return {task.id: task.status.value for task in tasks}
