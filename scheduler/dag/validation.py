"""Plan validation: every problem at once, each a sentence an LLM or a user can act on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from scheduler.dag.catalogue import ToolSpec
from scheduler.dag.graph import ancestors, find_cycle
from scheduler.dag.kinds import KINDS, Needs, rules
from scheduler.dag.plan import Plan, PlanTask
from scheduler.dag.refs import REFERENCE, references_in
from scheduler.dag.schemas import BrokenSchema, schema_errors
from scheduler.dag.typed_refs import reference_type_problems

DEFAULT_MAX_TASKS = 50


def validate_plan(
    plan: Plan,
    *,
    catalogue: Mapping[str, ToolSpec] | None = None,
    max_tasks: int = DEFAULT_MAX_TASKS,
) -> list[str]:
    """Return every problem with `plan` (empty when valid).

    With a catalogue, tool names must exist in it and arguments must fit each tool's input schema;
    without one, tool names are not checked.
    """
    problems: list[str] = []
    tasks = plan.tasks
    if not tasks:
        return ["The plan has no tasks; it needs at least a summary task."]
    if len(tasks) > max_tasks:
        problems.append(
            f"The plan has {len(tasks)} tasks; the limit is {max_tasks}. "
            "Merge or drop steps to fit."
        )

    counts = Counter(task.id for task in tasks)
    problems.extend(
        f"Task id {task_id!r} is used {n} times; ids must be unique."
        for task_id, n in counts.items()
        if n > 1
    )
    ids = set(counts)

    for kind in (kind for kind, kind_rules in KINDS.items() if kind_rules.exactly_one):
        of_kind = [task.id for task in tasks if task.kind is kind]
        if not of_kind:
            problems.append(f"The plan has no {kind} task; add exactly one task of kind '{kind}'.")
        elif len(of_kind) > 1:
            problems.append(
                f"The plan has {len(of_kind)} {kind} tasks ({', '.join(of_kind)}); "
                "keep exactly one."
            )

    by_id = {task.id: task for task in tasks}
    for task in tasks:
        problems.extend(_task_problems(task, ids, catalogue, by_id))

    deps = {task.id: [d for d in task.deps if d in ids] for task in tasks}
    cycle = find_cycle(deps)
    if cycle is not None:
        problems.append(
            f"The dependencies form a cycle: {' -> '.join(cycle)}. A task cannot wait on itself."
        )
    # ancestors() is cycle-safe, so reference problems are reported alongside a cycle.
    for task in tasks:
        refs = references_in([task.args, task.prompt or ""]) & ids
        if not refs:
            continue  # most tasks reference nothing: skip the graph walk (large plans)
        missing = sorted(refs - ancestors(deps, task.id))
        if missing:
            problems.append(
                f"Task {task.id!r} uses the output of {', '.join(missing)} but does not "
                "depend on it; add it to deps (directly or through another task)."
            )
    return problems


def _task_problems(
    task: PlanTask,
    ids: set[str],
    catalogue: Mapping[str, ToolSpec] | None,
    tasks: Mapping[str, PlanTask],
) -> list[str]:
    problems: list[str] = []
    unknown_deps = sorted(set(task.deps) - ids)
    if unknown_deps:
        problems.append(f"Task {task.id!r} depends on unknown task(s) {', '.join(unknown_deps)}.")
    if task.id in task.deps:
        problems.append(f"Task {task.id!r} depends on itself.")
    unknown_refs = sorted(
        ref for ref in references_in([task.args, task.prompt or ""]) if ref not in ids
    )
    if unknown_refs:
        refs = ", ".join("{{" + ref + "}}" for ref in unknown_refs)
        problems.append(f"Task {task.id!r} references {refs}, which is not a task in the plan.")

    needs = rules(task.kind).needs
    if needs is Needs.TOOL:
        if not task.tool:
            problems.append(f"Task {task.id!r} is a tool task but names no tool.")
        elif catalogue is not None:
            spec = catalogue.get(task.tool)
            if spec is None:
                known = ", ".join(sorted(catalogue)) or "none"
                problems.append(
                    f"Task {task.id!r} calls unknown tool {task.tool!r}; available tools: {known}."
                )
            else:
                problems.extend(_argument_problems(task, spec))
                problems.extend(reference_type_problems(task, spec, tasks, catalogue))
    else:
        if needs is Needs.PROMPT and not (task.prompt or "").strip():
            problems.append(f"Task {task.id!r} is an {task.kind} task but has no prompt.")
        if task.tool:
            problems.append(
                f"Task {task.id!r} is an {task.kind} task but names a tool; use kind 'tool'."
            )
    return problems


def _argument_problems(task: PlanTask, spec: ToolSpec) -> list[str]:
    try:
        errors = schema_errors(spec.input_schema, task.args)
    except BrokenSchema:
        return []  # a server's broken schema is not the plan's fault (the planner reports it)
    problems: list[str] = []
    for error in errors:
        if _holds_reference(error.instance):
            continue  # the value is only known once the referenced task has run
        where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
        problems.append(
            f"Task {task.id!r}: arguments for {spec.name} do not fit its schema at {where}: "
            f"{error.message}."
        )
    return problems


def _holds_reference(value: Any) -> bool:
    return isinstance(value, str) and REFERENCE.search(value) is not None
