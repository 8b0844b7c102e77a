"""`python -m bot`: the Slack bot, by Socket Mode (SLACK_APP_TOKEN set) or over HTTP on PORT.

Start-up order matters: the publisher subscribes to the engine's events before unfinished runs
are resumed, so a resumed run keeps editing its plan message. Shutdown runs the other way: stop
taking requests, stop the intake's tasks, stop the engine (runs stay resumable), then let the
publisher land every final state.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from pydantic import SecretStr
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import build_app
from bot.intake import Intake
from bot.publisher import SlackPublisher
from bot.runtime import Runtime, open_runtime
from bot.settings import ConfigError, Settings, load_settings
from bot.slack_client import make_client
from scheduler.dag.engine import Engine
from scheduler.errors import SchedulerError
from storage.errors import StorageError

log = logging.getLogger("dagbot.server")

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
UPDATE_INTERVAL = 1.0
"""Seconds between two edits of one plan message: chat.update is Tier 3 (about 50 a minute)."""


@dataclass(frozen=True, kw_only=True)
class Bot:
    """Everything a running bot is made of; tests reach the engine and publisher through it."""

    runtime: Runtime
    client: AsyncWebClient
    publisher: SlackPublisher
    intake: Intake
    app: AsyncApp

    async def wait_idle(self) -> None:
        """Return once no request, run or Slack write started so far is still in progress."""
        while True:
            await self.intake.wait_idle()
            await self.runtime.engine.run_until_idle()
            await self.publisher.wait_idle()
            if not len(self.intake.tasks):
                return


@dataclass(frozen=True, kw_only=True)
class HttpBot:
    bot: Bot
    base_url: str
    """Where the app listens, e.g. `http://127.0.0.1:3000` (POST `/slack/events` there)."""


def _check_settings(settings: Settings) -> None:
    settings.require("SLACK_BOT_TOKEN")
    if not _secret(settings.slack_app_token):
        settings.require("SLACK_SIGNING_SECRET")


@asynccontextmanager
async def running_bot(
    settings: Settings, *, update_interval: float = UPDATE_INTERVAL
) -> AsyncIterator[Bot]:
    """Open the runtime, connect the publisher, resume unfinished runs; undo it all on exit.

    `update_interval`: the least time between two edits of one plan message.
    """
    _check_settings(settings)
    async with open_runtime(settings) as runtime:
        engine = runtime.engine
        client = make_client(_secret(settings.slack_bot_token), settings.slack_api_url)
        publisher = SlackPublisher(client, engine, min_interval=update_interval)
        await publisher.start()
        intake = Intake(engine, client, publisher, max_goal_chars=settings.max_goal_chars)
        try:
            app = build_app(
                client, intake, signing_secret=_secret(settings.slack_signing_secret) or None
            )
            resumed = await engine.resume_all()
            if resumed:
                log.info("resumed %d unfinished run(s): %s", len(resumed), ", ".join(resumed))
            yield Bot(runtime=runtime, client=client, publisher=publisher, intake=intake, app=app)
        finally:
            await intake.aclose()
            await engine.close()
            await publisher.aclose()


def has_signature_headers(headers: Mapping[str, str]) -> bool:
    """Whether a request carries Slack's signature headers in a shape bolt can check.

    bolt verifies the signature itself, but a timestamp that is not a number makes it fail with
    a 500 rather than refuse the request.
    """
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    return timestamp.isascii() and timestamp.isdigit() and signature.startswith("v0=")


def http_app(app: AsyncApp) -> web.Application:
    """The aiohttp application: Slack's requests at POST /slack/events, a health check."""

    async def events(request: web.Request) -> web.Response:
        if not has_signature_headers(request.headers):
            return web.json_response({"error": "invalid request"}, status=401)
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    web_app = web.Application()
    web_app.router.add_post(EVENTS_PATH, events)
    web_app.router.add_get(HEALTH_PATH, health)
    return web_app


@asynccontextmanager
async def serve_http(
    settings: Settings,
    *,
    host: str = "0.0.0.0",
    port: int | None = None,
    update_interval: float = UPDATE_INTERVAL,
) -> AsyncIterator[HttpBot]:
    """Run the bot over HTTP on `port` (default PORT; 0 picks a free one) for the block."""
    async with running_bot(settings, update_interval=update_interval) as bot:
        runner = web.AppRunner(http_app(bot.app), access_log=None)
        await runner.setup()
        try:
            chosen = settings.port if port is None else port
            site = web.TCPSite(runner, host, chosen)
            try:
                await site.start()
            except OSError as error:
                raise ConfigError(
                    f"PORT {chosen}: cannot listen there ({error.strerror})."
                ) from None
            bound_host, bound_port = runner.addresses[0][:2]
            shown_host = "127.0.0.1" if bound_host in ("0.0.0.0", "::") else bound_host
            base_url = f"http://{shown_host}:{bound_port}"
            log.info("listening on %s%s", base_url, EVENTS_PATH)
            yield HttpBot(bot=bot, base_url=base_url)
        finally:
            await runner.cleanup()


@asynccontextmanager
async def serve_socket_mode(
    settings: Settings, *, update_interval: float = UPDATE_INTERVAL
) -> AsyncIterator[Bot]:
    """Run the bot connected by Socket Mode (SLACK_APP_TOKEN) for the block."""
    async with running_bot(settings, update_interval=update_interval) as bot:
        handler = AsyncSocketModeHandler(
            bot.app, _secret(settings.slack_app_token), web_client=bot.client
        )
        await handler.connect_async()  # type: ignore[no-untyped-call]  # bolt leaves it bare
        log.info("connected to Slack by Socket Mode")
        try:
            yield bot
        finally:
            await handler.close_async()  # type: ignore[no-untyped-call]


async def _serve_until_stopped(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        if _secret(settings.slack_app_token):
            async with serve_socket_mode(settings) as bot:
                await _until_stopped(stop, bot.runtime.engine)
        else:
            async with serve_http(settings) as http:
                await _until_stopped(stop, http.bot.runtime.engine)
        log.info("stopped; unfinished runs resume on the next start")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _until_stopped(stop: asyncio.Event, engine: Engine) -> None:
    """Until a signal, or until the database file is lost (then stop with its one line)."""
    lost = asyncio.ensure_future(engine.database_lost.wait())
    signalled = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([lost, signalled], return_when=asyncio.FIRST_COMPLETED)
    finally:
        lost.cancel()
        signalled.cancel()
    if engine.database_lost.is_set() and engine.storage_failure is not None:
        raise engine.storage_failure


def serve() -> int:
    """Run the bot until SIGTERM or SIGINT; exit status 2 when it cannot start."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load_settings()
        _check_settings(settings)
        asyncio.run(_serve_until_stopped(settings))
    except (ConfigError, SchedulerError, StorageError) as error:
        # Start-up problems (settings, the MCP servers file, the database): one line, no trace.
        print(error, file=sys.stderr)
        return 2
    return 0


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""
