"""Domain views of runs and tasks, built from storage records at this edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domain.vocabulary import RunStatus, TaskStatus
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from storage.records import Approval, RunRecord, TaskRecord


@dataclass(frozen=True, kw_only=True)
class TaskState:
    """One task of a run: its plan entry plus what happened to it."""

    run_id: str
    spec: PlanTask
    position: int
    status: TaskStatus = TaskStatus.PENDING
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    output: str | None = None
    error: str | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def kind(self) -> TaskKind:
        return self.spec.kind

    @classmethod
    def from_record(cls, record: TaskRecord) -> TaskState:
        return cls(
            run_id=record.run_id,
            spec=PlanTask.model_validate(record.spec),
            position=record.position,
            status=record.status,
            attempts=record.attempts,
            started_at=record.started_at,
            finished_at=record.finished_at,
            output=record.output,
            error=record.error,
        )


@dataclass(frozen=True, kw_only=True)
class Run:
    """A goal and its lifecycle. `meta` belongs to the front end (e.g. Slack channel and ts)."""

    id: str
    goal: str
    status: RunStatus
    created_at: float
    updated_at: float
    plan: Plan | None = None
    error: str | None = None
    requester: str | None = None
    thread_key: str | None = None
    parent_run_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: RunRecord) -> Run:
        return cls(
            id=record.id,
            goal=record.goal,
            status=record.status,
            created_at=record.created_at,
            updated_at=record.updated_at,
            plan=Plan.model_validate(record.plan) if record.plan is not None else None,
            error=record.error,
            requester=record.requester,
            thread_key=record.thread_key,
            parent_run_id=record.parent_run_id,
            meta=record.meta,
        )


@dataclass(frozen=True, kw_only=True)
class RunView:
    """A run with all of its tasks in plan order: what a front end renders."""

    run: Run
    tasks: tuple[TaskState, ...]
    approvals: tuple[Approval, ...] = ()
    """The requests of the tasks awaiting approval (what to show beside their buttons)."""

    def task(self, task_id: str) -> TaskState:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)
