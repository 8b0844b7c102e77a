"""Revising a running plan (scheduler.dag.revision): what is kept, dropped, added, refused."""

from __future__ import annotations

import pytest

from domain.vocabulary import TaskStatus
from scheduler.dag.plan import Plan, PlanRound
from scheduler.dag.revision import merge_revision, next_task_id, plan_change
from scheduler.dag.state import TaskState
from tests.support.plans import llm, plan, summary, tool

OK = TaskStatus.SUCCEEDED
RUNNING = TaskStatus.RUNNING
PENDING = TaskStatus.PENDING

CURRENT = plan(tool("t1"), tool("t2"), llm("t3", "t1", "t2"), summary("t4", "t3"))


def states(*statuses: TaskStatus, of: Plan = CURRENT) -> list[TaskState]:
    return [
        TaskState(run_id="r", spec=spec, position=i, status=status)
        for i, (spec, status) in enumerate(zip(of.tasks, statuses, strict=True))
    ]


@pytest.mark.parametrize(
    ("ids", "expected"),
    [([], "t1"), (["t1", "t2"], "t3"), (["t9", "t2", "x"], "t10"), (["summary"], "t1")],
)
def test_next_task_id(ids: list[str], expected: str) -> None:
    assert next_task_id(ids) == expected


def test_started_tasks_are_kept_as_they_are_and_pending_ones_left_out_are_dropped() -> None:
    proposed = plan(tool("t5"), summary("t6", "t1", "t5"), title="")
    merged = merge_revision(states(OK, RUNNING, PENDING, PENDING), CURRENT, proposed)
    assert isinstance(merged, Plan)
    # t1 and t2 had started: kept first, unchanged; t3 dropped; the summary keeps its id.
    assert [t.id for t in merged.tasks] == ["t1", "t2", "t5", "t4"]
    assert merged.task("t4").deps == ["t1", "t5"]
    assert merged.title == CURRENT.title
    assert merged.rounds == []
    change = plan_change(states(OK, RUNNING, PENDING, PENDING), merged)
    assert change.added == ["t5"]
    assert change.removed == ["t3"]
    assert change.changed == ["t4"]


def test_a_started_task_listed_again_unchanged_is_fine() -> None:
    proposed = plan(tool("t1"), llm("t3", "t1"), summary("t4", "t3"))
    merged = merge_revision(states(OK, OK, PENDING, PENDING), CURRENT, proposed)
    assert isinstance(merged, Plan)
    assert [t.id for t in merged.tasks] == ["t1", "t2", "t3", "t4"]
    assert merged.task("t3").deps == ["t1"]


def test_a_new_task_with_the_id_of_a_finished_one_is_refused_with_a_free_id() -> None:
    proposed = plan(tool("t1", text="other"), summary("t5", "t1"))
    problems = merge_revision(states(OK, OK, OK, PENDING), CURRENT, proposed)
    assert isinstance(problems, list)
    [problem] = problems
    assert "Task 't1' has already succeeded" in problem
    assert "'t5'" in problem
    assert "{{t1}}" in problem


def test_a_new_round_records_its_reason_and_the_tasks_it_added() -> None:
    proposed = plan(llm("t5", "t3", prompt="Check {{t3}}"), summary("s2", "t3", "t5"))
    merged = merge_revision(
        states(OK, OK, OK, PENDING), CURRENT, proposed, new_round="Paris is missing"
    )
    assert isinstance(merged, Plan)
    assert [t.id for t in merged.tasks] == ["t1", "t2", "t3", "t5", "t4"]
    assert merged.rounds == [PlanRound(reason="Paris is missing", tasks=["t5"])]
    assert merged.round_of("t5") == 2
    assert merged.round_of("t4") == 1
    # Steering in round 2 adds to round 2.
    later = states(OK, OK, OK, RUNNING, PENDING, of=merged)
    steered = merge_revision(later, merged, plan(tool("t6"), summary("t4", "t5", "t6")))
    assert isinstance(steered, Plan)
    assert steered.rounds == [PlanRound(reason="Paris is missing", tasks=["t5", "t6"])]
    assert steered.round_of("t6") == 2


def test_a_summary_that_has_started_is_kept_and_a_second_one_is_not_renamed() -> None:
    proposed = plan(tool("t5"), summary("t6", "t5"))
    merged = merge_revision(states(OK, OK, OK, RUNNING), CURRENT, proposed)
    assert isinstance(merged, Plan)
    # Two summaries: validation refuses this plan, as it must (the engine defers instead).
    assert [t.id for t in merged.tasks] == ["t1", "t2", "t3", "t4", "t5", "t6"]
