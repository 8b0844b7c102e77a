"""The scale-out store: PostgreSQL through psycopg 3 and its connection pool.

Same contract as the SQLite store (storage/store.py), same SQL where the dialects agree
(queries.sql, with postgres.sql's versions of the rest). Several processes share one database:
runs are leased (storage/leases.py) and claimed with `FOR UPDATE SKIP LOCKED`; deliveries are
claimed in the transaction that creates their run. A lost connection or a serialization
failure is retried with backoff on a fresh connection from the pool, not fatal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar, overload
from urllib.parse import urlparse

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from storage.errors import DatabaseUnusable, LeaseLost, StorageError, UnsupportedDatabaseURL
from storage.group_commit import GroupCommit, Pending
from storage.leases import CLAIM_BATCH, Lease, Owner, OwnerKind
from storage.records import (
    Approval,
    Decision,
    Delivery,
    Event,
    EventKind,
    NewRun,
    NewSteering,
    RunRecord,
    RunStatus,
    SteeringRecord,
    TaskRecord,
    Transition,
    UsageRecord,
    UsageTotal,
)
from storage.rows import (
    approval_from_row,
    approval_request_row,
    delivery_from_rows,
    delivery_row,
    event,
    event_from_row,
    event_row,
    merge_meta,
    new_run_row,
    revision_rows,
    run_from_row,
    run_update_row,
    steering_from_row,
    steering_row,
    task_from_row,
    task_update_row,
    usage_from_row,
)
from storage.sql import migrations, query

log = logging.getLogger("dagbot.storage")

INBOX_RETENTION_SECONDS = 7 * 24 * 3600
POOL_SIZE = 8
MIGRATION_LOCK = 0x646167626F74  # "dagbot": the advisory lock that serialises migrations
RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Backoff between attempts of a transaction whose connection failed: about 16 s in all."""

_T = TypeVar("_T")
Connection = psycopg.AsyncConnection[DictRow]
Work = Callable[[Connection], Awaitable[_T]]


def q(name: str) -> str:
    return query(name, "postgres")


def is_postgres_url(database_url: str) -> bool:
    return urlparse(database_url).scheme in ("postgres", "postgresql")


def postgres_conninfo(database_url: str) -> str:
    """libpq's URL form; `postgres://` (what Heroku gives) is the same as `postgresql://`."""
    if not is_postgres_url(database_url):
        raise UnsupportedDatabaseURL(
            f"DATABASE_URL {database_url!r} is not a PostgreSQL URL (postgresql://...)"
        )
    return "postgresql://" + database_url.split("://", 1)[1]


def describe(database_url: str) -> str:
    """The URL without its password, for messages."""
    parsed = urlparse(database_url)
    host = parsed.hostname or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    user = f"{parsed.username}@" if parsed.username else ""
    return f"postgresql://{user}{host}{port}{parsed.path}"


async def open_postgres(database_url: str, *, owner: Owner | None = None) -> PostgresStore:
    """Connect, migrate (under an advisory lock) and return the store."""
    return await PostgresStore.open(database_url, owner=owner)


IDLE_IN_TRANSACTION_MS = 5_000
"""dagbot's transactions never wait on anything but the database; one idle this long is stuck."""


