"""Graph facts about a plan: cycles, ancestors, critical-path priorities. Pure functions."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One dependency cycle as a closed path [a, b, ..., a], or None. Unknown deps are ignored."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    for root in deps:
        if colour[root] != white:
            continue
        path: list[str] = [root]
        stack = [iter(deps[root])]
        colour[root] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                stack.pop()
                continue
            if nxt not in colour:
                continue
            if colour[nxt] == grey:
                return [*path[path.index(nxt) :], nxt]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append(iter(deps[nxt]))
    return None


def ancestors(deps: Mapping[str, Sequence[str]], task_id: str) -> set[str]:
    """Every task that `task_id` depends on, directly or transitively (cycle-safe)."""
    seen: set[str] = set()
    todo = list(deps.get(task_id, ()))
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(deps.get(current, ()))
    return seen


def topological_order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Tasks so that each comes after its dependencies; ties keep the mapping's order."""
    indegree = dict.fromkeys(deps, 0)
    children: dict[str, list[str]] = {task: [] for task in deps}
    for task, parents in deps.items():
        for parent in parents:
            if parent in children:
                children[parent].append(task)
                indegree[task] += 1
    ready = deque(task for task, count in indegree.items() if count == 0)
    order: list[str] = []
    while ready:
        task = ready.popleft()
        order.append(task)
        for child in children[task]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) != len(deps):
        raise ValueError("the graph has a cycle")
    return order


def critical_path_priorities(
    deps: Mapping[str, Sequence[str]], weight: Mapping[str, float]
) -> dict[str, float]:
    """For each task, the heaviest path from it to any sink, its own weight included.

    Among ready tasks the one with the largest value goes first: that is the critical-path
    list-scheduling heuristic (HLFET), which keeps makespan near the critical path.
    """
    children: dict[str, list[str]] = {task: [] for task in deps}
    for task, parents in deps.items():
        for parent in parents:
            if parent in children:
                children[parent].append(task)
    rank: dict[str, float] = {}
    for task in reversed(topological_order(deps)):
        below = max((rank[child] for child in children[task]), default=0.0)
        rank[task] = weight.get(task, 1.0) + below
    return rank
