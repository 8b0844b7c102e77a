"""MCP servers as one toolbox: connected once, reused, reconnected when they die.

Each server's session lives in its own named asyncio task, which enters and leaves the `mcp`
Client (anyio task groups and cancel scopes must be entered and exited by one task). Requests
are messages over the session's anyio memory streams, which any task may use, so a call is made
from the caller's own task: a caller that is cancelled (engine timeout, Ctrl-C) cancels exactly
its own request, and a transport failure can only end the session task, never a caller.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client import Transport
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CONNECTION_CLOSED, INVALID_PARAMS, REQUEST_TIMEOUT, CallToolResult, Tool
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
from scheduler.tools.tool_output import error_text, result_text

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams

__all__ = ["McpConfig", "McpConfigError", "Toolbox", "load_mcp_config"]

log = logging.getLogger("dagbot.mcp")

DEFAULT_CONNECT_TIMEOUT = 30.0
RETRY_INTERVAL = 10.0
STOP_TIMEOUT = 10.0
STDERR_TAIL_LINES = 3
STDERR_DRAIN_TIMEOUT = 1.0
MAX_TOOL_PAGES = 50
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)

ServerConfig = StdioServer | HttpServer


class Toolbox:
    """Every configured MCP server; tools are named `<server>.<tool>`."""

    def __init__(
        self, connections: Mapping[str, _Connection], *, retry_interval: float = RETRY_INTERVAL
    ) -> None:
        self._connections = dict(connections)
        self._retry_interval = retry_interval

    @classmethod
    async def start(
        cls,
        config: McpConfig,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry_interval: float = RETRY_INTERVAL,
    ) -> Toolbox:
        """Connect every server at once. A server that fails is logged in one line and left out.

        `retry_interval`: the catalogue retries a server that is down only when its last attempt
        is older than this, so a server that hangs at start-up does not slow down every plan.
        """
        toolbox = cls(
            {
                name: _Connection(name, server, connect_timeout=connect_timeout)
                for name, server in config.servers.items()
            },
            retry_interval=retry_interval,
        )
        try:
            await toolbox._connect_all(toolbox._connections.values())
        except BaseException:
            await toolbox.aclose()
            raise
        return toolbox

    @property
    def servers(self) -> Mapping[str, str | None]:
        """Each server and why it is down (None when connected)."""
        return {name: c.down_reason for name, c in self._connections.items()}

    async def catalogue(self) -> dict[str, ToolSpec]:
        """The tools of every connected server; servers that are down are retried once first."""
        now = time.monotonic()
        await self._connect_all(
            c
            for c in self._connections.values()
            if not c.up and now - c.last_attempt >= self._retry_interval
        )
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
    ) -> str:
        """Call `<server>.<tool>` and return its output as text; failures raise TaskError."""
        server, _, tool = name.partition(".")
        connection = self._connections.get(server)
        if connection is None or not tool:
            known = ", ".join(sorted(self._connections)) or "none"
            raise TaskError(
                f"Unknown tool {name!r}: tools are named <server>.<tool> and no MCP server is "
                f"named {server!r} (configured servers: {known}).",
                retryable=False,
            )
        return await connection.call(tool, dict(args), timeout=timeout)

    def tool_spec(self, name: str) -> ToolSpec | None:
        """`<server>.<tool>` as its connected server lists it; None otherwise (never waits)."""
        connection = self._connections.get(name.partition(".")[0])
        if connection is None or not connection.up:
            return None
        return next((spec for spec in connection.specs() if spec.name == name), None)

    async def aclose(self) -> None:
        """Stop every session (and every stdio server process)."""
        await asyncio.gather(*(c.stop() for c in self._connections.values()))

    async def _connect_all(self, connections: Iterable[_Connection]) -> None:
        async with asyncio.TaskGroup() as group:
            for connection in connections:
                group.create_task(
                    connection.connect(), name=f"dagbot mcp connect {connection.name}"
                )


class _Connection:
    """One server: its session task, its tools while connected, and why it is down otherwise."""

    def __init__(self, name: str, config: ServerConfig, *, connect_timeout: float) -> None:
        self.name = name
        self.config = config
        self.connect_timeout = connect_timeout
        self.client: Client | None = None
        self.tools: tuple[Tool, ...] = ()
        self.down_reason: str | None = "not connected yet"
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._reported: str | None = None
        self.last_attempt = -float("inf")

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

    async def connect(self) -> bool:
        """Start a session unless one is up; on failure log one line and return False."""
        async with self._lock:
            if self.up:
                return True
            self.last_attempt = time.monotonic()
            await self._stop_task()
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[str | None] = loop.create_future()
            self._stop = asyncio.Event()
            task = asyncio.create_task(
                self._session(ready, self._stop), name=f"dagbot mcp {self.name}"
            )
            self._task = task
            task.add_done_callback(self._session_done)
            try:
                watched: list[asyncio.Future[Any]] = [ready, task]
                await asyncio.wait(
                    watched,
                    timeout=self.connect_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
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
                self.down_reason = self._reported = None
                return True
            self.down_reason = reason
            # One warning per problem: retries that fail the same way are logged quietly.
            level = logging.INFO if reason == self._reported else logging.WARNING
            self._reported = reason
            log.log(
                level,
                "MCP server %r (%s) failed to start: %s. Its tools are left out until it can be "
                "reached.",
                self.name,
                self.config.describe(),
                reason,
            )
            return False

    async def call(
        self,
        tool: str,
        args: dict[str, Any],
        *,
        timeout: float | None,  # noqa: ASYNC109 - the SDK times out the request and the session stays usable
    ) -> str:
        name = f"{self.name}.{tool}"
        client = self.client
        if client is None:
            await self.connect()
            client = self.client
            if client is None:
                raise TaskError(
                    f"MCP server {self.name!r} is not available ({self.down_reason}), so {name} "
                    "could not be called.",
                    retryable=True,
                )
        if tool not in {t.name for t in self.tools}:
            known = ", ".join(t.name for t in self.tools) or "none"
            raise TaskError(
                f"Unknown tool {name!r}: MCP server {self.name!r} has no tool {tool!r} "
                f"(its tools: {known}).",
                retryable=False,
            )
        try:
            result = await client.call_tool(tool, args, read_timeout_seconds=timeout)
        except MCPError as error:
            raise self._call_error(name, client, error, timeout) from None
        except (
            anyio.ClosedResourceError,
            anyio.BrokenResourceError,
            httpx2.TransportError,
        ) as error:
            self.lost(client, f"{type(error).__name__}: {error}")
            raise TaskError(
                f"Lost the connection to MCP server {self.name!r} during {name}; it will be "
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
                "(the server closed it or exited); it will be reconnected.",
                retryable=True,
            )
        if error.code == INVALID_PARAMS:
            return TaskError(f"{name} rejected the call: {error.message}", retryable=False)
        return TaskError(f"{name} failed: {error.message} (MCP error {error.code}).")

    def lost(self, client: Client, why: str) -> None:
        """The session behind `client` is unusable: forget it so the next use reconnects."""
        if self.client is not client:
            return  # already noticed by a concurrent call
        self.client = None
        self.tools = ()
        self.down_reason = f"connection lost ({why})"
        self._stop.set()
        log.warning(
            "MCP server %r (%s) lost its connection (%s); it will be reconnected on next use.",
            self.name,
            self.config.describe(),
            why,
        )

    async def stop(self) -> None:
        async with self._lock:
            await self._stop_task()
            self.down_reason = "stopped"

    async def _stop_task(self) -> None:
        task = self._task
        self._task = None
        self.client = None
        self.tools = ()
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
        try:
            async with Client(self._transport(tail)) as client:
                if tail is not None:
                    tail.release_writer()  # the child holds its own copy now
                tools = await _list_tools(client)
                self.client, self.tools = client, tools
                ready.set_result(None)
                await stop.wait()
                self.client = None
        except* Exception as group:
            reason = _failure_reason(group, self.config)
            if tail is not None:
                tail.release_writer()
                heard = await tail.last_words()
                if heard:
                    reason = f"{reason}; its stderr said: {heard}"
            if not ready.done():
                ready.set_result(reason)
            elif self.client is not None:
                self.client = None
                self.down_reason = f"connection lost ({reason})"
                log.warning(
                    "MCP server %r (%s) lost its connection: %s; it will be reconnected on next "
                    "use.",
                    self.name,
                    self.config.describe(),
                    reason,
                )
        finally:
            if tail is not None:
                tail.close()

    def _transport(self, tail: _StderrTail | None) -> Transport:
        config = self.config
        if isinstance(config, HttpServer):
            return _http_transport(config)
        assert tail is not None
        params = StdioServerParameters(
            command=resolve_command(config.command),
            args=config.args,
            env=config.env,
            cwd=config.cwd,
        )
        return stdio_client(params, errlog=tail.writer)


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
async def _http_transport(config: HttpServer) -> AsyncIterator[TransportStreams]:
    async with (
        httpx2.AsyncClient(headers=config.headers, timeout=HTTP_TIMEOUT) as http,
        streamable_http_client(config.url, http_client=http) as streams,
    ):
        yield streams


def _failure_reason(group: BaseExceptionGroup[Exception], config: ServerConfig) -> str:
    leaves = list(_leaves(group))
    for error in leaves:
        if isinstance(error, FileNotFoundError) and isinstance(config, StdioServer):
            return f"command {config.command!r} was not found"
        if isinstance(error, PermissionError) and isinstance(config, StdioServer):
            return f"command {config.command!r} cannot be run (permission denied)"
    error = leaves[0]
    if isinstance(error, MCPError) and error.code == CONNECTION_CLOSED:
        return "it exited or closed the connection during start-up"
    if isinstance(error, MCPError):
        return f"MCP error {error.code}: {error.message}"
    if isinstance(error, httpx2.HTTPStatusError):
        return f"HTTP {error.response.status_code} from the server"
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

    Servers explain why they cannot start on stderr ("GITHUB_TOKEN is not set"); keeping the last
    lines puts that explanation into our one log line, and keeps the terminal free of their chatter.
    """

    def __init__(self, server: str) -> None:
        self.server = server
        self.lines: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
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
                return
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self.lines.append(line)
                log.debug("[%s] %s", self.server, line)

    def release_writer(self) -> None:
        if not self.writer.closed:
            self.writer.close()

    async def last_words(self) -> str:
        """The last stderr line(s), once the server has closed its stderr (bounded wait)."""
        await asyncio.wait([self._pump], timeout=STDERR_DRAIN_TIMEOUT)
        return " | ".join(line[:200] for line in self.lines)

    def close(self) -> None:
        self.release_writer()
        self._pump.cancel()
        if self._transport is not None:
            self._transport.close()
        else:
            with suppress(OSError):
                self._reader_file.close()
