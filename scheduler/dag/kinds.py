"""What each task kind means to the engine, declared once.

Adding a kind is: a value in `TaskKind`, one `KindRules` entry here, and an executor given to the
Engine (which refuses to start without one). Validation, priorities and readiness read these
rules instead of testing for particular kinds, so nothing else needs to learn the new kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from scheduler.dag.plan import TaskKind


class Needs(StrEnum):
    """The plan field a kind's task cannot do without."""

    TOOL = "tool"
    PROMPT = "prompt"
    NOTHING = "nothing"


@dataclass(frozen=True, kw_only=True)
class KindRules:
    weight: float
    """Relative cost before anything is known of this task: LLM calls are slower than most tools."""
    needs: Needs
    """The field the task must have; a kind that does not need `tool` must not name one."""
    joins_failures: bool = False
    """Runs even when a dependency failed or was skipped, and is told what failed (the summary)."""
    exactly_one: bool = False
    """A plan holds exactly one task of this kind."""
    reruns_on_retry: bool = False
    """A manual retry runs it again even when it succeeded, as it sums up the others."""
    final_step: bool = False
    """Decides whether the results answer the goal or another round is needed (AnotherRound);
    it waits while the plan is being revised, and runs again after each new round."""


KINDS: Mapping[TaskKind, KindRules] = MappingProxyType(
    {
        TaskKind.TOOL: KindRules(weight=1.0, needs=Needs.TOOL),
        TaskKind.LLM: KindRules(weight=3.0, needs=Needs.PROMPT),
        TaskKind.SUMMARY: KindRules(
            weight=3.0,
            needs=Needs.NOTHING,
            joins_failures=True,
            exactly_one=True,
            reruns_on_retry=True,
            final_step=True,
        ),
    }
)

_undeclared = set(TaskKind) - set(KINDS)
if _undeclared:  # pragma: no cover - a kind added to the enum but not here fails at import
    raise RuntimeError(f"task kinds without rules in scheduler.dag.kinds: {sorted(_undeclared)}")


def rules(kind: TaskKind) -> KindRules:
    """The rules of `kind`."""
    return KINDS[kind]
