"""Start-up cost against history: opening a store holding 10,000 finished runs vs an empty one.

    python -m benchmarks.startup [--runs 10000] [--tasks 20] [--repeat 15]

The database is filled through SQLite directly (runs of `--tasks` finished tasks with their
events, goals and outputs of a few hundred bytes), then closed cleanly. Start-up is what a bot
does before it serves: open and migrate the store, list unfinished runs (resume_all) and the
recent runs the Slack publisher scans. Median of `--repeat` starts, each in a fresh store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from storage.sqlite import SqliteStore

SCAN_LIMIT = 200


def fill(path: Path, runs: int, tasks: int) -> None:
    db = sqlite3.connect(path)
    now = time.time() - runs
    spec = json.dumps({"id": "t", "kind": "tool", "title": "t", "tool": "x.y", "args": {}})
    with db:
        for n in range(runs):
            run_id = f"{n:010x}"
            at = now + n
            db.execute(
                "INSERT INTO runs (id, goal, status, requester, thread_key, meta_json, "
                "created_at, updated_at) VALUES (?, ?, 'succeeded', ?, ?, '{}', ?, ?)",
                (run_id, "goal " * 40, f"U{n % 50}", f"T{n}", at, at),
            )
            db.executemany(
                "INSERT INTO tasks (run_id, id, position, spec_json, status, attempts, "
                "started_at, finished_at, output) VALUES (?, ?, ?, ?, 'succeeded', 1, ?, ?, ?)",
                [(run_id, f"t{i}", i, spec, at, at + 0.2, "output " * 60) for i in range(tasks)],
            )
            db.executemany(
                "INSERT INTO events (run_id, task_id, kind, at) VALUES (?, ?, ?, ?)",
                [
                    (run_id, f"t{i}", kind, at)
                    for i in range(tasks)
                    for kind in ("task_started", "task_succeeded")
                ],
            )
    db.close()


async def start_once(path: Path) -> float:
    began = time.perf_counter()
    store = await SqliteStore.open(str(path))
    await store.unfinished_runs()
    await store.recent_runs(limit=SCAN_LIMIT)
    elapsed = time.perf_counter() - began
    await store.close()
    return elapsed


async def median_start(path: Path, repeat: int) -> float:
    return statistics.median([await start_once(path) for _ in range(repeat)])


async def main(runs: int, tasks: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        empty, full = Path(scratch) / "empty.sqlite3", Path(scratch) / "full.sqlite3"
        for path in (empty, full):
            await (await SqliteStore.open(str(path))).close()
        fill(full, runs, tasks)
        size = full.stat().st_size / 1e6
        cold_empty = await median_start(empty, repeat)
        cold_full = await median_start(full, repeat)
    print(
        f"start-up (open, migrate, unfinished runs, {SCAN_LIMIT} recent runs), median of {repeat}"
    )
    print()
    print("| database | size | start-up |")
    print("| --- | --- | --- |")
    print(f"| empty | - | {cold_empty * 1e3:.1f} ms |")
    print(f"| {runs:,} finished runs x {tasks} tasks | {size:.0f} MB | {cold_full * 1e3:.1f} ms |")
    print()
    print(f"difference: {(cold_full - cold_empty) * 1e3:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.tasks, args.repeat))
