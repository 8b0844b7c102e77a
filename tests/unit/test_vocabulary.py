from __future__ import annotations

from pathlib import Path

import pytest

import storage.records
from domain.vocabulary import (
    EventKind,
    RunStatus,
    TaskFields,
    TaskStatus,
    Transition,
    apply_task_transition,
)
from storage.sqlite import SqliteStore

PLAN = {
    "title": "p",
    "tasks": [{"id": "t1", "kind": "tool", "title": "one", "tool": "x.y", "args": {}, "deps": []}],
}


def test_old_import_paths_name_the_same_objects() -> None:
    assert storage.records.TaskStatus is TaskStatus
    assert storage.records.RunStatus is RunStatus
    assert storage.records.EventKind is EventKind
    assert storage.records.Transition is Transition


@pytest.mark.parametrize(
    ("status", "output", "error", "expected"),
    [
        (TaskStatus.RUNNING, None, None, TaskFields(status=TaskStatus.RUNNING, started_at=5.0)),
        (
            TaskStatus.SUCCEEDED,
            "out",
            None,
            TaskFields(status=TaskStatus.SUCCEEDED, started_at=1.0, finished_at=5.0, output="out"),
        ),
        (
            TaskStatus.SUCCEEDED,
            "out",
            "ignored",
            TaskFields(status=TaskStatus.SUCCEEDED, started_at=1.0, finished_at=5.0, output="out"),
        ),
        (
            TaskStatus.FAILED,
            None,
            "boom",
            TaskFields(status=TaskStatus.FAILED, started_at=1.0, finished_at=5.0, error="boom"),
        ),
        (
            TaskStatus.SKIPPED,
            None,
            "why",
            TaskFields(status=TaskStatus.SKIPPED, started_at=1.0, finished_at=5.0, error="why"),
        ),
        (TaskStatus.PENDING, None, "x", TaskFields(status=TaskStatus.PENDING, started_at=1.0)),
    ],
)
def test_the_task_state_machine(
    status: TaskStatus, output: str | None, error: str | None, expected: TaskFields
) -> None:
    after = apply_task_transition(
        TaskFields(status=TaskStatus.RUNNING, started_at=1.0),
        status,
        at=5.0,
        output=output,
        error=error,
    )
    assert after == expected


@pytest.mark.parametrize(
    ("status", "output", "error"),
    [
        (TaskStatus.RUNNING, None, None),
        (TaskStatus.SUCCEEDED, "out", None),
        (TaskStatus.FAILED, None, "boom"),
        (TaskStatus.SKIPPED, None, "why"),
        (TaskStatus.CANCELLED, None, None),
        (TaskStatus.PENDING, None, None),
    ],
)
async def test_the_store_applies_the_same_state_machine(
    tmp_path: Path, status: TaskStatus, output: str | None, error: str | None
) -> None:
    """The SQL update and the Python function agree, from a task that ran and failed once."""
    store = await SqliteStore.open(str(tmp_path / "db.sqlite3"))
    try:
        record, _ = await store.create_run(storage.records.NewRun(goal="g"))
        await store.set_plan(record.id, PLAN)
        for step_status, step_error, attempt in [
            (TaskStatus.RUNNING, None, True),
            (TaskStatus.FAILED, "first", False),
            (TaskStatus.PENDING, None, False),
            (status, error, status is TaskStatus.RUNNING),
        ]:
            await store.record(
                Transition(
                    run_id=record.id,
                    kind=EventKind.TASK_STARTED,
                    task_id="t1",
                    task_status=step_status,
                    output=output if step_status is status else None,
                    error=step_error,
                    new_attempt=attempt,
                )
            )
        [row] = await store.get_tasks(record.id)
    finally:
        await store.close()
    fields = TaskFields()
    stamps = {"started": row.started_at, "finished": row.finished_at}
    for step_status, step_error, attempt, at in [
        (TaskStatus.RUNNING, None, True, stamps["started"]),
        (TaskStatus.FAILED, "first", False, stamps["finished"]),
        (TaskStatus.PENDING, None, False, 0.0),
    ]:
        fields = apply_task_transition(
            fields, step_status, at=at or 0.0, error=step_error, new_attempt=attempt
        )
    expected = apply_task_transition(
        fields,
        status,
        at=(row.started_at if status is TaskStatus.RUNNING else row.finished_at) or 0.0,
        output=output,
        error=error,
        new_attempt=status is TaskStatus.RUNNING,
    )
    assert (row.status, row.attempts, row.output, row.error) == (
        expected.status,
        expected.attempts,
        expected.output,
        expected.error,
    )
    assert (row.started_at is None, row.finished_at is None) == (
        expected.started_at is None,
        expected.finished_at is None,
    )
