"""Expected task durations for critical-path priorities: learned per tool, else by kind."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from scheduler.dag.kinds import KINDS, rules
from scheduler.dag.plan import PlanTask, TaskKind

KIND_WEIGHT: Mapping[TaskKind, float] = MappingProxyType(
    {kind: kind_rules.weight for kind, kind_rules in KINDS.items()}
)
"""Seconds assumed before anything is known: LLM calls are slower than most tool calls."""

WINDOW = 20
"""Recent successful attempts per tool that its mean is taken over."""


def estimate_by_kind(task: PlanTask) -> float:
    """Relative cost of a task before it has run: LLM calls are slower than most tool calls."""
    return rules(task.kind).weight


class LearnedDurations:
    """Per-tool means of the most recent successful attempts, in seconds."""

    def __init__(self, window: int = WINDOW) -> None:
        self._window = window
        self._seen: dict[str, deque[float]] = {}

    def observe(self, task: PlanTask, seconds: float) -> None:
        """Count one successful attempt of a tool task."""
        if task.kind is TaskKind.TOOL and task.tool:
            self._add(task.tool, seconds)

    def load(self, samples: Iterable[tuple[str, float]]) -> None:
        """Learn from stored (tool, seconds) pairs given newest first."""
        for tool, seconds in reversed(list(samples)):
            self._add(tool, seconds)

    def mean(self, tool: str) -> float | None:
        seen = self._seen.get(tool)
        return sum(seen) / len(seen) if seen else None

    def estimate(self, task: PlanTask) -> float:
        """The tool's learned mean duration, or the kind's weight when nothing is known."""
        if task.kind is TaskKind.TOOL and task.tool:
            learned = self.mean(task.tool)
            if learned is not None:
                return learned
        return estimate_by_kind(task)

    def _add(self, tool: str, seconds: float) -> None:
        seen = self._seen.setdefault(tool, deque(maxlen=self._window))
        seen.append(max(0.0, seconds))
