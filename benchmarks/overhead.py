"""Engine + storage overhead: 10,000 no-op tasks in one DAG, persisted to a real SQLite file.

    python -m benchmarks.overhead [--tasks 10000] [--width 100]

The DAG is `tasks / width` layers of `width` no-op tasks, each waiting on two tasks of the layer
above, then one summary. Every task costs two committed transitions (started, succeeded) and two
events. Wall time runs from submit (plan validation and storage included) to the run's last
commit; since the executor does nothing, all of it is engine and storage overhead. CPU time is
the process's (event loop plus aiosqlite's writer thread).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from scheduler.dag.engine import Engine, EngineConfig
from scheduler.dag.executors import TaskContext
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from storage.records import Event, Transition
from storage.sqlite import SqliteStore


def wide_plan(tasks: int, width: int, seed: int = 1) -> Plan:
    rng = random.Random(seed)
    specs: list[PlanTask] = []
    above: list[str] = []
    while len(specs) < tasks - 1:
        layer = [f"t{len(specs) + i}" for i in range(min(width, tasks - 1 - len(specs)))]
        for task_id in layer:
            deps = sorted(rng.sample(above, min(2, len(above))))
            specs.append(
                PlanTask(id=task_id, kind=TaskKind.TOOL, title=task_id, tool="noop.run", deps=deps)
            )
        above = layer
    specs.append(PlanTask(id="s", kind=TaskKind.SUMMARY, title="summary", deps=above))
    return Plan(title="overhead", tasks=specs)


class CommitEachTransition(SqliteStore):
    """The same store with group commit disabled: one transaction per transition."""

    def __init__(
        self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, **options: Any
    ) -> None:
        super().__init__(writer, reader, **options)
        self._one_at_a_time = asyncio.Lock()

    def record(self, transition: Transition) -> asyncio.Future[Event]:
        return asyncio.ensure_future(self._alone(transition))

    async def _alone(self, transition: Transition) -> Event:
        async with self._one_at_a_time:
            unused: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
            [event] = await self._write_batch([(transition, time.time(), unused)])
        if isinstance(event, BaseException):
            raise event
        return event


@dataclass(frozen=True)
class Measurement:
    label: str
    concurrency: int
    tasks: int
    wall: float
    cpu: float


async def noop(context: TaskContext) -> str:
    return ""


async def measure(
    label: str, store_class: type[SqliteStore], path: str, the_plan: Plan, concurrency: int
) -> Measurement:
    store = await store_class.open(path)
    engine = Engine(
        store,
        dict.fromkeys(TaskKind, noop),
        config=EngineConfig(
            max_concurrency=concurrency,
            max_total_concurrency=concurrency,
            max_tasks=len(the_plan.tasks),
        ),
    )
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        run = await engine.submit("overhead", plan=the_plan)
        view = await engine.wait(run.id)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await engine.close()
        await store.close()
    assert view.run.status.value == "succeeded", view.run.error
    return Measurement(label, concurrency, len(the_plan.tasks), wall, cpu)


async def main(tasks: int, width: int) -> None:
    the_plan = wide_plan(tasks, width)
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory() as scratch:
        for n, (label, store_class, file_backed, concurrency) in enumerate(
            [
                ("SQLite file, group commit", SqliteStore, True, 8),
                ("SQLite file, group commit", SqliteStore, True, 32),
                ("SQLite file, one commit per transition", CommitEachTransition, True, 8),
                ("SQLite :memory:, group commit", SqliteStore, False, 8),
            ]
        ):
            path = str(Path(scratch) / f"overhead{n}.sqlite3") if file_backed else ":memory:"
            results.append(await measure(label, store_class, path, the_plan, concurrency))
    print(
        f"{tasks} no-op tasks, {width} per layer, 2 deps each; Python "
        f"{'.'.join(map(str, __import__('sys').version_info[:3]))}"
    )
    print()
    print("| store | concurrency | tasks/s | µs per task (wall) | µs per task (CPU) |")
    print("| --- | --- | --- | --- | --- |")
    for m in results:
        print(
            f"| {m.label} | {m.concurrency} | {m.tasks / m.wall:,.0f} | "
            f"{m.wall / m.tasks * 1e6:.0f} | {m.cpu / m.tasks * 1e6:.0f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.width))