class PostgresStore:
    def __init__(self, pool: AsyncConnectionPool[Connection], owner: Owner | None = None) -> None:
        self.owner = owner or Owner()
        self._pool = pool
        self._writes: set[asyncio.Task[Any]] = set()
        self._commits = GroupCommit(self._write_batch)

    @classmethod
    async def open(cls, database_url: str, *, owner: Owner | None = None) -> PostgresStore:
        where = describe(database_url)
        conninfo = postgres_conninfo(database_url)
        try:
            # One connection first: a wrong host or a missing database is then one clear
            # error at once, where the pool would retry until its timeout.
            first = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=10)
            await first.close()
        except psycopg.Error as error:
            raise DatabaseUnusable(
                f"cannot connect to the database {where}: {_first_line(error)}. Is PostgreSQL "
                "running there, and does the database exist?"
            ) from None
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            conninfo,
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                # A process frozen inside a transaction (SIGSTOP, a stalled VM) would otherwise
                # hold its rows locked for ever, and FOR UPDATE SKIP LOCKED claims would skip its
                # runs instead of taking them over; the server ends such a session instead.
                "options": f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
            },
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            # A connection that died while idle in the pool is replaced before it is lent.
            check=AsyncConnectionPool.check_connection,
            name="dagbot",
        )
        try:
            await pool.open(wait=True, timeout=10.0)
        except Exception as error:
            await pool.close()
            raise DatabaseUnusable(
                f"cannot connect to the database {where}: {_first_line(error)}. Is PostgreSQL "
                "running there, and does the database exist?"
            ) from None
        store = cls(pool, owner)
        try:
            await store._transaction(lambda conn: _migrate(conn, where))
            before = time.time() - INBOX_RETENTION_SECONDS
            await store._write(_statement(q("prune_inbox"), {"before": before}))
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        while self._writes or self._commits.flushing is not None:
            flushing = self._commits.flushing
            waiting = [*self._writes, *([flushing] if flushing is not None else [])]
            await asyncio.wait(waiting)
        try:
            await self._write(
                _statement(q("release_leases"), {"owner": self.owner.id, "now": time.time()})
            )
        except StorageError as error:
            log.warning("could not release this process's leases: %s", error)
        await self._pool.close()

    # -- transactions ------------------------------------------------------------------------------

    async def _transaction(self, work: Work[_T]) -> _T:
        """Run `work` in one transaction; retried on a fresh connection if the connection fails.

        A retried transaction runs again from the start, so nothing of a failed attempt is
        kept. (A connection lost during COMMIT itself leaves the outcome unknown: that attempt
        may have committed. PostgreSQL cannot tell a client that has lost its connection.)
        """
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    return await work(conn)
            except psycopg.Error as error:
                _reraise_cancellation(error)
                if not isinstance(error, psycopg.OperationalError):
                    raise StorageError(f"the database failed: {error}") from error
                if delay is None:
                    raise StorageError(f"the database failed: {error}") from error
                log.warning(
                    "database transaction failed (attempt %d), retrying in %.2f s: %s",
                    attempt + 1,
                    delay,
                    error,
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
        raise AssertionError("unreachable")

    async def _write(self, work: Work[_T]) -> _T:
        """One write transaction, run to its end even if the caller is cancelled meanwhile."""
        task = asyncio.create_task(self._transaction(work), name="store-write")
        self._writes.add(task)
        task.add_done_callback(self._write_done)
        return await asyncio.shield(task)

    def _write_done(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        if not task.cancelled():
            task.exception()

    async def _fetchall(self, sql: str, params: dict[str, Any] | None = None) -> list[DictRow]:
        async def read(conn: Connection) -> list[DictRow]:
            cursor = await conn.execute(sql, params or {})
            return await cursor.fetchall()

        return await self._transaction(read)

    async def _fetchone(self, sql: str, params: dict[str, Any]) -> DictRow | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    # -- writes -------------------------------------------------------------------------------

    @overload
    async def create_run(self, new: NewRun) -> tuple[RunRecord, Event]: ...

    @overload
    async def create_run(
        self, new: NewRun, *, delivery_id: str | None
    ) -> tuple[RunRecord, Event] | None: ...

    async def create_run(
        self, new: NewRun, *, delivery_id: str | None = None
    ) -> tuple[RunRecord, Event] | None:
        now = time.time()
        run_id = uuid.uuid4().hex[:10]
        row = new_run_row(run_id, new, now, self.owner)
        created = Transition(run_id=run_id, kind=EventKind.RUN_CREATED)

        async def work(conn: Connection) -> int | None:
            if delivery_id is not None and not await _claim(conn, delivery_id, now):
                return None
            await conn.execute(q("insert_run"), row)
            return await _append_event(conn, created, now)

        seq = await self._write(work)
        if seq is None:
            return None
        record = RunRecord(
            id=run_id,
            goal=new.goal,
            status=RunStatus.PLANNING,
            created_at=now,
            updated_at=now,
            requester=new.requester,
            thread_key=new.thread_key,
            parent_run_id=new.parent_run_id,
            meta=dict(new.meta),
        )
        return record, event(seq, created, now)

    async def set_plan(self, run_id: str, plan: dict[str, Any]) -> Event:
        now = time.time()
        tasks = plan.get("tasks", [])
        planned = Transition(run_id=run_id, kind=EventKind.RUN_PLANNED, data={"tasks": len(tasks)})
        run_row = {
            "id": run_id,
            "plan_json": json.dumps(plan),
            "status": RunStatus.RUNNING.value,
            "at": now,
        }
        task_rows = [
            {
                "run_id": run_id,
                "id": task["id"],
                "position": position,
                "spec_json": json.dumps(task),
            }
            for position, task in enumerate(tasks)
        ]

        async def work(conn: Connection) -> int:
            if not await self._owned(conn, {run_id}):
                raise LeaseLost.of(run_id)
            await conn.execute(q("set_plan"), run_row)
            async with conn.cursor() as cursor:
                await cursor.executemany(q("insert_task"), task_rows)
            return await _append_event(conn, planned, now)

        return event(await self._write(work), planned, now)

    def record(self, transition: Transition) -> asyncio.Future[Event]:
        """Queue `transition` at once for the next group commit (storage.group_commit); the
        future gives its event. Committed even if nobody awaits the future."""
        return self._commits.record(transition)

    async def _write_batch(self, batch: Sequence[Pending]) -> list[Event | LeaseLost]:
        async def work(conn: Connection) -> list[Event | LeaseLost]:
            owned = await self._owned(conn, {t.run_id for t, _, _ in batch})
            kept = [(t, at) for t, at, _ in batch if t.run_id in owned]
            task_updates = [task_update_row(t, at) for t, at in kept if t.task_status is not None]
            run_updates = [run_update_row(t, at) for t, at in kept if t.run_status is not None]
            approvals = [r for t, at in kept if (r := approval_request_row(t, at))]
            seqs: list[int] = []
            async with conn.cursor() as cursor:
                if task_updates:
                    await cursor.executemany(q("update_task"), task_updates)
                if approvals:
                    await cursor.executemany(q("upsert_approval"), approvals)
                if run_updates:
                    await cursor.executemany(q("update_run_status"), run_updates)
                if kept:
                    await cursor.executemany(
                        q("append_event"), [event_row(t, at) for t, at in kept], returning=True
                    )
                    while True:
                        row = await cursor.fetchone()
                        assert row is not None
                        seqs.append(int(row["seq"]))
                        if not cursor.nextset():
                            break
            numbered = iter(seqs)
            return [
                event(next(numbered), t, at) if t.run_id in owned else LeaseLost.of(t.run_id)
                for t, at, _ in batch
            ]

        return await self._transaction(work)

    async def _owned(self, conn: Connection, run_ids: set[str]) -> set[str]:
        cursor = await conn.execute(
            q("select_owned"), {"owner": self.owner.id, "ids": sorted(run_ids)}
        )
        return {str(row["id"]) for row in await cursor.fetchall()}

    async def update_meta(self, run_id: str, patch: dict[str, Any]) -> RunRecord:
        async def work(conn: Connection) -> DictRow:
            cursor = await conn.execute(q("select_run").rstrip(";") + " FOR UPDATE", {"id": run_id})
            row = await cursor.fetchone()
            if row is None:
                raise StorageError(f"no run {run_id!r}")
            await conn.execute(
                q("update_meta"),
                {"id": run_id, "meta_json": merge_meta(row["meta_json"], patch), "at": time.time()},
            )
            cursor = await conn.execute(q("select_run"), {"id": run_id})
            updated = await cursor.fetchone()
            assert updated is not None
            return updated

        return run_from_row(await self._write(work))

    async def claim_delivery(self, event_id: str) -> bool:
        return await self._write(lambda conn: _claim(conn, event_id, time.time()))

    async def record_usage(self, usage: UsageRecord) -> None:
        await self._write(
            _statement(
                q("insert_usage"),
                {
                    "run_id": usage.run_id,
                    "task_id": usage.task_id,
                    "model": usage.model,
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "at": time.time(),
                },
            )
        )

    # -- reads --------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._fetchone(q("select_run"), {"id": run_id})
        return run_from_row(row) if row is not None else None

    # -- revisions and steering ----------------------------------------------------------------

    async def revise_plan(
        self,
        run_id: str,
        plan: dict[str, Any],
        transition: Transition,
        *,
        handled: Collection[int] = (),
    ) -> Event:
        now = time.time()
        run_row, task_rows = revision_rows(run_id, plan, now)
        keep = {row["id"] for row in task_rows}

        async def work(conn: Connection) -> int:
            if not await self._owned(conn, {run_id}):
                raise LeaseLost.of(run_id)
            await conn.execute(q("revise_plan"), run_row)
            ids = await _ids(conn, q("select_task_ids"), {"run_id": run_id})
            async with conn.cursor() as cursor:
                gone = [{"run_id": run_id, "id": i} for i in ids if i not in keep]
                if gone:
                    await cursor.executemany(q("delete_pending_task"), gone)
                await cursor.executemany(q("upsert_task"), task_rows)
                closed = [{"seq": s, "at": now} for s in handled]
                if closed:
                    await cursor.executemany(q("close_steering"), closed)
            return await _append_event(conn, transition, now)

        return event(await self._write(work), transition, now)

    async def add_steering(
        self, new: NewSteering, *, delivery_id: str | None = None
    ) -> bool | None:
        now = time.time()
        row = steering_row(new, now)

        async def work(conn: Connection) -> bool | None:
            cursor = await conn.execute(q("select_run_status_for_update"), {"id": new.run_id})
            found = await cursor.fetchone()
            if found is None or RunStatus(found["status"]).finished:
                return False
            if delivery_id is not None and not await _claim(conn, delivery_id, now):
                return None
            await conn.execute(q("insert_steering"), row)
            return True

        return await self._write(work)

    async def open_steering(self, run_id: str) -> list[SteeringRecord]:
        rows = await self._fetchall(q("select_open_steering"), {"run_id": run_id})
        return [steering_from_row(row) for row in rows]

    async def close_steering(self, seq: int) -> None:
        params = {"seq": seq, "at": time.time()}

        async def work(conn: Connection) -> None:
            await conn.execute(q("close_steering"), params)

        await self._write(work)

    async def late_steering(self, limit: int = 50) -> list[SteeringRecord]:
        rows = await self._fetchall(q("select_late_steering"), {"limit": limit})
        return [steering_from_row(row) for row in rows]

    async def get_tasks(self, run_id: str) -> list[TaskRecord]:
        return [
            task_from_row(row)
            for row in await self._fetchall(q("select_tasks"), {"run_id": run_id})
        ]

    async def find_run(self, id_or_prefix: str) -> RunRecord | None:
        if not id_or_prefix:
            return None
        rows = await self._fetchall(
            q("select_runs_by_prefix"),
            {"prefix": id_or_prefix, "prefix_end": id_or_prefix + "\U0010ffff"},
        )
        exact = [row for row in rows if row["id"] == id_or_prefix]
        if exact:
            return run_from_row(exact[0])
        return run_from_row(rows[0]) if len(rows) == 1 else None

    async def unfinished_runs(self) -> list[str]:
        return [str(row["id"]) for row in await self._fetchall(q("select_unfinished_runs"))]

    async def recent_runs(
        self, *, requester: str | None = None, limit: int = 20
    ) -> list[RunRecord]:
        if requester is None:
            rows = await self._fetchall(q("select_recent_runs"), {"limit": limit})
        else:
            rows = await self._fetchall(
                q("select_recent_runs_of"), {"requester": requester, "limit": limit}
            )
        return [run_from_row(row) for row in rows]

    async def recent_tool_durations(self, limit: int) -> list[tuple[str, float]]:
        rows = await self._fetchall(q("select_recent_tool_durations"), {"limit": limit})
        return [(row["tool"], float(row["seconds"])) for row in rows if row["tool"]]

    async def last_event(self, run_id: str, kinds: Collection[EventKind]) -> Event | None:
        row = await self._fetchone(
            q("select_last_event"), {"run_id": run_id, "kinds": [kind.value for kind in kinds]}
        )
        return event_from_row(row) if row is not None else None

    async def latest_run_in_thread(self, thread_key: str) -> RunRecord | None:
        row = await self._fetchone(q("select_latest_run_in_thread"), {"thread_key": thread_key})
        return run_from_row(row) if row is not None else None

    async def events(self, run_id: str) -> list[Event]:
        return [
            event_from_row(row)
            for row in await self._fetchall(q("select_events"), {"run_id": run_id})
        ]

    async def usage(self, run_id: str) -> list[UsageTotal]:
        return [
            usage_from_row(row)
            for row in await self._fetchall(q("select_usage"), {"run_id": run_id})
        ]

    async def record_feedback(self, run_id: str, user_id: str, value: str) -> bool:
        params = {"run_id": run_id, "user_id": user_id, "value": value, "at": time.time()}

        async def work(conn: Connection) -> bool:
            cursor = await conn.execute(q("upsert_feedback"), params)
            return bool(await cursor.fetchall())

        return await self._write(work)

    async def decide(
        self, run_id: str, task_id: str, decision: Decision, by: str | None
    ) -> tuple[Approval, bool] | None:
        params = {
            "run_id": run_id,
            "task_id": task_id,
            "decision": decision.value,
            "decided_by": by,
            "at": time.time(),
        }

        async def work(conn: Connection) -> tuple[DictRow, bool] | None:
            changed = await (await conn.execute(q("decide_approval"), params)).fetchone()
            row = await (await conn.execute(q("select_approval"), params)).fetchone()
            return (row, changed is not None) if row is not None else None

        found = await self._write(work)
        return (approval_from_row(found[0]), found[1]) if found is not None else None

    async def approvals(self, run_id: str) -> list[Approval]:
        rows = await self._fetchall(q("select_approvals"), {"run_id": run_id})
        return [approval_from_row(row) for row in rows]

    async def feedback(self, run_id: str) -> dict[str, int]:
        rows = await self._fetchall(q("select_feedback_counts"), {"run_id": run_id})
        return {str(row["value"]): int(row["votes"]) for row in rows}

    # -- delivery -----------------------------------------------------------------------------

    async def delivery(self, run_id: str) -> Delivery:
        row = await self._fetchone(q("select_delivery"), {"run_id": run_id})
        posts = await self._fetchall(q("select_delivery_posts"), {"run_id": run_id})
        return delivery_from_rows(run_id, row, posts)

    async def save_delivery(self, delivery: Delivery) -> None:
        row = delivery_row(delivery, time.time())
        await self._write(_statement(q("upsert_delivery"), row))

    async def record_post_intent(self, run_id: str, key: str) -> None:
        row = {"run_id": run_id, "post_key": key}
        await self._write(_statement(q("insert_delivery_intent"), row))

    async def record_post(self, run_id: str, key: str, message: str) -> None:
        row = {"run_id": run_id, "post_key": key, "message": message}
        await self._write(_statement(q("upsert_delivery_post"), row))

    async def unlanded_runs(self) -> list[str]:
        params = {"owner": self.owner.id, "now": time.time()}
        return [str(row["id"]) for row in await self._fetchall(q("select_unlanded_runs"), params)]

    async def runs_in_plan_style(self, plan_style: str, *, limit: int) -> list[RunRecord]:
        rows = await self._fetchall(
            q("select_runs_in_plan_style"), {"plan_style": plan_style, "limit": limit}
        )
        return [run_from_row(row) for row in rows]

    # -- leases -------------------------------------------------------------------------------

    async def claim_expired(self, *, limit: int = CLAIM_BATCH) -> list[str]:
        now = time.time()
        params = {
            "owner": self.owner.id,
            "kind": self.owner.kind.value,
            "now": now,
            "expires": now + self.owner.lease_seconds,
            "limit": limit,
        }
        return await self._write(lambda conn: _ids(conn, q("claim_expired_runs"), params))

    async def claim_run(self, run_id: str) -> bool:
        now = time.time()
        params = {
            "id": run_id,
            "owner": self.owner.id,
            "kind": self.owner.kind.value,
            "now": now,
            "expires": now + self.owner.lease_seconds,
        }
        return bool(await self._write(lambda conn: _ids(conn, q("claim_run"), params)))

    async def renew_leases(self, also: Collection[str] = ()) -> set[str]:
        params = {
            "owner": self.owner.id,
            "expires": time.time() + self.owner.lease_seconds,
            "also": sorted(also),
        }
        return set(await self._write(lambda conn: _ids(conn, q("renew_leases"), params)))

    async def lease(self, run_id: str) -> Lease | None:
        row = await self._fetchone(q("select_lease"), {"id": run_id})
        if row is None:
            return None
        return Lease(
            owner=row["owner"],
            kind=OwnerKind(row["owner_kind"]),
            expires_at=row["lease_expires_at"],
        )


# -- migrations -------------------------------------------------------------------------------


async def _migrate(conn: Connection, where: str) -> None:
    """Bring the schema up to date; processes starting at once wait on one advisory lock."""
    steps = migrations("postgres")
    latest = steps[-1][0]
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    cursor = await conn.execute(q("count_foreign_tables"))
    row = await cursor.fetchone()
    other_tables = int(row["tables"]) if row else 0
    await conn.execute(q("schema_version_table"))
    cursor = await conn.execute(q("select_schema_version"))
    row = await cursor.fetchone()
    version = int(row["version"]) if row else 0
    if version > latest:
        raise DatabaseUnusable(
            f"the database {where} has schema version {version}, newer than this dagbot "
            f"understands ({latest}); dagbot leaves it untouched. Upgrade dagbot or point "
            "DATABASE_URL elsewhere."
        )
    if version == 0 and other_tables:
        raise DatabaseUnusable(
            f"the database {where} holds tables that are not dagbot's; dagbot leaves it "
            "untouched. Point DATABASE_URL at a database of its own."
        )
    for step, script in steps:
        if step > version:
            # No parameters: psycopg sends the script as one simple query, every statement
            # inside this transaction.
            await conn.execute(script.replace("%%", "%").encode())
            await conn.execute(q("set_schema_version"), {"version": step})


# -- statements ---------------------------------------------------------------------------------


def _statement(sql: str, params: dict[str, Any]) -> Work[None]:
    async def work(conn: Connection) -> None:
        await conn.execute(sql, params)

    return work


async def _ids(conn: Connection, sql: str, params: dict[str, Any]) -> list[str]:
    cursor = await conn.execute(sql, params)
    return [str(row["id"]) for row in await cursor.fetchall()]


async def _claim(conn: Connection, event_id: str, at: float) -> bool:
    cursor = await conn.execute(q("insert_inbox"), {"event_id": event_id, "at": at})
    return await cursor.fetchone() is not None


async def _append_event(conn: Connection, transition: Transition, at: float) -> int:
    cursor = await conn.execute(q("append_event"), event_row(transition, at))
    row = await cursor.fetchone()
    assert row is not None
    return int(row["seq"])


def _reraise_cancellation(error: psycopg.Error) -> None:
    """Raise CancelledError when the task was cancelled during this transaction.

    psycopg cancels the query on the server when its task is cancelled, and the rollback that
    follows may fail in turn (QueryCanceled, a broken connection): that error then replaces the
    cancellation. Retried or wrapped, it would hide the cancellation from the caller, which
    then carries on as if never cancelled (a task that waits for it to stop waits for ever).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from error


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
