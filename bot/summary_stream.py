"""The summary streamed into its Slack thread while the model writes it.

The engine hands on a summary's text as drafts (never stored). For each Slack run whose
requester can receive a stream, the first draft starts a `chat.startStream` message carrying
that text at once; later text is appended at most once per `interval` (appendStream is Tier 4,
about 100 a minute per workspace), each append carrying everything written since. A streamed
message is rolled over to a new one before Slack's size cap.

The stored summary stays the one source of truth: when the run ends, `finish` makes the
streamed messages hold exactly the final parts (stopping the last stream with the rest of the
text, or, where what was streamed no longer matches, stopping it and then editing it) and
returns their ts so the publisher posts only the parts not yet shown. A failed append or stop
never leads to a second copy: the message is finished in place. A message still streaming is
never edited (Slack answers `streaming_state_conflict`).

What is needed after a crash is one meta key, `STREAM_KEY`: the ts of the streamed messages
and whether they were finished. A new process stops such a stream as soon as it sees the run
(`settle_orphan`) and fills it with the final text when the run ends; it does not stream that
run's summary live again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import defuse_mentions, feedback_blocks, markdown_message
from bot.budgeted_client import LeaseLapsed, speak_for
from bot.capabilities import Feature
from bot.slack_client import error_code, is_transient, retry_after
from bot.thread_writer import SlackTarget, ThreadWriter
from scheduler.dag.drafts import Draft, Drafts
from scheduler.dag.plan import TaskKind
from scheduler.dag.run_records import RunRecords

log = logging.getLogger("dagbot.slack")

STREAM_KEY = "summary_stream"
"""The run meta key holding the streamed summary's delivery state (see `StreamRecord`)."""
STREAM_INTERVAL = 1.0
"""Seconds between two appends to one stream; the first text goes at once."""
CALL_TEXT_LIMIT = 12_000
"""Markdown characters Slack takes in one startStream/appendStream/stopStream call."""
MESSAGE_BYTES_LIMIT = 10_000
"""UTF-8 bytes one streamed message holds before the stream rolls over to a new message.

Slack refuses a streamed message past about 10,600-11,300 bytes (`msg_too_long`; measured by
others, undocumented), so the cap is in bytes and a little under; a `msg_too_long` all the
same rolls over at once."""
TOO_LONG = "msg_too_long"
MAX_BACKOFF = 30.0
NOT_STREAMING = "message_not_in_streaming_state"


@dataclass(frozen=True, kw_only=True)
class StreamRecord:
    """What survives a crash: the streamed messages and whether they were finished.

    `starting` is written before each chat.startStream and cleared with its ts: a crash in
    between leaves a message whose ts was never learnt, found again in the thread.
    """

    ts: tuple[str, ...]
    finished: bool = False
    seq: int | None = None
    """The run's terminal event the messages were finished for (a retried run ends again)."""
    starting: bool = False

    def to_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"ts": list(self.ts), "finished": self.finished}
        if self.seq is not None:
            meta["seq"] = self.seq
        if self.starting:
            meta["starting"] = True
        return meta

    @classmethod
    def of(cls, meta: dict[str, Any]) -> StreamRecord | None:
        value = meta.get(STREAM_KEY)
        if not isinstance(value, dict) or not isinstance(value.get("ts"), list):
            return None
        ts = tuple(t for t in value["ts"] if isinstance(t, str) and t)
        starting = bool(value.get("starting"))
        if not ts and not starting:
            return None
        seq = value.get("seq")
        return cls(
            ts=ts,
            finished=bool(value.get("finished")),
            seq=seq if isinstance(seq, int) else None,
            starting=starting,
        )


def streamable(raw: str) -> str:
    """The part of a summary's raw text that may be shown now.

    Leading and trailing white space wait (the stored summary is stripped), and so does a
    trailing `<...` not yet closed: it may become a mention or a link.
    """
    text = raw.lstrip()
    end = len(text.rstrip())
    opened = text.rfind("<", 0, end)
    if opened != -1 and text.find(">", opened, end) == -1:
        end = len(text[:opened].rstrip())
    return text[:end]


def fitting(text: str, room_bytes: int) -> int:
    """How many characters of `text` fit in `room_bytes` UTF-8 bytes."""
    return len(text.encode()[: max(room_bytes, 0)].decode(errors="ignore"))


def cut_point(text: str, room: int) -> tuple[int, int]:
    """Where to end a message that has `room` characters left, at a paragraph, line or word
    end (as bot.markdown.split_markdown cuts): the end of its text and the start of the next."""
    if len(text) <= room:
        return len(text), len(text)
    for separator in ("\n\n", "\n", " "):
        at = text.rfind(separator, 0, room + len(separator))
        if at > 0:
            return at, at + len(separator)
    return room, room


