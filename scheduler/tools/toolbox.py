"""MCP servers as one toolbox: connected in the background, reused, restarted when they die.

Nothing waits for a server: `Toolbox.start` returns at once and each server is connected by its
own named supervisor task, which tries again with exponential backoff while the server cannot
be reached, and at once when a server that was up dies. The catalogue lists the servers that are
up and never waits for one that is not, except in the first seconds after start (`startup_wait`),
when a plan waits for servers still making their first attempt, so that the first goal of a
fresh process sees the servers that start quickly. A stdio server that exits is noticed by its
closed stderr; an HTTP server that goes away while idle, by a liveness check on an interval.

Each session lives in its own named asyncio task, which enters and leaves the `mcp` Client (anyio
task groups and cancel scopes must be entered and exited by one task). Requests are messages
over the session's anyio memory streams, which any task may use, so a call is made from the
caller's own task: a caller that is cancelled (engine timeout, Ctrl-C) cancels exactly its own
request, and a transport failure can only end the session task, never a caller.

Calls lost with a crashed server are retried by the engine (their error is retryable); the
toolbox itself resends a call only when an HTTP server answered that it no longer knows the
session, which proves the call never ran.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TextIO, cast

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client import Transport
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import (
    CONNECTION_CLOSED,
    INVALID_PARAMS,
    REQUEST_TIMEOUT,
    CallToolResult,
    RequestParamsMeta,
    Tool,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError

from scheduler.dag.catalogue import ToolSpec
from scheduler.errors import TaskError
from scheduler.tools.mcp_config import (
    HttpServer,
    McpConfig,
    McpConfigError,
    StdioServer,
    load_mcp_config,
    resolve_command,
)
from scheduler.tools.reconnect import (
    PING_INTERVAL,
    PING_TIMEOUT,
    STARTUP_WAIT,
    Backoff,
    failures_after_session,
    reconnect_delay,
    startup_error,
)
from scheduler.tools.tool_output import error_text, result_text

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams

__all__ = [
    "IDEMPOTENCY_META_KEY",
    "Backoff",
    "McpConfig",
    "McpConfigError",
    "Toolbox",
    "load_mcp_config",
]

log = logging.getLogger("dagbot.mcp")

DEFAULT_CONNECT_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
STDERR_TAIL_LINES = 60
STDERR_DRAIN_TIMEOUT = 1.0
MAX_TOOL_PAGES = 50
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)
IDEMPOTENCY_META_KEY = "dagbot/idempotency-key"
"""The request `_meta` key that carries `<run id>:<task id>` with every tool call."""
SESSION_HEADER = "mcp-session-id"

ServerConfig = StdioServer | HttpServer


class Toolbox:
    """Every configured MCP server; tools are named `<server>.<tool>`."""

    def __init__(
        self, connections: Mapping[str, _Connection], *, startup_wait: float = STARTUP_WAIT
    ) -> None:
        self._connections = dict(connections)
        self._wait_ends = time.monotonic() + startup_wait

    @classmethod
    async def start(
        cls,
        config: McpConfig,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        startup_wait: float = STARTUP_WAIT,
        ping_interval: float = PING_INTERVAL,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen, so one shared default is safe
    ) -> Toolbox:
        """Start connecting every server in the background and return at once.

        A server that fails is logged in one line, left out of the catalogue and tried again
        with `backoff`. `startup_wait`: for this long after start, the catalogue waits for
        servers still making their first attempt; later it never waits. `ping_interval`: how
        often a connected HTTP server is checked (0: never), so one that went away while idle
        leaves the catalogue and is reconnected before anyone calls it.
        """
        toolbox = cls(
            {
                name: _Connection(
                    name,
                    server,
                    connect_timeout=connect_timeout,
                    backoff=backoff,
                    ping_interval=ping_interval,
                )
                for name, server in config.servers.items()
            },
            startup_wait=startup_wait,
        )
        for connection in toolbox._connections.values():
            connection.start()
        return toolbox

    @property
    def servers(self) -> Mapping[str, str | None]:
        """Each server and why it is down (None when connected)."""
        return {name: c.down_reason for name, c in self._connections.items()}

    async def wait_up(self, *names: str) -> None:
        """Wait until the named servers (default: all) are connected. For tests and tools."""
        chosen = names or tuple(self._connections)
        await asyncio.gather(*(self._connections[name].wait_up() for name in chosen))

    async def wait_down(self, name: str) -> None:
        """Wait until the server's session, once up, has been lost. For tests."""
        await self._connections[name].went_down.wait()

    async def wait_first_attempts(self) -> None:
        """Wait until every server has been tried once (connected or failed)."""
        await asyncio.gather(*(c.first_attempt.wait() for c in self._connections.values()))

    async def catalogue(self) -> dict[str, ToolSpec]:
        """The tools of every connected server. Never waits for a server that is down.

        Only in the start-up wait does it wait for servers still making their first attempt,
        and only until the wait ends (counted from start, not from this call).
        """
        remaining = self._wait_ends - time.monotonic()
        starting = [c for c in self._connections.values() if not c.first_attempt.is_set()]
        if remaining > 0 and starting:
            waits = [asyncio.ensure_future(c.first_attempt.wait()) for c in starting]
            try:
                await asyncio.wait(waits, timeout=remaining)
            finally:
                for wait in waits:
                    wait.cancel()
        return {
            spec.name: spec
            for connection in self._connections.values()
            if connection.up
            for spec in connection.specs()
        }

    async def call(
        self,
        name: str,
        args: Mapping[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the protocol's own request timeout
        idempotency_key: str | None = None,
    ) -> str:
        """Call `<server>.<tool>` and return its output as text; failures raise TaskError.

        `idempotency_key` goes with the request in `_meta` (`IDEMPOTENCY_META_KEY`), the same on
        every attempt, so a server can recognise a repeat of a call it already carried out.
        """
        server, _, tool = name.partition(".")
        connection = self._connections.get(server)
        if connection is None or not tool:
            known = ", ".join(sorted(self._connections)) or "none"
            raise TaskError(
                f"Unknown tool {name!r}: tools are named <server>.<tool> and no MCP server is "
                f"named {server!r} (configured servers: {known}).",
                retryable=False,
            )
        meta = {IDEMPOTENCY_META_KEY: idempotency_key} if idempotency_key else None
        return await connection.call(tool, dict(args), timeout=timeout, meta=meta)

    def tool_spec(self, name: str) -> ToolSpec | None:
        """`<server>.<tool>` as its connected server lists it; None otherwise (never waits)."""
        connection = self._connections.get(name.partition(".")[0])
        if connection is None or not connection.up:
            return None
        return next((spec for spec in connection.specs() if spec.name == name), None)

    async def aclose(self) -> None:
        """Stop every supervisor and session (and every stdio server process)."""
        await asyncio.gather(*(c.stop() for c in self._connections.values()))


class _Connection:
    """One server: its supervisor, its session task, its tools while up, why it is down if not."""

    def __init__(
        self,
        name: str,
        config: ServerConfig,
        *,
        connect_timeout: float,
        backoff: Backoff,
        ping_interval: float = PING_INTERVAL,
    ) -> None:
        self.name = name
        self.config = config
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.ping_interval = ping_interval
        self.client: Client | None = None
        self.tools: tuple[Tool, ...] = ()
        self.down_reason: str | None = "not connected yet"
        self.first_attempt = asyncio.Event()
        self.went_down = asyncio.Event()
        """Set when a session that was up is lost; cleared when the server is up again."""
        self._supervisor: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._kick = asyncio.Event()
        self._changed = asyncio.Condition()
        self._attempts = 0
        self._attempting = False
        self._reported: str | None = None
        self._http: _HttpWatch | None = None

    @property
    def up(self) -> bool:
        return self.client is not None

    def specs(self) -> list[ToolSpec]:
        return [
            ToolSpec(
                name=f"{self.name}.{tool.name}",
                description=tool.description or tool.title or "",
                input_schema=dict(tool.input_schema),
                output_schema=dict(tool.output_schema) if tool.output_schema else None,
            )
            for tool in self.tools
        ]

    def start(self) -> None:
        self._supervisor = asyncio.create_task(
            self._supervise(), name=f"dagbot mcp supervisor {self.name}"
        )
        self._supervisor.add_done_callback(self._supervisor_done)

    async def wait_up(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.up)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _supervise(self) -> None:
        """Connect; when the session ends or the attempt fails, wait per the backoff; again."""
        failures = 0
        while True:
            self._kick.clear()
            self._attempting = True
            try:
                task = await self._attempt()
            finally:
                self._attempting = False
                self._attempts += 1
                self.first_attempt.set()
                await self._notify()
            if task is None:
                failures += 1
                delay = reconnect_delay(failures, self.backoff)
            else:
                started = time.monotonic()
                await asyncio.wait([task])
                # The first crash after a healthy spell restarts at once; crash loops back off.
                uptime = time.monotonic() - started
                healthy = uptime >= self.backoff.stable_after
                delay = reconnect_delay(0 if healthy else failures, self.backoff)
                failures = failures_after_session(failures, uptime, self.backoff)
            if delay > 0 and not self._kick.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), delay)

    def _supervisor_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("MCP supervisor for %r stopped unexpectedly", self.name, exc_info=error)

    async def _attempt(self) -> asyncio.Task[None] | None:
        """One connection attempt: the session task once it is up, or None (logged) if not."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[str | None] = loop.create_future()
        self._stop = asyncio.Event()
        task = asyncio.create_task(self._session(ready, self._stop), name=f"dagbot mcp {self.name}")
        self._task = task
        task.add_done_callback(self._session_done)
        try:
            watched: list[asyncio.Future[Any]] = [ready, task]
            await asyncio.wait(
                watched, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.wait([task])
            raise
        if ready.done():
            reason = ready.result()
        elif task.done():
            reason = "its session stopped before the handshake completed"
        else:
            task.cancel()
            await asyncio.wait([task])
            reason = f"no answer within {self.connect_timeout:g} s"
        if reason is None:
            if self._reported is not None:
                log.info("MCP server %r (%s) is up again.", self.name, self.config.describe())
            self.down_reason = self._reported = None
            self.went_down.clear()
            return task
        self.down_reason = reason
        # One warning per problem: retries that fail the same way are logged quietly.
        level = logging.INFO if reason == self._reported else logging.WARNING
        self._reported = reason
        log.log(
            level,
            "MCP server %r (%s) failed to start: %s. Its tools are left out until it can be "
            "reached; it is tried again in the background.",
            self.name,
            self.config.describe(),
            reason,
        )
        return None

    async def _wait_for_attempt(self) -> None:
        """Ask for an attempt now (cutting any backoff short) and wait for its outcome."""
        async with self._changed:
            target = self._attempts + 1
            self._kick.set()
            await self._changed.wait_for(lambda: self.up or self._attempts >= target)

    async def call(
        self,
        tool: str,
        args: dict[str, Any],
        *,
        timeout: float | None,  # noqa: ASYNC109 - the SDK times out the request and the session stays usable
        meta: dict[str, Any] | None,
    ) -> str:
        name = f"{self.name}.{tool}"
        client = await self._client_for(name)
        if tool not in {t.name for t in self.tools}:
            known = ", ".join(t.name for t in self.tools) or "none"
            raise TaskError(
                f"Unknown tool {name!r}: MCP server {self.name!r} has no tool {tool!r} "
                f"(its tools: {known}).",
                retryable=False,
            )
        try:
            return await self._call_once(client, name, tool, args, timeout=timeout, meta=meta)
        except _SessionGone:
            pass
        # The server answered that it does not know our session (it restarted): the call never
        # ran there, so a new session and one resend are safe.
        log.info(
            "MCP server %r (%s) no longer knows our session; starting a new one.",
            self.name,
            self.config.describe(),
        )
        self.lost(client, "the server no longer knows the session")
        client = await self._client_for(name)
        try:
            return await self._call_once(client, name, tool, args, timeout=timeout, meta=meta)
        except _SessionGone:
            self.lost(client, "the server refused a new session too")
            raise TaskError(
                f"MCP server {self.name!r} refused {name} twice, each time with a new session; "
                "it will be reconnected.",
                retryable=True,
            ) from None

    async def _client_for(self, name: str) -> Client:
        if self.client is None and self._supervisor is not None:
            await self._wait_for_attempt()
        client = self.client
        if client is None:
            raise TaskError(
                f"MCP server {self.name!r} is not available ({self.down_reason}), so {name} "
                "could not be called.",
                retryable=True,
            )
        return client

    async def _call_once(
        self,
        client: Client,
        name: str,
        tool: str,
        args: dict[str, Any],
        *,
        timeout: float | None,  # noqa: ASYNC109 - see call
        meta: dict[str, Any] | None,
    ) -> str:
        watch = self._http
        rejections = watch.rejections if watch is not None else 0
        try:
            result = await client.call_tool(
                tool,
                args,
                read_timeout_seconds=timeout,
                meta=cast("RequestParamsMeta | None", meta),
            )
        except MCPError as error:
            if watch is not None and watch.rejections > rejections:
                raise _SessionGone from None
            raise self._call_error(name, client, error, timeout) from None
        except (
            anyio.ClosedResourceError,
            anyio.BrokenResourceError,
            httpx2.TransportError,
        ) as error:
            self.lost(client, f"{type(error).__name__}: {error}")
            raise TaskError(
                f"Lost the connection to MCP server {self.name!r} during {name}; it is being "
                "reconnected.",
                retryable=True,
            ) from None
        except ValidationError as error:
            raise TaskError(
                f"{name} returned a result that does not fit the MCP protocol or the tool's "
                f"output schema: {error.errors()[0]['msg']}.",
                retryable=False,
            ) from None
        return _output(name, result)

    def _call_error(
        self, name: str, client: Client, error: MCPError, timeout: float | None
    ) -> TaskError:
        if error.code == REQUEST_TIMEOUT:
            limit = f" within {timeout:g} s" if timeout is not None else ""
            return TaskError(f"{name} did not answer{limit}.", retryable=True)
        if error.code == CONNECTION_CLOSED:
            self.lost(client, error.message)
            return TaskError(
                f"Lost the connection to MCP server {self.name!r} during {name} "
                "(the server closed it or exited); it is being restarted.",
                retryable=True,
            )
        if error.code == INVALID_PARAMS:
            return TaskError(f"{name} rejected the call: {error.message}", retryable=False)
        return TaskError(f"{name} failed: {error.message} (MCP error {error.code}).")

    def lost(self, client: Client, why: str) -> None:
        """The session behind `client` is unusable: end it; the supervisor reconnects."""
        if self.client is not client:
            return  # already noticed by a concurrent call
        self.client = None
        self.tools = ()
        self.down_reason = f"connection lost ({why})"
        self.went_down.set()
        self._stop.set()
        log.warning(
            "MCP server %r (%s) lost its connection (%s); it is being reconnected.",
            self.name,
            self.config.describe(),
            why,
        )

    async def stop(self) -> None:
        supervisor = self._supervisor
        self._supervisor = None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.wait([supervisor])
        task = self._task
        self._task = None
        self.client = None
        self.tools = ()
        self.down_reason = "stopped"
        if task is None:
            return
        self._stop.set()
        done, _ = await asyncio.wait([task], timeout=STOP_TIMEOUT)
        if not done:
            task.cancel()
            await asyncio.wait([task])

    def _session_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("MCP session task for %r stopped unexpectedly", self.name, exc_info=error)
        if self._task is task:
            self.client = None
            self.tools = ()

    async def _session(self, ready: asyncio.Future[str | None], stop: asyncio.Event) -> None:
        """The session's whole life, in this one task: connect, list tools, serve until stopped."""
        tail = _StderrTail(self.name) if isinstance(self.config, StdioServer) else None
        self._http = _HttpWatch() if isinstance(self.config, HttpServer) else None
        try:
            async with Client(self._transport(tail, self._http)) as client:
                if tail is not None:
                    tail.release_writer()  # the child holds its own copy now
                tools = await _list_tools(client)
                callable_tools = self._callable(tools)
                self.client, self.tools = client, callable_tools
                if tail is not None:
                    # A process that exits while idle is noticed now, not at the next call.
                    tail.on_exit = lambda: self.lost(client, "its process exited")
                if self._http is not None:
                    self._http.serving = True
                ready.set_result(None)
                await self._notify()
                await self._serve(client, stop)
                self.client = None
        except* Exception as group:
            reason = _failure_reason(group, self.config, self._http)
            if tail is not None:
                tail.release_writer()
                said = startup_error(await tail.last_lines())
                if said:
                    reason = f"{reason}; it said: {said}"
            if not ready.done():
                ready.set_result(reason)
            elif self.client is not None:
                self.client = None
                self.tools = ()
                self.down_reason = f"connection lost ({reason})"
                self.went_down.set()
                log.warning(
                    "MCP server %r (%s) lost its connection: %s; it is being reconnected.",
                    self.name,
                    self.config.describe(),
                    reason,
                )
        finally:
            if tail is not None:
                tail.close()

    async def _serve(self, client: Client, stop: asyncio.Event) -> None:
        """Keep the session until stopped, checking an HTTP server every `ping_interval`.

        Nothing tells an HTTP client that its server went away between requests, so without a
        check its tools would stay in the catalogue until the next call failed. A server that
        cannot be reached ends the session from the transport (the `except*` in `_session`); one
        that answers with an error or not at all is declared lost here. Either way the
        supervisor reconnects with backoff and the tools return when the server does.
        """
        if self._http is None or self.ping_interval <= 0:
            await stop.wait()
            return
        while True:
            with anyio.move_on_after(self.ping_interval):
                await stop.wait()
            if stop.is_set():
                return
            try:
                with anyio.fail_after(PING_TIMEOUT):
                    await _ping(client)
            except TimeoutError:
                self.lost(client, f"it did not answer a ping within {PING_TIMEOUT:g} s")
                return
            except MCPError as error:
                self.lost(client, f"it answered a ping with MCP error {error.code}: {error}")
                return
            log.debug("MCP server %r answered a ping.", self.name)

    def _callable(self, tools: tuple[Tool, ...]) -> tuple[Tool, ...]:
        """The tools this client can call: not those that require MCP tasks.

        mcp 2.3 defines the task types but does not dispatch `tasks/get` or `tasks/result`, so a
        task-augmented call could be started and never collected: such tools are left out.
        """
        kept = tuple(tool for tool in tools if not _needs_tasks(tool))
        left_out = [tool.name for tool in tools if _needs_tasks(tool)]
        if left_out:
            log.info(
                "MCP server %r: left out %s: %s require MCP tasks (execution.taskSupport "
                '"required"), which dagbot cannot call.',
                self.name,
                ", ".join(left_out),
                "it requires" if len(left_out) == 1 else "they require",
            )
        return kept

    def _transport(self, tail: _StderrTail | None, watch: _HttpWatch | None) -> Transport:
        config = self.config
        if isinstance(config, HttpServer):
            assert watch is not None
            return _http_transport(config, watch)
        assert tail is not None
        params = StdioServerParameters(
            command=resolve_command(config.command),
            args=config.args,
            env=config.env,
            cwd=config.cwd,
        )
        return stdio_client(params, errlog=tail.writer)


