"""`python -m bot run "<goal>"` and `python -m bot runs`, run as real subprocesses.

The bot process talks to the fake OpenAI server of this test over real HTTP, to real MCP servers
over stdio (our test server and the third-party mcp-server-time), and stores runs in a real
SQLite file, which the test reads back through `python -m bot runs` and through the store.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import signal
import struct
import sys
import termios
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scheduler.dag.plan import Plan, PlanTask, TaskKind
from scheduler.planning.planner import to_wire
from storage.records import RunStatus, TaskStatus
from storage.sqlite import open_store
from tests.fakes.mcp_test_server import stdio_entry, time_server_entry
from tests.fakes.openai_server import FAKE_API_KEY, ChatRequest, FakeOpenAI, Reply
from tests.support.postgres import fresh_database

RUN_ID = re.compile(r"run ([0-9a-f]+) planning")
SUMMARY_TEXT = "Both barriers passed together, and it is morning in Tokyo."


def tool_task(task_id: str, tool: str, *, deps: tuple[str, ...] = (), **args: Any) -> PlanTask:
    return PlanTask(
        id=task_id, kind=TaskKind.TOOL, title=f"call {tool}", tool=tool, args=args, deps=list(deps)
    )


def summary_task(task_id: str, *deps: str) -> PlanTask:
    return PlanTask(id=task_id, kind=TaskKind.SUMMARY, title="Answer", deps=list(deps))


def wire(*tasks: PlanTask, title: str = "A test plan") -> dict[str, Any]:
    return to_wire(Plan(title=title, tasks=list(tasks)))


# -- the bot as a subprocess ----------------------------------------------------------------------


@dataclass
class BotProcess:
    """A running `python -m bot ...`: stdout read line by line as it comes, stderr collected."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    stderr: str = ""

    async def wait_for_line(self, predicate: Callable[[str], bool]) -> str:
        """Read stdout until a line satisfies `predicate` (fails if the output ends first)."""
        assert self.process.stdout is not None
        while True:
            raw = await self.process.stdout.readline()
            if not raw:
                raise AssertionError(
                    "output ended before the expected line:\n" + "\n".join(self.lines)
                )
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if predicate(line):
                return line

    async def finish(self) -> int:
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        rest, err = await asyncio.gather(self.process.stdout.read(), self.process.stderr.read())
        self.lines.extend(rest.decode().splitlines())
        self.stderr = err.decode()
        return await self.process.wait()

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)

    @property
    def run_id(self) -> str:
        match = RUN_ID.search(self.stdout)
        assert match, self.stdout
        return match.group(1)