@dataclass(kw_only=True)
class _Message:
    ts: str
    text: str
    """What Slack holds, when `known`."""
    streaming: bool = True
    known: bool = True
    gap: str = ""
    """The separator between this message and the next, where the stream rolled over."""


@dataclass(kw_only=True)
class _Live:
    """One run's live stream (mutable; owned by its worker until `finish` takes it over)."""

    run_id: str
    task_id: str
    attempt: int
    raw: str = ""
    target: SlackTarget | None = None
    messages: list[_Message] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    intent_noted: bool = False
    off: bool = False
    """No (more) live text: the run cannot stream, or its stream broke; `finish` completes it."""

    @property
    def shown(self) -> str:
        return "".join(m.text + m.gap for m in self.messages)


class LiveSummaries:
    """Streams Slack runs' summaries while they are written; see the module docstring."""

    def __init__(
        self,
        client: AsyncWebClient,
        records: RunRecords,
        writer: ThreadWriter,
        *,
        interval: float = STREAM_INTERVAL,
    ) -> None:
        self._client = client
        self._records = records
        self._writer = writer
        self._interval = interval
        self._runs: dict[str, _Live] = {}
        self._unlisten: Callable[[], None] | None = None
        self._settled: set[str] = set()
        """Runs whose stream from an earlier process was stopped by this one."""

    def start(self, drafts: Drafts) -> None:
        if self._unlisten is None:
            self._unlisten = drafts.listen(self._on_draft)

    async def aclose(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        for live in list(self._runs.values()):
            await self._halt(live)

    # -- drafts ------------------------------------------------------------------------------

    def _on_draft(self, draft: Draft) -> None:
        live = self._runs.get(draft.run_id)
        if live is None:
            live = self._runs[draft.run_id] = _Live(
                run_id=draft.run_id, task_id=draft.task_id, attempt=draft.attempt
            )
            live.worker = asyncio.create_task(
                self._work(live), name=f"dagbot slack summary stream {draft.run_id}"
            )
        if live.off or live.closing.is_set() or draft.task_id != live.task_id:
            return
        if draft.attempt != live.attempt:
            # A new attempt writes its answer afresh; what was shown is reconciled at the end.
            live.attempt, live.raw = draft.attempt, ""
        if draft.text:
            live.raw += draft.text
            live.wake.set()

    async def _work(self, live: _Live) -> None:
        speak_for(live.run_id)
        try:
            live.target = await self._target(live)
        except Exception:
            log.exception("no live summary for run %s", live.run_id)
            live.target = None
        if live.target is None:
            live.off = True
            return
        # Noted while the model is still thinking, so the first words go out without waiting.
        try:
            await self._note_intent(live)
        except Exception:
            log.exception("no live summary for run %s", live.run_id)
            live.off = True
            return
        loop = asyncio.get_running_loop()
        next_at = 0.0
        failures = 0
        while not live.off:
            await _first(live.wake.wait(), live.closing.wait())
            if live.closing.is_set():
                return
            delay = next_at - loop.time()
            if delay > 0:
                with suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await live.closing.wait()
                if live.closing.is_set():
                    return
            live.wake.clear()
            try:
                more = await self._flush(live)
            except LeaseLapsed:
                live.off = True  # maybe another process's run now: it finishes the message
                return
            except (SlackApiError, SlackClientError) as error:
                log.warning("streaming run %s's summary: %s", live.run_id, error_code(error))
                if not is_transient(error):
                    if not live.messages:
                        target = live.target
                        self._writer.facts.remember(
                            Feature.STREAMING, target.team_id, target.channel
                        )
                    live.off = True  # `finish` completes the message some legal way
                    return
                if retry_after(error) is None and live.messages:
                    # The call may have landed: what the message holds is no longer known.
                    live.messages[-1].known = False
                    live.off = True
                    return
                failures += 1
                backoff = min(self._interval * 2**failures, MAX_BACKOFF)
                next_at = loop.time() + max(backoff, retry_after(error) or 0.0)
                live.wake.set()
                continue
            failures = 0
            next_at = loop.time() + self._interval
            if more:
                live.wake.set()

    async def _target(self, live: _Live) -> SlackTarget | None:
        run = await self._records.get_run(live.run_id)
        if run is None:
            return None
        target = SlackTarget.of(run)
        if target is None or not self._writer.can_stream(target):
            return None
        streamed = StreamRecord.of(run.meta)
        if streamed is not None and not streamed.finished:
            return None  # streamed by an earlier process: filled in at the end instead
        if run.plan is None or not any(
            t.id == live.task_id and t.kind is TaskKind.SUMMARY for t in run.plan.tasks
        ):
            return None
        return target

    async def _flush(self, live: _Live) -> bool:
        """Send what is new; True when more is already waiting (a rolled-over message)."""
        assert live.target is not None
        # Mentions the model writes are made inert, as in every other rendering of its text.
        text, shown = defuse_mentions(streamable(live.raw)), live.shown
        if not text.startswith(shown):
            return False  # the text changed under what was shown (a new attempt): see finish
        pending = text[len(shown) :]
        if not pending:
            return False
        current = live.messages[-1] if live.messages else None
        if current is None or not current.streaming:
            room = min(fitting(pending, MESSAGE_BYTES_LIMIT), CALL_TEXT_LIMIT)
            while True:
                end, _ = cut_point(pending, room)
                try:
                    await self._start(live, pending[:end])
                except SlackApiError as error:
                    if error_code(error) != TOO_LONG or end <= 1:
                        raise
                    room = end // 2  # Slack's cap is lower than ours: try a smaller piece
                    continue
                return end < len(pending)
        room = fitting(pending, MESSAGE_BYTES_LIMIT - len(current.text.encode()))
        if len(pending) > room:
            await self._roll_over(live, current, pending, room)
            return True
        piece = pending[:CALL_TEXT_LIMIT]
        try:
            await self._client.chat_appendStream(
                channel=live.target.channel, ts=current.ts, markdown_text=piece
            )
        except SlackApiError as error:
            if error_code(error) != TOO_LONG:
                raise
            await self._roll_over(live, current, pending, 0)  # Slack's cap came first
            return True
        current.text += piece
        return len(piece) < len(pending)

    async def _roll_over(self, live: _Live, current: _Message, pending: str, room: int) -> None:
        """Finish the current message with what fits of `pending`; the rest starts the next."""
        assert live.target is not None
        end, after = cut_point(pending, room) if room > 0 else (0, 0)
        index = len(live.messages) - 1
        await self._client.chat_stopStream(
            channel=live.target.channel,
            ts=current.ts,
            markdown_text=pending[:end] or None,
            metadata={
                "event_type": "dagbot_summary",
                "event_payload": {"run_id": live.run_id, "key": f"stream#{index}"},
            },
        )
        current.text += pending[:end]
        current.gap = pending[end:after]
        current.streaming = False

    async def _start(self, live: _Live, piece: str) -> None:
        assert live.target is not None
        target = live.target
        if not live.intent_noted:
            await self._note_intent(live)
        live.intent_noted = False
        response = await self._client.chat_startStream(
            channel=target.channel,
            thread_ts=target.thread_ts,
            recipient_team_id=target.team_id,
            recipient_user_id=target.user,
            markdown_text=piece,
        )
        live.messages.append(_Message(ts=str(response["ts"]), text=piece))
        record = StreamRecord(ts=tuple(m.ts for m in live.messages))
        await self._records.update_meta(live.run_id, {STREAM_KEY: record.to_meta()})

    def forget(self, run_id: str) -> None:
        """Drop what is kept of a run that ended without a summary to finish (not a Slack run)."""
        live = self._runs.get(run_id)
        if live is not None and live.off and not live.messages:
            live.closing.set()
            del self._runs[run_id]

    async def _note_intent(self, live: _Live) -> None:
        """Record, before a chat.startStream, that a message may appear whose ts is not known."""
        intent = StreamRecord(ts=tuple(m.ts for m in live.messages), starting=True)
        await self._records.update_meta(live.run_id, {STREAM_KEY: intent.to_meta()})
        live.intent_noted = True

    async def _halt(self, live: _Live) -> None:
        """Stop the worker after the call it has in flight, so what Slack holds is known."""
        live.closing.set()
        if live.worker is not None:
            await asyncio.wait([live.worker])

    # -- the end of a run --------------------------------------------------------------------

    async def settle_orphan(self, run_id: str, target: SlackTarget, meta: dict[str, Any]) -> None:
        """Stop a stream an earlier process left open (once per process and run)."""
        if run_id in self._settled or run_id in self._runs:
            return
        record = StreamRecord.of(meta)
        if record is None or record.finished:
            return
        for ts in await self._orphans(target, record):
            await self._stop_quietly(target, ts)
        self._settled.add(run_id)

    async def _orphans(self, target: SlackTarget, record: StreamRecord) -> list[str]:
        """The ts of an earlier process's streamed messages, the one it never learnt included.

        That one is the bot's reply in the thread without message metadata (every other
        dagbot message carries it; a stream gets it only when stopped) and not yet known.
        """
        found = list(record.ts)
        if not record.starting:
            return found
        response = await self._client.conversations_replies(
            channel=target.channel, ts=target.thread_ts, include_all_metadata=True, limit=200
        )
        for message in response.get("messages") or []:
            ts = str(message.get("ts", ""))
            if (
                ts != target.thread_ts
                and message.get("bot_id")
                and not message.get("metadata")
                and ts not in found
            ):
                found.append(ts)
        return sorted(found, key=float)

    async def finish(
        self,
        run_id: str,
        target: SlackTarget,
        parts: Sequence[str],
        metadata: Callable[[int], dict[str, Any]],
        meta: dict[str, Any],
        seq: int,
    ) -> list[str]:
        """Make the run's streamed messages hold the first final parts; their ts, in order.

        Returns [] when nothing was streamed. Never posts: the publisher posts the parts after
        the ones returned, each exactly once.
        """
        live = self._runs.get(run_id)
        if live is not None:
            await self._halt(live)
        record = StreamRecord.of(meta)
        if record is not None and record.finished and record.seq == seq:
            self._runs.pop(run_id, None)
            return list(record.ts)  # finished already (a crash before the parts were noted)
        if live is not None and (live.messages or live.target is not None):
            messages = live.messages  # this process streamed (or meant to): all known here
        elif record is not None and not record.finished:
            # From an earlier process: what the messages hold is not known; stop and edit.
            orphans = await self._orphans(target, record)
            messages = [_Message(ts=ts, text="", known=False) for ts in orphans]
        else:
            self._runs.pop(run_id, None)
            return []
        placed = await self._fill(run_id, target, messages, list(parts), metadata)
        await self._records.update_meta(
            run_id,
            {STREAM_KEY: StreamRecord(ts=tuple(placed), finished=True, seq=seq).to_meta()},
        )
        self._runs.pop(run_id, None)
        return placed

    async def _fill(
        self,
        run_id: str,
        target: SlackTarget,
        messages: list[_Message],
        parts: list[str],
        metadata: Callable[[int], dict[str, Any]],
    ) -> list[str]:
        placed: list[str] = []
        for index, message in enumerate(messages):
            if index >= len(parts):
                # The final text is shorter than what was streamed (a new attempt): drop the rest.
                if message.streaming:
                    await self._stop_quietly(target, message.ts)
                await self._client.chat_delete(channel=target.channel, ts=message.ts)
                continue
            part, last = defuse_mentions(parts[index]), index == len(parts) - 1
            blocks = feedback_blocks(run_id) if last else []
            fits = len(part.encode()) <= MESSAGE_BYTES_LIMIT  # else Slack refuses the stop
            if message.streaming and message.known and fits and part.startswith(message.text):
                if await self._stop_with_rest(target, message, part, blocks, metadata(index)):
                    placed.append(message.ts)
                    continue
            elif message.streaming:
                await self._stop_quietly(target, message.ts)
            elif message.known and message.text == part and not blocks:
                placed.append(message.ts)  # rolled over at the same place the final split cuts
                continue
            body = markdown_message(parts[index])
            await self._client.chat_update(
                channel=target.channel,
                ts=message.ts,
                text=body.text,
                blocks=[*body.blocks, *blocks],
                metadata=metadata(index),
            )
            placed.append(message.ts)
        return placed

    async def _stop_with_rest(
        self,
        target: SlackTarget,
        message: _Message,
        part: str,
        blocks: list[dict[str, Any]],
        metadata: dict[str, Any],
    ) -> bool:
        """Stop a stream with the rest of its part; False when it must be edited instead."""
        rest = part[len(message.text) :]
        try:
            while len(rest) > CALL_TEXT_LIMIT:
                piece = rest[: cut_point(rest, CALL_TEXT_LIMIT)[1]]
                await self._client.chat_appendStream(
                    channel=target.channel, ts=message.ts, markdown_text=piece
                )
                message.text += piece
                rest = rest[len(piece) :]
            await self._client.chat_stopStream(
                channel=target.channel,
                ts=message.ts,
                markdown_text=rest or None,
                blocks=blocks or None,
                metadata=metadata,
            )
        except (SlackApiError, SlackClientError) as error:
            if is_transient(error):
                raise
            log.warning("finishing a streamed summary failed: %s", error_code(error))
            await self._stop_quietly(target, message.ts)
            return False
        message.streaming = False
        message.text = part
        return True

    async def _stop_quietly(self, target: SlackTarget, ts: str) -> None:
        """Stop a stream whose state is unknown: one that is no longer streaming is fine."""
        try:
            await self._client.chat_stopStream(channel=target.channel, ts=ts)
        except SlackApiError as error:
            if error_code(error) not in (NOT_STREAMING, "message_not_found"):
                raise


async def _first(*waits: Any) -> None:
    """Return when the first of these awaitables is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
