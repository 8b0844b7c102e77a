"""What the store keeps: rows of runs, tasks and usage, as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The vocabulary lives in the bottom module; re-exported here for the imports that use this path.
from domain.vocabulary import Decision, Event, EventKind, RunStatus, TaskStatus, Transition

__all__ = [
    "Approval",
    "Decision",
    "Event",
    "EventKind",
    "NewRun",
    "RunRecord",
    "RunStatus",
    "TaskRecord",
    "TaskStatus",
    "Transition",
    "UsageRecord",
    "UsageTotal",
]


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
class NewSteering:
    """A message about a running run, for the process that owns it (storage.store.add_steering)."""

    run_id: str
    message: str
    requester: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    """The front end's metadata for a follow-up run, should the message come too late to steer."""


@dataclass(frozen=True, kw_only=True)
class SteeringRecord:
    seq: int
    run_id: str
    message: str
    requester: str | None
    meta: dict[str, Any]
    at: float


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


@dataclass(frozen=True, kw_only=True)
class Approval:
    """A request to approve one task's tool call, and its decision once there is one."""

    run_id: str
    task_id: str
    requested_at: float
    deadline: float
    """After this the request counts as denied (Decision.EXPIRED)."""
    args: dict[str, Any]
    """The exact arguments the call will be made with, as shown to whoever decides."""
    decision: Decision | None = None
    decided_by: str | None = None
    decided_at: float | None = None


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
