"""A fake Slack Web API: real HTTP, answers like Slack, records every call, fails on demand.

It serves `GET|POST /api/<method>` with form, query or JSON bodies (as slack_sdk sends them),
checks `Authorization: Bearer <token>`, keeps the messages it was sent (so `chat.update`,
`conversations.replies` and streaming work against real state) and enforces Slack's limits
(50 blocks, 3,000 characters of section text, 40,000 of message text, 12,000 of markdown,
about 12,000 of text across all of one message's blocks, non-empty rich text and task-card
titles, the four task-card statuses, the shape of feedback buttons and URL sources), so code
that breaks them fails here as it would on Slack. `slack.outage(...)` makes it answer like
Slack (or a proxy in front of it) does when it is down: dropped connections, an HTML 502, a
plain-text 503, or a 200 whose body is not JSON.

Usage::

    from tests.fakes.slack_api import FakeSlack, fake_slack_server

    async with fake_slack_server() as slack:            # or the `fake_slack` fixture
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
        slack.rate_limit("chat.update", times=3)          # next 3 chat.update get 429
        slack.fail("chat.startStream", "not_allowed")     # every startStream fails (times=None)
        slack.reject_block_types("plan", "task_card")     # those blocks answer invalid_blocks
        ... run code ...
        await slack.wait_for_call("chat.postMessage", lambda c: c.body.get("thread_ts") == ts)
        await slack.wait_for(lambda s: "done" in s.message(channel, ts).text)
        assert len(slack.calls_to("chat.update")) < 10

Every call is recorded in arrival order as a `SlackCall` with its parsed body and the answer it
got (`ok`, `error`, HTTP `status`); failed and rate-limited calls are recorded too. Waiting
helpers use an `asyncio.Condition` (no sleeps) and fail with a description of what was seen
after `within` seconds, so a broken test reports instead of hanging.

`slack.hold("chat.update")` makes calls of that method wait (recorded as held) until
`slack.release("chat.update")`: tests use it to keep a request in flight deterministically.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest_asyncio
from aiohttp import web

from tests.fakes.serve import serve_locally

FAKE_BOT_TOKEN = "xoxb-fake-0000-test-token"
FAKE_TEAM_ID = "T0FAKE001"
FAKE_BOT_USER_ID = "U0FAKEBOT"
FAKE_BOT_ID = "B0FAKEBOT"

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_MESSAGE_TEXT = 40000
MAX_MARKDOWN_TEXT = 12000
MAX_STREAMED_TEXT = 11000
"""UTF-8 bytes of text a streamed message holds before Slack answers `msg_too_long` (measured
by others at about 10,600-11,300 bytes; undocumented). Tests may lower `max_streamed_text`."""

# ---- rate tiers and the status timeout (Slack's published numbers) ----------------------------
# Per API method, per workspace (team), per app; Slack documents "N+ per minute" and tolerates
# some bursts above N, so holding every method to exactly N in any rolling minute is the strict
# reading: code that never sees a 429 here stays under Slack's limits too.
RATE_WINDOW = 60.0
TIER_2, TIER_3, TIER_4 = 20, 50, 100
RATE_TIERS: dict[str, int] = {
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.startStream": TIER_2,
    "chat.stopStream": TIER_2,
    "chat.appendStream": TIER_4,
    "chat.postEphemeral": TIER_4,
    "chat.getPermalink": TIER_4,
    "conversations.replies": TIER_3,
    "views.publish": TIER_4,
    "users.info": TIER_4,
    "reactions.add": TIER_3,
}
# chat.postMessage: "one message per second per channel ... short bursts >1 allowed".
POST_MESSAGE_RATE = 1.0
POST_MESSAGE_BURST = 3
# assistant.threads.setStatus: "a two minute timeout applies" unless the app replies.
STATUS_TIMEOUT = 120.0

# Fields that slack_sdk (or any client) may send as JSON-encoded strings inside a form body.
_JSON_FIELDS = frozenset(
    {"blocks", "attachments", "metadata", "view", "chunks", "loading_messages", "user_ids"}
)


@dataclass(frozen=True, kw_only=True)
class SlackCall:
    """One recorded API call: the method, its parsed body, and the answer the fake gave."""

    seq: int
    method: str
    body: dict[str, Any]
    token: str | None
    status: int = 200
    ok: bool = True
    error: str | None = None
    response: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    """Wall-clock time the answer was ready (benchmarks measure latency with it)."""

    @property
    def blocks(self) -> list[dict[str, Any]]:
        blocks = self.body.get("blocks")
        return blocks if isinstance(blocks, list) else []

    @property
    def block_types(self) -> list[str]:
        """Types of every block sent, nested ones included (e.g. task_card inside plan)."""
        return [str(b.get("type")) for b in _walk_blocks(self.blocks)]


@dataclass(kw_only=True)
class FakeMessage:
    """A message as the fake holds it; `versions` keeps every text it had, oldest first."""

    channel: str
    ts: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    user: str = FAKE_BOT_USER_ID
    bot_id: str | None = FAKE_BOT_ID
    metadata: dict[str, Any] | None = None
    streaming: bool = False
    edits: int = 0
    versions: list[str] = field(default_factory=list)
    reactions: dict[str, list[str]] = field(default_factory=dict)
    """Emoji name to the users who reacted with it, in order."""

    @property
    def block_types(self) -> list[str]:
        return [str(b.get("type")) for b in _walk_blocks(self.blocks)]

    @property
    def rendered(self) -> str:
        """All visible text: the `text` field plus every text inside the blocks."""
        parts = [self.text, *(_block_texts(self.blocks))]
        return "\n".join(p for p in parts if p)

    def as_api(self, *, include_metadata: bool) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "ts": self.ts,
            "text": self.text,
            "user": self.user,
        }
        if self.bot_id:
            message["bot_id"] = self.bot_id
        if self.blocks:
            message["blocks"] = self.blocks
        if self.thread_ts:
            message["thread_ts"] = self.thread_ts
        if self.edits:
            message["edited"] = {"user": self.user, "ts": self.ts}
        if include_metadata and self.metadata:
            message["metadata"] = self.metadata
        return message


class SlackError(Exception):
    """An error answer: Slack's `error` code, plus HTTP status and headers for 429s."""

    def __init__(
        self,
        error: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


@dataclass(kw_only=True)
class _Failure:
    method: str
    error: str
    remaining: int | None  # None: forever
    status: int = 200
    retry_after: int | None = None
    when: Callable[[dict[str, Any]], bool] | None = None


class FakeClock:
    """Slack's time as the fake sees it: the wall clock, `speed` times faster, plus `advance()`.

    Rate windows and the status timeout run on it, so a test can compress Slack's minutes
    (`FakeClock(speed=60)`: a minute a second) or jump over them (`advance(121)`) without
    sleeping. The limits stay on: a faster clock only makes Slack's minute shorter.
    """

    def __init__(self, *, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = time.monotonic()
        self._offset = 0.0

    def now(self) -> float:
        """Seconds since the clock started, in Slack's time."""
        return (time.monotonic() - self._start) * self.speed + self._offset

    def advance(self, seconds: float) -> None:
        """Move Slack's time forward at once."""
        self._offset += seconds


Handler = Callable[["FakeSlack", dict[str, Any]], dict[str, Any]]


class FakeSlack:
    """The fake's state: messages, statuses, home views, scripted failures and recorded calls."""

    def __init__(
        self,
        *,
        bot_token: str = FAKE_BOT_TOKEN,
        team_id: str = FAKE_TEAM_ID,
        clock: FakeClock | None = None,
    ) -> None:
        self.base_url = ""
        self.bot_token = bot_token
        self.team_id = team_id
        self.bot_user_id = FAKE_BOT_USER_ID
        self.bot_id = FAKE_BOT_ID
        self.calls: list[SlackCall] = []
        self.messages: dict[tuple[str, str], FakeMessage] = {}
        self.thread_status: dict[tuple[str, str], str] = {}
        self.home_views: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.members: dict[str, set[str]] = {}
        """Who is in each channel: chat.postEphemeral reaches only them."""
        self.rejected_block_types: set[str] = set()
        self.max_message_text = MAX_MESSAGE_TEXT
        self.max_streamed_text = MAX_STREAMED_TEXT
        self._failures: list[_Failure] = []
        self.down: Outage | None = None
        self._changed = asyncio.Condition()
        self._seq = itertools.count(1)
        self._ts_counter = itertools.count(1)
        self._ts_base = int(time.time())
        self._gates: dict[str, asyncio.Event] = {}
        self._held: dict[str, int] = {}
        self._handlers: dict[str, Handler] = {
            "auth.test": FakeSlack._auth_test,
            "chat.postMessage": FakeSlack._post_message,
            "chat.update": FakeSlack._update,
            "chat.delete": FakeSlack._delete,
            "chat.postEphemeral": FakeSlack._post_ephemeral,
            "chat.getPermalink": FakeSlack._get_permalink,
            "chat.startStream": FakeSlack._start_stream,
            "chat.appendStream": FakeSlack._append_stream,
            "chat.stopStream": FakeSlack._stop_stream,
            "assistant.threads.setStatus": FakeSlack._set_status,
            "views.publish": FakeSlack._views_publish,
            "conversations.replies": FakeSlack._replies,
            "users.info": FakeSlack._users_info,
            "reactions.add": FakeSlack._reactions_add,
        }
        self._init_limits(clock or FakeClock())

    # ---- scripting -------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        error: str,
        *,
        times: int | None = None,
        when: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Answer `{"ok": false, "error": error}` to the next `times` calls (None: all) of
        `method` whose body satisfies `when` (default: every call)."""
        self._failures.append(_Failure(method=method, error=error, remaining=times, when=when))

    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 0) -> None:
        """Answer HTTP 429 with `Retry-After: retry_after` to the next `times` calls of `method`."""
        self._failures.append(
            _Failure(
                method=method,
                error="ratelimited",
                remaining=times,
                status=429,
                retry_after=retry_after,
            )
        )

    def reject_block_types(self, *types: str) -> None:
        """Answer `invalid_blocks` to any message whose blocks contain one of these types."""
        self.rejected_block_types.update(types)

    def clear_failures(self) -> None:
        self._failures.clear()
        self.rejected_block_types.clear()

    def hold(self, method: str) -> None:
        """Keep calls of `method` waiting until `release(method)`."""
        self._gates[method] = asyncio.Event()

    def release(self, method: str) -> None:
        gate = self._gates.pop(method, None)
        if gate is not None:
            gate.set()

    def held(self, method: str) -> int:
        """How many calls of `method` are waiting at a `hold`."""
        return self._held.get(method, 0)

    def add_user(self, user_id: str, *, name: str = "", team_id: str | None = None) -> None:
        """Make `users.info` know a user (unknown ids answer `user_not_found`)."""
        self.users[user_id] = {
            "id": user_id,
            "team_id": team_id or self.team_id,
            "name": name or user_id.lower(),
            "real_name": name or user_id,
            "is_bot": False,
            "tz": "UTC",
        }

    def join(self, channel: str, *users: str) -> None:
        """Make people members of a channel (posting a message there makes one a member too)."""
        self.members.setdefault(channel, set()).update(users)

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str,
        thread_ts: str | None = None,
        ts: str | None = None,
    ) -> FakeMessage:
        """Seed a message written by a person (e.g. the mention a thread hangs under)."""
        message = FakeMessage(
            channel=channel,
            ts=ts or self.next_ts(),
            text=text,
            thread_ts=thread_ts,
            user=user,
            bot_id=None,
            versions=[text],
        )
        self.messages[(channel, message.ts)] = message
        self.join(channel, user)
        return message

    def next_ts(self) -> str:
        """A fresh, strictly increasing Slack-style timestamp such as `1732493011.000042`."""
        n = next(self._ts_counter)
        return f"{self._ts_base + n // 1_000_000}.{n % 1_000_000:06d}"

    # ---- reading ---------------------------------------------------------------------------

    def calls_to(self, method: str, *, ok: bool | None = None) -> list[SlackCall]:
        """Recorded calls of `method`, in order; `ok` filters on the answer."""
        return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    def message(self, channel: str, ts: str) -> FakeMessage:
        """The current state of a message (KeyError when it was never posted)."""
        return self.messages[(channel, ts)]

    def thread(self, channel: str, thread_ts: str) -> list[FakeMessage]:
        """The thread's root (when known) and its replies, oldest first."""
        found = [
            m
            for (ch, _), m in self.messages.items()
            if ch == channel and (m.ts == thread_ts or m.thread_ts == thread_ts)
        ]
        return sorted(found, key=lambda m: _ts_key(m.ts))

    def replies(self, channel: str, thread_ts: str) -> list[FakeMessage]:
        """Bot and user replies in the thread, without the root, oldest first."""
        return [m for m in self.thread(channel, thread_ts) if m.ts != thread_ts]

    async def wait_for(
        self, predicate: Callable[[FakeSlack], bool], *, within: float = 10.0
    ) -> None:
        """Wait until `predicate(self)` holds; re-checked after every call the fake answers."""
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: predicate(self))
        except TimeoutError:
            raise AssertionError(
                f"fake Slack: condition not met after {within}s; calls: {self.describe()}"
            ) from None

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[SlackCall], bool] | None = None,
        *,
        count: int = 1,
        ok: bool | None = None,
        within: float = 10.0,
    ) -> list[SlackCall]:
        """Wait until `count` calls of `method` matching `predicate` (and `ok`) were answered."""

        def matching() -> list[SlackCall]:
            return [c for c in self.calls_to(method, ok=ok) if predicate is None or predicate(c)]

        await self.wait_for(lambda _: len(matching()) >= count, within=within)
        return matching()

    def describe(self) -> str:
        """A one-line summary of the calls so far, for assertion messages."""
        return (
            ", ".join(f"{c.method}{'' if c.ok else f'!{c.error}'}" for c in self.calls) or "(none)"
        )

    # ---- HTTP ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await _parse_body(request)
        if self.down is not None:
            return await self._answer_outage(request, method, body)
        token = _bearer(request) or _str(body.pop("token", None))
        gate = self._gates.get(method)
        if gate is not None:
            self._held[method] = self._held.get(method, 0) + 1
            await self._notify()
            try:
                await gate.wait()
            finally:
                self._held[method] -= 1
        try:
            answer = self._answer(method, body, token)
            status, headers = 200, {}
        except SlackError as error:
            answer = {"ok": False, "error": error.error, **error.extra}
            status, headers = error.status, error.headers
        call = SlackCall(
            seq=next(self._seq),
            method=method,
            body=body,
            token=token,
            status=status,
            ok=bool(answer.get("ok")),
            error=_str(answer.get("error")),
            response=answer,
        )
        self.calls.append(call)
        await self._notify()
        return web.json_response(answer, status=status, headers=headers)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _answer(self, method: str, body: dict[str, Any], token: str | None) -> dict[str, Any]:
        if not token:
            raise SlackError("not_authed")
        if token != self.bot_token and token not in self.workspaces:
            raise SlackError("invalid_auth")
        self._scripted_failure(method, body)
        self._expire_statuses()
        self._check_rate(method, body, self.workspaces.get(token, self.team_id))
        handler = self._handlers.get(method)
        if handler is None:
            raise SlackError("unknown_method")
        return handler(self, body)

    def _scripted_failure(self, method: str, body: dict[str, Any]) -> None:
        for failure in self._failures:
            if failure.method != method or failure.remaining == 0:
                continue
            if failure.when is not None and not failure.when(body):
                continue
            if failure.remaining is not None:
                failure.remaining -= 1
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            raise SlackError(failure.error, status=failure.status, headers=headers)

    # ---- outage (Slack or a proxy in front of it is down) -----------------------------------

    def outage(self, kind: Outage = "connection") -> None:
        """Answer every call like a Slack that is down, until `restore()`: `connection` drops
        the connection unanswered, `html` is a proxy's HTML 502, `text` a plain-text 503 and
        `bad_json` a 200 whose body is not JSON. Calls are still recorded (status, `ok=False`)."""
        self.down = kind

    def restore(self) -> None:
        """End an `outage`: calls are answered normally again."""
        self.down = None

    async def _answer_outage(
        self, request: web.Request, method: str, body: dict[str, Any]
    ) -> web.Response:
        kind = self.down
        status = {"connection": 0, "html": 502, "text": 503, "bad_json": 200}[kind or "connection"]
        self.calls.append(
            SlackCall(
                seq=next(self._seq),
                method=method,
                body=body,
                token=_bearer(request),
                status=status,
                ok=False,
                error=f"outage:{kind}",
            )
        )
        await self._notify()
        if kind == "html":
            page = (
                "<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
            )
            return web.Response(status=502, text=page, content_type="text/html")
        if kind == "text":
            return web.Response(
                status=503, text="upstream connect error", content_type="text/plain"
            )
        if kind == "bad_json":
            return web.Response(status=200, text="<html>oops", content_type="application/json")
        # A dropped connection: the client sees the socket close without an answer.
        if request.transport is not None:
            request.transport.close()
        raise ConnectionResetError("fake Slack outage")

    # ---- validation ------------------------------------------------------------------------

    def _check_content(self, body: dict[str, Any], *, required: bool = True) -> None:
        text = _str(body.get("text")) or ""
        markdown_text = _str(body.get("markdown_text")) or ""
        blocks = body.get("blocks")
        if required and not (text or markdown_text or blocks or body.get("attachments")):
            raise SlackError("no_text")
        if len(text) > self.max_message_text:
            raise SlackError("msg_too_long")
        if len(markdown_text) > MAX_MARKDOWN_TEXT:
            raise SlackError("markdown_text_too_long")
        if blocks is not None:
            self._check_blocks(blocks)

    def _check_blocks(self, blocks: Any) -> None:
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise SlackError("invalid_blocks_format")
        problems: list[str] = []
        # Nested blocks (task cards inside a plan) are counted too: the stricter reading of
        # Slack's 50-block limit, so code that passes here passes there.
        if len(list(_walk_blocks(blocks))) > MAX_BLOCKS:
            problems.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
        markdown_total = 0
        for index, block in enumerate(_walk_blocks(blocks)):
            kind = block.get("type")
            if not isinstance(kind, str):
                problems.append(f"missing block type [json-pointer:/blocks/{index}]")
                continue
            if kind in self.rejected_block_types:
                problems.append(f"unsupported type: {kind} [json-pointer:/blocks/{index}]")
            if kind == "section":
                text = block.get("text")
                if isinstance(text, dict) and len(str(text.get("text", ""))) > MAX_SECTION_TEXT:
                    problems.append(
                        f"must be less than {MAX_SECTION_TEXT + 1} characters "
                        f"[json-pointer:/blocks/{index}/text/text]"
                    )
            if kind == "markdown":
                markdown_total += len(str(block.get("text", "")))
        if markdown_total > MAX_MARKDOWN_TEXT:
            problems.append("markdown blocks exceed 12000 characters")
        problems.extend(block_shape_problems(blocks))
        if problems:
            raise SlackError("invalid_blocks", extra={"errors": problems})
        if blocks_text_length(blocks) > MAX_BLOCKS_TEXT:
            raise SlackError("msg_blocks_too_long")

    def _existing(self, channel: str, ts: str) -> FakeMessage:
        message = self.messages.get((channel, ts))
        if message is None:
            raise SlackError("message_not_found")
        return message

    # ---- methods ---------------------------------------------------------------------------

    def _auth_test(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake Team",
            "user": "dagbot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _post_message(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = _require(body, "channel")
        self._check_content(body)
        thread_ts = _str(body.get("thread_ts"))
        if thread_ts and (channel, thread_ts) in self.messages:
            root = self.messages[(channel, thread_ts)]
            thread_ts = root.thread_ts or root.ts
        text = _str(body.get("text")) or _str(body.get("markdown_text")) or ""
        message = FakeMessage(
            channel=channel,
            ts=self.next_ts(),
            text=text,
            blocks=_blocks_of(body),
            thread_ts=thread_ts,
            metadata=_dict(body.get("metadata")),
            versions=[text],
        )
        self.messages[(channel, message.ts)] = message
        if thread_ts:
            # Slack clears an assistant status when the app replies in that thread.
            self.thread_status.pop((channel, thread_ts), None)
        return {
            "ok": True,
            "channel": channel,
            "ts": message.ts,
            "message": message.as_api(include_metadata=True),
        }

    def _update(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = _require(body, "channel")
        message = self._existing(channel, _require(body, "ts"))
        if message.streaming:
            raise SlackError("streaming_state_conflict")
        self._check_content(body)
        message.text = _str(body.get("text")) or _str(body.get("markdown_text")) or ""
        if "blocks" in body:
            message.blocks = _blocks_of(body)
        if "metadata" in body:
            message.metadata = _dict(body.get("metadata"))
        message.edits += 1
        message.versions.append(message.text)
        return {
            "ok": True,
            "channel": channel,
            "ts": message.ts,
            "text": message.text,
            "message": message.as_api(include_metadata=False),
        }

    def _delete(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = _require(body, "channel")
        message = self._existing(channel, _require(body, "ts"))
        del self.messages[(channel, message.ts)]
        return {"ok": True, "channel": channel, "ts": message.ts}

    def _post_ephemeral(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = _require(body, "channel")
        user = _require(body, "user")
        self._check_content(body)
        # Slack shows an ephemeral message only to a member of the channel; others are refused.
        if user not in self.members.get(channel, set()):
            raise SlackError("user_not_in_channel")
        return {"ok": True, "message_ts": self.next_ts()}

    def _get_permalink(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = _require(body, "channel")
        message = self._existing(channel, _require(body, "message_ts"))
        link = f"https://fake.slack.com/archives/{channel}/p{message.ts.replace('.', '')}"
        if message.thread_ts and message.thread_ts != message.ts:
            link += f"?thread_ts={message.thread_ts}&cid={channel}"
        return {"ok": True, "channel": channel, "permalink": link}

    # ---- streaming (chat.startStream / appendStream / stopStream) ---------------------------
    #
    # A streamed message is `streaming` from startStream until stopStream, or until Slack
    # finalizes it on its own (`expire_stream`: real streams end after a few idle minutes,
    # slack-sdk#1859). While streaming it cannot be edited (`streaming_state_conflict`); once
    # finalized it cannot be appended to or stopped (`message_not_in_streaming_state`), only
    # edited like any message. Each call carries at most 12,000 characters of markdown, and
    # a streamed message as a whole refuses text past `max_streamed_text` UTF-8 bytes
    # (`msg_too_long`).

    def expire_stream(self, channel: str, ts: str) -> None:
        """Finalize a streaming message as Slack does after a stream sits idle too long."""
        message = self._existing(channel, ts)
        message.streaming = False

    def streaming_messages(self) -> list[FakeMessage]:
        """Messages still streaming, oldest first."""
        found = [m for m in self.messages.values() if m.streaming]
        return sorted(found, key=lambda m: _ts_key(m.ts))

    def _start_stream(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = _require(body, "channel")
        thread_ts = _require(body, "thread_ts")
        if not channel.startswith("D"):
            if not body.get("recipient_team_id"):
                raise SlackError("missing_recipient_team_id")
            if not body.get("recipient_user_id"):
                raise SlackError("missing_recipient_user_id")
        text = _stream_text(body)
        if _utf8(text) > self.max_streamed_text:
            raise SlackError("msg_too_long")
        message = FakeMessage(
            channel=channel,
            ts=self.next_ts(),
            text=text,
            thread_ts=thread_ts,
            streaming=True,
        )
        message.versions.append(message.text)
        self.messages[(channel, message.ts)] = message
        self.thread_status.pop((channel, thread_ts), None)
        return {"ok": True, "channel": channel, "ts": message.ts}

    def _streaming(self, body: dict[str, Any]) -> FakeMessage:
        message = self._existing(_require(body, "channel"), _require(body, "ts"))
        if not message.streaming:
            raise SlackError("message_not_in_streaming_state")
        return message

    def _append_stream(self, body: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming(body)
        addition = _stream_text(body)
        if not addition:
            raise SlackError("no_text")
        if _utf8(message.text + addition) > self.max_streamed_text:
            raise SlackError("msg_too_long")
        message.text += addition
        message.versions.append(message.text)
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _stop_stream(self, body: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming(body)
        addition = _stream_text(body)
        if _utf8(message.text + addition) > self.max_streamed_text:
            raise SlackError("msg_too_long")
        if body.get("blocks") is not None:
            self._check_blocks(body["blocks"])
        if body.get("metadata") is not None and not _valid_metadata(body["metadata"]):
            raise SlackError("invalid_metadata_format")
        message.text += addition
        if body.get("blocks") is not None:
            message.blocks = _blocks_of(body)
        if body.get("metadata") is not None:
            message.metadata = _dict(body.get("metadata"))
        message.streaming = False
        message.versions.append(message.text)
        return {
            "ok": True,
            "channel": message.channel,
            "ts": message.ts,
            "message": message.as_api(include_metadata=True),
        }

    def _set_status(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = _require(body, "channel_id")
        thread_ts = _require(body, "thread_ts")
        status = _str(body.get("status"))
        if status is None:
            raise SlackError("invalid_arguments")
        if status:
            self.thread_status[(channel, thread_ts)] = status
        else:
            self.thread_status.pop((channel, thread_ts), None)
        return {"ok": True}

    def _views_publish(self, body: dict[str, Any]) -> dict[str, Any]:
        user_id = _require(body, "user_id")
        view = body.get("view")
        if not isinstance(view, dict) or view.get("type") != "home":
            raise SlackError("invalid_arguments")
        self._check_blocks(view.get("blocks", []))
        stored = {**view, "id": f"V{len(self.home_views) + 1:08d}"}
        self.home_views[user_id] = stored
        return {"ok": True, "view": stored}

    def _replies(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = _require(body, "channel")
        ts = _require(body, "ts")
        thread = self.thread(channel, ts)
        if not thread:
            raise SlackError("thread_not_found")
        include_metadata = str(body.get("include_all_metadata", "")).lower() in ("1", "true")
        return {
            "ok": True,
            "messages": [m.as_api(include_metadata=include_metadata) for m in thread],
            "has_more": False,
            "response_metadata": {"next_cursor": ""},
        }

    def _reactions_add(self, body: dict[str, Any]) -> dict[str, Any]:
        # Slack names the emoji without colons; a name it does not know (or `:eyes:`) is
        # invalid_name, and the same user cannot add the same reaction twice.
        name = _require(body, "name")
        channel = _str(body.get("channel"))
        timestamp = _str(body.get("timestamp"))
        if not channel or not timestamp:
            raise SlackError("no_item_specified")
        if name not in KNOWN_EMOJI:
            raise SlackError("invalid_name")
        message = self._existing(channel, timestamp)
        users = message.reactions.setdefault(name, [])
        if self.bot_user_id in users:
            raise SlackError("already_reacted")
        if len(message.reactions) > MAX_REACTIONS:
            del message.reactions[name]
            raise SlackError("too_many_reactions")
        users.append(self.bot_user_id)
        return {"ok": True}

    def _users_info(self, body: dict[str, Any]) -> dict[str, Any]:
        user_id = _require(body, "user")
        if user_id == self.bot_user_id:
            bot = {"id": user_id, "team_id": self.team_id, "name": "dagbot", "is_bot": True}
            return {"ok": True, "user": bot}
        person = self.users.get(user_id)
        if person is None:
            raise SlackError("user_not_found")
        return {"ok": True, "user": person}

    # ---- rate tiers per workspace, and the status timeout ------------------------------------

    def _init_limits(self, clock: FakeClock) -> None:
        self.clock = clock
        # token -> team: each workspace has its own bot token and its own rate budget.
        self.workspaces: dict[str, str] = {self.bot_token: self.team_id}
        self.tier_limited = 0
        self.expired_statuses: list[tuple[str, str]] = []
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._post_buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._status_set_at: dict[tuple[str, str], float] = {}

    def add_workspace(self, token: str, team_id: str) -> None:
        """Accept `token` as the bot token of another workspace (its own rate limits)."""
        self.workspaces[token] = team_id

    def status_of(self, channel: str, thread_ts: str) -> str | None:
        """The thread's assistant status now (None once cleared or past Slack's timeout)."""
        self._expire_statuses()
        return self.thread_status.get((channel, thread_ts))

    def _expire_statuses(self) -> None:
        now = self.clock.now()
        for key, set_at in list(self._status_set_at.items()):
            if key not in self.thread_status:
                del self._status_set_at[key]
            elif now - set_at >= STATUS_TIMEOUT:
                del self._status_set_at[key]
                del self.thread_status[key]
                self.expired_statuses.append(key)

    def _check_rate(self, method: str, body: dict[str, Any], team: str) -> None:
        """Raise Slack's 429 when `method` is over its tier in `team`; else count the call."""
        now = self.clock.now()
        if method == "assistant.threads.setStatus":
            channel, thread_ts = _str(body.get("channel_id")), _str(body.get("thread_ts"))
            if channel and thread_ts:
                self._status_set_at[(channel, thread_ts)] = now
        if method == "chat.postMessage":
            self._take_post_token(team, _str(body.get("channel")) or "", now)
            return
        limit = RATE_TIERS.get(method)
        if limit is None:
            return
        recent = self._recent.setdefault((team, method), deque())
        while recent and now - recent[0] >= RATE_WINDOW:
            recent.popleft()
        if len(recent) >= limit:
            self._limited(RATE_WINDOW - (now - recent[0]))
        recent.append(now)

    def _take_post_token(self, team: str, channel: str, now: float) -> None:
        tokens, at = self._post_buckets.get((team, channel), (float(POST_MESSAGE_BURST), now))
        tokens = min(float(POST_MESSAGE_BURST), tokens + (now - at) * POST_MESSAGE_RATE)
        if tokens < 1.0:
            self._post_buckets[(team, channel)] = (tokens, now)
            self._limited((1.0 - tokens) / POST_MESSAGE_RATE)
        self._post_buckets[(team, channel)] = (tokens - 1.0, now)

    def _limited(self, wait: float) -> None:
        self.tier_limited += 1
        # Retry-After is whole seconds of real time: Slack's wait, on this clock's speed.
        real = max(1, math.ceil(wait / self.clock.speed))
        raise SlackError("ratelimited", status=429, headers={"Retry-After": str(real)})


KNOWN_EMOJI = frozenset(
    {"eyes", "white_check_mark", "heavy_check_mark", "thumbsup", "+1", "memo", "hourglass"}
)
"""Standard emoji the fake knows (Slack knows thousands; any other name is invalid_name)."""
MAX_REACTIONS = 50
"""Distinct reactions one message may carry (Slack: too_many_reactions past it)."""


# ---- content rules Slack enforces beyond the block count ---------------------------------------

MAX_BLOCKS_TEXT = 12000
"""Slack's undocumented cap on the text of all of one message's blocks (`msg_blocks_too_long`)."""
TASK_CARD_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})
MAX_FEEDBACK_TEXT = 75
MAX_FEEDBACK_VALUE = 2000
MAX_CONTEXT_ACTIONS = 5
MAX_ACTION_ID = 255
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000

Outage = Literal["connection", "html", "text", "bad_json"]


def blocks_text_length(blocks: Iterable[Any]) -> int:
    """Characters of visible text across blocks, nested ones included: what Slack caps."""
    return sum(len(text) for text in _block_texts(blocks))


def block_shape_problems(blocks: Iterable[Any]) -> list[str]:
    """What Slack's block validation refuses in these blocks (empty: nothing), by JSON pointer.

    Task cards need a non-empty `task_id` and `title` and one of the four statuses; rich text
    `text` elements must not be empty; `context_actions` holds one to five feedback or icon
    buttons, and feedback buttons need both buttons with plain text (75) and a value (2,000).
    """
    problems: list[str] = []
    for index, block in enumerate(_walk_blocks(blocks)):
        where = f"/blocks/{index}"
        kind = block.get("type")
        if kind == "task_card":
            problems.extend(_task_card_problems(block, where))
        elif kind == "plan":
            if not _nonblank(block.get("title")):
                problems.append(f"must provide a title [json-pointer:{where}/title]")
        elif kind == "rich_text":
            problems.extend(_rich_text_problems(block, where))
        elif kind == "context_actions":
            problems.extend(_context_actions_problems(block, where))
        elif kind == "actions":
            problems.extend(_actions_problems(block, where))
        elif kind == "section":
            text = block.get("text")
            if isinstance(text, dict) and not _nonblank(text.get("text")):
                problems.append(f"must be more than 0 characters [json-pointer:{where}/text/text]")
        elif kind == "header":
            text = block.get("text")
            if not isinstance(text, dict) or not _nonblank(text.get("text")):
                problems.append(f"must be more than 0 characters [json-pointer:{where}/text/text]")
        elif kind == "context":
            for n, element in enumerate(_list_of(block.get("elements"))):
                if element.get("type") in ("mrkdwn", "plain_text") and not _nonblank(
                    element.get("text")
                ):
                    problems.append(
                        f"must be more than 0 characters [json-pointer:{where}/elements/{n}/text]"
                    )
    return problems


def _task_card_problems(card: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    if not _nonblank(card.get("task_id")):
        problems.append(f"must provide a task_id [json-pointer:{where}/task_id]")
    if not _nonblank(card.get("title")):
        problems.append(f"must provide a non-empty title [json-pointer:{where}/title]")
    if card.get("status") not in TASK_CARD_STATUSES:
        problems.append(
            f"must be one of {sorted(TASK_CARD_STATUSES)} [json-pointer:{where}/status]"
        )
    for key in ("details", "output"):
        if key in card:
            part = card[key]
            if not isinstance(part, dict) or part.get("type") != "rich_text":
                problems.append(f"must be a rich_text block [json-pointer:{where}/{key}]")
            else:
                problems.extend(_rich_text_problems(part, f"{where}/{key}"))
    if "sources" in card:
        sources = card["sources"]
        if not isinstance(sources, list):
            problems.append(f"must be an array [json-pointer:{where}/sources]")
        else:
            for n, source in enumerate(sources):
                if (
                    not isinstance(source, dict)
                    or source.get("type") != "url"
                    or not _nonblank(source.get("url"))
                    or not _nonblank(source.get("text"))
                ):
                    problems.append(
                        f"must be a url source with url and text [json-pointer:{where}/sources/{n}]"
                    )
    return problems


def _rich_text_problems(block: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    elements = block.get("elements")
    if not isinstance(elements, list) or not elements:
        return [f"must provide elements [json-pointer:{where}/elements]"]

    def visit(items: list[Any], path: str) -> None:
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                problems.append(f"must be an object [json-pointer:{path}/{n}]")
                continue
            kind = item.get("type")
            nested = item.get("elements")
            if kind == "text" and not (isinstance(item.get("text"), str) and item["text"]):
                problems.append(f"must be more than 0 characters [json-pointer:{path}/{n}/text]")
            elif kind == "link" and not _nonblank(item.get("url")):
                problems.append(f"must provide a url [json-pointer:{path}/{n}/url]")
            elif kind == "user" and not _nonblank(item.get("user_id")):
                problems.append(f"must provide a user_id [json-pointer:{path}/{n}/user_id]")
            elif kind == "date" and not (
                isinstance(item.get("timestamp"), int) and _nonblank(item.get("format"))
            ):
                problems.append(f"must provide a timestamp and format [json-pointer:{path}/{n}]")
            elif kind == "emoji" and not _nonblank(item.get("name")):
                problems.append(f"must provide a name [json-pointer:{path}/{n}/name]")
            elif isinstance(nested, list):
                visit(nested, f"{path}/{n}/elements")

    visit(elements, f"{where}/elements")
    return problems


def _actions_problems(block: dict[str, Any], where: str) -> list[str]:
    """An `actions` block: 1 to 25 elements; buttons with plain text (75) and a value (2,000);
    action ids at most 255 long and unique within the block."""
    elements = block.get("elements")
    if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTIONS_ELEMENTS:
        return [f"must hold 1 to {MAX_ACTIONS_ELEMENTS} elements [json-pointer:{where}/elements]"]
    problems: list[str] = []
    seen: set[str] = set()
    for n, element in enumerate(elements):
        path = f"{where}/elements/{n}"
        if not isinstance(element, dict):
            problems.append(f"must be an object [json-pointer:{path}]")
            continue
        action_id = element.get("action_id")
        if action_id is not None:
            if not isinstance(action_id, str) or len(action_id) > MAX_ACTION_ID:
                problems.append(f"must be a string of at most 255 [json-pointer:{path}/action_id]")
            elif action_id in seen:
                problems.append(f"duplicate action_id [json-pointer:{path}/action_id]")
            else:
                seen.add(action_id)
        if element.get("type") != "button":
            continue
        text = element.get("text")
        if (
            not isinstance(text, dict)
            or text.get("type") != "plain_text"
            or not _nonblank(text.get("text"))
            or len(str(text.get("text"))) > MAX_BUTTON_TEXT
        ):
            problems.append(f"must provide plain_text of 1-75 [json-pointer:{path}/text]")
        value = element.get("value")
        if value is not None and len(str(value)) > MAX_BUTTON_VALUE:
            problems.append(f"must be at most 2000 characters [json-pointer:{path}/value]")
    return problems


def _context_actions_problems(block: dict[str, Any], where: str) -> list[str]:
    elements = block.get("elements")
    if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ACTIONS:
        return [f"must hold 1 to {MAX_CONTEXT_ACTIONS} elements [json-pointer:{where}/elements]"]
    problems: list[str] = []
    for n, element in enumerate(elements):
        path = f"{where}/elements/{n}"
        kind = element.get("type") if isinstance(element, dict) else None
        if kind not in ("feedback_buttons", "icon_button"):
            problems.append(f"unsupported element type: {kind} [json-pointer:{path}]")
            continue
        assert isinstance(element, dict)
        action_id = element.get("action_id")
        if action_id is not None and (
            not isinstance(action_id, str) or len(action_id) > MAX_ACTION_ID
        ):
            problems.append(f"must be a string of at most 255 [json-pointer:{path}/action_id]")
        if kind != "feedback_buttons":
            continue
        for side in ("positive_button", "negative_button"):
            button = element.get(side)
            text = button.get("text") if isinstance(button, dict) else None
            value = button.get("value") if isinstance(button, dict) else None
            if (
                not isinstance(text, dict)
                or text.get("type") != "plain_text"
                or not _nonblank(text.get("text"))
                or len(str(text.get("text"))) > MAX_FEEDBACK_TEXT
            ):
                problems.append(
                    f"must provide plain_text of 1-75 [json-pointer:{path}/{side}/text]"
                )
            if not _nonblank(value) or len(str(value)) > MAX_FEEDBACK_VALUE:
                problems.append(
                    f"must provide a value of 1-2000 [json-pointer:{path}/{side}/value]"
                )
    return problems


def _nonblank(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _list_of(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# ---- helpers ---------------------------------------------------------------------------------


async def _parse_body(request: web.Request) -> dict[str, Any]:
    body: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                data = await request.json()
            except json.JSONDecodeError:
                data = None
            if isinstance(data, dict):
                body.update(data)
        else:
            form = await request.post()
            body.update({k: v for k, v in form.items() if isinstance(v, str)})
    for key in _JSON_FIELDS & body.keys():
        value = body[key]
        if isinstance(value, str) and value[:1] in ("[", "{"):
            with suppress(json.JSONDecodeError):
                body[key] = json.loads(value)
    return body


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[len("Bearer ") :] if header.startswith("Bearer ") else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _require(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise SlackError("channel_not_found" if key == "channel" else "invalid_arguments")
    return value


def _blocks_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = body.get("blocks")
    return [b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


def _stream_text(body: dict[str, Any]) -> str:
    """The markdown a streaming call carries: `markdown_text` or `markdown_text` chunks, each
    at most 12,000 characters (Slack refuses both at once, as it does longer text)."""
    markdown_text = _str(body.get("markdown_text"))
    chunks = body.get("chunks")
    if markdown_text and chunks:
        raise SlackError("invalid_arguments")
    texts = [markdown_text or ""]
    if chunks is not None:
        if not isinstance(chunks, list) or not all(isinstance(c, dict) for c in chunks):
            raise SlackError("invalid_chunks")
        for chunk in chunks:
            if chunk.get("type") == "markdown_text":
                if not isinstance(chunk.get("text"), str):
                    raise SlackError("invalid_chunks")
                texts.append(chunk["text"])
    if any(len(text) > MAX_MARKDOWN_TEXT for text in texts):
        raise SlackError("msg_too_long")
    return "".join(texts)


def _utf8(text: str) -> int:
    return len(text.encode())


def _valid_metadata(metadata: Any) -> bool:
    return (
        isinstance(metadata, dict)
        and isinstance(metadata.get("event_type"), str)
        and isinstance(metadata.get("event_payload"), dict)
    )


def _walk_blocks(blocks: Iterable[Any]) -> Iterable[dict[str, Any]]:
    """Every block, depth first, including blocks nested in containers such as `plan`."""
    for block in blocks:
        if not isinstance(block, dict):
            continue
        yield block
        for key in ("tasks", "blocks"):
            nested = block.get(key)
            if isinstance(nested, list):
                yield from _walk_blocks(nested)


def _block_texts(blocks: Iterable[Any]) -> list[str]:
    """Every human-visible string inside blocks (texts, titles, details, fields)."""
    found: list[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("text", "title") and isinstance(item, str):
                    found.append(item)
                elif key not in ("action_id", "block_id", "value", "type", "url", "task_id"):
                    visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(list(blocks))
    return found


@asynccontextmanager
async def fake_slack_server(**kwargs: Any) -> AsyncIterator[FakeSlack]:
    """Serve a FakeSlack on 127.0.0.1 (a free port); `base_url` ends in `/api/`."""
    fake = FakeSlack(**kwargs)
    app = web.Application()
    app.router.add_route("*", "/api/{method}", fake.handle)
    async with serve_locally(app) as origin:
        fake.base_url = f"{origin}/api/"
        try:
            yield fake
        finally:
            for method in list(fake._gates):
                fake.release(method)


@pytest_asyncio.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A running fake Slack Web API; configure clients with its `base_url` and `bot_token`."""
    async with fake_slack_server() as server:
        yield server