class _SessionGone(Exception):
    """The HTTP server refused a request because it does not know the session."""


class _HttpWatch:
    """What the HTTP layer saw: the last error status, and refusals of our session.

    The SDK turns an HTTP error into a generic MCP error (-32603, or -32600 "Session
    terminated"); the status itself is what tells a restarted server (404 to a request that
    carries a session id, as the spec has servers answer) from a failing tool, and a URL that is
    not an MCP endpoint from a network problem.
    """

    def __init__(self) -> None:
        self.last_error_status: int | None = None
        """The last HTTP error status of the handshake (what a failed start-up reports)."""
        self.serving = False
        self.rejections = 0

    async def on_response(self, response: httpx2.Response) -> None:
        if response.status_code < 400:
            return
        if not self.serving:
            self.last_error_status = response.status_code
        has_session = SESSION_HEADER in response.request.headers
        if has_session and response.status_code == 404:
            self.rejections += 1
        elif has_session and response.status_code == 400:
            # Servers written after the TypeScript SDK's example answer an unknown session
            # with 400 "No valid session ID provided".
            body = await response.aread()
            if b"session" in body.lower():
                self.rejections += 1


async def _ping(client: Client) -> None:
    """One liveness check: `ping` on a session of the handshake protocols; `ping` is gone from
    2026-07-28, whose stateless servers answer `server/discover` instead."""
    session = client.session
    if client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
        await session.send_ping()
    else:
        await session.send_discover(client.protocol_version)


