"""Random layered DAGs with latencies, and the lower bound on their makespan."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.dag.graph import critical_path_priorities
from scheduler.dag.plan import Plan, PlanTask, TaskKind


@dataclass(frozen=True, kw_only=True)
class Workload:
    plan: Plan
    latency: dict[str, float]
    """Seconds each task sleeps for."""

    @property
    def critical_path(self) -> float:
        deps = {task.id: task.deps for task in self.plan.tasks}
        return max(critical_path_priorities(deps, self.latency).values())

    @property
    def total_work(self) -> float:
        return sum(self.latency.values())

    def lower_bound(self, concurrency: int) -> float:
        """No schedule can beat the longest path, nor the work spread over every slot."""
        return max(self.critical_path, self.total_work / concurrency)


def layered_dag(
    rng: random.Random,
    *,
    tasks: tuple[int, int] = (100, 300),
    width: tuple[int, int] = (1, 40),
    latency_ms: tuple[float, float] = (20.0, 200.0),
    scale: float = 1.0,
) -> Workload:
    """Layers of random width; each task waits on 1-3 tasks of the layer above, sometimes
    on one more from any earlier layer; one summary task waits on every task left without a
    dependant."""
    target = rng.randint(*tasks) - 1  # the summary is the last task
    layers: list[list[str]] = []
    specs: list[PlanTask] = []
    latency: dict[str, float] = {}
    while len(specs) < target:
        size = min(rng.randint(*width), target - len(specs))
        layer = [f"t{len(specs) + i + 1}" for i in range(size)]
        earlier = [task for above in layers[:-1] for task in above]
        for task_id in layer:
            deps: set[str] = set()
            if layers:
                deps.update(rng.sample(layers[-1], min(len(layers[-1]), rng.randint(1, 3))))
                if earlier and rng.random() < 0.3:
                    deps.add(rng.choice(earlier))
            ms = rng.uniform(*latency_ms)
            latency[task_id] = ms * scale / 1000
            specs.append(
                PlanTask(
                    id=task_id,
                    kind=TaskKind.TOOL,
                    title=task_id,
                    tool="sleep.ms",
                    args={"ms": round(ms, 3)},
                    deps=sorted(deps),
                )
            )
        layers.append(layer)
    has_dependant = {dep for spec in specs for dep in spec.deps}
    sinks = [spec.id for spec in specs if spec.id not in has_dependant]
    ms = rng.uniform(*latency_ms)
    latency["s"] = ms * scale / 1000
    specs.append(
        PlanTask(
            id="s", kind=TaskKind.SUMMARY, title="summary", args={"ms": round(ms, 3)}, deps=sinks
        )
    )
    return Workload(plan=Plan(title="benchmark", tasks=specs), latency=latency)


def simulated_makespan(
    workload: Workload, concurrency: int, estimate: Callable[[PlanTask], float]
) -> float:
    """The makespan of the engine's policy with zero overhead: whenever a slot is free, start
    the ready task with the highest critical-path priority (ties by plan order)."""
    tasks = workload.plan.tasks
    deps = {task.id: task.deps for task in tasks}
    priority = critical_path_priorities(deps, {task.id: estimate(task) for task in tasks})
    position = {task.id: n for n, task in enumerate(tasks)}
    children: dict[str, list[str]] = {task.id: [] for task in tasks}
    for task in tasks:
        for dep in task.deps:
            children[dep].append(task.id)
    waiting = {task.id: len(task.deps) for task in tasks}
    ready = [(-priority[t], position[t], t) for t, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < concurrency:
            _, _, task_id = heapq.heappop(ready)
            heapq.heappush(running, (now + workload.latency[task_id], task_id))
        now, done = heapq.heappop(running)
        for child in children[done]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (-priority[child], position[child], child))
    return now
