"""Tool schemas: checked in the dialect they name, and read for the JSON types they want where.

Pure functions. A schema names its dialect with `$schema`; zod-based servers (most npm ones) say
draft-07, where a tuple is `items: [...]`, which 2020-12 rejects as malformed. Checking every
schema as 2020-12 therefore treated such schemas as broken and silently skipped their checks.
A schema that names no dialect is read as 2020-12, the MCP default.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing.exceptions import Unresolvable

JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_MAX_REF_HOPS = 32

Path = tuple[str | int, ...]


class BrokenSchema(Exception):
    """A tool's schema cannot be used to check anything; the message says why."""


def schema_validator(schema: Mapping[str, Any]) -> Validator:
    """A validator for `schema` in the dialect its `$schema` names (2020-12 when it names none).

    Raises BrokenSchema when the schema is not valid in that dialect.
    """
    return _cached_validator(json.dumps(schema, sort_keys=True, default=str))


@lru_cache(maxsize=512)
def _cached_validator(encoded: str) -> Validator:
    # Keyed by the schema's text: catalogues are re-read for every plan and every tool call, and
    # checking a schema against its metaschema is the expensive part.
    schema = json.loads(encoded)
    if not isinstance(schema, dict):
        raise BrokenSchema("the schema is not a JSON object")
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise BrokenSchema(f"{error.message} (at {where}, read as {_dialect(cls)})") from None
    return cls(schema)