def _needs_tasks(tool: Tool) -> bool:
    return tool.execution is not None and tool.execution.task_support == "required"


def _output(name: str, result: CallToolResult) -> str:
    if result.is_error:
        raise TaskError(f"{name} failed: {error_text(result)}", retryable=False)
    return result_text(result)


async def _list_tools(client: Client) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tuple(tools)


@asynccontextmanager
async def _http_transport(config: HttpServer, watch: _HttpWatch) -> AsyncIterator[TransportStreams]:
    async with (
        httpx2.AsyncClient(
            headers=config.headers,
            timeout=HTTP_TIMEOUT,
            event_hooks={"response": [watch.on_response]},
        ) as http,
        streamable_http_client(config.url, http_client=http) as streams,
    ):
        yield streams


def _failure_reason(
    group: BaseExceptionGroup[Exception], config: ServerConfig, watch: _HttpWatch | None
) -> str:
    leaves = list(_leaves(group))
    for error in leaves:
        if isinstance(error, FileNotFoundError) and isinstance(config, StdioServer):
            return f"command {config.command!r} was not found"
        if isinstance(error, PermissionError) and isinstance(config, StdioServer):
            return f"command {config.command!r} cannot be run (permission denied)"
    error = leaves[0]
    status = watch.last_error_status if watch is not None else None
    if isinstance(error, httpx2.HTTPStatusError):
        status = error.response.status_code
    if status is not None and not isinstance(error, httpx2.TransportError):
        return f"HTTP {status} from {config.describe()}: it does not answer as an MCP endpoint"
    if isinstance(error, MCPError) and error.code == CONNECTION_CLOSED:
        return "it exited or closed the connection during start-up"
    if isinstance(error, MCPError):
        return f"MCP error {error.code}: {error.message}"
    if isinstance(error, httpx2.TransportError):
        return f"could not connect ({error})"
    return f"{type(error).__name__}: {error}"


