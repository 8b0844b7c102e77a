"""The bot connected by Socket Mode: Slack pushes envelopes over a WebSocket, the bot acks them.

Slack's side is played by the fake Web API plus `apps.connections.open` (answered with the URL
of a WebSocket served here) and that WebSocket, which says hello and then pushes envelopes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from bot.server import serve_socket_mode
from storage.records import RunStatus
from tests.e2e.slack_harness import (
    ALICE,
    CHANNEL,
    FAST_UPDATES,
    SUMMARY,
    answering,
    bot_env,
    settings_from,
)
from tests.e2e.test_slack_process import BotProcess, free_port
from tests.fakes.openai_server import fake_openai_server
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import SlackSender

APP_TOKEN = "xapp-1-A0FAKEAPP-0000-fakeapptoken"


class FakeSocketMode:
    """`apps.connections.open` and the WebSocket; other Web API methods go to a FakeSlack."""

    def __init__(self, slack: FakeSlack) -> None:
        self.slack = slack
        self.ws_url = ""
        self.opened_with: list[str] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self._socket: web.WebSocketResponse | None = None
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)

    async def connections_open(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.opened_with.append(token)
        if not token.startswith("xapp-"):  # as Slack answers a bot or user token here
            return web.json_response({"ok": False, "error": "not_allowed_token_type"})
        if token != APP_TOKEN:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        return web.json_response({"ok": True, "url": self.ws_url})

    async def link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json(
            {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0FAKEAPP"}}
        )
        async with self._changed:
            self._socket = socket
            self._changed.notify_all()
        async for message in socket:
            if message.type is WSMsgType.TEXT:
                answer = json.loads(message.data)
                async with self._changed:
                    self.acks[str(answer.get("envelope_id"))] = answer
                    self._changed.notify_all()
        return socket

    async def push(self, kind: str, payload: dict[str, Any], *, accepts_response: bool) -> str:
        """Send one envelope once the bot is connected; returns its envelope id."""
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(lambda: self._socket is not None)
        assert self._socket is not None
        envelope_id = f"env-{next(self._ids)}"
        await self._socket.send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": accepts_response,
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        return envelope_id

    async def ack(self, envelope_id: str) -> dict[str, Any]:
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(lambda: envelope_id in self.acks)
        return self.acks[envelope_id]


@asynccontextmanager
async def fake_slack_with_socket_mode() -> AsyncIterator[FakeSocketMode]:
    slack = FakeSlack()
    fake = FakeSocketMode(slack)
    app = web.Application()
    app.router.add_post("/api/apps.connections.open", fake.connections_open)
    app.router.add_route("*", "/api/{method}", slack.handle)
    app.router.add_get("/link", fake.link)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        port = sock.getsockname()[1]
        slack.base_url = f"http://127.0.0.1:{port}/api/"
        fake.ws_url = f"ws://127.0.0.1:{port}/link"
        yield fake
    finally:
        await runner.cleanup()
        sock.close()


async def test_socket_mode_runs_a_mention_and_answers_a_command(tmp_path: Path) -> None:
    async with fake_slack_with_socket_mode() as socket_mode, fake_openai_server() as openai:
        slack = socket_mode.slack
        openai.respond_with(answering())
        env = bot_env(slack, openai, tmp_path)
        del env["SLACK_SIGNING_SECRET"]  # not needed: nothing arrives over HTTP
        settings = settings_from({**env, "SLACK_APP_TOKEN": APP_TOKEN})
        envelopes = SlackSender("http://unused", team_id=slack.team_id)

        async with serve_socket_mode(settings, update_interval=FAST_UPDATES) as bot:
            root = slack.add_message(CHANNEL, f"<@{slack.bot_user_id}> weather", user=ALICE)
            event = envelopes.mention_event(root.text, user=ALICE, channel=CHANNEL, ts=root.ts)
            mention = await socket_mode.push(
                "events_api", envelopes.envelope(event), accepts_response=False
            )
            assert await socket_mode.ack(mention) == {"envelope_id": mention}

            command = await socket_mode.push(
                "slash_commands",
                {
                    "team_id": slack.team_id,
                    "channel_id": CHANNEL,
                    "user_id": ALICE,
                    "command": "/dagbot",
                    "text": "help",
                    "trigger_id": "1.socket",
                    "response_url": "https://hooks.slack.com/commands/T0/1/x",
                },
                accepts_response=True,
            )
            helped = await socket_mode.ack(command)
            assert helped["payload"]["response_type"] == "ephemeral"
            assert "/dagbot list" in helped["payload"]["text"]

            await bot.wait_idle()
            run = await bot.runtime.store.latest_run_in_thread(
                f"{slack.team_id}:{CHANNEL}:{root.ts}"
            )
            assert run is not None
            assert run.status is RunStatus.SUCCEEDED

        assert socket_mode.opened_with == [APP_TOKEN]
        assert len([m for m in slack.replies(CHANNEL, root.ts) if SUMMARY in m.text]) == 1


# -- `python -m bot` in Socket Mode, as a process -------------------------------------------------


def _process_env(socket_mode: FakeSocketMode, tmp_path: Path, app_token: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": socket_mode.slack.bot_token,
        "SLACK_APP_TOKEN": app_token,
        "SLACK_API_URL": socket_mode.slack.base_url,
        "OPENAI_API_KEY": "sk-not-used-0000",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'runs.sqlite3'}",
    }


@pytest.mark.parametrize(
    ("app_token", "error"),
    [
        ("xapp-1-A0FAKEAPP-0000-revoked", "invalid_auth"),
        ("xoxb-a-bot-token", "not_allowed_token_type"),
    ],
)
async def test_a_refused_app_token_stops_start_up_with_one_line(
    tmp_path: Path, app_token: str, error: str
) -> None:
    async with fake_slack_with_socket_mode() as socket_mode:
        bot = await BotProcess.launch(_process_env(socket_mode, tmp_path, app_token), tmp_path)
        code = await bot.wait()

    assert code == 2, bot.log
    assert bot.lines[-1] == (
        f"SLACK_APP_TOKEN was refused by Slack ({error}); it must be an app-level token (xapp-) "
        "with the connections:write scope."
    )
    assert "Traceback" not in bot.log
    assert app_token not in bot.log
    assert socket_mode.opened_with == [app_token]  # checked once, never a connect loop


async def test_sigterm_stops_socket_mode_while_it_fails_to_connect(tmp_path: Path) -> None:
    async with fake_slack_with_socket_mode() as socket_mode:
        socket_mode.ws_url = f"ws://127.0.0.1:{free_port()}/link"  # nothing listens there
        bot = await BotProcess.launch(_process_env(socket_mode, tmp_path, APP_TOKEN), tmp_path)
        failed = await bot.wait_for_log("Failed to connect")

        code = await bot.stop()

    assert code == 0, bot.log
    assert "Cannot connect to host 127.0.0.1" in failed
    assert "Traceback" not in bot.log
    assert bot.lines[-1].endswith("stopped; unfinished runs resume on the next start")
