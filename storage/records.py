"""What the store keeps: statuses, rows and committed events, as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)


class RunStatus(StrEnum):
    PLANNING = "planning"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.PLANNING, RunStatus.RUNNING)


class EventKind(StrEnum):
    RUN_CREATED = "run_created"
    RUN_PLANNED = "run_planned"
    RUN_RESUMED = "run_resumed"
    TASK_STARTED = "task_started"
    TASK_RETRIED = "task_retried"
    TASK_SUCCEEDED = "task_succeeded"
    TASK_FAILED = "task_failed"
    TASK_SKIPPED = "task_skipped"
    TASK_CANCELLED = "task_cancelled"
    RUN_FINISHED = "run_finished"
    RUN_CANCELLED = "run_cancelled"


@dataclass(frozen=True, kw_only=True)
class Event:
    """One committed transition. `seq` is its position in the append-only log."""

    seq: int
    run_id: str
    kind: EventKind
    at: float
    task_id: str | None = None
    data: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Transition:
    """A state change to commit: a run's status, a task's status, or neither (event only)."""

    run_id: str
    kind: EventKind
    task_id: str | None = None
    task_status: TaskStatus | None = None
    run_status: RunStatus | None = None
    output: str | None = None
    error: str | None = None
    new_attempt: bool = False
    data: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    id: str
    goal: str
    status: RunStatus
    created_at: float
    updated_at: float
    plan: dict[str, Any] | None = None
    error: str | None = None
    requester: str | None = None
    thread_key: str | None = None
    parent_run_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TaskRecord:
    run_id: str
    id: str
    position: int
    spec: dict[str, Any]
    status: TaskStatus
    attempts: int
    started_at: float | None
    finished_at: float | None
    output: str | None
    error: str | None


@dataclass(frozen=True, kw_only=True)
class NewRun:
    goal: str
    requester: str | None = None
    thread_key: str | None = None
    parent_run_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class UsageRecord:
    """Token usage of one LLM call (task_id None for the planner)."""

    run_id: str
    task_id: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, kw_only=True)
class UsageTotal:
    task_id: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    calls: int


# -- delivery: what a front end has shown of a run ------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """How far a run's thread shows the run: one row per run, written by its publisher only.

    `plan_message` and `summary_message` are the front end's message ids (Slack ts);
    `plan_style` is how the plan is drawn there (`native` or `classic` blocks); `landed_seq` is
    the seq of the terminal event whose final state the thread shows. `posts` maps the key of
    every message that must be posted once to its id, or to None while only the intent to post
    it is recorded (a crash may have posted it without us learning its id).
    """

    run_id: str
    plan_message: str | None = None
    plan_style: str = "native"
    summary_message: str | None = None
    landed_seq: int | None = None
    posts: Mapping[str, str | None] = field(default_factory=dict)
