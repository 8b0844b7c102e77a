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
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from pydantic import SecretStr
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import build_app
from bot.intake import Intake
from bot.publisher import SlackPublisher
from bot.rate_budget import RateBudget
from bot.request_guard import check_request
from bot.runtime import Runtime, open_runtime
from bot.settings import ConfigError, Settings, load_settings
from bot.slack_client import make_client
from bot.startup_checks import check_slack_tokens
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
    settings.require_llm_key()


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
        client = make_client(
            _secret(settings.slack_bot_token),
            settings.slack_api_url,
            budget=RateBudget(speed=settings.slack_clock_speed),
            holds=engine.holds,
        )
        publisher = SlackPublisher(client, engine, min_interval=update_interval)
        await publisher.start()
        intake = Intake(
            engine,
            client,
            publisher,
            max_goal_chars=settings.max_goal_chars,
            approvers=settings.approver_ids(),
        )
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
            await engine.stop_runs()
            # Leases are still renewed while the last messages land (else they would be held
            # back as possibly another process's: see BudgetedWebClient).
            await publisher.aclose()
            await engine.close()


def http_app(app: AsyncApp, signing_secret: str) -> web.Application:
    """The aiohttp application: Slack's requests at POST /slack/events, a health check.

    Every request is checked (`bot.request_guard`) before bolt parses it: unsigned or forged
    is 401, unreadable (bad UTF-8, bad JSON, lone surrogates) is 400, never a 500.
    """

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        refusal = check_request(signing_secret, request.headers, body, request.content_type)
        if refusal is not None:
            log.info("refused a request to %s: %s", EVENTS_PATH, refusal.reason)
            return web.json_response({"error": refusal.reason}, status=refusal.status)
        bolt_request = AsyncBoltRequest(
            body=body.decode("utf-8"),
            query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]  # a multidict, as bolt's adapter passes
        )
        return await to_aiohttp_response(await app.async_dispatch(bolt_request))

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
    host: str | None = None,
    port: int | None = None,
    update_interval: float = UPDATE_INTERVAL,
) -> AsyncIterator[HttpBot]:
    """Run the bot over HTTP on `host` and `port` (default DAGBOT_HOST and PORT; port 0 picks a
    free one) for the block."""
    async with running_bot(settings, update_interval=update_interval) as bot:
        secret = _secret(settings.slack_signing_secret)
        runner = web.AppRunner(http_app(bot.app, secret), access_log=None)
        await runner.setup()
        try:
            chosen = settings.port if port is None else port
            bind = settings.host if host is None else host
            site = web.TCPSite(runner, bind, chosen)
            try:
                await site.start()
            except OSError as error:
                raise ConfigError(
                    f"DAGBOT_HOST {bind}, PORT {chosen}: cannot listen there "
                    f"({error.strerror or error})."
                ) from None
            bound_host, bound_port = runner.addresses[0][:2]
            # What the socket is bound to, as it is: 0.0.0.0 means every interface.
            log.info(
                "listening on %s%s%s",
                url_of(bound_host, bound_port),
                EVENTS_PATH,
                " (every interface)" if bound_host in ("0.0.0.0", "::") else "",
            )
            # Where a client on this machine reaches it (tests post there).
            local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bound_host, bound_host)
            yield HttpBot(bot=bot, base_url=url_of(local, bound_port))
        finally:
            await runner.cleanup()


def url_of(host: str, port: int) -> str:
    """`http://host:port`, with an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _OneLine(logging.Filter):
    """slack_sdk logs each failed Socket Mode connect with its whole traceback, every ping
    interval: keep the message (it names the error) and drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def _socket_mode_logger() -> logging.Logger:
    logger = logging.getLogger("dagbot.socket_mode")
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())
    return logger


@asynccontextmanager
async def serve_socket_mode(
    settings: Settings,
    *,
    update_interval: float = UPDATE_INTERVAL,
    before_connect: Awaitable[None] | None = None,
) -> AsyncIterator[Bot]:
    """Run the bot connected by Socket Mode (SLACK_APP_TOKEN) for the block.

    The connection is made, and remade, in the background: the block starts at once, and leaving
    it stops whatever the connection is doing (connecting, retrying, connected) at once.
    `before_connect`: wait for this first (the token check), and do not connect if it fails.
    """
    async with running_bot(settings, update_interval=update_interval) as bot:
        handler = AsyncSocketModeHandler(
            bot.app,
            _secret(settings.slack_app_token),
            web_client=bot.client,
            logger=_socket_mode_logger(),
        )

        async def connect() -> None:
            if before_connect is not None:
                try:
                    await before_connect
                except Exception:  # reported by whoever started the check
                    return
            # slack_sdk's loop: retries every ping interval until connected, then reconnects.
            await handler.connect_async()  # type: ignore[no-untyped-call]  # bolt leaves it bare
            log.info("connected to Slack by Socket Mode")

        connecting = asyncio.create_task(connect(), name="dagbot socket mode connect")
        try:
            yield bot
        finally:
            connecting.cancel()
            await asyncio.wait([connecting])
            await handler.close_async()  # type: ignore[no-untyped-call]


async def _serve_until_stopped(settings: Settings) -> None:
    """Serve until SIGTERM or Ctrl-C; either stops start-up too, whatever it is waiting on."""
    stop = asyncio.Event()
    started = asyncio.Event()
    serving = asyncio.create_task(_serve(settings, stop, started), name="dagbot serve")

    def on_signal() -> None:
        stop.set()
        if not started.is_set():
            serving.cancel()  # still starting: nothing to finish, unwind at once

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    try:
        await serving
    except asyncio.CancelledError:
        if not stop.is_set():
            raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped; unfinished runs resume on the next start")


async def _serve(settings: Settings, stop: asyncio.Event, started: asyncio.Event) -> None:
    # The tokens are checked while the rest starts; a refused one stops start-up, a Slack that
    # cannot be reached does not.
    tokens = asyncio.create_task(
        check_slack_tokens(
            _secret(settings.slack_bot_token),
            _secret(settings.slack_app_token) or None,
            settings.slack_api_url,
        ),
        name="dagbot token check",
    )
    try:
        if _secret(settings.slack_app_token):
            async with serve_socket_mode(settings, before_connect=tokens) as bot:
                await tokens
                started.set()
                await _until_stopped(stop, bot.runtime.engine)
        else:
            async with serve_http(settings) as http:
                await tokens
                started.set()
                await _until_stopped(stop, http.bot.runtime.engine)
    finally:
        tokens.cancel()
        await asyncio.wait([tokens])


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
        # Start-up problems (settings, tokens, the MCP servers file, the database): one line.
        print(error, file=sys.stderr)
        return 2
    return 0


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""
