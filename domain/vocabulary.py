"""dagbot's domain vocabulary: run and task statuses, event kinds, transitions, events.

This is the bottom of the import graph: storage persists these values and the scheduler
produces them, so both import them from here (storage.records re-exports them for old imports).
The task state machine (what a transition to a status does to a task's fields) is written once,
in `task_effect` / `apply_task_transition`; the SQL store applies the same effect through flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    """Ready, but its tool needs a person's approval first (it holds no slot meanwhile)."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.AWAITING_APPROVAL, TaskStatus.RUNNING)


class RunStatus(StrEnum):
    PLANNING = "planning"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.PLANNING, RunStatus.RUNNING)


UNFINISHED_RUN_STATUSES = tuple(s for s in RunStatus if not s.finished)


class Decision(StrEnum):
    """What became of a request to approve a task (recorded once: the first decision stands)."""

    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    """Nobody decided before the deadline: counts as denied."""


class EventKind(StrEnum):
    RUN_CREATED = "run_created"
    RUN_PLANNED = "run_planned"
    RUN_RESUMED = "run_resumed"
    RUN_PAUSED = "run_paused"
    RUN_REPLANNING = "run_replanning"
    """The final step asked for another round (data: reason, round); planning it comes next."""
    RUN_REVISED = "run_revised"
    """The not-yet-started part of the plan changed (data: cause, round, reason, added,
    removed): another round after a replan, or a steering message from the thread."""
    TASK_AWAITING_APPROVAL = "task_awaiting_approval"
    TASK_APPROVED = "task_approved"
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


# -- the task state machine ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TaskEffect:
    """What entering a status does to a task's recorded fields."""

    stamps_start: bool
    """started_at becomes the transition's time (else it is kept)."""
    stamps_finish: bool
    """finished_at becomes the transition's time (else it is cleared)."""
    keeps_output: bool
    """The output given (or else the one recorded) is kept; otherwise it is cleared."""
    keeps_error: bool
    """The error given (or else the one recorded) is kept; otherwise it is cleared."""


def _effect(status: TaskStatus) -> TaskEffect:
    return TaskEffect(
        stamps_start=status is TaskStatus.RUNNING,
        stamps_finish=status.finished,
        keeps_output=status.finished,
        keeps_error=status.finished and status is not TaskStatus.SUCCEEDED,
    )


_EFFECTS = {status: _effect(status) for status in TaskStatus}


def task_effect(status: TaskStatus) -> TaskEffect:
    """The one definition of how a task's fields follow its status (worked out once each)."""
    return _EFFECTS[status]


@dataclass(frozen=True, kw_only=True)
class TaskFields:
    """The mutable part of a task's record."""

    status: TaskStatus = TaskStatus.PENDING
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    output: str | None = None
    error: str | None = None


def apply_task_transition(
    fields: TaskFields,
    status: TaskStatus,
    *,
    at: float,
    output: str | None = None,
    error: str | None = None,
    new_attempt: bool = False,
) -> TaskFields:
    """A task's fields after entering `status` at time `at` (the store applies the same rules)."""
    effect = task_effect(status)
    return TaskFields(
        status=status,
        attempts=fields.attempts + (1 if new_attempt else 0),
        started_at=at if effect.stamps_start else fields.started_at,
        finished_at=at if effect.stamps_finish else None,
        output=(output if output is not None else fields.output) if effect.keeps_output else None,
        error=(error if error is not None else fields.error) if effect.keeps_error else None,
    )
