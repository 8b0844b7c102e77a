"""Brings one run's Slack thread in line with the run: status, plan message, final state, summary.

`RunSync.sync` is called by the publisher's worker for the run with the run's current view; it
writes only what differs from what the thread shows (the delivery state in the store, plus a
fingerprint of the last plan message sent). Permanent Slack errors of a step are logged and
passed over; transient ones are raised for the worker to retry with backoff.

A plan message that can no longer be edited (deleted, or past Slack's edit window) when the run
finishes is posted afresh with the final state, so the thread never keeps showing "Running" and
a live Cancel button under a finished summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import partial
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.app_home import AppHome
from bot.blocks import (
    SUMMARY_PART_LIMIT,
    SlackMessage,
    feedback_blocks,
    placeholder_message,
    plan_message,
    planning_failed_message,
    summary_markdown,
)
from bot.budgeted_client import background_calls
from bot.capabilities import REFUSED_CONTENT, ChannelFacts, Feature
from bot.markdown import split_markdown
from bot.outbox import DeliveryBook, Outbox
from bot.slack_client import error_code, is_transient
from bot.summary_stream import STREAM_INTERVAL, LiveSummaries
from bot.thread_writer import SlackTarget, ThreadWriter
from scheduler.dag.run_records import RunRecords
from scheduler.dag.state import Run, RunView
from storage.records import EventKind, RunStatus

log = logging.getLogger("dagbot.slack")

PLANNING_STATUS = "is planning…"
PLANNING_LOADING = ["Planning the tasks…", "Choosing the tools…", "Ordering the steps…"]
# Slack drops an assistant status after 2 minutes without a reply: set it again before that.
STATUS_REFRESH = 90.0
# chat.update errors after which the message will never take an edit again.
GONE_ERRORS = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
TERMINAL = (EventKind.RUN_FINISHED, EventKind.RUN_CANCELLED)


@dataclass(kw_only=True)
class RunThread:
    """What the publisher knows of one run's thread (mutable; owned by that run's worker)."""

    run_id: str
    book: DeliveryBook
    loaded: bool = False
    status_shown_at: float | None = None
    fingerprint: str | None = None
    permalink_tried: bool = False
    finished: bool = False
    compact: bool = False  # Slack refused this run's full plan: render it with least detail


class RunSync:
    def __init__(
        self,
        client: AsyncWebClient,
        records: RunRecords,
        home: AppHome,
        *,
        status_refresh: float = STATUS_REFRESH,
        stream_interval: float = STREAM_INTERVAL,
    ) -> None:
        self._client = client
        self._records = records
        self._home = home
        self._outbox = Outbox(client)
        # Channels that refused plan blocks (or markdown, streaming) lately: bot.capabilities.
        self.facts = ChannelFacts()
        self._writer = ThreadWriter(client, self.facts)
        self.summaries = LiveSummaries(client, records, self._writer, interval=stream_interval)
        """Summaries streamed while they are written (started and closed by the publisher)."""
        self.status_refresh = status_refresh

    async def prepare(self, thread: RunThread) -> None:
        """Load the stored delivery once and make sure the run has a delivery row."""
        if not thread.loaded:
            await thread.book.load()
            thread.loaded = True
        await thread.book.ensure()

    def status_due(self, thread: RunThread, now: float) -> bool:
        """Whether the planning status must be set (again) now."""
        shown = thread.status_shown_at
        return shown is None or now - shown >= self.status_refresh

    @staticmethod
    def is_intermediate(thread: RunThread, view: RunView) -> bool:
        """True when the next write would only edit a running plan (coalesced, background)."""
        run = view.run
        return (
            run.plan is not None
            and not run.status.finished
            and thread.book.current.plan_message is not None
        )

    async def sync(self, thread: RunThread, view: RunView, now: float) -> None:
        """Make the run's thread show the run's current state; `now` is the loop's time."""
        run = view.run
        target = SlackTarget.of(run)
        if target is None:
            return
        await self.prepare(thread)
        thread.finished = False
        await self.summaries.settle_orphan(run.id, target, run.meta)
        if run.plan is None and not run.status.finished:
            await self._show_working(thread, target, run, now)
            return
        seq = await self._terminal_seq(run.id) if run.status.finished else None
        if run.plan is not None or thread.book.current.plan_message:
            await self._permanent_logged(
                thread, "plan message", self._write_plan(thread, target, view, seq)
            )
        if run.plan is not None:
            await self._ensure_permalink(thread, target)
        if seq is not None:
            await self._finish(thread, target, view, seq)

    async def _permanent_logged(self, thread: RunThread, what: str, step: Awaitable[None]) -> None:
        """Run a step whose permanent Slack errors are logged and passed over (not retried)."""
        try:
            await step
        except (SlackApiError, SlackClientError) as error:
            if is_transient(error):
                raise
            log.warning("Slack %s of run %s failed: %s", what, thread.run_id, error_code(error))

    # -- steps -------------------------------------------------------------------------------

    async def _show_working(
        self, thread: RunThread, target: SlackTarget, run: Run, now: float
    ) -> None:
        if thread.book.current.plan_message or not self.status_due(thread, now):
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
            await self._put_plan(thread, target, placeholder_message(run), None)
        thread.status_shown_at = now

    async def _write_plan(
        self, thread: RunThread, target: SlackTarget, view: RunView, seq: int | None
    ) -> None:
        classic = self._is_classic(thread, target)
        message = plan_message(view, classic=classic, smallest=thread.compact)
        if thread.book.current.plan_message and _fingerprint(message) == thread.fingerprint:
            return
        try:
            await self._put_plan(thread, target, message, seq)
        except SlackApiError as error:
            if classic or error_code(error) not in REFUSED_CONTENT:
                raise
            message = await self._put_refused_plan(thread, target, view, seq, error)
        thread.fingerprint = _fingerprint(message)

    async def _put_refused_plan(
        self,
        thread: RunThread,
        target: SlackTarget,
        view: RunView,
        seq: int | None,
        error: SlackApiError,
    ) -> SlackMessage:
        """Slack refused the plan's blocks: try them smaller, and only if even the smallest
        native plan is refused, classic blocks (remembered for the channel, for a while)."""
        if not thread.compact:
            log.warning(
                "plan of run %s refused (%s); rendering it smaller",
                thread.run_id,
                error_code(error),
            )
            thread.compact = True
            smaller = plan_message(view, smallest=True)
            try:
                await self._put_plan(thread, target, smaller, seq)
                return smaller
            except SlackApiError as again:
                if error_code(again) not in REFUSED_CONTENT:
                    raise
        log.warning("plan blocks refused in channel %s; using classic blocks", target.channel)
        self.facts.remember(Feature.PLAN_BLOCKS, target.team_id, target.channel)
        await thread.book.update(plan_style="classic")
        message = plan_message(view, classic=True)
        await self._put_plan(thread, target, message, seq)
        return message

    async def _put_plan(
        self, thread: RunThread, target: SlackTarget, message: SlackMessage, seq: int | None
    ) -> None:
        """Edit the plan message, or post it; `seq`: the terminal event when the run finished."""
        book = thread.book
        plan_ts = book.current.plan_message
        send = partial(self._writer.post, target, message)
        if plan_ts:
            try:
                await self._update_plan(target, plan_ts, message, final=seq is not None)
                return
            except SlackApiError as error:
                if seq is None or error_code(error) not in GONE_ERRORS:
                    raise
                log.warning(
                    "the plan message of run %s cannot be edited (%s); posting its final state",
                    thread.run_id,
                    error_code(error),
                )
            ts = await self._outbox.post_once(book, target, f"plan@{seq}", "plan", send)
        else:
            ts = await self._outbox.post_once(book, target, "plan", "plan", send)
        await book.update(plan_message=ts)

    async def _update_plan(
        self, target: SlackTarget, ts: str, message: SlackMessage, *, final: bool
    ) -> None:
        async def update() -> None:
            await self._client.chat_update(
                channel=target.channel, ts=ts, text=message.text, blocks=message.blocks
            )

        if final:
            await update()
            return
        with background_calls():
            await update()

    async def _ensure_permalink(self, thread: RunThread, target: SlackTarget) -> None:
        # The thread's link is part of where the run lives (like channel and thread_ts), read by
        # the intake's list and the App Home: it stays in the run's meta, written once.
        if thread.permalink_tried:
            return
        thread.permalink_tried = True
        run = await self._records.get_run(thread.run_id)
        if run is None or run.meta.get("permalink"):
            return
        try:
            response = await self._client.chat_getPermalink(
                channel=target.channel, message_ts=target.thread_ts
            )
        except (SlackApiError, SlackClientError) as error:
            log.info("no permalink for run %s: %s", thread.run_id, error_code(error))
            return
        permalink = response.get("permalink")
        if isinstance(permalink, str) and permalink:
            await self._records.update_meta(thread.run_id, {"permalink": permalink})

    async def _finish(
        self, thread: RunThread, target: SlackTarget, view: RunView, seq: int
    ) -> None:
        run = view.run
        book = thread.book
        if book.current.landed_seq == seq:
            thread.finished = True
            return
        if run.status is RunStatus.FAILED and run.plan is None:
            await self._permanent_logged(
                thread, "planning error", self._post_planning_error(book, target, run, seq)
            )
        elif run.status is RunStatus.CANCELLED and not book.current.plan_message:
            await self._permanent_logged(thread, "status", self._clear_status(target))
        elif run.status is RunStatus.CANCELLED:
            # A summary cut short: its streamed message is finished, nothing more is posted.
            await self._permanent_logged(
                thread,
                "summary",
                self._post_summary(thread, target, view, seq, streamed_only=True),
            )
        else:
            await self._permanent_logged(
                thread, "summary", self._post_summary(thread, target, view, seq)
            )
        await book.update(landed_seq=seq)
        thread.finished = True
        if run.requester:
            await self._home.refresh(run.requester)

    async def _post_planning_error(
        self, book: DeliveryBook, target: SlackTarget, run: Run, seq: int
    ) -> None:
        send = partial(self._writer.post, target, planning_failed_message(run))
        await self._outbox.post_once(book, target, f"error@{seq}", "error", send)

    async def _clear_status(self, target: SlackTarget) -> None:
        await self._client.assistant_threads_setStatus(
            channel_id=target.channel, thread_ts=target.thread_ts, status=""
        )

    async def _post_summary(
        self,
        thread: RunThread,
        target: SlackTarget,
        view: RunView,
        seq: int,
        *,
        streamed_only: bool = False,
    ) -> None:
        book = thread.book
        parts = split_markdown(summary_markdown(view), SUMMARY_PART_LIMIT)

        def key(index: int) -> str:
            return f"summary@{seq}#{index}"

        def metadata(index: int) -> dict[str, Any]:
            return {
                "event_type": "dagbot_summary",
                "event_payload": {"run_id": thread.run_id, "key": key(index)},
            }

        # Parts already shown by the live stream are finished in place, never posted again.
        streamed = await self.summaries.finish(
            thread.run_id, target, parts, metadata, view.run.meta, seq
        )
        for index, part in enumerate(parts):
            if index < len(streamed):
                ts = streamed[index]
                if book.current.posts.get(key(index)) != ts:
                    await book.posted(key(index), ts)
            elif streamed_only:
                break
            else:
                extra = feedback_blocks(thread.run_id) if index == len(parts) - 1 else []

                async def send(
                    metadata: dict[str, Any], part: str = part, extra: list[Any] = extra
                ) -> str:
                    return await self._writer.post_summary_part(target, part, metadata, extra)

                ts = await self._outbox.post_once(book, target, key(index), "summary", send)
            if index == 0 and book.current.summary_message != ts:
                await book.update(summary_message=ts)

    # -- helpers -----------------------------------------------------------------------------

    def _is_classic(self, thread: RunThread, target: SlackTarget) -> bool:
        return thread.book.current.plan_style == "classic" or self.facts.refuses(
            Feature.PLAN_BLOCKS, target.team_id, target.channel
        )

    async def _terminal_seq(self, run_id: str) -> int | None:
        events = await self._records.events(run_id)
        return next((e.seq for e in reversed(events) if e.kind in TERMINAL), None)


def _fingerprint(message: SlackMessage) -> str:
    encoded = json.dumps([message.text, message.blocks], sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()
