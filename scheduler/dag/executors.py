"""What the engine hands an executor, and what an executor is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from scheduler.dag.drafts import DraftSink, ignore_draft
from scheduler.dag.plan import Plan, PlanTask
from scheduler.dag.state import TaskState

UsageSink = Callable[[str, int, int], Awaitable[None]]
"""Records one LLM call's token usage: (model, prompt_tokens, completion_tokens)."""


@dataclass(frozen=True, kw_only=True)
class TaskContext:
    run_id: str
    goal: str
    task: PlanTask
    """The task with every `{{tN}}` in its args and prompt already replaced by tN's output."""
    attempt: int
    results: Mapping[str, TaskState]
    """Every task of the run as it stands now (read-only); a summary reads failures from here."""
    record_usage: UsageSink
    emit_text: DraftSink = ignore_draft
    """Hands on output text as it is written, for front ends that show it live (never stored)."""
    replans_left: int = 0
    """Further rounds the final step may still ask for (by raising AnotherRound); at 0 it must
    answer with what it has."""

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and restarts, for executors whose effects must not repeat."""
        return f"{self.run_id}:{self.task.id}"


class Executor(Protocol):
    async def __call__(self, context: TaskContext) -> str:
        """Do the task and return its output text; raise TaskError (retryable or not) on failure."""
        ...


@dataclass(frozen=True, kw_only=True)
class History:
    """An earlier run in the same conversation, for follow-up goals."""

    goal: str
    summary: str | None


class RevisionCause(StrEnum):
    REPLAN = "replan"
    """The final step asked for another round."""
    STEER = "steer"
    """Someone wrote in the run's thread while it was running."""


@dataclass(frozen=True, kw_only=True)
class Revision:
    """A running plan to revise (scheduler.dag.revision says what may change)."""

    cause: RevisionCause
    text: str
    """The final step's reason for another round, or the steering message."""
    plan: Plan
    tasks: tuple[TaskState, ...]
    """Every task as it stands, with its status and output or error."""


@dataclass(frozen=True, kw_only=True)
class PlanRequest:
    run_id: str
    goal: str
    history: tuple[History, ...]
    record_usage: UsageSink
    revision: Revision | None = None
    """Set to revise a running plan: the answer is then the part of the plan still to run."""


class Planner(Protocol):
    async def __call__(self, request: PlanRequest) -> Plan:
        """Return a valid plan, or raise PlanningFailed with a message for the user.

        For a revision, the plan proposed for the part still to run, valid once merged
        (scheduler.dag.revision.merge_revision) into the running one."""
        ...
