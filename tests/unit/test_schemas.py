from __future__ import annotations

from typing import Any

import pytest

from scheduler.dag.schemas import (
    BrokenSchema,
    describe_types,
    output_types,
    schema_errors,
    schema_problem,
    types_at,
    types_fit,
)

DRAFT7 = "http://json-schema.org/draft-07/schema#"
TUPLE_07 = {
    "$schema": DRAFT7,
    "type": "object",
    "properties": {"pair": {"type": "array", "items": [{"type": "number"}, {"type": "string"}]}},
}


@pytest.mark.parametrize(
    ("schema", "instance", "messages"),
    [
        pytest.param(TUPLE_07, {"pair": [1, "a"]}, [], id="draft-07 tuple that fits"),
        pytest.param(
            TUPLE_07,
            {"pair": ["a", 1]},
            ["'a' is not of type 'number'", "1 is not of type 'string'"],
            id="draft-07 tuple is enforced, not ignored",
        ),
        pytest.param(
            {**TUPLE_07, "$schema": "http://json-schema.org/draft-07/schema"},
            {"pair": ["a", "b"]},
            ["'a' is not of type 'number'"],
            id="draft-07 named without the trailing #",
        ),
        pytest.param(
            {"type": "object", "properties": {"n": {"type": "integer"}}},
            {"n": "x"},
            ["'x' is not of type 'integer'"],
            id="no $schema reads as 2020-12",
        ),
        pytest.param(
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "array",
                "prefixItems": [{"type": "integer"}],
                "items": False,
            },
            [1, 2],
            ["Expected at most 1 item but found 1 extra: 2"],
            id="2020-12 prefixItems",
        ),
        pytest.param(
            {"$schema": "https://example.com/own-dialect", "type": "integer"},
            "x",
            ["'x' is not of type 'integer'"],
            id="an unknown dialect reads as 2020-12, quietly",
        ),
        pytest.param(
            {
                "$schema": "http://json-schema.org/draft-04/schema#",
                "type": "integer",
                "minimum": 1,
                "exclusiveMinimum": True,
            },
            1,
            ["1 is less than or equal to the minimum of 1"],
            id="draft-04 boolean exclusiveMinimum",
        ),
    ],
)
def test_arguments_are_checked_in_the_dialect_the_schema_names(
    schema: dict[str, Any], instance: Any, messages: list[str]
) -> None:
    assert [error.message for error in schema_errors(schema, instance)] == messages


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object"}, None),
        (TUPLE_07, None),
        (
            {"type": "object", "properties": {"p": {"items": [{"type": "number"}]}}},
            "[{'type': 'number'}] is not of type 'object', 'boolean' (at properties/p/items, "
            "read as JSON Schema 2020-12)",
        ),
        (
            {"$schema": DRAFT7, "type": "no-such-type"},
            "'no-such-type' is not valid under any of the given schemas (at type, read as "
            "JSON Schema draft-07)",
        ),
    ],
    ids=["fine", "draft-07 tuple", "tuple without a dialect is broken", "bad type"],
)
def test_schema_problem_says_why_a_schema_cannot_be_used(
    schema: dict[str, Any], problem: str | None
) -> None:
    assert schema_problem(schema) == problem


def test_an_unresolvable_reference_is_a_broken_schema() -> None:
    with pytest.raises(BrokenSchema, match="/\\$defs/missing"):
        schema_errors({"$ref": "#/$defs/missing"}, {})


OBJECT = {
    "type": "object",
    "$defs": {"Count": {"type": "integer", "minimum": 0}},
    "properties": {
        "count": {"$ref": "#/$defs/Count"},
        "ratio": {"type": ["number", "null"]},
        "text": {"type": "string"},
        "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "flag": {"enum": [True, False]},
        "mode": {"const": "fast"},
        "values": {"type": "array", "items": {"type": "number"}},
        "tuple": {
            "type": "array",
            "prefixItems": [{"type": "boolean"}],
            "items": {"type": "object"},
        },
        "nested": {"type": "object", "properties": {"deep": {"type": "array"}}},
        "free": {},
        "both": {"allOf": [{"type": ["number", "string"]}, {"type": "integer"}]},
    },
    "additionalProperties": {"type": "boolean"},
}


@pytest.mark.parametrize(
    ("path", "types"),
    [
        (("count",), {"integer"}),
        (("ratio",), {"number", "null"}),
        (("text",), {"string"}),
        (("either",), {"integer", "string"}),
        (("flag",), {"boolean"}),
        (("mode",), {"string"}),
        (("values",), {"array"}),
        (("values", 3), {"number"}),
        (("tuple", 0), {"boolean"}),
        (("tuple", 5), {"object"}),
        (("nested", "deep"), {"array"}),
        (("free",), None),
        (("both",), {"integer"}),
        (("unlisted",), {"boolean"}),
        ((), {"object"}),
    ],
)
def test_types_at(path: tuple[str | int, ...], types: set[str] | None) -> None:
    expected = frozenset(types) if types is not None else None
    assert types_at(OBJECT, path) == expected


def test_types_at_follows_draft07_tuples_and_stops_at_unknown_refs() -> None:
    assert types_at(TUPLE_07, ("pair", 1)) == frozenset({"string"})
    assert types_at({"properties": {"x": {"$ref": "other.json#/x"}}}, ("x",)) is None


@pytest.mark.parametrize(
    ("schema", "types"),
    [
        ({"type": "object", "properties": {"a": {}, "b": {}}}, {"object"}),
        ({"type": "object", "properties": {"result": {"type": "integer"}}}, {"object", "integer"}),
        ({"type": "object", "properties": {"content": {"type": "string"}}}, None),
        ({"type": "object", "properties": {"items": {"type": "array"}}}, {"object", "array"}),
        ({"type": "object", "properties": {"result": {}}}, None),
        ({}, None),
    ],
    ids=[
        "object",
        "SDK result wrapper",
        "text may hold any JSON",
        "array wrapper",
        "untyped wrapper",
        "anything",
    ],
)
def test_output_types(schema: dict[str, Any], types: set[str] | None) -> None:
    assert output_types(schema) == (frozenset(types) if types is not None else None)


@pytest.mark.parametrize(
    ("wanted", "possible", "fits"),
    [
        ({"number"}, {"integer"}, True),
        ({"integer"}, {"number"}, True),
        ({"number"}, {"object"}, False),
        ({"array", "null"}, {"null"}, True),
        ({"boolean"}, {"string"}, False),
    ],
)
def test_types_fit(wanted: set[str], possible: set[str], fits: bool) -> None:
    assert types_fit(frozenset(wanted), frozenset(possible)) is fits


def test_describe_types() -> None:
    assert describe_types(frozenset({"null", "number"})) == "a number or null"
    assert describe_types(frozenset({"object"})) == "a JSON object"
