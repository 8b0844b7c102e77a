from __future__ import annotations

from typing import Any

import pytest

from scheduler.dag.refs import references_in, substitute


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("no references", set()),
        ("{{t1}}", {"t1"}),
        ("{{ t1 }} and {{t2}} and {{t1}}", {"t1", "t2"}),
        ("{{step_2.a-b}}", {"step_2.a-b"}),
        ("{t1} {{}} {{t 1}} {{t1}", set()),
        (["{{t1}}", ["{{t2}}"], ("{{t3}}",)], {"t1", "t2", "t3"}),
        ({"{{key}}": "{{t1}}", "nested": {"deep": ["x {{t2}}"]}}, {"t1", "t2"}),
        (42, set()),
        (None, set()),
        ({"n": 1.5, "flag": True}, set()),
    ],
)
def test_references_in(value: Any, expected: set[str]) -> None:
    assert references_in(value) == expected


OUTPUTS = {"t1": "sunny", "t2": "rain {{t1}}"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{{t1}}", "sunny"),
        ("Tokyo is {{ t1 }}, Paris has {{t2}}.", "Tokyo is sunny, Paris has rain {{t1}}."),
        ("{{t9}} stays", "{{t9}} stays"),
        (
            {"city": "{{t1}}", "n": 3, "list": ["{{t2}}", 4]},
            {"city": "sunny", "n": 3, "list": ["rain {{t1}}", 4]},
        ),
        (("{{t1}}",), ["sunny"]),
        ({"{{t1}}": "key untouched"}, {"{{t1}}": "key untouched"}),
        (None, None),
        (7, 7),
    ],
    ids=[
        "whole string",
        "inside text; an output is not substituted again",
        "unknown reference left as written",
        "nested values",
        "tuple becomes list",
        "keys are not substituted",
        "none",
        "number",
    ],
)
def test_substitute(value: Any, expected: Any) -> None:
    assert substitute(value, OUTPUTS) == expected


def test_substitute_does_not_change_its_input() -> None:
    args = {"city": "{{t1}}", "nested": ["{{t1}}"]}
    substitute(args, OUTPUTS)
    assert args == {"city": "{{t1}}", "nested": ["{{t1}}"]}