def _dialect(cls: type[Validator]) -> str:
    uri = str(cls.META_SCHEMA.get("$schema", cls.META_SCHEMA.get("$id", "")))
    for name in ("draft-03", "draft-04", "draft-06", "draft-07", "2019-09", "2020-12"):
        if name in uri:
            return f"JSON Schema {name}"
    return "JSON Schema"


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why `schema` cannot be used, or None when it can."""
    try:
        schema_validator(schema)
    except BrokenSchema as error:
        return str(error)
    return None


def schema_errors(schema: Mapping[str, Any], instance: Any) -> list[ValidationError]:
    """Every way `instance` does not fit `schema`; raises BrokenSchema for an unusable schema."""
    validator = schema_validator(schema)
    try:
        return list(validator.iter_errors(instance))
    except Unresolvable as error:
        raise BrokenSchema(f"it refers to {error.ref!r}, which it does not define") from None


def types_at(schema: Any, path: Path) -> frozenset[str] | None:
    """The JSON types `schema` allows for the value at `path` of an instance; None if any.

    `integer` stands for itself (a subset of `number`). Local `$ref`s are followed; `anyOf` and
    `oneOf` allow the union of their branches, `allOf` the intersection.
    """
    return _union(_types_of(candidate, schema) for candidate in _schemas_at(schema, schema, path))


def output_types(output_schema: Any) -> frozenset[str] | None:
    """The JSON types a tool's text output can parse to, given its `outputSchema`; None if any.

    A tool's text may be its structured content as JSON (an object), or, for wrappers such as the
    Python SDK's `{"result": x}` or server-filesystem's `{"content": text}`, the one wrapped value:
    both readings are allowed. A value that may be a string may hold any JSON text, so it says
    nothing (None).
    """
    whole = _types_of(output_schema, output_schema)
    resolved = _resolve(output_schema, output_schema)
    properties = resolved.get("properties") if isinstance(resolved, dict) else None
    types = whole
    if isinstance(properties, dict) and len(properties) == 1:
        (inner,) = properties.values()
        types = _union([whole, _types_of(inner, output_schema)])
    return None if types is None or "string" in types else types


def types_fit(wanted: frozenset[str], possible: frozenset[str]) -> bool:
    """Whether a value of one of the `possible` types can be one of the `wanted` types."""
    if wanted & possible:
        return True
    # An integer is a number, and a number may happen to be integral.
    return bool({"number", "integer"} & wanted and {"number", "integer"} & possible)


def describe_types(types: frozenset[str]) -> str:
    """`a number or null`, for messages."""
    words = {
        "string": "text",
        "number": "a number",
        "integer": "an integer",
        "boolean": "true or false",
        "object": "a JSON object",
        "array": "a JSON array",
        "null": "null",
    }
    order = ["integer", "number", "boolean", "array", "object", "string", "null"]
    return " or ".join(words[t] for t in order if t in types) or "nothing (the schema allows none)"


def _union(
    parts: Iterator[frozenset[str] | None] | Sequence[frozenset[str] | None],
) -> frozenset[str] | None:
    found: set[str] = set()
    for part in parts:
        if part is None:
            return None
        found |= part
    return frozenset(found)


def _resolve(schema: Any, root: Any) -> Any:
    """`schema` with local `$ref`s followed; a ref we cannot follow reads as `{}` (anything)."""
    for _ in range(_MAX_REF_HOPS):
        if not (isinstance(schema, dict) and isinstance(schema.get("$ref"), str)):
            return schema
        ref: str = schema["$ref"]
        if not ref.startswith("#"):
            return {}
        target: Any = root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                return {}
        if len(schema) > 1:
            # Siblings of $ref (allowed since 2019-09) narrow it; keep both.
            return {"allOf": [target, {k: v for k, v in schema.items() if k != "$ref"}]}
        schema = target
    return {}


def _types_of(schema: Any, root: Any) -> frozenset[str] | None:
    schema = _resolve(schema, root)
    if schema is True or schema == {} or not isinstance(schema, dict):
        return None if schema is not False else frozenset()
    found: frozenset[str] | None = None

    def narrow(types: frozenset[str] | None) -> None:
        nonlocal found
        if types is not None:
            found = types if found is None else _intersect(found, types)

    declared = schema.get("type")
    if isinstance(declared, str):
        narrow(frozenset({declared}) & JSON_TYPES)
    elif isinstance(declared, list):
        narrow(frozenset(t for t in declared if isinstance(t, str)) & JSON_TYPES)
    if "const" in schema:
        narrow(frozenset({_type_of(schema["const"])}))
    if isinstance(schema.get("enum"), list):
        narrow(frozenset(_type_of(value) for value in schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            narrow(_union([_types_of(branch, root) for branch in schema[key]]))
    if isinstance(schema.get("allOf"), list):
        for branch in schema["allOf"]:
            narrow(_types_of(branch, root))
    return found


def _intersect(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    both = set(a & b)
    # integer narrows number, whichever side says it.
    if ("integer" in a and "number" in b) or ("integer" in b and "number" in a):
        both.add("integer")
    return frozenset(both)


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _schemas_at(schema: Any, root: Any, path: Path) -> list[Any]:
    """Every sub-schema that may govern the value at `path` (several through anyOf/oneOf)."""
    schema = _resolve(schema, root)
    if not path:
        return [schema]
    if not isinstance(schema, dict):
        return [{}] if schema is not False else [False]
    key, rest = path[0], path[1:]
    found: list[Any] = []
    for combinator in ("anyOf", "oneOf", "allOf"):
        for branch in (
            schema.get(combinator, []) if isinstance(schema.get(combinator), list) else []
        ):
            found.extend(_schemas_at(branch, root, path))
    child = _child(schema, key)
    if child is not None:
        found.extend(_schemas_at(child, root, rest))
    return found or [{}]


def _child(schema: dict[str, Any], key: str | int) -> Any:
    if isinstance(key, str):
        properties = schema.get("properties")
        if isinstance(properties, dict) and key in properties:
            return properties[key]
        extra = schema.get("additionalProperties")
        return extra if isinstance(extra, dict) else None
    prefix = schema.get("prefixItems")
    items = schema.get("items")
    if isinstance(prefix, list):
        return prefix[key] if key < len(prefix) else items if isinstance(items, dict) else None
    if isinstance(items, list):  # draft-07 and earlier: a tuple
        extra = schema.get("additionalItems")
        return items[key] if key < len(items) else extra if isinstance(extra, dict) else None
    return items if isinstance(items, dict) else None
