"""Requests as Slack sends them to an app: signed events, slash commands and block actions.

Slack signs every HTTP request with `X-Slack-Signature: v0=<hex>`, an HMAC-SHA256 of
`v0:{X-Slack-Request-Timestamp}:{raw body}` keyed by the app's signing secret. Events arrive as
JSON `event_callback` envelopes; slash commands as form bodies; interactivity as a form body whose
`payload` field holds the JSON. A redelivery of an event carries `X-Slack-Retry-Num` and
`X-Slack-Retry-Reason` and the same `event_id`.

Usage::

    async with SlackSender(base_url, signing_secret) as slack_in, response_urls() as urls:
        sent = await slack_in.mention("<@U0FAKEBOT> weather?", user="U1", channel="C1")
        assert sent.status == 200
        await slack_in.event(sent.envelope["event"], event_id=sent.event_id, retry_num=1)
        await slack_in.command("list", user="U1", channel="C1", response_url=urls.url("list"))
        [answer] = await urls.wait_for("list")

`response_urls()` serves the `response_url` a command or action carries, so that what the app
answers there (bolt's `respond`) is recorded and can be awaited without sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from tests.fakes.slack_api import FAKE_BOT_USER_ID, FAKE_TEAM_ID

FAKE_SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
FAKE_APP_ID = "A0FAKEAPP"
EVENTS_PATH = "/slack/events"


def signature(secret: str, timestamp: str, body: str) -> str:
    """Slack's v0 request signature of `body` sent at `timestamp`."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(
    secret: str,
    body: str,
    *,
    content_type: str,
    timestamp: int | None = None,
    retry_num: int | None = None,
    retry_reason: str | None = None,
) -> dict[str, str]:
    """The headers Slack sends with `body`: content type, timestamp, signature, retry markers."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature(secret, stamp, body),
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
    return headers


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """What the app answered to one request (and, for events, what was sent)."""

    status: int
    text: str
    event_id: str = ""
    ts: str = ""
    envelope: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.text) if self.text else None


class SlackSender:
    """Sends signed requests to an app's `/slack/events`, one workspace and app at a time."""

    def __init__(
        self,
        base_url: str,
        signing_secret: str = FAKE_SIGNING_SECRET,
        *,
        team_id: str = FAKE_TEAM_ID,
        api_app_id: str = FAKE_APP_ID,
        bot_user_id: str = FAKE_BOT_USER_ID,
    ) -> None:
        self.url = base_url.rstrip("/") + EVENTS_PATH
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.api_app_id = api_app_id
        self.bot_user_id = bot_user_id
        self._session: aiohttp.ClientSession | None = None
        self._ts = itertools.count(1)
        self._ts_base = int(time.time())

    async def __aenter__(self) -> SlackSender:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    def next_ts(self) -> str:
        """A fresh message timestamp in Slack's `seconds.micros` shape (distinct from the API's)."""
        n = next(self._ts)
        return f"{self._ts_base - 100_000}.{n:06d}"

    async def post(
        self,
        body: str,
        *,
        content_type: str,
        timestamp: int | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """POST a raw body signed with `secret` (default: the app's) at `timestamp` (now)."""
        assert self._session is not None, "use SlackSender as an async context manager"
        signed = signed_headers(
            self.signing_secret if secret is None else secret,
            body,
            content_type=content_type,
            timestamp=timestamp,
            retry_num=retry_num,
            retry_reason=retry_reason,
        )
        signed.update(headers or {})
        async with self._session.post(self.url, data=body.encode(), headers=signed) as response:
            return response.status, await response.text()

    # -- events ------------------------------------------------------------------------------

    def envelope(self, event: Mapping[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        """An `event_callback` envelope as the Events API wraps every event."""
        return {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": dict(event),
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }

    async def event(
        self,
        event: Mapping[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> Delivery:
        envelope = self.envelope(event, event_id=event_id)
        status, text = await self.post(
            json.dumps(envelope),
            content_type="application/json",
            timestamp=timestamp,
            retry_num=retry_num,
            retry_reason=retry_reason,
            secret=secret,
        )
        return Delivery(
            status=status,
            text=text,
            event_id=envelope["event_id"],
            ts=str(event.get("ts", "")),
            envelope=envelope,
        )

    def mention_event(
        self,
        text: str,
        *,
        user: str,
        channel: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        bot_id: str | None = None,
    ) -> dict[str, Any]:
        """An `app_mention` event; `bot_id` makes it one written by a bot."""
        ts = ts or self.next_ts()
        event: dict[str, Any] = {
            "type": "app_mention",
            "user": user,
            "text": text,
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
            "team": self.team_id,
            "client_msg_id": str(uuid.uuid4()),
            "blocks": [
                {
                    "type": "rich_text",
                    "block_id": "b1",
                    "elements": [
                        {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
                    ],
                }
            ],
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = user
        if bot_id is not None:
            event["bot_id"] = bot_id
            event["subtype"] = "bot_message"
            event.pop("client_msg_id")
        return event

    async def mention(
        self,
        text: str,
        *,
        user: str,
        channel: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        bot_id: str | None = None,
        event_id: str | None = None,
        **options: Any,
    ) -> Delivery:
        """Mention the bot: `text` as typed (include `<@bot>` yourself, as Slack's text does)."""
        event = self.mention_event(
            text, user=user, channel=channel, ts=ts, thread_ts=thread_ts, bot_id=bot_id
        )
        return await self.event(event, event_id=event_id, **options)

    async def home_opened(self, user: str, *, tab: str = "home") -> Delivery:
        return await self.event(
            {
                "type": "app_home_opened",
                "user": user,
                "channel": f"D{user[1:]}",
                "tab": tab,
                "event_ts": self.next_ts(),
            }
        )

    # -- slash commands and interactivity --------------------------------------------------------

    async def command(
        self,
        text: str,
        *,
        user: str,
        channel: str,
        response_url: str = "https://hooks.slack.com/commands/T0/1/x",
        trigger_id: str | None = None,
        command: str = "/dagbot",
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> Delivery:
        """A slash command, form-encoded as Slack posts it."""
        form = {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or f"{uuid.uuid4().int % 10**13}.{uuid.uuid4().hex[:12]}",
        }
        status, answer = await self.post(
            urlencode(form),
            content_type="application/x-www-form-urlencoded",
            timestamp=timestamp,
            secret=secret,
        )
        return Delivery(status=status, text=answer)

    async def button(
        self,
        action_id: str,
        value: str,
        *,
        user: str,
        channel: str,
        message_ts: str,
        thread_ts: str | None = None,
        response_url: str = "https://hooks.slack.com/actions/T0/1/x",
        trigger_id: str | None = None,
        action_ts: str | None = None,
        element_type: str = "button",
    ) -> Delivery:
        """A click on a button of a message: a `block_actions` payload, form-encoded.

        Pass the `trigger_id` and `action_ts` of an earlier click to replay that very click;
        `element_type="feedback_buttons"` sends a press of a feedback button.
        """
        message: dict[str, Any] = {"type": "message", "ts": message_ts, "text": "", "blocks": []}
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        }
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
            container["thread_ts"] = thread_ts
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": self.team_id,
            },
            "api_app_id": self.api_app_id,
            "token": "legacy-verification-token",
            "container": container,
            "trigger_id": trigger_id or f"{uuid.uuid4().int % 10**13}.{uuid.uuid4().hex[:12]}",
            "team": {"id": self.team_id, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "general"},
            "message": message,
            "state": {"values": {}},
            "response_url": response_url,
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "dagbot_actions",
                    "text": {"type": "plain_text", "text": action_id, "emoji": True},
                    "value": value,
                    "type": element_type,
                    "action_ts": action_ts or f"{time.time():.6f}",
                }
            ],
        }
        status, answer = await self.post(
            urlencode({"payload": json.dumps(payload)}),
            content_type="application/x-www-form-urlencoded",
        )
        return Delivery(status=status, text=answer)


# -- response_url ----------------------------------------------------------------------------------


class ResponseUrls:
    """Records what an app posts to the response_urls it was given, by name."""

    def __init__(self) -> None:
        self.base_url = ""
        self.received: dict[str, list[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()

    def url(self, name: str) -> str:
        return f"{self.base_url}/respond/{name}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        async with self._changed:
            self.received.setdefault(request.match_info["name"], []).append(body)
            self._changed.notify_all()
        return web.Response(text="ok")

    async def wait_for(
        self, name: str, count: int = 1, *, within: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until `count` answers were posted to `url(name)`; return them."""
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: len(self.received.get(name, [])) >= count)
        except TimeoutError:
            raise AssertionError(
                f"no answer at response_url {name!r} after {within}s; got {self.received}"
            ) from None
        return self.received[name]


@asynccontextmanager
async def response_urls() -> AsyncIterator[ResponseUrls]:
    """Serve response_urls on 127.0.0.1 (a free port) for the duration of the block."""
    sink = ResponseUrls()
    app = web.Application()
    app.router.add_post("/respond/{name}", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        sink.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        yield sink
    finally:
        await runner.cleanup()
        sock.close()
