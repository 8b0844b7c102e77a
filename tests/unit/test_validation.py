from __future__ import annotations

import itertools
import re

import pytest

from scheduler.dag.catalogue import ToolSpec
from scheduler.dag.plan import Plan, PlanTask
from scheduler.dag.validation import DEFAULT_MAX_TASKS, validate_plan
from tests.support.plans import llm, plan, summary, tool

CATALOGUE = {
    "echo.say": ToolSpec(name="echo.say"),
    "weather.forecast": ToolSpec(
        name="weather.forecast",
        input_schema={
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    ),
    "broken.schema": ToolSpec(name="broken.schema", input_schema={"type": "no-such-type"}),
    "broken.ref": ToolSpec(name="broken.ref", input_schema={"$ref": "#/$defs/missing"}),
    "clock.now": ToolSpec(
        name="clock.now",
        output_schema={
            "type": "object",
            "properties": {"iso": {"type": "string"}, "hour": {"type": "integer"}},
        },
    ),
    "pairs.put": ToolSpec(
        name="pairs.put",
        input_schema={
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "pair": {"type": "array", "items": [{"type": "string"}, {"type": "number"}]}
            },
        },
    ),
}


def weather(task_id: str, *deps: str, **args: object) -> PlanTask:
    return tool(task_id, *deps, name="weather.forecast", **args)


VALID = [
    pytest.param(plan(summary("s")), id="summary only"),
    pytest.param(
        plan(tool("t1"), tool("t2"), llm("t3", "t1", "t2"), summary("t4", "t3")), id="doc"
    ),
    pytest.param(
        plan(tool("t1"), llm("t2", "t1"), llm("t3", "t2", prompt="use {{t1}}"), summary("s", "t3")),
        id="reference through a transitive dependency",
    ),
    pytest.param(
        plan(weather("t1", city="Paris"), weather("t2", "t1", city="{{t1}}", days=2), summary("s")),
        id="arguments fit the schema",
    ),
    pytest.param(
        plan(tool("t1"), weather("t2", "t1", city="Oslo", days="{{ t1 }}"), summary("s", "t2")),
        id="reference where the schema wants an integer is tolerated",
    ),
    pytest.param(
        plan(tool("t1", name="broken.schema", anything=1), summary("s", "t1")),
        id="a server's broken schema is not the plan's fault",
    ),
    pytest.param(
        plan(tool("t1", name="broken.ref", anything=1), summary("s", "t1")),
        id="a schema with an unresolvable reference is not the plan's fault",
    ),
]


@pytest.mark.parametrize("valid", VALID)
def test_valid_plans_have_no_problems(valid: Plan) -> None:
    assert validate_plan(valid, catalogue=CATALOGUE) == []


INVALID = [
    pytest.param(plan(), None, ["The plan has no tasks"], id="empty"),
    pytest.param(
        plan(tool("t1"), tool("t2"), tool("t3"), summary("s")),
        3,
        ["The plan has 4 tasks; the limit is 3."],
        id="too many tasks",
    ),
    pytest.param(
        plan(tool("t1"), tool("t1"), summary("s", "t1")),
        None,
        ["Task id 't1' is used 2 times; ids must be unique."],
        id="duplicate ids",
    ),
    pytest.param(
        plan(tool("t1", "t8", "t9"), summary("s", "t1")),
        None,
        ["Task 't1' depends on unknown task(s) t8, t9."],
        id="unknown deps",
    ),
    pytest.param(
        plan(tool("t1", "t1"), summary("s")),
        None,
        ["Task 't1' depends on itself.", "cycle: t1 -> t1"],
        id="self dependency",
    ),
    pytest.param(
        plan(tool("t1"), tool("t2")),
        None,
        ["The plan has no summary task"],
        id="no summary",
    ),
    pytest.param(
        plan(tool("t1"), summary("s1", "t1"), summary("s2", "t1")),
        None,
        ["The plan has 2 summary tasks (s1, s2); keep exactly one."],
        id="several summaries",
    ),
    pytest.param(
        plan(tool("t1"), tool("t2"), llm("t3", "t2", prompt="compare {{t1}}"), summary("s", "t3")),
        None,
        ["Task 't3' uses the output of t1 but does not depend on it"],
        id="reference to a task that is not a dependency",
    ),
    pytest.param(
        plan(tool("t1", city="{{t1}}"), summary("s", "t1")),
        None,
        ["Task 't1' uses the output of t1 but does not depend on it"],
        id="reference to itself",
    ),
    pytest.param(
        plan(tool("t1", q="{{t9}}"), summary("s", "t1")),
        None,
        ["Task 't1' references {{t9}}, which is not a task in the plan."],
        id="reference to an unknown task",
    ),
    pytest.param(
        plan(tool("t1", name=""), summary("s", "t1")),
        None,
        ["Task 't1' is a tool task but names no tool."],
        id="tool task without a tool",
    ),
    pytest.param(
        plan(tool("t1", name="mail.send"), summary("s", "t1")),
        None,
        [
            "Task 't1' calls unknown tool 'mail.send'; available tools: "
            "broken.ref, broken.schema, clock.now, echo.say, pairs.put, weather.forecast."
        ],
        id="unknown tool",
    ),
    pytest.param(
        plan(weather("t1", days=3), summary("s", "t1")),
        None,
        ["Task 't1': arguments for weather.forecast do not fit its schema at (arguments)"],
        id="missing required argument",
    ),
    pytest.param(
        plan(weather("t1", city=5), summary("s", "t1")),
        None,
        ["Task 't1': arguments for weather.forecast do not fit its schema at city: 5 is not"],
        id="argument of the wrong type",
    ),
    pytest.param(
        plan(weather("t1", city="Rome", colour="red"), summary("s", "t1")),
        None,
        ["Task 't1': arguments for weather.forecast do not fit its schema at (arguments)"],
        id="unexpected argument",
    ),
    pytest.param(
        plan(tool("t1", name="pairs.put", pair=[1, 2]), summary("s", "t1")),
        None,
        ["Task 't1': arguments for pairs.put do not fit its schema at pair/0: 1 is not of type"],
        id="a draft-07 tuple is enforced",
    ),
    pytest.param(
        plan(
            tool("t1", name="clock.now"),
            weather("t2", "t1", city="Oslo", days="{{t1}}"),
            summary("s", "t2"),
        ),
        None,
        [
            "Task 't2': argument 'days' of weather.forecast wants an integer, but {{t1}} is the "
            "output of clock.now, which gives a JSON object (its output schema)."
        ],
        id="an output schema that cannot fit the argument",
    ),
    pytest.param(
        plan(tool("t1"), weather("t2", "t1", city="Oslo", days="{{t1}} days"), summary("s", "t2")),
        None,
        ["Task 't2': argument 'days' of weather.forecast wants an integer, but '{{t1}} days' puts"],
        id="a reference inside longer text where a number is wanted",
    ),
    pytest.param(
        plan(llm("t1", prompt="  "), summary("s", "t1")),
        None,
        ["Task 't1' is an llm task but has no prompt."],
        id="llm task without prompt",
    ),
]


