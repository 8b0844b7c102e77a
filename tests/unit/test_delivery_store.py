"""The delivery table: typed reads and writes, unlanded runs, and the migration from runs.meta."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from storage.opening import statements
from storage.records import Delivery, EventKind, NewRun, RunStatus, Transition
from storage.sql import migrations
from storage.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(str(tmp_path / "dagbot.sqlite3"))
    yield opened
    await opened.close()


async def finished_run(store: SqliteStore, *, landed: bool) -> str:
    record, _ = await store.create_run(NewRun(goal="g", meta={"channel": "C1"}))
    await store.set_plan(record.id, {"title": "t", "tasks": []})
    event = await store.record(
        Transition(run_id=record.id, kind=EventKind.RUN_FINISHED, run_status=RunStatus.SUCCEEDED)
    )
    await store.save_delivery(Delivery(run_id=record.id, landed_seq=event.seq if landed else None))
    return record.id


async def test_a_delivery_round_trips_with_its_posts(store: SqliteStore) -> None:
    record, _ = await store.create_run(NewRun(goal="g"))
    assert await store.delivery(record.id) == Delivery(run_id=record.id)
    await store.save_delivery(
        Delivery(run_id=record.id, plan_message="1.1", plan_style="classic", landed_seq=7)
    )
    await store.record_post_intent(record.id, "plan")
    await store.record_post_intent(record.id, "summary@7#0")
    await store.record_post(record.id, "plan", "1.1")
    # An intent recorded again keeps the ts already known.
    await store.record_post_intent(record.id, "plan")
    assert await store.delivery(record.id) == Delivery(
        run_id=record.id,
        plan_message="1.1",
        plan_style="classic",
        landed_seq=7,
        posts={"plan": "1.1", "summary@7#0": None},
    )
    assert [r.id for r in await store.runs_in_plan_style("classic", limit=5)] == [record.id]


async def test_every_unlanded_run_is_found_however_many(store: SqliteStore) -> None:
    unlanded = [await finished_run(store, landed=False) for _ in range(60)]
    for _ in range(5):
        await finished_run(store, landed=True)
    running, _ = await store.create_run(NewRun(goal="still going"))
    await store.save_delivery(Delivery(run_id=running.id))
    assert await store.unlanded_runs() == unlanded


async def test_meta_keys_of_earlier_versions_move_to_the_delivery_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    [(_, first)] = [m for m in migrations() if m[0] == 1]
    meta = {
        "channel": "C1",
        "thread_ts": "1.0",
        "permalink": "https://x",
        "plan_ts": "1.5",
        "plan_style": "classic",
        "summary_ts": "1.9",
        "final_seq": 4,
        "slack_posts": {"plan": "1.5", "summary@4#0": "1.9"},
        "slack_intents": ["error@9"],
    }
    with closing(sqlite3.connect(path)) as db, db:
        for statement in statements(first):
            db.execute(statement)
        db.execute(
            "INSERT INTO runs (id, goal, status, meta_json, created_at, updated_at)"
            " VALUES ('r1', 'g', 'succeeded', ?, 1, 1), ('r2', 'g', 'succeeded', '{}', 2, 2)",
            (json.dumps(meta),),
        )
        db.execute("PRAGMA user_version = 1")
    store = await SqliteStore.open(str(path))
    try:
        assert await store.delivery("r1") == Delivery(
            run_id="r1",
            plan_message="1.5",
            plan_style="classic",
            summary_message="1.9",
            landed_seq=4,
            posts={"plan": "1.5", "summary@4#0": "1.9", "error@9": None},
        )
        run = await store.get_run("r1")
        assert run is not None
        assert run.meta == {"channel": "C1", "thread_ts": "1.0", "permalink": "https://x"}
        assert await store.delivery("r2") == Delivery(run_id="r2")
    finally:
        await store.close()