@dataclass
class Terminal:
    """Where the bot runs: its environment, working directory and database."""

    home: Path
    env: dict[str, str]
    database: Path
    fake: FakeOpenAI

    async def start(self, *args: str, **extra_env: str) -> BotProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            *args,
            cwd=self.home,
            env={**self.env, **extra_env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return BotProcess(process)

    async def run(self, *args: str, **extra_env: str) -> tuple[int, BotProcess]:
        bot = await self.start(*args, **extra_env)
        return await bot.finish(), bot

    def answer(self, *plans: dict[str, Any], summary: str = SUMMARY_TEXT) -> None:
        """Planner requests get `plans` in order (the last one repeats); text requests `summary`."""
        queue = list(plans)

        def respond(request: ChatRequest) -> Reply:
            if request.is_plan_request:
                return Reply.json(queue.pop(0) if len(queue) > 1 else queue[0])
            return Reply.answer(summary)

        self.fake.respond_with(respond)


def write_mcp_config(path: Path, **servers: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


@pytest.fixture
async def terminal(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[Terminal]:
    config = write_mcp_config(
        tmp_path / "mcp.json",
        test=stdio_entry(),
        time=time_server_entry(),
        dead=stdio_entry(MCP_TEST_SERVER_EXIT_AT_START="DEAD_SERVER_TOKEN is not set"),
    )
    database = tmp_path / "runs.sqlite3"
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DAGBOT_", "OPENAI_", "SLACK_", "DATABASE_"))
    }
    env = {
        **inherited,
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_API_KEY": FAKE_API_KEY,
        "DAGBOT_MODEL": "fake-model",
        "DATABASE_URL": f"sqlite:///{database}",
        "DAGBOT_MCP_CONFIG": str(config),
        "PYTHONUNBUFFERED": "1",
    }
    yield Terminal(home=tmp_path, env=env, database=database, fake=fake_openai)
    assert not fake_openai.responder_errors


async def stored_status(terminal: Terminal, run_id: str) -> tuple[RunStatus, dict[str, TaskStatus]]:
    store = await open_store(f"sqlite:///{terminal.database}")
    try:
        run = await store.get_run(run_id)
        assert run is not None
        return run.status, {task.id: task.status for task in await store.get_tasks(run_id)}
    finally:
        await store.close()


# -- the whole way through ------------------------------------------------------------------------


async def test_a_goal_is_planned_run_concurrently_and_summarised(terminal: Terminal) -> None:
    barrier: dict[str, Any] = {"name": "pair", "parties": 2, "timeout": 30}
    terminal.answer(
        wire(
            tool_task("t1", "test.barrier", **barrier),
            tool_task("t2", "test.barrier", **barrier),
            tool_task("t3", "time.get_current_time", timezone="Asia/Tokyo"),
            summary_task("t4", "t1", "t2", "t3"),
            title="Two barriers and a clock",
        )
    )

    code, bot = await terminal.run("run", "Check the barriers and the time in Tokyo")

    assert code == 0, bot.stdout + bot.stderr
    out = bot.stdout
    # The plan, as a tree under the summary.
    assert "Plan: Two barriers and a clock" in out
    assert "t4 Answer · summary" in out
    assert "├── t1 call test.barrier" in out
    assert (
        '└── t3 call time.get_current_time · time.get_current_time {"timezone": "Asia/Tokyo"}'
        in out
    )
    # Live statuses, one line per event.
    for task_id in ("t1", "t2", "t3", "t4"):
        assert re.search(rf"▶ {task_id} .* started", out), out
        assert re.search(rf"✓ {task_id} .* succeeded", out), out
    # A barrier of two passes only while both calls are in progress: they overlapped.
    summary_request = [r for r in terminal.fake.requests if r.is_decision][-1]
    assert summary_request.transcript.count("passed with 2 calls in progress together") == 2
    assert '"timezone": "Asia/Tokyo"' in summary_request.transcript
    # The summary is printed, and the run is recorded as succeeded.
    assert f"Summary:\n{SUMMARY_TEXT}" in out
    assert f"Run {bot.run_id} succeeded." in out
    assert await stored_status(terminal, bot.run_id) == (
        RunStatus.SUCCEEDED,
        dict.fromkeys(("t1", "t2", "t3", "t4"), TaskStatus.SUCCEEDED),
    )

    code, listing = await terminal.run("runs")
    assert code == 0
    assert re.search(
        rf"{bot.run_id}\s+succeeded\s+\S+ \S+\s+Check the barriers and the time in Tokyo",
        listing.stdout,
    ), listing.stdout

    code, details = await terminal.run("runs", bot.run_id[:6])
    assert code == 0
    assert f"Run {bot.run_id} · succeeded" in details.stdout
    assert "output: barrier 'pair' passed with 2 calls in progress together" in details.stdout
    assert "Planning: 18 tokens (11 prompt + 7 completion, 1 call, fake-model)" in details.stdout
    assert f"output: {SUMMARY_TEXT}" in details.stdout
    # Each task's start and every attempt, with the arguments it was actually sent.
    assert re.search(
        r"succeeded · 1 attempt · started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", details.stdout
    )
    assert re.search(
        r"1 +\S+ \S+ +\d+\.\d s +succeeded +\{\"timezone\": \"Asia/Tokyo\"\}", details.stdout
    ), details.stdout


async def test_an_invalid_plan_is_repaired(terminal: Terminal) -> None:
    terminal.answer(
        # Strict output keeps tool names to the catalogue; arguments are only checked after.
        wire(tool_task("t1", "test.echo", words="x"), summary_task("t2", "t1")),
        wire(tool_task("t1", "test.echo", text="repaired"), summary_task("t2", "t1")),
    )

    code, bot = await terminal.run("run", "Echo something")

    assert code == 0, bot.stdout + bot.stderr
    planner_requests = terminal.fake.plan_requests
    assert len(planner_requests) == 2
    assert "arguments for test.echo do not fit its schema" in planner_requests[1].transcript
    assert re.search(r"✓ t1 .* succeeded in .*: repaired", bot.stdout), bot.stdout
    assert f"Summary:\n{SUMMARY_TEXT}" in bot.stdout


async def test_an_unrepairable_plan_is_reported(terminal: Terminal) -> None:
    terminal.answer(wire(tool_task("t1", "test.echo", words="x"), summary_task("t2", "t1")))

    code, bot = await terminal.run("run", "Echo with the wrong arguments")

    assert code == 1
    assert len(terminal.fake.plan_requests) == 3
    assert f"Run {bot.run_id} failed:" in bot.stdout
    assert "I could not make a valid plan for this goal (3 attempts)" in bot.stdout
    assert "- Task 't1': arguments for test.echo do not fit its schema" in bot.stdout
    assert not [r for r in terminal.fake.requests if not r.is_plan_request]
    assert (await stored_status(terminal, bot.run_id))[0] is RunStatus.FAILED


async def test_a_tool_error_fails_its_task_and_the_summary_says_so(terminal: Terminal) -> None:
    terminal.answer(
        wire(
            tool_task("t1", "test.fail", message="the disk is full"),
            tool_task("t2", "test.echo", text="fine"),
            summary_task("t3", "t1", "t2"),
        ),
        summary="Partly done: t1 failed.",
    )

    code, bot = await terminal.run("run", "Do two things")

    assert code == 1
    assert re.search(r"✗ t1 .* failed: test\.fail failed: .*the disk is full", bot.stdout)
    assert re.search(r"✓ t2 .* succeeded", bot.stdout)
    assert "Summary:\nPartly done: t1 failed." in bot.stdout
    assert "the disk is full" in [r for r in terminal.fake.requests if r.is_decision][-1].transcript
    assert await stored_status(terminal, bot.run_id) == (
        RunStatus.FAILED,
        {"t1": TaskStatus.FAILED, "t2": TaskStatus.SUCCEEDED, "t3": TaskStatus.SUCCEEDED},
    )


async def test_a_tool_that_times_out_is_retried_then_fails(terminal: Terminal) -> None:
    terminal.answer(
        wire(tool_task("t1", "test.sleep", seconds=120), summary_task("t2", "t1")),
        summary="Nothing came back.",
    )

    code, bot = await terminal.run("run", "Wait a long time", DAGBOT_TASK_TIMEOUT="0.5")

    assert code == 1
    assert re.search(r"↻ t1 .* retrying .*after: Timed out after 0\.5 s", bot.stdout), bot.stdout
    assert re.search(r"✗ t1 .* failed: Timed out after 0\.5 s", bot.stdout), bot.stdout
    assert "Summary:\nNothing came back." in bot.stdout


async def test_dead_servers_are_reported_and_the_run_goes_on(terminal: Terminal) -> None:
    terminal.answer(
        wire(
            tool_task("t1", "test.crash"),
            tool_task("t2", "time.get_current_time", timezone="Europe/Paris"),
            summary_task("t3", "t1", "t2"),
        ),
        summary="Paris only.",
    )

    code, bot = await terminal.run("run", "Crash one server, ask another")

    assert code == 1
    # The server that could not start: one clear line, and its tools kept out of the plan.
    dead = [line for line in bot.stderr.splitlines() if "'dead'" in line]
    assert len(dead) == 1, bot.stderr
    assert "failed to start" in dead[0]
    assert "DEAD_SERVER_TOKEN is not set" in dead[0]
    offered = json.dumps(terminal.fake.plan_requests[0].body["response_format"])
    assert "test.echo" in offered
    assert "dead." not in offered
    # The server that died mid-run: reconnected for each retry, and the task fails clearly.
    assert "MCP server 'test'" in bot.stderr
    assert "lost its connection" in bot.stderr
    assert re.search(r"✗ t1 .* failed: Lost the connection to MCP server 'test'", bot.stdout)
    assert re.search(r"✓ t2 .* succeeded", bot.stdout)
    assert "Summary:\nParis only." in bot.stdout


async def test_ctrl_c_cancels_the_run_and_records_it(terminal: Terminal) -> None:
    terminal.answer(wire(tool_task("t1", "test.sleep", seconds=120), summary_task("t2", "t1")))
    bot = await terminal.start("run", "Wait for ever")

    await bot.wait_for_line(lambda line: bool(re.search(r"▶ t1 .* started", line)))
    bot.process.send_signal(signal.SIGINT)
    code = await bot.finish()

    assert code == 130  # as a shell reports a command stopped by Ctrl-C
    assert "Cancelling the run" in bot.stdout
    assert re.search(r"⊘ t1 .* cancelled", bot.stdout), bot.stdout
    assert f"run {bot.run_id} cancelled" in bot.stdout
    assert f"Run {bot.run_id} was cancelled." in bot.stdout
    assert await stored_status(terminal, bot.run_id) == (
        RunStatus.CANCELLED,
        {"t1": TaskStatus.CANCELLED, "t2": TaskStatus.CANCELLED},
    )
    code, listing = await terminal.run("runs")
    assert re.search(rf"{bot.run_id}\s+cancelled", listing.stdout), listing.stdout


async def test_run_and_runs_work_on_postgresql(terminal: Terminal) -> None:
    terminal.answer(wire(summary_task("t1"), title="Say hello"))
    async with fresh_database() as url:
        code, bot = await terminal.run("run", "Say hello", DATABASE_URL=url)
        assert code == 0, bot.stderr
        code, listing = await terminal.run("runs", DATABASE_URL=url)
        assert code == 0, listing.stderr
        assert re.search(rf"{bot.run_id}\s+succeeded", listing.stdout), listing.stdout
        code, details = await terminal.run("runs", bot.run_id[:6], DATABASE_URL=url)
        assert code == 0, details.stderr
        assert f"Run {bot.run_id} · succeeded" in details.stdout


# -- bad input ------------------------------------------------------------------------------------


async def test_an_empty_goal_is_refused(terminal: Terminal) -> None:
    code, bot = await terminal.run("run", "   ")

    assert code == 2
    assert "The goal is empty" in bot.stderr
    assert not terminal.fake.requests


async def test_a_malformed_mcp_file_stops_with_one_line_naming_it(terminal: Terminal) -> None:
    broken = terminal.home / "broken.json"
    broken.write_text('{"mcpServers": {"x": {"args": []}}}')

    code, bot = await terminal.run("run", "anything", DAGBOT_MCP_CONFIG=str(broken))

    assert code == 2
    assert bot.stderr.strip() == (
        f"MCP servers file {broken}: mcpServers.x.command: Field required."
    )
    assert not terminal.fake.requests


async def test_an_unknown_run_id_is_reported(terminal: Terminal) -> None:
    code, bot = await terminal.run("runs", "ffffffff")

    assert code == 1
    assert "No run matches 'ffffffff'" in bot.stderr


# -- a good command-line citizen ------------------------------------------------------------------


async def test_a_pipe_closed_early_ends_quietly_and_cancels_the_run(terminal: Terminal) -> None:
    terminal.answer(wire(tool_task("t1", "test.sleep", seconds=120), summary_task("t2", "t1")))
    script = (
        f'"{sys.executable}" -m bot run "Wait for ever" | head -1; '
        'echo "dagbot exited with ${PIPESTATUS[0]}" >&2'
    )
    shell = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=terminal.home,
        env={**terminal.env, "PYTHONUNBUFFERED": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await shell.communicate()

    [line] = out.decode().splitlines()
    match = RUN_ID.search(line)
    assert match, line
    stderr = err.decode()
    assert stderr.splitlines()[-1] == "dagbot exited with 141", stderr
    assert "Traceback" not in stderr
    assert "BrokenPipe" not in stderr
    status, tasks = await stored_status(terminal, match.group(1))
    assert status is RunStatus.CANCELLED
    assert TaskStatus.RUNNING not in tasks.values()


async def test_a_web_page_from_the_llm_endpoint_is_a_clear_error(terminal: Terminal) -> None:
    terminal.fake.respond_with(lambda request: Reply.web_page())

    code, bot = await terminal.run("run", "Anything")

    assert code == 1
    assert "did not answer with a chat completion" in bot.stdout
    assert "OPENAI_BASE_URL" in bot.stdout
    assert "AttributeError" not in bot.stdout + bot.stderr
    assert "Traceback" not in bot.stderr


async def test_a_missing_openai_key_stops_with_one_line(terminal: Terminal) -> None:
    env = {k: v for k, v in terminal.env.items() if not k.startswith("OPENAI_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bot", "run", "anything"),
        cwd=terminal.home,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()

    assert process.returncode == 2
    [line] = err.decode().splitlines()
    assert line.startswith("OPENAI_API_KEY is not set")
    assert not out
    assert not terminal.fake.requests


async def test_version_and_help_name_the_command(terminal: Terminal) -> None:
    code, bot = await terminal.run("--version")
    assert code == 0
    assert re.fullmatch(r"python -m bot \d+\.\d+\.\d+\S*", bot.stdout.strip()), bot.stdout

    # The console script installed with dagbot names itself in usage lines.
    script = Path(sys.executable).with_name("dagbot")
    for args in (["--help"], ["run", "--help"], ["runs", "--help"]):
        process = await asyncio.create_subprocess_exec(
            str(script), *args, env=terminal.env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        text = out.decode()
        assert process.returncode == 0
        assert text.startswith(f"usage: dagbot {args[0] if args[0] != '--help' else ''}".rstrip())
        if args[0] == "runs":
            assert "--limit LIMIT  how many recent runs to list" in text
            assert "a run id" in text
        if args[0] == "run":
            assert "130" in text  # the exit statuses are documented


async def test_runs_reads_the_database_without_loading_the_llm_mcp_or_slack(
    terminal: Terminal,
) -> None:
    probe = (
        "import sys\n"
        "from bot.__main__ import main\n"
        "code = main(['runs'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} "
        "& {'openai', 'mcp', 'slack_bolt', 'slack_sdk', 'aiohttp', 'httpx2'})\n"
        "print('loaded:', heavy, 'exit:', code)\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        probe,
        cwd=terminal.home,
        env=terminal.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()

    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1] == "loaded: [] exit: 0"


async def test_a_plan_taller_than_the_terminal_is_redrawn_in_place(terminal: Terminal) -> None:
    tasks = [tool_task(f"t{n}", "test.echo", text=f"echo {n}") for n in range(1, 21)]
    terminal.answer(wire(*tasks, summary_task("t21", *(t.id for t in tasks)), title="Twenty"))
    rows = 15
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 100, 0, 0))
    env = {k: v for k, v in terminal.env.items() if k not in ("LINES", "COLUMNS", "TERM")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bot", "run", "Echo twenty things"),
        cwd=terminal.home,
        env={**env, "TERM": "xterm-256color"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=follower,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(follower)

    def read_all() -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed its side
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    output, (_, err) = await asyncio.gather(asyncio.to_thread(read_all), process.communicate())
    os.close(leader)
    code = process.returncode

    assert code == 0, err.decode()
    text = output.decode()
    live, _, after = text.partition("\x1b[?25h")  # rich shows the cursor again when it stops
    # Each frame is erased line by line before the next is drawn: in place only when no frame
    # is taller than the window.
    frames = [f for f in re.split(r"\r(?:\x1b\[2K\x1b\[1A)*\x1b\[2K", live) if f.strip()]
    assert len(frames) > 3
    assert max(len(frame.rstrip("\n").split("\n")) for frame in frames) <= rows
    assert any("… " in frame and "tasks" in frame for frame in frames)  # folded, not cropped
    # Once done, the whole tree is printed once, below, for good.
    assert after.count("Plan: Twenty") == 1
    assert all(f"t{n} call test.echo" in after for n in range(1, 21))
    assert "Summary:" in after


async def test_another_round_is_shown_as_it_is_planned_and_listed_by_runs(
    terminal: Terminal,
) -> None:
    first = wire(tool_task("t1", "test.echo", text="Tokyo: 24C"), summary_task("t2", "t1"))
    second = wire(tool_task("t3", "test.echo", text="Paris: 14C"), summary_task("t4", "t1", "t3"))

    def respond(request: ChatRequest) -> Reply:
        if request.is_plan_request:
            return Reply.json(second if "<reason>" in request.last_user else first)
        if "Paris: 14C" in request.last_user:
            return Reply.answer(SUMMARY_TEXT)
        return Reply.replan("Paris is missing.")

    terminal.fake.respond_with(respond)
    code, bot = await terminal.run("run", "Weather in Tokyo and Paris")

    assert code == 0, bot.stdout + bot.stderr
    assert f"run {bot.run_id} needs another round: Paris is missing." in bot.stdout
    assert f"run {bot.run_id}: Round 2 planned (+t3)" in bot.stdout
    assert "Round 2: Paris is missing." in bot.stdout
    assert f"Summary:\n{SUMMARY_TEXT}" in bot.stdout
    assert re.search(r"✓ t1 .* succeeded", bot.stdout)
    assert len(re.findall(r"▶ t1 .* started", bot.stdout)) == 1
    code, details = await terminal.run("runs", bot.run_id)
    assert code == 0
    assert "Round 2: Paris is missing. (added t3)" in details.stdout
