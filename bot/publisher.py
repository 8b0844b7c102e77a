"""Shows runs in their Slack threads: schedules each run's sync on the leading edge, in budget.

The engine's events only say *that* a run changed. Each Slack run gets a worker that, when its
run is dirty, reads the run's current state from the store and has `RunSync` bring the thread in
line with it. Publishing is on the leading edge: the planning status, the plan's first post and
every final state go out at once; only a running plan's intermediate edits wait, for the
message's `min_interval` and for the workspace's `chat.update` budget (bot.rate_budget), and a
burst of transitions meanwhile becomes one edit of the state as it is by then. An urgent event
(the plan stored, the run finished or resumed) cuts that wait short.

A failed write is tried again later with backoff (transient errors, such as Slack being down,
for as long as it takes); a Slack error never reaches the engine. At start-up every finished run
whose final state the thread does not show yet is landed, however many there are (the store
knows them: `unlanded_runs`). While planning runs long, the thread's status is set again before
Slack's 2-minute timeout clears it.

Jobs live in their own modules: bot.run_sync (one run's thread), bot.outbox (messages posted
exactly once), bot.app_home (the App Home tab).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from dataclasses import dataclass, field

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.app_home import AppHome
from bot.budgeted_client import BudgetedWebClient, speak_for
from bot.outbox import DeliveryBook
from bot.run_sync import PLANNING_LOADING, PLANNING_STATUS, STATUS_REFRESH, RunSync, RunThread
from bot.slack_client import error_code, is_transient, retry_after
from bot.summary_stream import STREAM_INTERVAL
from bot.thread_writer import SlackTarget
from scheduler.dag.bus import Subscription
from scheduler.dag.engine import Engine
from storage.records import Event, EventKind

__all__ = ["PLANNING_LOADING", "PLANNING_STATUS", "SlackPublisher"]

log = logging.getLogger("dagbot.slack")

MAX_BACKOFF = 60.0
CLOSING_ATTEMPTS = 2
BUG_ATTEMPTS = 5

_TERMINAL = (EventKind.RUN_FINISHED, EventKind.RUN_CANCELLED)
# Events whose state must reach Slack at once, even while an intermediate edit is waiting.
# A revised plan (a new round, a steering message) is shown at once too: someone is watching.
_URGENT = frozenset(
    {EventKind.RUN_PLANNED, EventKind.RUN_RESUMED, EventKind.RUN_REVISED, *_TERMINAL}
)


@dataclass(kw_only=True)
class _RunState:
    """The publisher's scheduling state for one run (mutable; owned by that run's worker)."""

    run_id: str
    thread: RunThread
    dirty: bool = False
    ignored: bool = False
    retired: bool = False
    worker: asyncio.Task[None] | None = None
    next_at: float = 0.0
    last_edit: float = float("-inf")
    failures: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    status_timer: asyncio.TimerHandle | None = None


class SlackPublisher:
    """Keeps every Slack run's thread in line with the store; see the module docstring."""

    def __init__(
        self,
        client: AsyncWebClient,
        engine: Engine,
        *,
        min_interval: float = 1.0,
        status_refresh: float = STATUS_REFRESH,
    ) -> None:
        self._client = client
        self._engine = engine
        self._min_interval = min_interval
        self._home = AppHome(client, engine)
        self._sync = RunSync(
            client,
            engine,
            self._home,
            status_refresh=status_refresh,
            stream_interval=min(min_interval, STREAM_INTERVAL),
        )
        self._runs: dict[str, _RunState] = {}
        self._subscription: Subscription | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to every run's events; call before `engine.resume_all()`.

        Also lands every Slack run that finished without its final state reaching the thread
        (a crash, or Slack down): all of them, oldest first.
        """
        if self._subscription is not None:
            return
        self._subscription = self._engine.bus.subscribe()
        self._sync.summaries.start(self._engine.drafts)
        self._start_consumer()
        await self._land_orphans()
        # A process that dies right after a run finished leaves it unlanded and leased to it
        # for a while: looked for again on every lease round.
        self._engine.on_lease_round(self._land_orphans)
        # A finished run stays leased here while its last messages are on their way (they may
        # wait minutes for Slack's rate limits): else another replica would land it too.
        self._engine.keep_leased(self._landing)

    def _landing(self) -> set[str]:
        return {run_id for run_id, state in self._runs.items() if not state.ignored}

    async def _land_orphans(self) -> None:
        for run_id in await self._engine.unlanded_runs():
            if run_id in self._runs:
                continue  # being landed here already
            if await self._engine.take(run_id):  # its process is gone: land it here, once
                log.info("run %s: landing its final state here (its process stopped)", run_id)
                self._mark(self._state(run_id))

    async def aclose(self) -> None:
        """Land every pending final state (one last attempt each), then stop."""
        self._closing.set()
        for state in self._runs.values():
            self._stop_status_timer(state)
            state.wake.set()
        while True:
            self._drain()
            workers = [s.worker for s in self._runs.values() if s.worker is not None]
            if not workers:
                break
            await asyncio.wait(workers)
        await self._sync.summaries.aclose()
        if self._subscription is not None:
            self._subscription.close()
        if self._consumer is not None:
            self._consumer.cancel()
            with suppress(asyncio.CancelledError):
                await self._consumer

    async def wait_idle(self) -> None:
        """Return when every Slack write for the runs seen so far has landed (or was given up)."""
        while True:
            self._drain()
            if self._active == 0:
                return
            await self._idle.wait()

    async def refresh_home(self, user_id: str) -> None:
        """Publish the user's App Home tab (see bot.app_home). A Slack error is logged."""
        await self._home.refresh(user_id)

    # -- events ------------------------------------------------------------------------------

    def _start_consumer(self) -> None:
        self._consumer = asyncio.create_task(self._consume(), name="dagbot slack publisher")
        self._consumer.add_done_callback(self._consumer_done)

    def _consumer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closing.is_set():
            return
        error = task.exception()
        if error is None:
            return
        log.error("the Slack publisher's consumer stopped; restarting it", exc_info=error)
        self._start_consumer()

    async def _consume(self) -> None:
        assert self._subscription is not None
        while (event := await self._subscription.get()) is not None:
            self._dispatch(event)
            self._drain()

    def _drain(self) -> None:
        if self._subscription is not None:
            for event in self._subscription.drain():
                self._dispatch(event)

    def _state(self, run_id: str) -> _RunState:
        state = self._runs.get(run_id)
        if state is None:
            book = DeliveryBook(self._engine, run_id)
            thread = RunThread(run_id=run_id, book=book)
            state = self._runs[run_id] = _RunState(run_id=run_id, thread=thread)
        return state

    def _dispatch(self, event: Event) -> None:
        try:
            state = self._state(event.run_id)
            if state.ignored:
                if event.kind in _TERMINAL:
                    del self._runs[event.run_id]
                    self._sync.summaries.forget(event.run_id)
                return
            if event.kind is EventKind.RUN_RESUMED:
                state.thread.status_shown_at = None
            if event.kind in _URGENT:
                state.wake.set()
            self._mark(state)
        except Exception:
            log.exception("could not take event %s of run %s", event.kind, event.run_id)

    def _mark(self, state: _RunState) -> None:
        state.dirty = True
        state.retired = False
        if state.worker is None or state.worker.done():
            state.worker = asyncio.create_task(
                self._work(state), name=f"dagbot slack run {state.run_id}"
            )
            self._active += 1
            self._idle.clear()
            state.worker.add_done_callback(lambda task: self._worker_done(state, task))

    def _worker_done(self, state: _RunState, task: asyncio.Task[None]) -> None:
        self._active -= 1
        if state.worker is task:
            state.worker = None
            if state.retired and not state.dirty:
                self._stop_status_timer(state)
                self._runs.pop(state.run_id, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("the Slack worker of run %s stopped", state.run_id, exc_info=error)
        if self._active == 0:
            self._idle.set()

    # -- the per-run worker ------------------------------------------------------------------

    async def _work(self, state: _RunState) -> None:
        speak_for(state.run_id)
        loop = asyncio.get_running_loop()
        while state.dirty and not state.ignored:
            delay = state.next_at - loop.time()
            if delay > 0 and not self._closing.is_set():
                await self._nap(state, delay, wake=False)
            state.dirty = False
            edited = False
            # Cleared before the read: an urgent event that comes after it must cut the next
            # nap short, since the state read here does not include it.
            state.wake.clear()
            try:
                if not await self._engine.owns(state.run_id):
                    continue  # another process works on it now: it alone writes its messages
                view = await self._engine.view(state.run_id)
                target = SlackTarget.of(view.run)
                if target is None:
                    state.ignored = True
                    return
                await self._sync.prepare(state.thread)
                if self._sync.is_intermediate(state.thread, view):
                    wait = self._edit_wait(state, loop.time())
                    if wait > 0 and not self._closing.is_set():
                        state.dirty = True
                        await self._nap(state, wait, wake=True)
                        continue
                    edited = True
                await self._sync.sync(state.thread, view, loop.time())
            except Exception as error:
                if not self._should_retry(state, error):
                    state.failures = 0
                    continue
                state.dirty = True
                state.failures += 1
                backoff = min(self._min_interval * 2**state.failures, MAX_BACKOFF)
                state.next_at = loop.time() + max(backoff, retry_after(error) or 0.0)
                continue
            state.failures = 0
            if edited:
                state.last_edit = loop.time()
            if state.thread.finished:
                state.retired = True
                self._stop_status_timer(state)
            else:
                self._keep_status(state, view.run.plan is None)

    def _edit_wait(self, state: _RunState, now: float) -> float:
        """Seconds before the next intermediate edit: the message's interval and the budget."""
        wait = state.last_edit + self._min_interval - now
        if isinstance(self._client, BudgetedWebClient):
            budget = self._client.budget.delay(self._client.workspace, "chat.update", urgent=False)
            wait = max(wait, budget)
        return wait

    async def _nap(self, state: _RunState, seconds: float, *, wake: bool) -> None:
        """Wait `seconds`, or less when closing (or, with `wake`, when an urgent event comes)."""
        waits = [asyncio.ensure_future(self._closing.wait())]
        if wake:
            waits.append(asyncio.ensure_future(state.wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def _keep_status(self, state: _RunState, planning: bool) -> None:
        """While the run plans, sync again when its thread status is due to be set anew."""
        self._stop_status_timer(state)
        thread = state.thread
        if (
            not planning
            or thread.status_shown_at is None
            or thread.book.current.plan_message  # a placeholder stands in for the status
            or self._closing.is_set()
        ):
            return
        loop = asyncio.get_running_loop()
        due = thread.status_shown_at + self._sync.status_refresh
        state.status_timer = loop.call_at(due, self._mark, state)

    @staticmethod
    def _stop_status_timer(state: _RunState) -> None:
        if state.status_timer is not None:
            state.status_timer.cancel()
            state.status_timer = None

    def _should_retry(self, state: _RunState, error: Exception) -> bool:
        transient = is_transient(error)
        from_slack = isinstance(error, SlackApiError | SlackClientError)
        if from_slack or transient:
            log.warning("Slack update of run %s failed: %s", state.run_id, error_code(error))
        else:
            log.error("Slack update of run %s failed", state.run_id, exc_info=error)
        if from_slack and not transient:
            return False  # the same call would fail the same way; the next event tries anew
        limit = CLOSING_ATTEMPTS if self._closing.is_set() else None if transient else BUG_ATTEMPTS
        return limit is None or state.failures + 1 < limit
