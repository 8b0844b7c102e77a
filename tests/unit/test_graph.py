from __future__ import annotations

import pytest

from scheduler.dag.graph import ancestors, critical_path_priorities, find_cycle, topological_order

Deps = dict[str, list[str]]

DIAMOND: Deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


@pytest.mark.parametrize(
    ("deps", "expected"),
    [
        ({}, None),
        ({"a": []}, None),
        (DIAMOND, None),
        ({"a": ["zzz"]}, None),
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"x": [], "a": ["x", "b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["b"]}, ["b", "c", "b"]),
    ],
    ids=["empty", "single", "diamond", "unknown dep ignored", "self", "pair", "triangle", "tail"],
)
def test_find_cycle(deps: Deps, expected: list[str] | None) -> None:
    assert find_cycle(deps) == expected


def test_find_cycle_on_a_long_chain_does_not_recurse() -> None:
    deps = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(20_000)}
    assert find_cycle(deps) is None
    deps["t0"] = ["t19999"]
    cycle = find_cycle(deps)
    assert cycle is not None
    assert len(cycle) == 20_001


@pytest.mark.parametrize(
    ("deps", "task", "expected"),
    [
        (DIAMOND, "a", set()),
        (DIAMOND, "d", {"a", "b", "c"}),
        (DIAMOND, "b", {"a"}),
        ({"a": ["b"], "b": ["a"]}, "a", {"a", "b"}),
        ({"a": ["ghost"]}, "a", {"ghost"}),
        (DIAMOND, "not there", set()),
    ],
)
def test_ancestors(deps: Deps, task: str, expected: set[str]) -> None:
    assert ancestors(deps, task) == expected


@pytest.mark.parametrize(
    "deps",
    [
        DIAMOND,
        {"d": ["b", "c"], "c": ["a"], "b": ["a"], "a": []},
        {f"t{i}": [f"t{j}" for j in range(i) if (i * j) % 3 == 1] for i in range(30)},
    ],
)
def test_topological_order_puts_dependencies_first(deps: Deps) -> None:
    order = topological_order(deps)
    assert sorted(order) == sorted(deps)
    position = {task: index for index, task in enumerate(order)}
    for task, parents in deps.items():
        for parent in parents:
            assert position[parent] < position[task]


def test_topological_order_keeps_mapping_order_among_ties() -> None:
    assert topological_order({"c": [], "a": [], "b": []}) == ["c", "a", "b"]


def test_topological_order_rejects_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        topological_order({"a": ["b"], "b": ["a"]})


@pytest.mark.parametrize(
    ("deps", "weight", "expected"),
    [
        (DIAMOND, {}, {"a": 3.0, "b": 2.0, "c": 2.0, "d": 1.0}),
        (DIAMOND, {"b": 5.0}, {"a": 7.0, "b": 6.0, "c": 2.0, "d": 1.0}),
        (
            {"a": [], "b": [], "long1": ["a"], "long2": ["long1"], "s": ["long2", "b"]},
            {"a": 1, "b": 1, "long1": 3, "long2": 3, "s": 3},
            {"a": 10.0, "b": 4.0, "long1": 9.0, "long2": 6.0, "s": 3.0},
        ),
        ({"lonely": []}, {"lonely": 0.5}, {"lonely": 0.5}),
    ],
    ids=["unit weights", "heavy branch", "chain beats the short task", "single"],
)
def test_critical_path_priorities(
    deps: Deps, weight: dict[str, float], expected: dict[str, float]
) -> None:
    assert critical_path_priorities(deps, weight) == expected
