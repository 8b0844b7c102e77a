"""Makespan of random layered DAGs against the lower bound max(critical path, work / slots).

    python -m benchmarks.makespan [--dags 12] [--scale 0.5] [--seed 1]

Each task sleeps its latency (20-200 ms, times --scale) in an asyncio sleep executor; the run is
persisted to a real SQLite file. Makespan is measured from submit to the run's last commit.
Two priority estimators are compared: the engine's default (by task kind, blind to durations:
every task here is a tool task, so priority is the number of tasks on the longest path below)
and a duration-aware one (each task's own latency, as a planner with a cost model could give).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from benchmarks.dags import Workload, layered_dag, simulated_makespan
from scheduler.dag.engine import Engine, EngineConfig, estimate_by_kind
from scheduler.dag.executors import TaskContext
from scheduler.dag.plan import PlanTask, TaskKind
from storage.sqlite import SqliteStore

CONCURRENCY = (4, 8, 32)


def by_duration(task: PlanTask) -> float:
    """The latency the task declares: what a duration-aware estimator would know."""
    return float(task.args["ms"])


ESTIMATORS: dict[str, Callable[[PlanTask], float]] = {
    "by kind (default)": estimate_by_kind,
    "by duration": by_duration,
}


async def makespan(
    workload: Workload, concurrency: int, estimate: Callable[[PlanTask], float], db: Path
) -> tuple[float, Workload]:
    """The measured makespan, and the workload as it really slept (asyncio sleeps overshoot)."""
    slept: dict[str, float] = {}

    async def sleep(context: TaskContext) -> str:
        started = time.perf_counter()
        await asyncio.sleep(workload.latency[context.task.id])
        slept[context.task.id] = time.perf_counter() - started
        return ""

    store = await SqliteStore.open(str(db))
    engine = Engine(
        store,
        dict.fromkeys(TaskKind, sleep),
        config=EngineConfig(
            max_concurrency=concurrency,
            max_total_concurrency=concurrency,
            max_tasks=len(workload.plan.tasks),
        ),
        estimate=estimate,
    )
    try:
        started = time.perf_counter()
        run = await engine.submit("benchmark", plan=workload.plan)
        view = await engine.wait(run.id)
        elapsed = time.perf_counter() - started
    finally:
        await engine.close()
        await store.close()
    assert view.run.status.value == "succeeded", view.run.error
    return elapsed, replace(workload, latency=slept)


async def main(dags: int, scale: float, seed: int) -> None:
    rng = random.Random(seed)
    workloads = [layered_dag(rng, scale=scale) for _ in range(dags)]
    sizes = [len(w.plan.tasks) for w in workloads]
    print(
        f"{dags} DAGs, {min(sizes)}-{max(sizes)} tasks, latencies 20-200 ms x {scale:g}, "
        f"seed {seed}"
    )
    measured: dict[tuple[str, int], list[float]] = {}
    as_slept: dict[tuple[str, int], list[float]] = {}
    simulated: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for n, workload in enumerate(workloads):
            for concurrency in CONCURRENCY:
                bound = workload.lower_bound(concurrency)
                for name, estimate in ESTIMATORS.items():
                    key = (name, concurrency)
                    db = Path(scratch) / f"run{n}-{concurrency}-{len(measured)}.sqlite3"
                    elapsed, real = await makespan(workload, concurrency, estimate, db)
                    measured.setdefault(key, []).append(elapsed / bound)
                    as_slept.setdefault(key, []).append(elapsed / real.lower_bound(concurrency))
                    ideal = simulated_makespan(workload, concurrency, estimate)
                    simulated.setdefault(key, []).append(ideal / bound)
    print()
    print(
        "| estimator | concurrency | makespan / lower bound: median | worst "
        "| same, bound from the sleeps' real lengths: median "
        "| same policy with zero overhead (simulated): median / worst |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for key, values in measured.items():
        name, concurrency = key
        print(
            f"| {name} | {concurrency} | {statistics.median(values):.3f} | {max(values):.3f} "
            f"| {statistics.median(as_slept[key]):.3f} "
            f"| {statistics.median(simulated[key]):.3f} / {max(simulated[key]):.3f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.makespan")
    parser.add_argument("--dags", type=int, default=12)
    parser.add_argument(
        "--scale",
        type=float,
        default=0.5,
        help="multiply every latency by this (default 0.5: 10-100 ms)",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.dags, args.scale, args.seed))
