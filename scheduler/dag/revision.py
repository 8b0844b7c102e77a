"""Revising a running plan: what a new round or a steering message may change, as pure functions.

A revision replaces the part of the plan that has not started. Every task that has started
(running, or finished in any way) is kept exactly as it is, whether the proposed plan lists it or
not, so its output is reused and it never runs again; pending tasks the proposal leaves out are
dropped, and the ones it lists (changed or not) and its new tasks follow the kept ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from domain.vocabulary import TaskStatus
from scheduler.dag.kinds import rules
from scheduler.dag.plan import Plan, PlanRound, PlanTask
from scheduler.dag.state import TaskState

_NUMBERED = re.compile(r"^t(\d+)$")


@dataclass(frozen=True, kw_only=True)
class PlanChange:
    """What a revision does to a run's tasks."""

    added: list[str]
    removed: list[str]
    changed: list[str]


def next_task_id(ids: Sequence[str]) -> str:
    """The first `tN` after every numbered id in use (`t1` for none)."""
    numbers = [int(match.group(1)) for i in ids if (match := _NUMBERED.match(i))]
    return f"t{max(numbers, default=0) + 1}"


def started(task: TaskState) -> bool:
    """Whether a task has left pending: it is then kept by every revision."""
    return task.status is not TaskStatus.PENDING


def merge_revision(
    tasks: Sequence[TaskState],
    plan: Plan,
    proposed: Plan,
    *,
    new_round: str | None = None,
) -> Plan | list[str]:
    """The plan after `proposed` replaces the not-yet-started part of `plan`, or the problems.

    `tasks` are the run's tasks as they stand. A proposed task with the id of a started task must
    be that task unchanged (new tasks need new ids). The proposal's final step (the summary)
    keeps the id of the current one while that has not started, so front ends follow one
    summary. With `new_round` (the reason for it), the tasks added form a new round; otherwise
    they join the current one.
    """
    ordered = sorted(tasks, key=lambda t: t.position)
    kept = {t.id: t for t in ordered if started(t)}
    proposed_tasks = _keep_final_id(ordered, proposed.tasks)
    problems: list[str] = []
    free = next_task_id([*(t.id for t in ordered), *(t.id for t in proposed_tasks)])
    for task in proposed_tasks:
        before = kept.get(task.id)
        if before is not None and task != before.spec:
            problems.append(
                f"Task {task.id!r} has already {_done_word(before.status)} (as "
                f"{before.spec.title!r}) and cannot change; give new tasks new ids, such as "
                f"{free!r}, and reuse its output with {{{{{task.id}}}}}."
            )
    if problems:
        return problems
    fresh = [task for task in proposed_tasks if task.id not in kept]
    existing = {t.id for t in ordered}
    added = [task.id for task in fresh if task.id not in existing]
    rounds = list(plan.rounds)
    if new_round is not None:
        rounds.append(PlanRound(reason=new_round, tasks=added))
    elif added and rounds:
        last = rounds[-1]
        rounds[-1] = PlanRound(reason=last.reason, tasks=[*last.tasks, *added])
    title = proposed.title.strip() or plan.title
    return Plan(title=title, tasks=[t.spec for t in kept.values()] + fresh, rounds=rounds)


def plan_change(tasks: Sequence[TaskState], revised: Plan) -> PlanChange:
    """Which tasks a revised plan adds, drops (pending ones) and changes (pending ones)."""
    before = {t.id: t.spec for t in tasks}
    after = {t.id: t for t in revised.tasks}
    return PlanChange(
        added=[i for i in after if i not in before],
        removed=[i for i in before if i not in after],
        changed=[i for i in after if i in before and after[i] != before[i]],
    )


def _keep_final_id(current: Sequence[TaskState], proposed: Sequence[PlanTask]) -> list[PlanTask]:
    """`proposed` with its final step renamed to the current final step's id, where the current
    one has not started and the id is free (nothing may refer to a summary by its id)."""
    old = next((t for t in current if rules(t.kind).final_step and not started(t)), None)
    finals = [t for t in proposed if rules(t.kind).final_step]
    if old is None or len(finals) != 1 or finals[0].id == old.id:
        return list(proposed)
    new = finals[0]
    if any(t.id == old.id for t in proposed) or any(new.id in t.deps for t in proposed):
        return list(proposed)
    return [t.model_copy(update={"id": old.id}) if t is new else t for t in proposed]


def _done_word(status: TaskStatus) -> str:
    return "started" if status is TaskStatus.RUNNING else status.value
