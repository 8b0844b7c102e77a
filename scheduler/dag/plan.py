"""The plan format, defined here: what the planner produces and the engine runs."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TaskKind(StrEnum):
    TOOL = "tool"
    LLM = "llm"
    SUMMARY = "summary"


class PlanTask(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64)
    kind: TaskKind
    title: str = Field(min_length=1)
    tool: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = None
    deps: list[str] = Field(default_factory=list)


class PlanRound(BaseModel):
    """A planning round after the first: why it was needed and the tasks it added."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str
    tasks: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    tasks: list[PlanTask]
    rounds: list[PlanRound] = Field(default_factory=list)
    """Rounds after the first (replanning); tasks listed in none belong to round 1."""

    def round_of(self, task_id: str) -> int:
        """The round (1, 2, ...) that added a task."""
        for number, planned in enumerate(self.rounds, start=2):
            if task_id in planned.tasks:
                return number
        return 1

    def task(self, task_id: str) -> PlanTask:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)
