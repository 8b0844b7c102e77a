"""A process that runs one fixed DAG on a database file, for the crash-and-resume test.

    python -m tests.support.dag_worker start  --db FILE --log FILE [--hold b1,b2]
    python -m tests.support.dag_worker resume --db FILE --log FILE

Every execution appends `<task> <attempt> <pid>` to the log before doing anything else. Held
tasks then block forever, so a test can kill the process while exactly those are in flight.
`start` submits the DAG and runs until idle (forever, if tasks are held); `resume` waits
until the runs of a dead process come free (their lease, LEASE_SECONDS here, expires), claims
them, and runs until idle. `--db` is a SQLite file or a PostgreSQL URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from scheduler.dag.engine import Engine, EngineConfig
from scheduler.dag.executors import TaskContext
from scheduler.dag.plan import Plan, TaskKind
from storage.connect import open_store
from storage.leases import Owner
from storage.records import EventKind


def crash_plan() -> Plan:
    def tool(task_id: str, *deps: str) -> dict[str, object]:
        return {
            "id": task_id,
            "kind": "tool",
            "title": task_id,
            "tool": "log.write",
            "deps": list(deps),
        }

    return Plan.model_validate(
        {
            "title": "crash test",
            "tasks": [
                tool("a1"),
                tool("a2"),
                tool("a3"),
                tool("a4"),
                tool("b1", "a1"),
                tool("b2", "a2"),
                tool("c1", "b1"),
                tool("c2", "a3", "a4", "b2"),
                tool("d1", "a3"),
                tool("d2", "d1"),
                {"id": "s", "kind": "summary", "title": "s", "deps": ["c1", "c2", "d2", "a4"]},
            ],
        }
    )


class LoggingExecutor:
    def __init__(self, log: Path, hold: frozenset[str]) -> None:
        self.log = log
        self.hold = hold

    async def __call__(self, context: TaskContext) -> str:
        task = context.task
        with self.log.open("a", encoding="utf-8") as handle:
            handle.write(f"{task.id} {context.attempt} {os.getpid()}\n")
        if task.id in self.hold:
            await asyncio.Event().wait()
        if task.kind is TaskKind.SUMMARY:
            return " | ".join(f"{dep}={context.results[dep].output}" for dep in sorted(task.deps))
        return f"{task.id}@{os.getpid()}"


LEASE_SECONDS = 1.0


async def main(command: str, db: str, log: Path, hold: frozenset[str]) -> None:
    url = db if "://" in db else f"sqlite:///{db}"
    store = await open_store(url, owner=Owner(lease_seconds=LEASE_SECONDS))
    executor = LoggingExecutor(log, hold)
    engine = Engine(store, dict.fromkeys(TaskKind, executor), config=EngineConfig(take_over=True))
    try:
        if command == "start":
            run = await engine.submit("crash test", plan=crash_plan())
            print(run.id, flush=True)
        else:
            # The dead process's lease runs out within LEASE_SECONDS; the engine claims its
            # runs then (take_over), each announced by a RUN_RESUMED event.
            with engine.bus.subscribe() as events:
                await engine.resume_all()
                async for event in events:
                    if event.kind is EventKind.RUN_RESUMED:
                        print(event.run_id, flush=True)
                        break
        await engine.run_until_idle()
    finally:
        await engine.close()
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["start", "resume"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--hold", default="")
    args = parser.parse_args()
    held = frozenset(name for name in args.hold.split(",") if name)
    asyncio.run(main(args.command, args.db, args.log, held))
    sys.exit(0)
