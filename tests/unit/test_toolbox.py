"""The toolbox against real MCP servers over stdio (ours and mcp-server-time) and over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
)

from scheduler.dag.executors import TaskContext
from scheduler.dag.plan import PlanTask, TaskKind
from scheduler.errors import TaskError
from scheduler.tools.mcp_config import HttpServer, McpConfig, McpConfigError, StdioServer
from scheduler.tools.tool_output import NO_CONTENT, result_text
from scheduler.tools.tool_step import ToolExecutor
from scheduler.tools.toolbox import Backoff, Toolbox, load_mcp_config
from tests.fakes.mcp_test_server import TEST_SERVER_PATH, stdio_entry, time_server_entry

MCP_LOG = "dagbot.mcp"


def config(**servers: dict[str, Any]) -> McpConfig:
    return McpConfig.model_validate({"mcpServers": servers})


@pytest.fixture
async def toolbox() -> AsyncIterator[Toolbox]:
    """Our test server alone (most tests need nothing else)."""
    box = await Toolbox.start(config(test=stdio_entry()))
    await box.wait_up()
    yield box
    await box.aclose()


@pytest.fixture
async def two_servers() -> AsyncIterator[Toolbox]:
    """Our test server and the third-party mcp-server-time."""
    box = await Toolbox.start(config(test=stdio_entry(), time=time_server_entry()))
    await box.wait_up()
    yield box
    await box.aclose()


# -- catalogue ------------------------------------------------------------------------------------


async def test_catalogue_names_every_tool_by_server_with_its_schema(
    two_servers: Toolbox,
) -> None:
    catalogue = await two_servers.catalogue()

    assert {"test.echo", "test.sleep", "test.barrier", "test.fail"} <= set(catalogue)
    assert {"time.get_current_time", "time.convert_time"} <= set(catalogue)
    echo = catalogue["test.echo"]
    assert echo.name == "test.echo"
    assert echo.description == "Return the given text unchanged."
    assert echo.input_schema["required"] == ["text"]
    assert "timezone" in catalogue["time.get_current_time"].input_schema["properties"]
    assert two_servers.servers == {"test": None, "time": None}


# -- calls ----------------------------------------------------------------------------------------


async def test_a_tool_returns_its_text(toolbox: Toolbox) -> None:
    assert await toolbox.call("test.echo", {"text": "hello"}) == "hello"


async def test_the_third_party_time_server_answers(two_servers: Toolbox) -> None:
    output = await two_servers.call("time.get_current_time", {"timezone": "Asia/Tokyo"})

    answer = json.loads(output)
    assert answer["timezone"] == "Asia/Tokyo"
    assert answer["datetime"].endswith("+09:00")


async def test_two_calls_to_one_server_run_at_the_same_time(toolbox: Toolbox) -> None:
    # The barrier returns only while both calls are in progress together.
    outputs = await asyncio.gather(
        toolbox.call("test.barrier", {"name": "pair", "parties": 2, "timeout": 10}),
        toolbox.call("test.barrier", {"name": "pair", "parties": 2, "timeout": 10}),
    )

    assert all("passed with 2 calls" in output for output in outputs)


async def test_a_barrier_alone_fails_so_passing_it_means_something(toolbox: Toolbox) -> None:
    with pytest.raises(TaskError, match="only 1 of 2 calls arrived") as caught:
        await toolbox.call("test.barrier", {"name": "alone", "parties": 2, "timeout": 0.05})
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("test.stats", {"values": [1, 2, 6]}, {"count": 3, "total": 9.0, "mean": 3.0}),
        ("test.structured_only", {"key": "answer", "value": 42}, {"answer": 42}),
    ],
)
async def test_structured_content_comes_back_as_json(
    toolbox: Toolbox, tool: str, args: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert json.loads(await toolbox.call(tool, args)) == expected


@pytest.mark.parametrize(
    ("tool", "expected"),
    [
        ("test.image", "[image image/png, 66 bytes]"),
        (
            "test.resource",
            "[resource file:///notes.txt]\nthe notes\n"
            "[resource link report: file:///report.pdf (application/pdf)]",
        ),
        ("test.two_parts", "first\nsecond"),
    ],
)
async def test_other_content_is_described_or_joined(
    toolbox: Toolbox, tool: str, expected: str
) -> None:
    assert await toolbox.call(tool, {}) == expected


# -- failures -------------------------------------------------------------------------------------


async def test_an_error_result_fails_the_task_with_the_servers_message(toolbox: Toolbox) -> None:
    with pytest.raises(TaskError, match=r"test\.fail failed: .*disk is full") as caught:
        await toolbox.call("test.fail", {"message": "disk is full"})
    assert caught.value.retryable is False


async def test_arguments_the_tool_rejects_fail_the_task(toolbox: Toolbox) -> None:
    with pytest.raises(TaskError, match=r"(?s)test\.echo failed: .*text.*Field required") as caught:
        await toolbox.call("test.echo", {})
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nowhere.echo", "no MCP server is named 'nowhere' (configured servers: test)"),
        ("echo", "no MCP server is named 'echo'"),
        ("test.missing", "MCP server 'test' has no tool 'missing' (its tools: echo, sleep"),
    ],
)
async def test_unknown_servers_and_tools_fail_without_retry(
    toolbox: Toolbox, name: str, message: str
) -> None:
    with pytest.raises(TaskError, match=re.escape(message)) as caught:
        await toolbox.call(name, {})
    assert caught.value.retryable is False


async def test_a_timed_out_call_is_retryable_and_leaves_the_session_usable(
    toolbox: Toolbox,
) -> None:
    before = await toolbox.call("test.pid", {})

    with pytest.raises(TaskError, match=r"test\.sleep did not answer within 0\.05 s") as caught:
        await toolbox.call("test.sleep", {"seconds": 60}, timeout=0.05)

    assert caught.value.retryable is True
    assert await toolbox.call("test.pid", {}) == before


async def test_a_caller_cancelled_mid_call_leaves_the_session_usable(toolbox: Toolbox) -> None:
    before = await toolbox.call("test.pid", {})
    call = asyncio.create_task(toolbox.call("test.barrier", {"name": "held", "parties": 9}))
    # This second call passes only while the first one waits at the server: it is in flight.
    await toolbox.call("test.barrier", {"name": "held", "parties": 2})
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    assert await toolbox.call("test.pid", {}) == before


async def test_a_server_that_dies_mid_call_is_restarted(
    toolbox: Toolbox, caplog: pytest.LogCaptureFixture
) -> None:
    before = await toolbox.call("test.pid", {})

    with (
        caplog.at_level(logging.WARNING, logger=MCP_LOG),
        pytest.raises(TaskError, match="Lost the connection to MCP server 'test'") as caught,
    ):
        await toolbox.call("test.crash", {})
    assert caught.value.retryable is True
    assert toolbox.servers["test"] is not None
    lost = [r.getMessage() for r in caplog.records if r.name == MCP_LOG]
    assert len(lost) == 1
    assert "'test'" in lost[0]
    assert "being reconnected" in lost[0]

    await toolbox.wait_up()
    after = await toolbox.call("test.pid", {})
    assert after != before
    assert toolbox.servers["test"] is None


# -- start-up -------------------------------------------------------------------------------------


async def test_a_server_that_fails_to_start_is_one_log_line_and_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=MCP_LOG):
        box = await Toolbox.start(
            config(
                test=stdio_entry(),
                broken=stdio_entry(MCP_TEST_SERVER_EXIT_AT_START="BROKEN_TOKEN is not set"),
            )
        )
        await box.wait_first_attempts()
    try:
        lines = [r.getMessage() for r in caplog.records if r.name == MCP_LOG]
        assert len(lines) == 1
        assert "'broken'" in lines[0]
        assert "failed to start" in lines[0]
        assert "BROKEN_TOKEN is not set" in lines[0]
        assert "\n" not in lines[0]

        assert box.servers["test"] is None
        assert "BROKEN_TOKEN is not set" in (box.servers["broken"] or "")
        assert await box.call("test.echo", {"text": "still here"}) == "still here"
        with pytest.raises(TaskError, match="MCP server 'broken' is not available") as caught:
            await box.call("broken.echo", {"text": "x"})
        assert caught.value.retryable is True
    finally:
        await box.aclose()


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"command": "/nonexistent/mcp-server"}, "command '/nonexistent/mcp-server' was not found"),
        ({"command": sys.executable, "args": ["-c", "pass"]}, "exited or closed the connection"),
        ({"url": "http://127.0.0.1:9/mcp"}, "could not connect"),
    ],
)
async def test_start_never_fails_because_of_one_bad_server(
    entry: dict[str, Any], reason: str
) -> None:
    box = await Toolbox.start(config(test=stdio_entry(), bad=entry))
    try:
        await box.wait_first_attempts()
        assert reason in (box.servers["bad"] or "")
        catalogue = await box.catalogue()
        assert "test.echo" in catalogue
        assert not any(name.startswith("bad.") for name in catalogue)
    finally:
        await box.aclose()


async def test_a_server_failing_again_the_same_way_is_not_reported_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger=MCP_LOG):
        box = await Toolbox.start(
            config(broken=stdio_entry(MCP_TEST_SERVER_EXIT_AT_START="still broken")),
            backoff=Backoff(base=3600),
        )
        try:
            await box.wait_first_attempts()
            for _ in range(2):  # each call asks for an attempt at once and waits for it
                with pytest.raises(TaskError, match="not available"):
                    await box.call("broken.echo", {"text": "x"})
        finally:
            await box.aclose()

    attempts = [r for r in caplog.records if r.name == MCP_LOG and "failed to start" in r.message]
    assert [r.levelno for r in attempts] == [logging.WARNING, logging.INFO, logging.INFO]


async def test_a_server_that_never_answers_the_handshake_is_given_up_on() -> None:
    # It reads its stdin and never writes: no handshake, and it exits once stdin closes.
    silent = {"command": sys.executable, "args": ["-c", "import sys; sys.stdin.read()"]}

    box = await Toolbox.start(config(silent=silent), connect_timeout=0.2, startup_wait=0)
    try:
        await box.wait_first_attempts()
        assert box.servers == {"silent": "no answer within 0.2 s"}
        assert await box.catalogue() == {}
    finally:
        await box.aclose()


async def test_no_servers_means_an_empty_catalogue() -> None:
    box = await Toolbox.start(load_mcp_config(None))
    try:
        assert await box.catalogue() == {}
        with pytest.raises(TaskError, match="configured servers: none"):
            await box.call("time.get_current_time", {})
    finally:
        await box.aclose()


async def test_closing_stops_the_server_processes() -> None:
    box = await Toolbox.start(config(test=stdio_entry()))
    pid = int(await box.call("test.pid", {}))

    await box.aclose()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- streamable HTTP ------------------------------------------------------------------------------


@pytest.fixture
async def http_server_url() -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(TEST_SERVER_PATH), "--http", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = (await process.stdout.readline()).decode()
    try:
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}/mcp"
    finally:
        process.terminate()
        await process.wait()


async def test_an_http_server_is_called_with_the_configured_headers(http_server_url: str) -> None:
    box = await Toolbox.start(
        config(web={"url": http_server_url, "headers": {"X-Dagbot-Test": "from mcp.json"}})
    )
    try:
        await box.wait_up()
        assert box.servers == {"web": None}
        assert await box.call("web.header", {"name": "X-Dagbot-Test"}) == "from mcp.json"
        assert await box.call("web.echo", {"text": "over http"}) == "over http"
    finally:
        await box.aclose()


# -- the tool executor ----------------------------------------------------------------------------


async def _no_usage(model: str, prompt_tokens: int, completion_tokens: int) -> None:
    raise AssertionError("a tool task uses no LLM")


def tool_context(tool: str | None, args: dict[str, Any]) -> TaskContext:
    return TaskContext(
        run_id="run-1",
        goal="a goal",
        task=PlanTask(id="t1", kind=TaskKind.TOOL, title="a tool", tool=tool, args=args),
        attempt=1,
        results={},
        record_usage=_no_usage,
    )


async def test_the_tool_executor_makes_one_call_with_the_tasks_args(toolbox: Toolbox) -> None:
    executor = ToolExecutor(toolbox)

    assert await executor(tool_context("test.echo", {"text": "from a task"})) == "from a task"


async def test_the_tool_executor_applies_its_per_call_timeout(toolbox: Toolbox) -> None:
    executor = ToolExecutor(toolbox, timeout=0.05)

    with pytest.raises(TaskError, match=r"did not answer within 0\.05 s") as caught:
        await executor(tool_context("test.sleep", {"seconds": 60}))
    assert caught.value.retryable is True


async def test_the_tool_executor_refuses_a_task_without_a_tool(toolbox: Toolbox) -> None:
    with pytest.raises(TaskError, match="names no tool"):
        await ToolExecutor(toolbox)(tool_context(None, {}))


# -- mcp.json -------------------------------------------------------------------------------------


def test_the_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "mcp.example.json"

    loaded = load_mcp_config(example)

    assert isinstance(loaded.servers["time"], StdioServer)
    assert loaded.servers["time"].command == "mcp-server-time"


def test_both_server_kinds_are_read(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "local": {"command": "uvx", "args": ["mcp-server-git"], "env": {"A": "1"}},
                    "remote": {"url": "https://example.com/mcp", "headers": {"X-Key": "k"}},
                    "typed": {"type": "http", "url": "http://localhost:8000/mcp"},
                }
            }
        )
    )

    loaded = load_mcp_config(path)

    local, remote, typed = (loaded.servers[n] for n in ("local", "remote", "typed"))
    assert isinstance(local, StdioServer)
    assert (local.command, local.args, local.env) == ("uvx", ["mcp-server-git"], {"A": "1"})
    assert isinstance(remote, HttpServer)
    assert remote.headers == {"X-Key": "k"}
    assert isinstance(typed, HttpServer)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            "{not json",
            "not valid JSON (Expecting property name enclosed in double quotes at line 1",
        ),
        ("[]", 'expected an object with an "mcpServers" key'),
        ('{"servers": {}}', 'expected an object with an "mcpServers" key'),
        ('{"mcpServers": []}', "mcpServers: Input should be a valid dictionary"),
        ('{"mcpServers": {"a": {}}}', "mcpServers.a.command: Field required"),
        ('{"mcpServers": {"a": {"command": ""}}}', "mcpServers.a.command: String should have"),
        ('{"mcpServers": {"a": {"command": "x", "arg": []}}}', "mcpServers.a.arg: Extra inputs"),
        ('{"mcpServers": {"a": {"url": "ftp://x"}}}', "mcpServers.a.url: must be an http://"),
        ('{"mcpServers": {"a": {"url": "http://x", "env": {}}}}', "mcpServers.a.env: Extra"),
        ('{"mcpServers": {"a.b": {"command": "x"}}}', "server name 'a.b' may contain only"),
    ],
)
def test_a_malformed_file_is_a_clear_error_naming_it(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(content)

    with pytest.raises(McpConfigError) as caught:
        load_mcp_config(path)

    message = str(caught.value)
    assert message.startswith(f"MCP servers file {path}: ")
    assert problem in message
    assert "\n" not in message


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"

    with pytest.raises(McpConfigError, match="the file does not exist"):
        load_mcp_config(path)


def test_a_secret_in_the_config_never_reaches_its_description() -> None:
    stdio = StdioServer(command="server", args=["--token", "s3cret"], env={"KEY": "s3cret"})
    http = HttpServer(url="https://user:s3cret@example.com/mcp?key=s3cret", headers={"A": "s3cret"})

    assert "s3cret" not in stdio.describe()
    assert "s3cret" not in http.describe()
    assert http.describe() == "https://example.com/mcp"


# -- result text (pure) ---------------------------------------------------------------------------

MEMORY_ENTITIES = [{"name": "Tokyo", "entityType": "city", "observations": ["capital of Japan"]}]
MEMORY_ENTITIES_TEXT = (
    '[\n  {\n    "name": "Tokyo",\n    "entityType": "city",\n    "observations": [\n'
    '      "capital of Japan"\n    ]\n  }\n]'
)
MEMORY_GRAPH_TEXT = json.dumps({"entities": MEMORY_ENTITIES, "relations": []}, indent=2)


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (CallToolResult(content=[]), NO_CONTENT),
        (CallToolResult(content=[TextContent(type="text", text="a")]), "a"),
        (
            CallToolResult(
                content=[TextContent(type="text", text="hi")], structured_content={"result": "hi"}
            ),
            "hi",
        ),
        (
            CallToolResult(
                content=[TextContent(type="text", text="Found 2 items")],
                structured_content={"items": [1, 2]},
            ),
            'Found 2 items\n{\n  "items": [\n    1,\n    2\n  ]\n}',
        ),
        (
            CallToolResult(
                content=[TextContent(type="text", text='{"a": 1}')], structured_content={"a": 1}
            ),
            '{"a": 1}',
        ),
        # Real shapes, captured from @modelcontextprotocol/server-filesystem and server-memory
        # 2026.8.31 over stdio (read_text_file, list_directory; create_entities, read_graph):
        (
            CallToolResult(
                content=[TextContent(type="text", text="hello from a file\n")],
                structured_content={"content": "hello from a file\n"},
            ),
            "hello from a file\n",
        ),
        (
            CallToolResult(
                content=[TextContent(type="text", text="[FILE] a.txt")],
                structured_content={"content": "[FILE] a.txt"},
            ),
            "[FILE] a.txt",
        ),
        (
            CallToolResult(
                content=[TextContent(type="text", text=MEMORY_ENTITIES_TEXT)],
                structured_content={"entities": MEMORY_ENTITIES},
            ),
            MEMORY_ENTITIES_TEXT,
        ),
        (
            CallToolResult(
                content=[TextContent(type="text", text=MEMORY_GRAPH_TEXT)],
                structured_content={"entities": MEMORY_ENTITIES, "relations": []},
            ),
            MEMORY_GRAPH_TEXT,
        ),
        # The Python SDK's wrapper of plain returns, for a number:
        (
            CallToolResult(
                content=[TextContent(type="text", text="3.5")], structured_content={"result": 3.5}
            ),
            "3.5",
        ),
        # A different value under the only key is news, and kept:
        (
            CallToolResult(
                content=[TextContent(type="text", text="saved")],
                structured_content={"content": "saved 3 files"},
            ),
            'saved\n{\n  "content": "saved 3 files"\n}',
        ),
        (
            CallToolResult(
                content=[AudioContent(type="audio", data="AAAA", mime_type="audio/wav")]
            ),
            "[audio audio/wav, 3 bytes]",
        ),
        (
            CallToolResult(
                content=[ImageContent(type="image", data="not base64!", mime_type="image/png")]
            ),
            "[image image/png, 11 bytes]",
        ),
        (
            CallToolResult(
                content=[
                    EmbeddedResource(
                        type="resource",
                        resource=BlobResourceContents(
                            uri="file:///a.bin", mime_type="application/zip", blob="AAAAAAAA"
                        ),
                    )
                ]
            ),
            "[resource file:///a.bin, application/zip, 6 bytes]",
        ),
        (
            CallToolResult(
                content=[
                    ResourceLink(
                        type="resource_link",
                        name="log",
                        uri="file:///log",
                        size=10,
                        description="the log",
                    )
                ]
            ),
            "[resource link log: file:///log (10 bytes, the log)]",
        ),
    ],
)
def test_result_text(result: CallToolResult, expected: str) -> None:
    assert result_text(result) == expected
