"""Many runs at once: run latency under each slot policy, and per-task overhead of each store.

    python -m benchmarks.concurrent_runs [--runs 100] [--tasks 20] [--rounds 5]
        [--against 5cf0adf] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

Latency: `--runs` runs of `--tasks` tasks (random layered DAGs of tool tasks that sleep 50-500
ms, seeded, then a summary) are submitted at once to one engine on a SQLite file (8 tasks per
run, 32 in all), first with the old first-come-first-served slots (FIFO), then with
earliest-run-first. A run's latency is from the burst's submission to its finish.

Overhead: the `benchmarks.overhead` DAG (10,000 no-op tasks, 100 a layer, concurrency 8): wall
and CPU time per task, all of it engine and storage since the tasks do nothing.
- SQLite, as a ratio that a shared, noisy machine cannot skew: the code of commit `--against`
  (by default the one benchmarks/RESULTS.md's 138 µs figure came from) and this code, each in a
  fresh process, alternating for `--rounds` rounds; medians of each, and new against old.
- PostgreSQL: on a database of its own, created on the server `--postgres` names and dropped
  afterwards; skipped, with a line saying why, when that server cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg

from benchmarks.dags import layered_dag
from benchmarks.overhead import noop, wide_plan
from scheduler.dag.engine import Engine, EngineConfig
from scheduler.dag.executors import TaskContext
from scheduler.dag.plan import Plan, TaskKind
from scheduler.dag.slots import SlotPolicy
from storage.connect import open_store

PER_RUN = 8
TOTAL = 32
OVERHEAD_TASKS = 10_000
RESULTS_COMMIT = "5cf0adf"
"""The commit benchmarks/RESULTS.md's SQLite overhead figure (138 µs a task) was measured on."""
POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh process inside a source tree, old or new: both trees' benchmarks.overhead
# have this `measure` and `wide_plan`.
MEASURE_IN_TREE = """
import asyncio, pathlib, sys, tempfile
from benchmarks.overhead import measure, wide_plan
from storage.sqlite import SqliteStore

async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = str(pathlib.Path(scratch) / "overhead.sqlite3")
        m = await measure("x", SqliteStore, path, wide_plan(int(sys.argv[1]), 100), 8)
    print(m.wall / m.tasks, m.cpu / m.tasks)

asyncio.run(main())
"""


def workloads(runs: int, tasks: int, seed: int) -> list[tuple[Plan, dict[str, float]]]:
    rng = random.Random(seed)
    made = []
    for _ in range(runs):
        workload = layered_dag(rng, tasks=(tasks, tasks), width=(2, 6), latency_ms=(50, 500))
        made.append((workload.plan, workload.latency))
    return made


async def latencies(
    database_url: str, policy: SlotPolicy, runs: list[tuple[Plan, dict[str, float]]]
) -> list[float]:
    sleeps: dict[tuple[str, str], float] = {}

    async def tool(context: TaskContext) -> str:
        await asyncio.sleep(sleeps.get((context.run_id, context.task.id), 0.0))
        return ""

    store = await open_store(database_url)
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


