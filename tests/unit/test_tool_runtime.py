"""MCP servers as they really behave: slow or stuck at start-up, crashing mid-call, restarting.

Real servers only: our test server over stdio and over streamable HTTP (in a subprocess that is
killed and started again on the same port), `mcp-server-time` and `mcp-server-git` from PyPI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from scheduler.dag.engine import Engine, EngineConfig
from scheduler.dag.plan import PlanTask, TaskKind
from scheduler.dag.retry import RetryPolicies, RetryPolicy
from scheduler.errors import TaskError
from scheduler.tools.mcp_config import McpConfig
from scheduler.tools.reconnect import (
    Backoff,
    failures_after_session,
    reconnect_delay,
    startup_error,
)
from scheduler.tools.tool_step import ToolExecutor
from scheduler.tools.toolbox import IDEMPOTENCY_META_KEY, Toolbox
from storage.records import RunStatus
from storage.sqlite import SqliteStore
from tests.fakes.mcp_test_server import (
    IDEMPOTENCY_META_KEY as SERVER_SIDE_KEY,
)
from tests.fakes.mcp_test_server import (
    TEST_SERVER_PATH,
    stdio_entry,
    time_server_entry,
)
from tests.support.executors import Echo
from tests.support.plans import plan, summary

MCP_LOG = "dagbot.mcp"
FAST = Backoff(base=0.01, cap=0.05)
NEVER_ON_ITS_OWN = Backoff(base=3600, cap=3600)


def config(**servers: dict[str, Any]) -> McpConfig:
    return McpConfig.model_validate({"mcpServers": servers})


def git_server_entry(repository: Path) -> dict[str, Any]:
    script = Path(sys.executable).with_name("mcp-server-git")
    return {"command": str(script), "args": ["--repository", str(repository)]}


def call_task(task_id: str, tool: str, **args: Any) -> PlanTask:
    return PlanTask(id=task_id, kind=TaskKind.TOOL, title=task_id, tool=tool, args=args)


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Toolbox]]]:
    opened: list[Toolbox] = []

    async def make(mcp: McpConfig, **options: Any) -> Toolbox:
        box = await Toolbox.start(mcp, **options)
        opened.append(box)
        return box

    yield make
    for box in opened:
        await box.aclose()


Start = Callable[..., Awaitable[Toolbox]]


# -- never wait on a sick server ------------------------------------------------------------------


async def test_a_hanging_server_adds_nothing_to_the_catalogue(start: Start) -> None:
    box = await start(
        config(test=stdio_entry(), hang=stdio_entry(MCP_TEST_SERVER_HANG_AT_START="1")),
        startup_wait=0,
    )
    await box.wait_up("test")

    catalogue = await box.catalogue()
    await box.catalogue()

    assert "test.echo" in catalogue
    assert not any(name.startswith("hang.") for name in catalogue)
    # Its first attempt (30 s connect timeout) is still in progress: nobody waited for it.
    assert box.servers["hang"] == "not connected yet"


async def test_start_returns_before_any_server_is_connected(start: Start) -> None:
    box = await start(config(hang=stdio_entry(MCP_TEST_SERVER_HANG_AT_START="1")))

    assert box.servers == {"hang": "not connected yet"}


async def test_the_first_plan_after_start_sees_servers_that_start_within_the_wait(
    start: Start,
) -> None:
    box = await start(config(test=stdio_entry()), startup_wait=600)

    assert "test.echo" in await box.catalogue()


async def test_a_plan_in_the_start_up_wait_waits_no_longer_than_the_wait(start: Start) -> None:
    box = await start(config(hang=stdio_entry(MCP_TEST_SERVER_HANG_AT_START="1")), startup_wait=0.2)

    assert await box.catalogue() == {}
    # Its first attempt lasts the 30 s connect timeout; the plan stopped waiting long before.
    assert box.servers["hang"] == "not connected yet"


async def test_a_server_that_comes_up_later_is_found_by_the_background_retries(
    start: Start, tmp_path: Path
) -> None:
    flag = tmp_path / "ready"
    box = await start(
        config(late=stdio_entry(MCP_TEST_SERVER_REQUIRE_FILE=str(flag))), backoff=FAST
    )
    await box.wait_first_attempts()
    assert await box.catalogue() == {}

    flag.touch()
    await box.wait_up("late")

    assert "late.echo" in await box.catalogue()


async def test_a_call_to_a_server_that_is_down_cuts_its_backoff_short(
    start: Start, tmp_path: Path
) -> None:
    flag = tmp_path / "ready"
    box = await start(
        config(late=stdio_entry(MCP_TEST_SERVER_REQUIRE_FILE=str(flag))),
        backoff=NEVER_ON_ITS_OWN,
        startup_wait=0,
    )
    await box.wait_first_attempts()
    flag.touch()

    assert await box.catalogue() == {}  # an hour of backoff left: the catalogue does not wait
    assert await box.call("late.echo", {"text": "called"}) == "called"
    assert "late.echo" in await box.catalogue()


async def test_a_crashed_server_is_restarted_at_once_without_any_call(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    box = await start(config(test=stdio_entry()), backoff=NEVER_ON_ITS_OWN)
    await box.wait_up()
    before = await box.call("test.pid", {})

    with caplog.at_level(logging.INFO, logger=MCP_LOG), pytest.raises(TaskError) as caught:
        await box.call("test.crash", {})
    assert caught.value.retryable is True

    # An hour of backoff would apply to a server that fails to start; a crash restarts at once.
    await box.wait_up()
    assert "test.echo" in await box.catalogue()
    assert await box.call("test.pid", {}) != before


async def test_a_server_that_dies_while_idle_is_noticed_and_restarted_without_any_call(
    start: Start,
) -> None:
    box = await start(config(test=stdio_entry()), backoff=NEVER_ON_ITS_OWN)
    await box.wait_up()
    before = int(await box.call("test.pid", {}))

    os.kill(before, signal.SIGKILL)
    await box.wait_down("test")
    assert box.servers["test"] == "connection lost (its process exited)"
    await box.wait_up()

    assert int(await box.call("test.pid", {})) != before


async def test_calls_lost_in_a_crash_are_retried_by_the_engine_with_the_same_key(
    start: Start, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.jsonl"
    box = await start(config(test=stdio_entry(MCP_TEST_SERVER_CALL_LOG=str(calls))))
    await box.wait_up()
    store = await SqliteStore.open(str(tmp_path / "runs.sqlite3"))
    engine = Engine(
        store,
        {TaskKind.TOOL: ToolExecutor(box), TaskKind.LLM: Echo(), TaskKind.SUMMARY: Echo()},
        planner=None,
        config=EngineConfig(
            retry=RetryPolicies(
                default=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
            )
        ),
    )
    try:
        # t2 crashes the server while t1 is in flight at it: both calls are lost.
        the_plan = plan(
            call_task("t1", "test.barrier", name="s", parties=2, timeout=30),
            call_task("t2", "test.crash_once", marker=str(tmp_path / "crashed"), name="s"),
            summary("s", "t1", "t2"),
        )
        run = await engine.submit("crash", plan=the_plan)
        view = await engine.wait(run.id)
    finally:
        await engine.close()
        await store.close()

    assert view.run.status is RunStatus.SUCCEEDED
    assert (view.task("t1").attempts, view.task("t2").attempts) == (2, 2)
    assert "passed with 2 calls" in (view.task("t1").output or "")
    logged = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [entry["key"] for entry in logged if entry["tool"] == "crash_once"] == [
        f"{run.id}:t2",
        f"{run.id}:t2",
    ]


# -- HTTP sessions --------------------------------------------------------------------------------


class HttpServerProcess:
    """Our test server over streamable HTTP in a subprocess that can be restarted on its port."""

    def __init__(self, *options: str) -> None:
        self.options = options
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def start(self) -> None:
        args = [str(TEST_SERVER_PATH), "--http", *self.options]
        args += ["--port", str(self.port)] if self.port else []
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        line = (await process.stdout.readline()).decode()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])
        self.process = process

    async def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            await self.process.wait()
            self.process = None


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServerProcess]:
    server = HttpServerProcess()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def session_server() -> AsyncIterator[HttpServerProcess]:
    """A server that speaks the 2025 protocol: one `Mcp-Session-Id` session per client."""
    server = HttpServerProcess("--sessions")
    await server.start()
    yield server
    await server.stop()


async def test_a_restarted_http_server_gets_a_new_session_and_the_call_is_resent(
    start: Start, session_server: HttpServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    box = await start(config(web={"url": session_server.url}), backoff=NEVER_ON_ITS_OWN)
    await box.wait_up()
    before = await box.call("web.pid", {})

    await session_server.stop()
    await session_server.start()  # same port, new process: it knows none of the old sessions
    with caplog.at_level(logging.INFO, logger=MCP_LOG):
        after = await box.call("web.pid", {})

    assert after != before
    assert box.servers == {"web": None}
    assert any("no longer knows our session" in r.getMessage() for r in caplog.records)
    assert await box.call("web.echo", {"text": "still there"}) == "still there"


async def test_an_http_server_that_is_gone_is_reported_down(
    start: Start, http_server: HttpServerProcess
) -> None:
    box = await start(config(web={"url": http_server.url}), backoff=NEVER_ON_ITS_OWN)
    await box.wait_up()

    await http_server.stop()
    with pytest.raises(TaskError) as caught:
        await box.call("web.echo", {"text": "x"})

    assert caught.value.retryable is True
    assert box.servers["web"] is not None
    assert await box.catalogue() == {}


@pytest.mark.parametrize("kind", ["stateless (2026-07-28)", "sessions (2025-11-25)"])
async def test_an_http_server_that_dies_while_idle_leaves_the_catalogue_and_returns(
    start: Start, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = HttpServerProcess(*(["--sessions"] if kind.startswith("sessions") else []))
    await server.start()
    try:
        box = await start(config(web={"url": server.url}), ping_interval=0.05, backoff=FAST)
        await box.wait_up()
        before = await box.call("web.pid", {})

        with caplog.at_level(logging.INFO, logger=MCP_LOG):
            await server.stop()
            await box.wait_down("web")  # no call was made: the ping noticed

        assert await box.catalogue() == {}
        assert box.servers["web"] is not None
        assert any("lost its connection" in r.getMessage() for r in caplog.records)

        await server.start()  # same port: the background retries find it
        await box.wait_up("web")
        assert "web.echo" in await box.catalogue()
        assert await box.call("web.pid", {}) != before
    finally:
        await server.stop()


class _Pings(logging.Handler):
    """Sets `answered` once the toolbox has logged `count` answered pings."""

    def __init__(self, count: int) -> None:
        super().__init__(logging.DEBUG)
        self.count = count
        self.answered = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "answered a ping" in record.getMessage():
            self.count -= 1
            if self.count <= 0:
                self.answered.set()


@pytest.mark.parametrize("kind", ["stateless (2026-07-28)", "sessions (2025-11-25)"])
async def test_pings_keep_a_healthy_http_server_up(
    start: Start, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = HttpServerProcess(*(["--sessions"] if kind.startswith("sessions") else []))
    await server.start()
    pings = _Pings(count=5)
    logger = logging.getLogger(MCP_LOG)
    logger.addHandler(pings)
    try:
        with caplog.at_level(logging.DEBUG, logger=MCP_LOG):
            box = await start(config(web={"url": server.url}), ping_interval=0.01)
            await box.wait_up()
            await pings.answered.wait()

        assert box.servers == {"web": None}
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert await box.call("web.echo", {"text": "still here"}) == "still here"
    finally:
        logger.removeHandler(pings)
        await server.stop()


# -- only what can be called, and the real reason it cannot start ---------------------------------


async def test_tools_that_require_mcp_tasks_are_left_out_and_logged(
    start: Start, session_server: HttpServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    # Task support is part of the 2025-11-25 protocol (2026-07-28 moved tasks to an extension),
    # so the server speaks that one, as the npm reference servers do.
    with caplog.at_level(logging.INFO, logger=MCP_LOG):
        box = await start(config(test={"url": session_server.url}))
        await box.wait_up()

    catalogue = await box.catalogue()
    assert "test.echo" in catalogue
    assert "test.background_job" not in catalogue
    lines = [r.getMessage() for r in caplog.records if "background_job" in r.getMessage()]
    assert len(lines) == 1
    assert 'taskSupport "required"' in lines[0]
    with pytest.raises(TaskError, match="has no tool 'background_job'"):
        await box.call("test.background_job", {})


@pytest.mark.parametrize(
    ("entry", "quoted"),
    [
        (
            stdio_entry(MCP_TEST_SERVER_RAISE_AT_START="DATABASE_URL is not set"),
            "it said: RuntimeError: DATABASE_URL is not set",
        ),
        (
            stdio_entry(MCP_TEST_SERVER_EXIT_AT_START="BROKEN_TOKEN is not set"),
            "it said: BROKEN_TOKEN is not set",
        ),
    ],
)
async def test_a_server_that_dies_at_start_up_is_reported_with_its_own_error(
    start: Start, caplog: pytest.LogCaptureFixture, entry: dict[str, Any], quoted: str
) -> None:
    with caplog.at_level(logging.WARNING, logger=MCP_LOG):
        box = await start(config(bad=entry), backoff=NEVER_ON_ITS_OWN)
        await box.wait_first_attempts()

    lines = [r.getMessage() for r in caplog.records if r.name == MCP_LOG]
    assert len(lines) == 1
    assert quoted in lines[0]
    assert "\n" not in lines[0]
    assert "+--" not in lines[0]
    assert "Traceback" not in lines[0]


async def test_a_url_that_is_not_an_mcp_endpoint_is_reported_with_its_http_status(
    start: Start, http_server: HttpServerProcess
) -> None:
    box = await start(
        config(web={"url": f"http://127.0.0.1:{http_server.port}/not-mcp"}),
        backoff=NEVER_ON_ITS_OWN,
    )
    await box.wait_first_attempts()

    assert "HTTP 404 from http://127.0.0.1" in (box.servers["web"] or "")


async def test_the_git_server_from_pypi_reports_why_it_cannot_start(
    start: Start, tmp_path: Path
) -> None:
    box = await start(config(git=git_server_entry(tmp_path / "missing")), backoff=NEVER_ON_ITS_OWN)
    await box.wait_first_attempts()

    assert "does not exist" in (box.servers["git"] or "")


async def test_the_git_and_time_servers_from_pypi_answer(start: Start, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = await asyncio.create_subprocess_exec("git", "init", "-q", str(repo))
    assert await git.wait() == 0
    (repo / "notes.txt").write_text("hello\n")
    box = await start(config(git=git_server_entry(repo), time=time_server_entry()))
    await box.wait_up()

    catalogue = await box.catalogue()
    assert {"git.git_status", "time.convert_time"} <= set(catalogue)
    status = await box.call("git.git_status", {"repo_path": str(repo)})
    assert "notes.txt" in status
    converted = json.loads(
        await box.call(
            "time.convert_time",
            {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
        )
    )
    assert converted["target"]["datetime"].startswith(converted["source"]["datetime"][:10])
    assert "21:00" in converted["target"]["datetime"]


# -- idempotency key ------------------------------------------------------------------------------


async def test_the_idempotency_key_reaches_the_server_in_the_request_meta(start: Start) -> None:
    box = await start(config(test=stdio_entry()))
    await box.wait_up()

    sent = await box.call("test.idempotency_key", {}, idempotency_key="run-7:t3")
    unsent = await box.call("test.idempotency_key", {})

    assert IDEMPOTENCY_META_KEY == SERVER_SIDE_KEY
    assert (sent, unsent) == ("run-7:t3", "(none)")


# -- pure: reconnection delays and start-up errors ------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (8, 60.0), (40, 60.0)]
)
def test_reconnect_delay(failures: int, delay: float) -> None:
    assert reconnect_delay(failures, Backoff()) == delay


@pytest.mark.parametrize(
    ("failures", "uptime", "after"), [(0, 3600.0, 0), (5, 10.0, 0), (0, 0.2, 1), (3, 9.9, 4)]
)
def test_failures_after_session(failures: int, uptime: float, after: int) -> None:
    assert failures_after_session(failures, uptime, Backoff()) == after


EXCEPTION_GROUP_TRACE = """\
  + Exception Group Traceback (most recent call last):
  |   File "/srv/server.py", line 12, in <module>
  |     anyio.run(main)
  | ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception)
  +-+---------------- 1 ----------------
    | Traceback (most recent call last):
    |   File "/srv/server.py", line 8, in fail
    |     raise RuntimeError(message)
    | RuntimeError: DATABASE_URL is not set
    +------------------------------------
"""

NODE_TRACE = """\
file:///srv/index.js:12
    throw new Error("GITHUB_PERSONAL_ACCESS_TOKEN environment variable is not set");
    ^

Error: GITHUB_PERSONAL_ACCESS_TOKEN environment variable is not set
    at file:///srv/index.js:12:11
    at ModuleJob.run (node:internal/modules/esm/module_job:234:25)

Node.js v20.19.2
"""


@pytest.mark.parametrize(
    ("stderr", "quoted"),
    [
        (EXCEPTION_GROUP_TRACE, "RuntimeError: DATABASE_URL is not set"),
        (NODE_TRACE, "Error: GITHUB_PERSONAL_ACCESS_TOKEN environment variable is not set"),
        ("ERROR:mcp_server_git.server:/srv/x does not exist\n", None),
        ("Usage: server [OPTIONS]\nTry 'server --help'\n", "Try 'server --help'"),
        ("", None),
        ("\n  \n", None),
    ],
)
def test_startup_error(stderr: str, quoted: str | None) -> None:
    said = startup_error(stderr.splitlines())
    if quoted is None and stderr.strip():
        assert said == stderr.strip().splitlines()[-1]
    else:
        assert said == quoted
