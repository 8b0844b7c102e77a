"""A small MCP server of our own, spoken to over stdio by the toolbox tests and the terminal tests.

Run it as `python -m tests.fakes.mcp_test_server` or `python tests/fakes/mcp_test_server.py`.

Tools:
- `echo(text)`: returns the text at once.
- `sleep(seconds)`: returns after that long (for timeouts and cancellation).
- `barrier(name, parties, timeout)`: returns only once `parties` calls with the same `name` are
  in progress together, and fails after `timeout` seconds otherwise. Two tasks that both pass a
  barrier of 2 therefore ran at the same time: concurrency proved without measuring time.
  Calls in progress are counted per `name` whatever their `parties`, so a call with parties=2
  returns as soon as any other call waits under that name: a way to know a call is in flight.
- `fail(message)`: an `is_error` result carrying the message.
- `stats(values)`: structured content (plus its JSON as text, as the spec recommends).
- `structured_only(key, value)`: structured content and no text at all.
- `image()`: one tiny PNG image.
- `resource()`: an embedded text resource and a resource link.
- `pid()`: this process's id (to tell a reconnected server from the old one).
- `crash()`: the process exits at once, mid-call.
- `header(name)`: an HTTP request header as received (over streamable HTTP only).
- `scale(value, factor)`: a number times a factor (numbers in, a number out).
- `idempotency_key()`: the idempotency key dagbot sent in the request's `_meta`, or '(none)'.
- `crash_once(marker, name)`: the first time (while `marker` does not exist) waits until another
  call under barrier `name` is in flight, creates `marker` and exits mid-call, taking that
  sibling down with it; afterwards it joins barrier `name` as a party of 2 and returns.
- `background_job()`: listed with `execution.taskSupport: "required"` (needs MCP tasks).

With `MCP_TEST_SERVER_CALL_LOG` set to a path, `idempotency_key` and `crash_once` append one
JSON line per call (`{"tool": ..., "key": ...}`) there, so a test sees every attempt, even those
a crash cut short.

With `MCP_TEST_SERVER_EXIT_AT_START` set, the process writes that value to stderr and exits
before speaking MCP, like a server missing its credentials. With `MCP_TEST_SERVER_REQUIRE_FILE`
set to a path, it does the same until that file exists (a server that comes back later).

With `MCP_TEST_SERVER_HANG_AT_START` set, it reads its stdin and never answers the handshake
(a server stuck at start-up); it exits when stdin closes. With `MCP_TEST_SERVER_RAISE_AT_START`
set, it raises that message from inside a task group, so its stderr ends with an
`ExceptionGroup` traceback, as an SDK server failing in its lifespan does.

With `--http`, it serves streamable HTTP on 127.0.0.1 at a free port (or `--port <n>`) instead,
and prints `PORT <n>` as its first stdout line once it is listening (read it instead of
waiting). With `--sessions` as well, it refuses `server/discover`, so clients fall back to the
`initialize` handshake of the 2025 protocol and an `Mcp-Session-Id` session, as the npm
reference servers do.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
from mcp import MCPError
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp_types import (
    METHOD_NOT_FOUND,
    CallToolResult,
    EmbeddedResource,
    RequestParams,
    ResourceLink,
    TextContent,
    TextResourceContents,
    Tool,
    ToolExecution,
)
from pydantic import BaseModel

TEST_SERVER_PATH = Path(__file__).resolve()
EXIT_AT_START = "MCP_TEST_SERVER_EXIT_AT_START"
REQUIRE_FILE = "MCP_TEST_SERVER_REQUIRE_FILE"
HANG_AT_START = "MCP_TEST_SERVER_HANG_AT_START"
RAISE_AT_START = "MCP_TEST_SERVER_RAISE_AT_START"
CALL_LOG = "MCP_TEST_SERVER_CALL_LOG"
IDEMPOTENCY_META_KEY = "dagbot/idempotency-key"
TASKS_REQUIRED = "background_job"

# A 1x1 transparent PNG.
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


class _TestServer(MCPServer):
    async def list_tools(self) -> list[Tool]:
        # MCPServer has no way to declare task support, so it is added to the listing here.
        return [
            tool.model_copy(update={"execution": ToolExecution(task_support="required")})
            if tool.name == TASKS_REQUIRED
            else tool
            for tool in await super().list_tools()
        ]


server: MCPServer = _TestServer("dagbot-test", log_level="WARNING")


class _Barrier:
    def __init__(self) -> None:
        self.arrived = 0
        self.events: dict[int, anyio.Event] = {}

    def reached(self, parties: int) -> anyio.Event:
        return self.events.setdefault(parties, anyio.Event())


_barriers: defaultdict[str, _Barrier] = defaultdict(_Barrier)


class Stats(BaseModel):
    count: int
    total: float
    mean: float


@server.tool(description="Return the given text unchanged.")
def echo(text: str) -> str:
    return text


@server.tool(description="Wait for the given number of seconds, then say so.")
async def sleep(seconds: float) -> str:
    await anyio.sleep(seconds)
    return f"slept {seconds:g} s"


@server.tool(
    description=(
        "Wait until `parties` calls with the same `name` are in progress at once, then return. "
        "Fails after `timeout` seconds if they never overlap."
    )
)
async def barrier(name: str, parties: int = 2, timeout: float = 10.0) -> str:  # noqa: ASYNC109
    state = _barriers[name]
    state.arrived += 1
    reached = state.reached(parties)
    for waiting_for, event in list(state.events.items()):
        if state.arrived >= waiting_for:
            event.set()
            del state.events[waiting_for]  # the next group of callers waits afresh
    try:
        with anyio.fail_after(timeout):
            await reached.wait()
    except TimeoutError:
        raise ToolError(
            f"barrier {name!r}: only {state.arrived} of {parties} calls arrived "
            f"within {timeout:g} s"
        ) from None
    finally:
        state.arrived -= 1
    return f"barrier {name!r} passed with {parties} calls in progress together"


@server.tool(description="Fail with the given message.")
def fail(message: str) -> str:
    raise ToolError(message)


@server.tool(description="Count, total and mean of some numbers, as structured content.")
def stats(values: list[float]) -> Stats:
    total = sum(values)
    return Stats(count=len(values), total=total, mean=total / len(values) if values else 0.0)


@server.tool(description="Structured content with no text content.")
def structured_only(key: str, value: int) -> CallToolResult:
    return CallToolResult(content=[], structured_content={key: value})


@server.tool(description="A tiny PNG image.")
def image() -> Image:
    return Image(data=PNG_BYTES, format="png")


@server.tool(description="An embedded text resource and a link to another resource.")
def resource() -> CallToolResult:
    return CallToolResult(
        content=[
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri="file:///notes.txt", mime_type="text/plain", text="the notes"
                ),
            ),
            ResourceLink(
                type="resource_link",
                name="report",
                uri="file:///report.pdf",
                mime_type="application/pdf",
            ),
        ]
    )


@server.tool(description="This server's process id.")
def pid() -> str:
    return str(os.getpid())


@server.tool(description="Exit the server process at once, without answering.")
def crash() -> str:
    os._exit(3)


@server.tool(description="Text and a second text part.")
def two_parts() -> list[TextContent]:
    return [TextContent(type="text", text="first"), TextContent(type="text", text="second")]


@server.tool(description="The value of an HTTP request header, or '(none)'.")
def header(name: str, ctx: Context[Any, Any]) -> str:
    headers = ctx.headers or {}
    return headers.get(name.lower(), headers.get(name, "(none)"))


# Typed references (`{{tN}}` passed as a number): a tool whose argument is a number.
@server.tool(description="The value multiplied by the factor.")
def scale(value: float, factor: float = 2.0) -> float:
    return value * factor


def _key(ctx: Context[Any, Any]) -> str:
    meta = ctx.request_context.meta or {}
    return str(meta.get(IDEMPOTENCY_META_KEY, "(none)"))


def _log_call(tool: str, ctx: Context[Any, Any]) -> None:
    path = os.environ.get(CALL_LOG)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"tool": tool, "key": _key(ctx)}) + "\n")


@server.tool(description="The idempotency key that came with this call, or '(none)'.")
def idempotency_key(ctx: Context[Any, Any]) -> str:
    _log_call("idempotency_key", ctx)
    return _key(ctx)


@server.tool(description="Crash mid-call the first time, with a sibling call in flight.")
async def crash_once(marker: str, name: str, ctx: Context[Any, Any]) -> str:
    _log_call("crash_once", ctx)
    if not await anyio.Path(marker).exists():
        state = _barriers[name]
        if state.arrived < 1:  # the sibling has not arrived yet: its barrier call will say so
            with anyio.fail_after(30):
                await state.reached(1).wait()
        await anyio.Path(marker).touch()
        os._exit(4)
    return await barrier(name, parties=2, timeout=30)


@server.tool(description="A long job that must run as an MCP task.")
def background_job() -> str:
    return "done"


async def _no_discover(ctx: Any, params: RequestParams) -> Any:
    raise MCPError(METHOD_NOT_FOUND, "server/discover is not supported: use initialize")


async def serve_http() -> None:
    import uvicorn  # only this mode needs it; stdio start-up stays quick

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
    sock.bind(("127.0.0.1", port))
    sock.listen()
    sock.setblocking(False)
    app = server.streamable_http_app(host="127.0.0.1")
    web = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    await web.serve(sockets=[sock])


def stdio_entry(**env: str) -> dict[str, Any]:
    """This server as an `mcp.json` entry (with extra environment variables)."""
    return {"command": sys.executable, "args": [str(TEST_SERVER_PATH)], "env": env}


def time_server_entry() -> dict[str, Any]:
    """The third-party `mcp-server-time` as an `mcp.json` entry, answering in UTC."""
    script = Path(sys.executable).with_name("mcp-server-time")
    return {"command": str(script), "args": ["--local-timezone", "UTC"]}


async def _raise_in_task_group(message: str) -> None:
    async def fail() -> None:
        raise RuntimeError(message)

    async with anyio.create_task_group() as group:
        group.start_soon(fail)


def main() -> None:
    if os.environ.get(HANG_AT_START):
        sys.stdin.read()
        return
    if raised := os.environ.get(RAISE_AT_START):
        anyio.run(_raise_in_task_group, raised)
    message = os.environ.get(EXIT_AT_START)
    required = os.environ.get(REQUIRE_FILE)
    if required and not Path(required).exists():
        message = f"{required} does not exist yet"
    if message:
        print(message, file=sys.stderr, flush=True)
        sys.exit(1)
    if "--sessions" in sys.argv:
        server._lowlevel_server.add_request_handler("server/discover", RequestParams, _no_discover)
    if "--http" in sys.argv[1:]:
        anyio.run(serve_http)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