def _leaves(error: BaseException) -> Iterable[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


class _StderrTail:
    """A stdio server's stderr, through a pipe: logged at debug level, the last lines kept.

    Servers explain why they cannot start on stderr ("GITHUB_TOKEN is not set", or a traceback);
    keeping the last lines lets our one log line quote that explanation, and keeps the terminal
    free of their chatter.
    """

    def __init__(self, server: str) -> None:
        self.server = server
        self.lines: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.on_exit: Callable[[], None] | None = None
        """Called when stderr ends: the process has exited (its copy of the pipe is closed)."""
        read_fd, write_fd = os.pipe()
        self.writer: TextIO = os.fdopen(write_fd, "w")
        self._reader_file = os.fdopen(read_fd, "rb", buffering=0)
        self._transport: asyncio.ReadTransport | None = None
        self._pump = asyncio.create_task(self._read(), name=f"dagbot mcp stderr {server}")

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        self._transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), self._reader_file
        )
        while True:
            try:
                raw = await reader.readline()
            except ValueError:  # one line longer than the reader's limit
                raw = await reader.read(2**16)
            if not raw:
                if self.on_exit is not None:
                    self.on_exit()
                return
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self.lines.append(line)
                log.debug("[%s] %s", self.server, line)

    def release_writer(self) -> None:
        if not self.writer.closed:
            self.writer.close()

    async def last_lines(self) -> list[str]:
        """The last stderr lines, once the server has closed its stderr (bounded wait)."""
        await asyncio.wait([self._pump], timeout=STDERR_DRAIN_TIMEOUT)
        return list(self.lines)

    def close(self) -> None:
        self.release_writer()
        self._pump.cancel()
        if self._transport is not None:
            self._transport.close()
        else:
            with suppress(OSError):
                self._reader_file.close()
