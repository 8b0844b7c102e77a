from __future__ import annotations

import pytest

from scheduler.dag.kinds import KINDS, Needs, rules
from scheduler.dag.plan import TaskKind
from scheduler.dag.validation import validate_plan
from tests.support.plans import llm, plan, summary, tool


def test_every_kind_is_declared() -> None:
    assert set(KINDS) == set(TaskKind)


@pytest.mark.parametrize(
    ("kind", "needs", "joins_failures", "exactly_one"),
    [
        (TaskKind.TOOL, Needs.TOOL, False, False),
        (TaskKind.LLM, Needs.PROMPT, False, False),
        (TaskKind.SUMMARY, Needs.NOTHING, True, True),
    ],
)
def test_the_rules_of_each_kind(
    kind: TaskKind, needs: Needs, joins_failures: bool, exactly_one: bool
) -> None:
    declared = rules(kind)
    assert (declared.needs, declared.joins_failures, declared.exactly_one) == (
        needs,
        joins_failures,
        exactly_one,
    )
    assert declared.weight > 0


def test_validation_reads_the_rules() -> None:
    bad = plan(
        tool("t1"),
        llm("c", prompt=" "),
        summary("s1"),
        summary("s2"),
    )
    problems = validate_plan(bad)
    assert "Task 'c' is an llm task but has no prompt." in problems
    assert "The plan has 2 summary tasks (s1, s2); keep exactly one." in problems
