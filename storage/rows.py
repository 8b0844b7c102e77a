"""Rows <-> records, shared by both stores (a row is anything indexed by column name)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from domain.vocabulary import task_effect
from storage.leases import Owner
from storage.records import (
    Approval,
    Decision,
    Delivery,
    Event,
    EventKind,
    NewRun,
    NewSteering,
    RunRecord,
    RunStatus,
    SteeringRecord,
    TaskRecord,
    TaskStatus,
    Transition,
    UsageTotal,
)


class Row(Protocol):
    """A row indexed by column name: sqlite3.Row or psycopg's dict row."""

    def __getitem__(self, key: str, /) -> Any: ...


def event_data(transition: Transition) -> dict[str, Any] | None:
    """What the event log keeps of a transition beyond its kind: its data, and any error."""
    data = dict(transition.data or {})
    if transition.error is not None:
        data.setdefault("error", transition.error)
    return data or None


def event_row(transition: Transition, at: float) -> dict[str, Any]:
    data = event_data(transition)
    return {
        "run_id": transition.run_id,
        "task_id": transition.task_id,
        "kind": transition.kind.value,
        "at": at,
        "data_json": json.dumps(data) if data is not None else None,
    }


def event(seq: int, transition: Transition, at: float) -> Event:
    return Event(
        seq=seq,
        run_id=transition.run_id,
        kind=transition.kind,
        at=at,
        task_id=transition.task_id,
        data=event_data(transition),
    )


def event_from_row(row: Row) -> Event:
    return Event(
        seq=row["seq"],
        run_id=row["run_id"],
        kind=EventKind(row["kind"]),
        at=row["at"],
        task_id=row["task_id"],
        data=json.loads(row["data_json"]) if row["data_json"] else None,
    )


def run_from_row(row: Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        goal=row["goal"],
        status=RunStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        plan=json.loads(row["plan_json"]) if row["plan_json"] else None,
        error=row["error"],
        requester=row["requester"],
        thread_key=row["thread_key"],
        parent_run_id=row["parent_run_id"],
        meta=json.loads(row["meta_json"]),
    )


def task_from_row(row: Row) -> TaskRecord:
    return TaskRecord(
        run_id=row["run_id"],
        id=row["id"],
        position=row["position"],
        spec=json.loads(row["spec_json"]),
        status=TaskStatus(row["status"]),
        attempts=row["attempts"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        output=row["output"],
        error=row["error"],
    )


def usage_from_row(row: Row) -> UsageTotal:
    return UsageTotal(
        task_id=row["task_id"],
        model=row["model"],
        prompt_tokens=int(row["prompt_tokens"]),
        completion_tokens=int(row["completion_tokens"]),
        calls=int(row["calls"]),
    )


def merge_meta(meta_json: str, patch: Mapping[str, Any]) -> str:
    """The run's metadata with `patch` merged in (None values delete keys), as JSON."""
    meta = json.loads(meta_json)
    for key, value in patch.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    return json.dumps(meta)


def new_run_row(run_id: str, new: NewRun, at: float, owner: Owner) -> dict[str, Any]:
    """The insert_run parameters of a new run (status planning) leased to `owner`."""
    return {
        "id": run_id,
        "goal": new.goal,
        "status": RunStatus.PLANNING.value,
        "requester": new.requester,
        "thread_key": new.thread_key,
        "parent_run_id": new.parent_run_id,
        "meta_json": json.dumps(new.meta),
        "at": at,
        "owner": owner.id,
        "owner_kind": owner.kind.value,
        "expires": at + owner.lease_seconds,
    }


def task_update_row(t: Transition, at: float) -> dict[str, Any]:
    """The update_task parameters of a transition that moves a task."""
    assert t.task_status is not None
    effect = task_effect(t.task_status)
    return {
        "run_id": t.run_id,
        "task_id": t.task_id,
        "status": t.task_status.value,
        "attempt_increment": 1 if t.new_attempt else 0,
        "output": t.output,
        "error": t.error,
        "at": at,
        # What the status does to the row's fields (domain.vocabulary writes it once).
        "stamps_start": effect.stamps_start,
        "stamps_finish": effect.stamps_finish,
        "keeps_output": effect.keeps_output,
        "keeps_error": effect.keeps_error,
    }


def run_update_row(t: Transition, at: float) -> dict[str, Any]:
    """The update_run_status parameters of a transition that moves a run."""
    assert t.run_status is not None
    return {"run_id": t.run_id, "status": t.run_status.value, "error": t.error, "at": at}


def approval_request_row(t: Transition, at: float) -> dict[str, Any] | None:
    """The upsert_approval parameters of a task's move to awaiting approval, else None.

    The request travels in the transition's data (`args`, `timeout`), so that it is stored in
    the same commit as the move itself; its deadline counts from that commit.
    """
    if t.kind is not EventKind.TASK_AWAITING_APPROVAL or t.data is None:
        return None
    return {
        "run_id": t.run_id,
        "task_id": t.task_id,
        "at": at,
        "deadline": at + float(t.data["timeout"]),
        "args_json": json.dumps(t.data.get("args") or {}),
    }


def approval_from_row(row: Row) -> Approval:
    return Approval(
        run_id=row["run_id"],
        task_id=row["task_id"],
        requested_at=row["requested_at"],
        deadline=row["deadline"],
        args=json.loads(row["args_json"]),
        decision=Decision(row["decision"]) if row["decision"] is not None else None,
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
    )


def steering_from_row(row: Row) -> SteeringRecord:
    return SteeringRecord(
        seq=int(row["seq"]),
        run_id=row["run_id"],
        message=row["message"],
        requester=row["requester"],
        meta=json.loads(row["meta_json"]),
        at=row["at"],
    )


def steering_row(new: NewSteering, at: float) -> dict[str, Any]:
    return {
        "run_id": new.run_id,
        "message": new.message,
        "requester": new.requester,
        "meta_json": json.dumps(new.meta),
        "at": at,
    }


def revision_rows(
    run_id: str, plan: dict[str, Any], at: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run row's and the task rows' parameters of a revised plan."""
    run_row = {"id": run_id, "plan_json": json.dumps(plan), "at": at}
    task_rows = [
        {"run_id": run_id, "id": task["id"], "position": position, "spec_json": json.dumps(task)}
        for position, task in enumerate(plan.get("tasks", []))
    ]
    return run_row, task_rows


def delivery_from_rows(run_id: str, row: Row | None, posts: Iterable[Row]) -> Delivery:
    """A run's delivery from its `deliveries` row (None before the first save) and its posts."""
    found = {post["post_key"]: post["message"] for post in posts}
    if row is None:
        return Delivery(run_id=run_id, posts=found)
    return Delivery(
        run_id=run_id,
        plan_message=row["plan_message"],
        plan_style=row["plan_style"],
        summary_message=row["summary_message"],
        landed_seq=row["landed_seq"],
        posts=found,
    )


def delivery_row(delivery: Delivery, at: float) -> dict[str, Any]:
    return {
        "run_id": delivery.run_id,
        "plan_message": delivery.plan_message,
        "plan_style": delivery.plan_style,
        "summary_message": delivery.summary_message,
        "landed_seq": delivery.landed_seq,
        "at": at,
    }