@pytest.mark.parametrize(("invalid", "max_tasks", "expected"), INVALID)
def test_each_problem_is_reported_as_a_sentence(
    invalid: Plan, max_tasks: int | None, expected: list[str]
) -> None:
    problems = validate_plan(invalid, catalogue=CATALOGUE, max_tasks=max_tasks or DEFAULT_MAX_TASKS)
    assert len(problems) == len(expected), problems
    for fragment, problem in zip(expected, problems, strict=True):
        assert fragment in problem


def test_unknown_tools_are_only_checked_against_a_catalogue() -> None:
    unknown = plan(tool("t1", name="mail.send"), summary("s", "t1"))
    assert validate_plan(unknown) == []
    assert validate_plan(unknown, catalogue={}) == [
        "Task 't1' calls unknown tool 'mail.send'; available tools: none."
    ]


def test_default_limit_is_fifty_tasks() -> None:
    fits = plan(*(tool(f"t{i}") for i in range(49)), summary("s"))
    too_big = plan(*(tool(f"t{i}") for i in range(50)), summary("s"))
    assert validate_plan(fits) == []
    assert validate_plan(too_big) == [
        "The plan has 51 tasks; the limit is 50. Merge or drop steps to fit."
    ]


@pytest.mark.parametrize(
    "deps",
    [
        {"a": ["b"], "b": ["a"]},
        {"a": ["b"], "b": ["c"], "c": ["a"]},
        {"x": [], "a": ["x", "c"], "b": ["a"], "c": ["b"], "d": ["a"]},
    ],
)
def test_a_cycle_is_named_as_a_closed_path_of_real_edges(deps: dict[str, list[str]]) -> None:
    tasks = [tool(task_id, *parents) for task_id, parents in deps.items()]
    problems = validate_plan(plan(*tasks, summary("s")))
    [cycle_problem] = [p for p in problems if "cycle" in p]
    match = re.search(r"cycle: (.+?)\. A task", cycle_problem)
    assert match is not None
    path = match.group(1).split(" -> ")
    assert path[0] == path[-1]
    assert len(set(path)) == len(path) - 1
    for waiter, waited_on in itertools.pairwise(path):
        assert waited_on in deps[waiter]


def test_every_problem_is_reported_at_once() -> None:
    messy = plan(
        tool("t1", "t9"),
        tool("t1"),
        tool("t2", name=""),
        tool("t3", name="mail.send"),
        weather("t4", city=1),
        llm("t5", "t6", prompt="{{t2}}"),
        llm("t6", "t5"),
        summary("s1"),
        summary("s2"),
    )
    problems = validate_plan(messy, catalogue=CATALOGUE, max_tasks=5)
    expected = [
        "The plan has 9 tasks; the limit is 5.",
        "Task id 't1' is used 2 times",
        "2 summary tasks",
        "depends on unknown task(s) t9",
        "names no tool",
        "unknown tool 'mail.send'",
        "do not fit its schema at city",
        "cycle: t5 -> t6 -> t5",
        "Task 't5' uses the output of t2 but does not depend on it",
    ]
    assert len(problems) == len(expected), problems
    for fragment in expected:
        assert any(fragment in problem for problem in problems), fragment
