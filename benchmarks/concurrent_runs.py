"""Many runs at once: run latency under each slot policy, and per-task overhead of a store.

    python -m benchmarks.concurrent_runs [--runs 100] [--tasks 20] [--database-url URL]

Latency: `--runs` runs of `--tasks` tasks (random layered DAGs of tool tasks that sleep 50-500
ms, seeded, then a summary) are submitted at once to one engine (8 tasks per run, 32 in all),
first with the old first-come-first-served slots (FIFO), then with earliest-run-first. A run's
latency is from the burst's submission to its finish.

Overhead: the `benchmarks.overhead` DAG (10,000 no-op tasks, 100 a layer) on the store named by
`--database-url` (or DATABASE_URL; default a SQLite file in a temporary directory): wall time
per task, all of it engine and storage since the tasks do nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.dags import layered_dag
from benchmarks.overhead import noop, wide_plan
from scheduler.dag.engine import Engine, EngineConfig
from scheduler.dag.executors import TaskContext
from scheduler.dag.plan import Plan, TaskKind
from scheduler.dag.slots import SlotPolicy
from storage.sqlite import open_store
from storage.store import Store

PER_RUN = 8
TOTAL = 32


def workloads(runs: int, tasks: int, seed: int) -> list[tuple[Plan, dict[str, float]]]:
    rng = random.Random(seed)
    made = []
    for _ in range(runs):
        workload = layered_dag(rng, tasks=(tasks, tasks), width=(2, 6), latency_ms=(50, 500))
        made.append((workload.plan, workload.latency))
    return made


async def open_any(database_url: str) -> Store:
    """The store a DATABASE_URL names, through storage.connect when this build has it (the
    PostgreSQL store brings it); otherwise SQLite only."""
    try:
        connect: Any = importlib.import_module("storage.connect")
    except ImportError:
        if database_url.startswith(("postgres://", "postgresql://")):
            raise SystemExit("no PostgreSQL store in this build") from None
        return await open_store(database_url)
    store: Store = await connect.open_store(database_url)
    return store


async def latencies(
    database_url: str, policy: SlotPolicy, runs: list[tuple[Plan, dict[str, float]]]
) -> list[float]:
    sleeps: dict[tuple[str, str], float] = {}

    async def tool(context: TaskContext) -> str:
        await asyncio.sleep(sleeps.get((context.run_id, context.task.id), 0.0))
        return ""

    store = await open_any(database_url)
    engine = Engine(
        store,
        dict.fromkeys(TaskKind, tool),
        config=EngineConfig(
            max_concurrency=PER_RUN, max_total_concurrency=TOTAL, slot_policy=policy
        ),
    )
    finished: dict[str, float] = {}
    try:
        start = time.perf_counter()
        submitted = []
        for plan, latency in runs:
            run = await engine.submit("benchmark", plan=plan)
            sleeps.update({(run.id, task): seconds for task, seconds in latency.items()})
            submitted.append(run.id)

        async def finish(run_id: str) -> None:
            await engine.wait(run_id)
            finished[run_id] = time.perf_counter() - start

        await asyncio.gather(*(finish(run_id) for run_id in submitted))
    finally:
        await engine.close()
        await store.close()
    return [finished[run_id] for run_id in submitted]


async def overhead(database_url: str, tasks: int) -> float:
    the_plan = wide_plan(tasks, 100)
    store = await open_any(database_url)
    engine = Engine(
        store,
        dict.fromkeys(TaskKind, noop),
        config=EngineConfig(max_concurrency=8, max_total_concurrency=8, max_tasks=tasks),
    )
    try:
        wall = time.perf_counter()
        run = await engine.submit("overhead", plan=the_plan)
        view = await engine.wait(run.id)
        wall = time.perf_counter() - wall
    finally:
        await engine.close()
        await store.close()
    assert view.run.status.value == "succeeded", view.run.error
    return wall / tasks


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def main(runs: int, tasks: int, seed: int, database_url: str | None) -> None:
    loads = workloads(runs, tasks, seed)
    with tempfile.TemporaryDirectory() as scratch:

        def url(name: str) -> str:
            return database_url or f"sqlite:///{Path(scratch) / name}"

        results: dict[SlotPolicy, list[float]] = {}
        for policy in (SlotPolicy.FIFO, SlotPolicy.EARLIEST_RUN):
            results[policy] = await latencies(url(f"latency-{policy}.sqlite3"), policy, loads)
        per_task = await overhead(url("overhead.sqlite3"), 10_000)
    store = "SQLite (temporary file)" if database_url is None else database_url.split(":")[0]
    print(
        f"{runs} runs x {tasks} tasks (tools of 50-500 ms, seed {seed}), {PER_RUN} a run, "
        f"{TOTAL} in all; store {store}; Python {'.'.join(map(str, sys.version_info[:3]))}"
    )
    print()
    print("| slot policy | run latency: median | p95 | last run |")
    print("| --- | --- | --- | --- |")
    for policy, values in results.items():
        print(
            f"| {policy} | {statistics.median(values):.2f} s | {p95(values):.2f} s | "
            f"{max(values):.2f} s |"
        )
    fifo, fair = (statistics.median(results[p]) for p in (SlotPolicy.FIFO, SlotPolicy.EARLIEST_RUN))
    print()
    print(
        f"median run latency, earliest-run-first against FIFO: {(1 - fair / fifo) * 100:.0f}% lower"
    )
    print(
        f"per-task overhead ({store}, 10,000 no-op tasks, concurrency 8): {per_task * 1e6:.0f} µs"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.concurrent_runs")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="the store to measure (default: a SQLite file in a temporary directory)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.tasks, args.seed, args.database_url))
