"""What the engine hands an executor, and what an executor is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True, kw_only=True)
class PlanRequest:
    run_id: str
    goal: str
    history: tuple[History, ...]
    record_usage: UsageSink


class Planner(Protocol):
    async def __call__(self, request: PlanRequest) -> Plan:
        """Return a valid plan, or raise PlanningFailed with a message for the user."""
        ...
