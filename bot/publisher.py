"""Shows runs in their Slack threads: the live plan message, the summary, the App Home.

The engine's events only say *that* a run changed. Each Slack run gets a worker that, when its
run is dirty, reads the run's current state from the store and brings Slack in line with it:
so a burst of transitions becomes one `chat.update`, at most one per `min_interval` per message,
and a failed write is simply tried again later with whatever the state is by then. Every post
that must happen once (the plan, each summary part, a planning error) records its intent in the
run's meta before posting and its ts after, and carries Slack message metadata naming it, so a
crash between the two is resolved by looking for it in the thread once instead of posting twice.
A Slack error is logged (by its code; never a token) and never reaches the engine or the runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import (
    SUMMARY_PART_LIMIT,
    SlackMessage,
    home_view,
    placeholder_message,
    plan_message,
    planning_failed_message,
    summary_markdown,
)
from bot.markdown import split_markdown
from bot.slack_client import error_code, is_transient, retry_after
from bot.summary_feedback import feedback_blocks
from bot.summary_stream import STREAM_INTERVAL, LiveSummaries
from bot.thread_writer import SlackTarget, ThreadWriter
from scheduler.dag.bus import Subscription
from scheduler.dag.engine import Engine
from scheduler.dag.state import Run, RunView
from storage.records import Event, EventKind, RunStatus

log = logging.getLogger("dagbot.slack")

PLANNING_STATUS = "is planning…"
PLANNING_LOADING = ["Planning the tasks…", "Choosing the tools…", "Ordering the steps…"]
MAX_BACKOFF = 60.0
SCAN_LIMIT = 50
CLOSING_ATTEMPTS = 2
BUG_ATTEMPTS = 5
REPLIES_PAGES = 10

_TERMINAL = (EventKind.RUN_FINISHED, EventKind.RUN_CANCELLED)


@dataclass(kw_only=True)
class _RunState:
    """The publisher's working state for one run (mutable; owned by that run's worker)."""

    run_id: str
    dirty: bool = False
    ignored: bool = False
    retired: bool = False
    worker: asyncio.Task[None] | None = None
    next_at: float = 0.0
    failures: int = 0
    fingerprint: str | None = None
    working_shown: bool = False
    permalink_tried: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


class SlackPublisher:
    """Keeps every Slack run's thread in line with the store; see the module docstring."""

    def __init__(
        self, client: AsyncWebClient, engine: Engine, *, min_interval: float = 1.0
    ) -> None:
        self._client = client
        self._engine = engine
        self._min_interval = min_interval
        self._runs: dict[str, _RunState] = {}
        self._subscription: Subscription | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # Workspaces (team ids) that rejected plan/task_card blocks: classic blocks there.
        self._classic_teams: set[str] = set()
        self._writer = ThreadWriter(client)
        self._summaries = LiveSummaries(
            client, engine.store, self._writer, interval=min(min_interval, STREAM_INTERVAL)
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to every run's events; call before `engine.resume_all()`.

        Also picks up Slack runs that finished while no publisher was running to land them
        (their final plan state, summary) — a crash right after a run finished loses nothing.
        """
        if self._subscription is not None:
            return
        self._subscription = self._engine.bus.subscribe()
        self._summaries.start(self._engine.drafts)
        self._start_consumer()
        await self._scan_unlanded()

    async def aclose(self) -> None:
        """Land every pending final state (one last attempt each), then stop."""
        self._closing.set()
        while True:
            self._drain()
            workers = [s.worker for s in self._runs.values() if s.worker is not None]
            if not workers:
                break
            await asyncio.wait(workers)
        await self._summaries.aclose()
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

    def _dispatch(self, event: Event) -> None:
        try:
            state = self._runs.get(event.run_id)
            if state is None:
                state = self._runs[event.run_id] = _RunState(run_id=event.run_id)
            if state.ignored:
                if event.kind in _TERMINAL:
                    del self._runs[event.run_id]
                    self._summaries.forget(event.run_id)
                return
            if event.kind is EventKind.RUN_RESUMED:
                state.working_shown = False
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
                self._runs.pop(state.run_id, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("the Slack worker of run %s stopped", state.run_id, exc_info=error)
        if self._active == 0:
            self._idle.set()

    # -- the per-run worker ------------------------------------------------------------------

    async def _work(self, state: _RunState) -> None:
        loop = asyncio.get_running_loop()
        while state.dirty and not state.ignored:
            delay = state.next_at - loop.time()
            if delay > 0 and not self._closing.is_set():
                with suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closing.wait()
            state.dirty = False
            try:
                await self._sync(state)
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
            state.next_at = loop.time() + self._min_interval

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

    async def _sync(self, state: _RunState) -> None:
        """Make the run's thread show the run's current state."""
        view = await self._engine.view(state.run_id)
        run = view.run
        state.meta = dict(run.meta)
        target = SlackTarget.of(run)
        if target is None:
            state.ignored = True
            return
        await self._summaries.settle_orphan(run.id, target, state.meta)
        if run.plan is None and not run.status.finished:
            await self._show_working(state, target, run)
            return
        if run.plan is not None or state.meta.get("plan_ts"):
            await self._permanent_logged(
                state, "plan message", self._write_plan(state, target, view)
            )
        if run.plan is not None:
            await self._ensure_permalink(state, target)
        if run.status.finished:
            await self._finish(state, target, view)

    async def _permanent_logged(self, state: _RunState, what: str, step: Awaitable[None]) -> None:
        """Run a step whose permanent Slack errors are logged and passed over (not retried)."""
        try:
            await step
        except (SlackApiError, SlackClientError) as error:
            if is_transient(error):
                raise
            log.warning("Slack %s of run %s failed: %s", what, state.run_id, error_code(error))

    # -- steps -------------------------------------------------------------------------------

    async def _show_working(self, state: _RunState, target: SlackTarget, run: Run) -> None:
        if state.working_shown or state.meta.get("plan_ts"):
            return
        try:
            await self._client.assistant_threads_setStatus(
                channel_id=target.channel,
                thread_ts=target.thread_ts,
                status=PLANNING_STATUS,
                loading_messages=PLANNING_LOADING,
            )
        except SlackApiError as error:
            if is_transient(error):
                raise
            log.info("thread status unavailable (%s); posting a placeholder", error_code(error))
            await self._put_plan(state, target, placeholder_message(run))
        state.working_shown = True

    async def _write_plan(self, state: _RunState, target: SlackTarget, view: RunView) -> None:
        classic = self._is_classic(state, target)
        message = plan_message(view, classic=classic)
        if state.meta.get("plan_ts") and _fingerprint(message) == state.fingerprint:
            return
        try:
            await self._put_plan(state, target, message)
        except SlackApiError as error:
            if classic or error_code(error) != "invalid_blocks":
                raise
            log.warning("plan blocks rejected in team %s; using classic blocks", target.team_id)
            if target.team_id:
                self._classic_teams.add(target.team_id)
            await self._set_meta(state, {"plan_style": "classic"})
            message = plan_message(view, classic=True)
            await self._put_plan(state, target, message)
        state.fingerprint = _fingerprint(message)

    async def _put_plan(self, state: _RunState, target: SlackTarget, message: SlackMessage) -> None:
        plan_ts = state.meta.get("plan_ts")
        if isinstance(plan_ts, str) and plan_ts:
            await self._client.chat_update(
                channel=target.channel, ts=plan_ts, text=message.text, blocks=message.blocks
            )
            return

        send = partial(self._writer.post, target, message)
        ts = await self._post_once(state, target, "plan", "plan", send)
        await self._set_meta(state, {"plan_ts": ts})

    async def _ensure_permalink(self, state: _RunState, target: SlackTarget) -> None:
        if state.permalink_tried or state.meta.get("permalink"):
            return
        state.permalink_tried = True
        try:
            response = await self._client.chat_getPermalink(
                channel=target.channel, message_ts=target.thread_ts
            )
        except (SlackApiError, SlackClientError) as error:
            log.info("no permalink for run %s: %s", state.run_id, error_code(error))
            return
        permalink = response.get("permalink")
        if isinstance(permalink, str) and permalink:
            await self._set_meta(state, {"permalink": permalink})

    async def _finish(self, state: _RunState, target: SlackTarget, view: RunView) -> None:
        run = view.run
        seq = await self._terminal_seq(run.id)
        if seq is None or state.meta.get("final_seq") == seq:
            return
        if run.status is RunStatus.FAILED and run.plan is None:
            await self._permanent_logged(
                state, "planning error", self._post_planning_error(state, target, run, seq)
            )
        elif run.status is RunStatus.CANCELLED and not state.meta.get("plan_ts"):
            await self._permanent_logged(state, "status", self._clear_status(target))
        elif run.status is RunStatus.CANCELLED:
            # A summary cut short: its streamed message is finished, nothing more is posted.
            await self._permanent_logged(
                state, "summary", self._post_summary(state, target, view, seq, streamed_only=True)
            )
        else:
            await self._permanent_logged(
                state, "summary", self._post_summary(state, target, view, seq)
            )
        await self._set_meta(state, {"final_seq": seq})
        state.retired = True
        if run.requester:
            await self.refresh_home(run.requester)

    async def _post_planning_error(
        self, state: _RunState, target: SlackTarget, run: Run, seq: int
    ) -> None:
        message = planning_failed_message(run)

        send = partial(self._writer.post, target, message)
        await self._post_once(state, target, f"error@{seq}", "error", send)

    async def _clear_status(self, target: SlackTarget) -> None:
        await self._client.assistant_threads_setStatus(
            channel_id=target.channel, thread_ts=target.thread_ts, status=""
        )

    async def _post_summary(
        self,
        state: _RunState,
        target: SlackTarget,
        view: RunView,
        seq: int,
        *,
        streamed_only: bool = False,
    ) -> None:
        parts = split_markdown(summary_markdown(view), SUMMARY_PART_LIMIT)
        posts = _dict(state.meta.get("slack_posts"))

        def key(index: int) -> str:
            return f"summary@{seq}#{index}"

        def metadata(index: int) -> dict[str, Any]:
            return {
                "event_type": "dagbot_summary",
                "event_payload": {"run_id": state.run_id, "key": key(index)},
            }

        # Parts already shown by the live stream are finished in place, never posted again.
        streamed = await self._summaries.finish(
            state.run_id, target, parts, metadata, state.meta, seq
        )
        if any(posts.get(key(i)) != ts for i, ts in enumerate(streamed)):
            noted = {key(i): ts for i, ts in enumerate(streamed)}
            await self._set_meta(state, {"slack_posts": {**posts, **noted}})
        for index, part in enumerate(parts):
            if index < len(streamed):
                ts = streamed[index]
            elif streamed_only:
                break
            else:
                extra = feedback_blocks(state.run_id) if index == len(parts) - 1 else []

                async def send(
                    metadata: dict[str, Any], part: str = part, extra: list[Any] = extra
                ) -> str:
                    return await self._writer.post_summary_part(target, part, metadata, extra)

                ts = await self._post_once(state, target, key(index), "summary", send)
            if index == 0 and state.meta.get("summary_ts") != ts:
                await self._set_meta(state, {"summary_ts": ts})

    # -- exactly-once posts ------------------------------------------------------------------

    async def _post_once(
        self,
        state: _RunState,
        target: SlackTarget,
        key: str,
        kind: str,
        send: Callable[[dict[str, Any]], Awaitable[str]],
    ) -> str:
        """Post a message at most once per (run, key), across retries and restarts."""
        posts = _dict(state.meta.get("slack_posts"))
        posted = posts.get(key)
        if isinstance(posted, str) and posted:
            return posted
        intents = _list(state.meta.get("slack_intents"))
        if key in intents:
            # An earlier attempt may have reached Slack without us learning its ts.
            found = await self._find_posted(target, state.run_id, key)
            if found is not None:
                await self._remember_post(state, key, found)
                return found
        else:
            await self._set_meta(state, {"slack_intents": [*intents, key]})
        metadata = {
            "event_type": f"dagbot_{kind}",
            "event_payload": {"run_id": state.run_id, "key": key},
        }
        ts = await send(metadata)
        await self._remember_post(state, key, ts)
        return ts

    async def _remember_post(self, state: _RunState, key: str, ts: str) -> None:
        posts = {**_dict(state.meta.get("slack_posts")), key: ts}
        intents = [k for k in _list(state.meta.get("slack_intents")) if k != key]
        await self._set_meta(state, {"slack_posts": posts, "slack_intents": intents})

    async def _find_posted(self, target: SlackTarget, run_id: str, key: str) -> str | None:
        cursor: str | None = None
        for _ in range(REPLIES_PAGES):
            response = await self._client.conversations_replies(
                channel=target.channel,
                ts=target.thread_ts,
                include_all_metadata=True,
                limit=200,
                cursor=cursor,
            )
            for message in response.get("messages") or []:
                metadata = _dict(message.get("metadata"))
                payload = _dict(metadata.get("event_payload"))
                if (
                    str(metadata.get("event_type", "")).startswith("dagbot_")
                    and payload.get("run_id") == run_id
                    and payload.get("key") == key
                ):
                    return str(message["ts"])
            cursor = _dict(response.get("response_metadata")).get("next_cursor") or None
            if cursor is None:
                break
        return None

    # -- helpers -----------------------------------------------------------------------------

    async def _set_meta(self, state: _RunState, patch: dict[str, Any]) -> None:
        record = await self._engine.store.update_meta(state.run_id, patch)
        state.meta = dict(record.meta)

    def _is_classic(self, state: _RunState, target: SlackTarget) -> bool:
        return state.meta.get("plan_style") == "classic" or target.team_id in self._classic_teams

    async def _terminal_seq(self, run_id: str) -> int | None:
        events = await self._engine.store.events(run_id)
        return next((e.seq for e in reversed(events) if e.kind in _TERMINAL), None)

    async def _scan_unlanded(self) -> None:
        for record in await self._engine.store.recent_runs(limit=SCAN_LIMIT):
            run = Run.from_record(record)
            target = SlackTarget.of(run)
            if target is None:
                continue
            if run.meta.get("plan_style") == "classic" and target.team_id:
                self._classic_teams.add(target.team_id)
            if not run.status.finished:
                continue  # engine.resume_all() brings it back with a RUN_RESUMED event
            seq = await self._terminal_seq(run.id)
            if seq is not None and run.meta.get("final_seq") != seq:
                state = self._runs.setdefault(run.id, _RunState(run_id=run.id))
                self._mark(state)

    async def refresh_home(self, user_id: str) -> None:
        """Publish the user's App Home tab: their recent runs with status, time and thread link.

        A Slack error is logged, not raised.
        """
        try:
            records = await self._engine.store.recent_runs(requester=user_id, limit=20)
            view = home_view([Run.from_record(r) for r in records])
            await self._client.views_publish(user_id=user_id, view=view)
        except (SlackApiError, SlackClientError) as error:
            log.warning("App Home of %s not refreshed: %s", user_id, error_code(error))


def _fingerprint(message: SlackMessage) -> str:
    encoded = json.dumps([message.text, message.blocks], sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