async def overhead(database_url: str, tasks: int) -> tuple[float, float]:
    """Wall and CPU seconds per task of the no-op DAG on the store `database_url` names."""
    the_plan = wide_plan(tasks, 100)
    store = await open_store(database_url)
    engine = Engine(
        store,
        dict.fromkeys(TaskKind, noop),
        config=EngineConfig(max_concurrency=8, max_total_concurrency=8, max_tasks=tasks),
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
    return wall / tasks, cpu / tasks


def overhead_in_tree(tree: Path, tasks: int) -> tuple[float, float]:
    """Wall and CPU seconds per task of the no-op DAG on SQLite, measured by the code in `tree`
    (in a fresh process whose imports come from that tree)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_IN_TREE, str(tasks)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    wall, cpu = done.stdout.split()
    return float(wall), float(cpu)


def sqlite_old_and_new(commit: str, rounds: int, tasks: int) -> list[str]:
    """Old and new code alternating, `rounds` times each: the table and the ratio."""
    with tempfile.TemporaryDirectory() as scratch:
        old_tree = Path(scratch)
        try:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
        except (OSError, subprocess.CalledProcessError) as error:
            return [f"SQLite old against new: skipped, cannot extract commit {commit}: {error}"]
        old: list[tuple[float, float]] = []
        new: list[tuple[float, float]] = []
        for _ in range(rounds):
            old.append(overhead_in_tree(old_tree, tasks))
            new.append(overhead_in_tree(ROOT, tasks))

    def median(values: list[tuple[float, float]], index: int) -> float:
        return statistics.median(v[index] for v in values) * 1e6

    lines = [
        f"per-task overhead on SQLite (a file, {tasks:,} no-op tasks, concurrency 8), old and "
        f"new code alternating in fresh processes, median of {rounds} rounds each:",
        "",
        "| code | µs per task (wall) | µs per task (CPU) | wall, each round |",
        "| --- | --- | --- | --- |",
    ]
    for label, values in ((f"old ({commit})", old), ("new", new)):
        each = ", ".join(f"{v[0] * 1e6:.0f}" for v in values)
        lines.append(f"| {label} | {median(values, 0):.0f} | {median(values, 1):.0f} | {each} |")
    lines.append("")
    lines.append(
        f"new against old: wall {(1 - median(new, 0) / median(old, 0)) * 100:.0f}% lower, "
        f"CPU {(1 - median(new, 1) / median(old, 1)) * 100:.0f}% lower"
    )
    return lines


async def postgres_overhead(server: str, tasks: int) -> str:
    """Per-task overhead on a PostgreSQL database of its own, created and dropped here."""
    name = f"dagbot_bench_{uuid.uuid4().hex[:12]}"
    where = urlparse(server)
    try:
        admin = await psycopg.AsyncConnection.connect(server, autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        first = str(error).strip().splitlines()[0]
        return (
            f"per-task overhead on PostgreSQL: skipped, the server {where.hostname}:{where.port} "
            f"cannot be reached ({first})"
        )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = urlunparse(where._replace(path=f"/{name}"))
            wall, cpu = await overhead(url, tasks)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    return (
        f"per-task overhead on PostgreSQL ({where.hostname}:{where.port}, a database of its own, "
        f"{tasks:,} no-op tasks, concurrency 8): {wall * 1e6:.0f} µs wall, {cpu * 1e6:.0f} µs CPU "
        "(this process only: the server's work is not counted)"
    )


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def main(args: argparse.Namespace) -> None:
    loads = workloads(args.runs, args.tasks, args.seed)
    results: dict[SlotPolicy, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for policy in (SlotPolicy.FIFO, SlotPolicy.EARLIEST_RUN):
            url = f"sqlite:///{Path(scratch) / f'latency-{policy}.sqlite3'}"
            results[policy] = await latencies(url, policy, loads)
    print(
        f"{args.runs} runs x {args.tasks} tasks (tools of 50-500 ms, seed {args.seed}), {PER_RUN} "
        f"a run, {TOTAL} in all; store SQLite (a file); "
        f"Python {'.'.join(map(str, sys.version_info[:3]))}"
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
    print()
    for line in sqlite_old_and_new(args.against, args.rounds, OVERHEAD_TASKS):
        print(line)
    print()
    print(await postgres_overhead(args.postgres, OVERHEAD_TASKS))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.concurrent_runs")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="old/new SQLite overhead rounds")
    parser.add_argument(
        "--against",
        default=RESULTS_COMMIT,
        help="the commit whose SQLite overhead the new code is compared with",
    )
    parser.add_argument(
        "--postgres",
        default=POSTGRES_SERVER,
        help="a PostgreSQL server (any database on it) on which to create a database to measure",
    )
    asyncio.run(main(parser.parse_args()))
