"""Kill a real process with SIGKILL mid-run; a new process on the same file finishes the run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.dag_worker import crash_plan

ROOT = Path(__file__).resolve().parents[2]
HELD = ("b1", "b2")
WAIT_LIMIT_SECONDS = 60.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


def worker(command: str, db: Path, log: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.support.dag_worker",
        command,
        "--db",
        str(db),
        "--log",
        str(log),
        *extra,
    ]


@pytest.fixture
def first_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    db, log = tmp_path / "crash.sqlite3", tmp_path / "executions.log"
    process = subprocess.Popen(
        worker("start", db, log, "--hold", ",".join(HELD)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process, db, log
    if process.poll() is None:
        process.kill()
    process.communicate()


def task_rows(db: Path) -> dict[str, tuple[str, int, str | None]]:
    if not db.exists():
        return {}
    reader = sqlite3.connect(db)
    try:
        rows = reader.execute("SELECT id, status, attempts, output FROM tasks").fetchall()
    except sqlite3.OperationalError:
        return {}  # not migrated yet
    finally:
        reader.close()
    return {task_id: (status, attempts, output) for task_id, status, attempts, output in rows}


def executions(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    lines = log.read_text(encoding="utf-8").splitlines()
    return [(task, int(attempt), int(pid)) for task, attempt, pid in map(str.split, lines)]


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], db: Path) -> None:
    """Poll the files the worker writes until `condition` holds (the worker must stay alive)."""
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while not condition():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the worker exited early ({process.returncode}):\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"the worker never reached the expected state: {task_rows(db)}")
        time.sleep(0.02)


def test_a_killed_run_resumes_in_a_new_process_without_repeating_finished_work(
    first_process: tuple[subprocess.Popen[str], Path, Path],
) -> None:
    process, db, log = first_process
    done_before_kill = {"a1", "a2", "a3", "a4", "d1", "d2"}

    def quiescent_mid_run() -> bool:
        rows = task_rows(db)
        started = {task for task, _, _ in executions(log)}
        return (
            all(rows.get(t, ("",))[0] == "succeeded" for t in done_before_kill)
            and all(rows.get(t, ("",))[0] == "running" for t in HELD)
            and set(HELD) <= started
        )

    wait_for(quiescent_mid_run, process, db)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    at_kill = task_rows(db)
    in_flight = {task for task, (status, _, _) in at_kill.items() if status == "running"}
    assert in_flight == set(HELD)
    assert {t for t, (status, _, _) in at_kill.items() if status == "pending"} == {"c1", "c2", "s"}
    first_pid = process.pid

    resumed = subprocess.run(
        worker("resume", db, log),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT_LIMIT_SECONDS,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr

    reader = sqlite3.connect(db)
    try:
        [(run_id, run_status)] = reader.execute("SELECT id, status FROM runs").fetchall()
        kinds = [
            row[0]
            for row in reader.execute(
                "SELECT kind FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
            )
        ]
    finally:
        reader.close()
    assert resumed.stdout.split() == [run_id]
    assert run_status == "succeeded"
    assert kinds.count("run_resumed") == 1
    assert kinds[-1] == "run_finished"

    final = task_rows(db)
    every_task = {task.id for task in crash_plan().tasks}
    assert set(final) == every_task
    assert all(status == "succeeded" for status, _, _ in final.values())

    runs = Counter(task for task, _, _ in executions(log))
    assert runs == {task: 2 if task in in_flight else 1 for task in every_task}
    assert runs["s"] == 1
    assert {task: attempts for task, (_, attempts, _) in final.items()} == {
        task: 2 if task in in_flight else 1 for task in every_task
    }
    second_pid = next(pid for task, _, pid in executions(log) if task == "s")
    assert second_pid != first_pid
    # work finished before the kill kept its output from the first process
    for task in done_before_kill:
        assert final[task][2] == f"{task}@{first_pid}"
    for task in ("b1", "b2", "c1", "c2"):
        assert final[task][2] == f"{task}@{second_pid}"
    assert final["s"][2] == (
        f"a4=a4@{first_pid} | c1=c1@{second_pid} | c2=c2@{second_pid} | d2=d2@{first_pid}"
    )
    attempts_logged = sorted(
        (task, attempt) for task, attempt, _ in executions(log) if task in in_flight
    )
    assert attempts_logged == [("b1", 1), ("b1", 2), ("b2", 1), ("b2", 2)]
