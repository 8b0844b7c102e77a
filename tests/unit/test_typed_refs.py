from __future__ import annotations

from typing import Any

import pytest

from scheduler.dag.catalogue import ToolSpec
from scheduler.dag.plan import PlanTask
from scheduler.dag.typed_refs import parse_output, reference_type_problems, typed_arguments
from scheduler.errors import TaskError
from tests.support.plans import llm, tool

SCHEMA = {
    "type": "object",
    "properties": {
        "n": {"type": "number"},
        "count": {"type": "integer", "minimum": 0},
        "flag": {"type": "boolean"},
        "options": {"type": "object"},
        "values": {"type": "array", "items": {"type": "number"}},
        "label": {"type": "string"},
        "maybe": {"type": ["integer", "string"]},
        "free": {},
        "nested": {"type": "object", "properties": {"limit": {"type": "integer"}}},
    },
}
OUTPUTS = {
    "t1": "42",
    "t2": " [1, 2.5]\n",
    "t3": "true",
    "t4": '```json\n{"a": 1}\n```',
    "t5": "sunny",
    "t6": "-3",
    "t7": "3.5",
    "t8": '["a"]',
}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"n": "{{t1}}"}, {"n": 42}),
        ({"n": "{{ t7 }}"}, {"n": 3.5}),
        ({"count": "{{t1}}"}, {"count": 42}),
        ({"flag": "{{t3}}"}, {"flag": True}),
        ({"options": "{{t4}}"}, {"options": {"a": 1}}),
        ({"values": "{{t2}}"}, {"values": [1, 2.5]}),
        ({"values": ["{{t1}}", "{{t7}}"]}, {"values": [42, 3.5]}),
        ({"nested": {"limit": "{{t1}}"}}, {"nested": {"limit": 42}}),
        ({"label": "{{t1}}"}, {"label": "42"}),
        ({"maybe": "{{t1}}"}, {"maybe": "42"}),
        ({"free": "{{t2}}"}, {"free": " [1, 2.5]\n"}),
        ({"label": "It is {{t5}} and {{t1}}"}, {"label": "It is sunny and 42"}),
        ({"n": "{{t9}}"}, {"n": "{{t9}}"}),
        ({"n": 7, "label": "x"}, {"n": 7, "label": "x"}),
    ],
    ids=[
        "number",
        "number, spaces inside the braces",
        "integer",
        "boolean",
        "object inside a code fence",
        "array, whitespace around",
        "array items",
        "nested property",
        "text stays text",
        "a schema that also takes text gets text",
        "an unconstrained argument gets text",
        "references inside longer strings stay text",
        "an unknown reference is left as written",
        "no references",
    ],
)
def test_typed_arguments(args: dict[str, Any], expected: dict[str, Any]) -> None:
    assert typed_arguments(args, OUTPUTS, tool="x.y", schema=SCHEMA) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"n": "{{t5}}"},
            "Argument 'n' of x.y wants a number, but the output of t5 is not JSON: 'sunny'.",
        ),
        (
            {"count": "{{t6}}"},
            "Argument 'count' of x.y wants an integer, but the output of t6 does not fit "
            "(-3 is less than the minimum of 0): '-3'.",
        ),
        (
            {"count": "{{t7}}"},
            "Argument 'count' of x.y wants an integer, but the output of t7 does not fit "
            "(3.5 is not of type 'integer'): '3.5'.",
        ),
        (
            {"values": "{{t8}}"},
            "Argument 'values' of x.y wants a JSON array, but the output of t8 does not fit "
            "('a' is not of type 'number'): '[\"a\"]'.",
        ),
        (
            {"flag": "{{t2}}"},
            "Argument 'flag' of x.y wants true or false, but the output of t2 does not fit "
            "([1, 2.5] is not of type 'boolean'): '[1, 2.5]'.",
        ),
    ],
    ids=["not JSON", "fails a constraint", "not an integer", "wrong items", "wrong type"],
)
def test_an_output_that_does_not_fit_is_a_clear_task_error(
    args: dict[str, Any], message: str
) -> None:
    with pytest.raises(TaskError) as raised:
        typed_arguments(args, OUTPUTS, tool="x.y", schema=SCHEMA)
    assert str(raised.value) == message
    assert raised.value.retryable is False


def test_a_long_output_is_quoted_as_a_short_excerpt() -> None:
    long = "word " * 100
    with pytest.raises(TaskError) as raised:
        typed_arguments({"n": "{{t1}}"}, {"t1": long}, tool="x.y", schema=SCHEMA)
    quoted = str(raised.value).split("not JSON: ", 1)[1]
    assert len(quoted) <= 84
    assert quoted.endswith("…'.")


def test_typed_arguments_do_not_change_their_input() -> None:
    args = {"values": ["{{t1}}"], "n": "{{t1}}"}
    typed_arguments(args, OUTPUTS, tool="x.y", schema=SCHEMA)
    assert args == {"values": ["{{t1}}"], "n": "{{t1}}"}


def test_parse_output_rejects_text() -> None:
    with pytest.raises(ValueError, match="Expecting value"):
        parse_output("about 42")


NUMBER_TOOL = ToolSpec(name="calc.double", input_schema=SCHEMA)
OBJECT_OUT = ToolSpec(
    name="time.now",
    output_schema={"type": "object", "properties": {"iso": {"type": "string"}, "dst": {}}},
)
WRAPPED_INT = ToolSpec(
    name="calc.count",
    output_schema={"type": "object", "properties": {"result": {"type": "integer"}}},
)
NO_SCHEMA = ToolSpec(name="echo.say")
CATALOGUE = {spec.name: spec for spec in (NUMBER_TOOL, OBJECT_OUT, WRAPPED_INT, NO_SCHEMA)}


def double(**args: Any) -> PlanTask:
    return tool("t2", "t1", name="calc.double", **args)


@pytest.mark.parametrize(
    ("source", "task", "problems"),
    [
        (tool("t1", name="calc.count"), double(n="{{t1}}"), []),
        (tool("t1", name="echo.say"), double(n="{{t1}}"), []),
        (llm("t1"), double(values="{{t1}}"), []),
        (tool("t1", name="time.now"), double(label="{{t1}}"), []),
        (tool("t1", name="time.now"), double(options="{{t1}}"), []),
        (
            tool("t1", name="time.now"),
            double(n="{{t1}}"),
            [
                "Task 't2': argument 'n' of calc.double wants a number, but {{t1}} is the output "
                "of time.now, which gives a JSON object (its output schema). Add an llm task "
                "that extracts a number from t1's output and reference that task instead."
            ],
        ),
        (
            tool("t1", name="echo.say"),
            double(count="{{t1}} items"),
            [
                "Task 't2': argument 'count' of calc.double wants an integer, but '{{t1}} items' "
                "puts a reference inside longer text, which is passed as text. Write exactly one "
                'reference such as "{{t1}}" as the whole value to pass that output as JSON, or '
                "compute the value in an llm task first."
            ],
        ),
    ],
    ids=[
        "wrapped integer into a number",
        "no output schema: known at run time",
        "llm output: known at run time",
        "object into text",
        "object into object",
        "object into a number",
        "reference inside longer text in a number argument",
    ],
)
def test_reference_type_problems(source: PlanTask, task: PlanTask, problems: list[str]) -> None:
    tasks = {source.id: source, task.id: task}
    assert reference_type_problems(task, NUMBER_TOOL, tasks, CATALOGUE) == problems
