"""Compact plan builders for tests: a task is `id` plus keyword fields, deps as a list."""

from __future__ import annotations

from typing import Any

from scheduler.dag.plan import Plan, PlanTask, TaskKind


def tool(task_id: str, *deps: str, name: str = "echo.say", **args: Any) -> PlanTask:
    return PlanTask(
        id=task_id, kind=TaskKind.TOOL, title=task_id, tool=name, args=args, deps=list(deps)
    )


def llm(task_id: str, *deps: str, prompt: str | None = None) -> PlanTask:
    return PlanTask(
        id=task_id,
        kind=TaskKind.LLM,
        title=task_id,
        prompt=prompt if prompt is not None else f"do {task_id}",
        deps=list(deps),
    )


def summary(task_id: str, *deps: str) -> PlanTask:
    return PlanTask(id=task_id, kind=TaskKind.SUMMARY, title=task_id, deps=list(deps))


def plan(*tasks: PlanTask, title: str = "test plan") -> Plan:
    return Plan(title=title, tasks=list(tasks))


def chain_plan(length: int) -> Plan:
    """t1 -> t2 -> ... -> tN, then a summary over the last task."""
    tasks = [tool("t1")]
    tasks += [tool(f"t{i}", f"t{i - 1}") for i in range(2, length + 1)]
    return plan(*tasks, summary("s", f"t{length}"))


def fan_plan(width: int) -> Plan:
    """`width` independent tool tasks and a summary over all of them."""
    tasks = [tool(f"t{i}") for i in range(1, width + 1)]
    return plan(*tasks, summary("s", *(t.id for t in tasks)))
