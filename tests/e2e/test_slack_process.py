"""`python -m bot` as a real process: start-up checks, a crash mid-run, a clean stop."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from storage.records import RunStatus
from storage.sqlite import SqliteStore
from tests.e2e.slack_harness import (
    ALICE,
    CHANNEL,
    STEP,
    SUMMARY,
    WEATHER_PLAN,
    bot_env,
    is_step_request,
    is_summary_request,
    subprocess_env,
)
from tests.fakes.openai_server import ChatRequest, FakeOpenAI, Reply, fake_openai_server
from tests.fakes.slack_api import FakeSlack, fake_slack_server
from tests.fakes.slack_requests import SlackSender

START_TIMEOUT = 60.0
LISTENING = re.compile(r"listening on (http://\S+?)/slack/events")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BotProcess:
    """`python -m bot` in a directory of its own, its stderr read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.base_url = ""
        self._ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._ended = False
        self._reader = asyncio.create_task(self._read(), name="bot process stderr")

    @classmethod
    async def launch(cls, env: Mapping[str, str], cwd: Path) -> BotProcess:
        """Start the process and return at once."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=cwd,
            env=subprocess_env(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def wait_for_log(self, pattern: str) -> str:
        """The first log line that matches `pattern` (fails if the process ends first)."""
        async with asyncio.timeout(START_TIMEOUT), self._changed:
            while True:
                for line in self.lines:
                    if re.search(pattern, line):
                        return line
                if self._ended:
                    raise AssertionError(f"no line matched {pattern!r}:\n{self.log}")
                await self._changed.wait()

    @classmethod
    async def start(cls, env: Mapping[str, str], cwd: Path) -> BotProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=cwd,
            env=subprocess_env(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        started = cls(process)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await started._ready.wait()
        except TimeoutError:
            await started.kill()
            raise AssertionError("the bot did not start:\n" + started.log) from None
        return started

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            async with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
            if listening := LISTENING.search(line):
                self.base_url = listening.group(1).replace("0.0.0.0", "127.0.0.1")
                self._ready.set()
        async with self._changed:
            self._ended = True
            self._changed.notify_all()
        self._ready.set()  # ended before listening: start() reports the log

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def kill(self) -> None:
        self.process.kill()
        await self.wait()

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await self.wait()

    async def wait(self) -> int:
        async with asyncio.timeout(START_TIMEOUT):
            code = await self.process.wait()
            await self._reader
        return code


async def _planned_and_held(slack: FakeSlack, openai: FakeOpenAI) -> str:
    [plan_post] = await slack.wait_for_call(
        "chat.postMessage", lambda c: "task_card" in c.block_types, within=START_TIMEOUT
    )
    async with asyncio.timeout(START_TIMEOUT):
        await openai.wait_for_requests(2)  # the plan, then the llm step that is held
    return str(plan_post.response["ts"])


async def test_a_run_resumes_after_a_crash_and_keeps_its_plan_message(tmp_path: Path) -> None:
    crashed = asyncio.Event()

    async def respond(request: ChatRequest) -> Reply | str:
        if request.is_plan_request:
            return Reply.json(WEATHER_PLAN)
        if is_summary_request(request):
            return Reply.answer(SUMMARY)
        if len([r for r in openai.requests if is_step_request(r)]) == 1:
            await crashed.wait()  # the first process never gets this answer
        return STEP

    async with fake_slack_server() as slack, fake_openai_server() as openai:
        openai.respond_with(respond)
        env = bot_env(slack, openai, tmp_path, port=free_port())

        first = await BotProcess.start(env, tmp_path)
        root = slack.add_message(CHANNEL, f"<@{slack.bot_user_id}> weather", user=ALICE)
        async with SlackSender(first.base_url, team_id=slack.team_id) as sender:
            delivery = await sender.mention(root.text, user=ALICE, channel=CHANNEL, ts=root.ts)
        assert delivery.status == 200
        plan_ts = await _planned_and_held(slack, openai)
        await first.kill()
        crashed.set()
        calls_before_restart = len(slack.calls)

        second = await BotProcess.start(env, tmp_path)
        await slack.wait_for(
            lambda s: any(
                SUMMARY in m.text and not m.streaming for m in s.replies(CHANNEL, root.ts)
            ),
            within=START_TIMEOUT,
        )
        assert await second.stop() == 0, second.log

    assert "resumed 1 unfinished run" in second.log
    after_restart = slack.calls[calls_before_restart:]
    updates = [c for c in after_restart if c.method == "chat.update"]
    assert updates
    assert {c.body["ts"] for c in updates} == {plan_ts}
    plan_posts = [c for c in slack.calls_to("chat.postMessage") if "task_card" in c.block_types]
    assert len(plan_posts) == 1
    assert slack.message(CHANNEL, plan_ts).text.count("[succeeded]") == 4
    assert len([m for m in slack.replies(CHANNEL, root.ts) if SUMMARY in m.text]) == 1
    for process in (first, second):
        assert slack.bot_token not in process.log

    store = await SqliteStore.open(str(tmp_path / "dagbot.sqlite3"))
    try:
        [run] = await store.recent_runs()
        assert run.status is RunStatus.SUCCEEDED
        assert (await store.delivery(run.id)).plan_message == plan_ts
        attempts = {t.id: t.attempts for t in await store.get_tasks(run.id)}
    finally:
        await store.close()
    assert attempts == {"t1": 1, "t2": 1, "t3": 2, "t4": 1}  # only the step in flight ran again


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("SLACK_BOT_TOKEN", "SLACK_BOT_TOKEN"),
        ("SLACK_SIGNING_SECRET", "SLACK_SIGNING_SECRET"),
        ("OPENAI_API_KEY", "OPENAI_API_KEY"),
    ],
)
def test_a_missing_setting_stops_start_up_with_one_line(
    tmp_path: Path, missing: str, named: str
) -> None:
    env = {
        "SLACK_BOT_TOKEN": "xoxb-not-used",
        "SLACK_SIGNING_SECRET": "not-used",
        "OPENAI_API_KEY": "sk-not-used-0000",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
    }
    del env[missing]
    finished = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=subprocess_env(env),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert finished.returncode == 2
    [line] = finished.stderr.strip().splitlines()
    assert named in line
    assert "xoxb-not-used" not in finished.stderr
    assert not (tmp_path / "unused.sqlite3").exists()


def test_start_up_problems_are_one_line_each(tmp_path: Path) -> None:
    database = tmp_path / "not-a-database.sqlite3"
    database.write_text("these are not the rows you are looking for")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        cases = {
            "database": {"DATABASE_URL": f"sqlite:///{database}"},
            "mcp": {"DAGBOT_MCP_CONFIG": str(tmp_path / "missing.json")},
            "port": {"PORT": str(busy_port)},
            "malformed": {"PORT": "eighty"},
        }
        answers = {
            name: subprocess.run(
                [sys.executable, "-m", "bot"],
                cwd=tmp_path,
                env=subprocess_env(
                    {
                        "SLACK_BOT_TOKEN": "xoxb-not-used",
                        "SLACK_SIGNING_SECRET": "not-used",
                        "OPENAI_API_KEY": "sk-not-used-0000",
                        # Slack cannot be reached: the local problems are found all the same.
                        "SLACK_API_URL": f"http://127.0.0.1:{free_port()}/api/",
                        "DATABASE_URL": f"sqlite:///{tmp_path / 'runs.sqlite3'}",
                        **case,
                    }
                ),
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT,
                check=False,
            )
            for name, case in cases.items()
        }
    expected = {
        "database": "not-a-database.sqlite3",
        "mcp": "missing.json",
        "port": f"PORT {busy_port}",
        "malformed": "PORT",
    }
    for name, answer in answers.items():
        assert answer.returncode == 2, (name, answer.stderr)
        last = answer.stderr.strip().splitlines()[-1]
        assert expected[name] in last, (name, answer.stderr)
        assert "Traceback" not in answer.stderr, name
        assert "xoxb-not-used" not in answer.stderr, name
    assert database.read_text() == "these are not the rows you are looking for"


# -- start-up checks against Slack ----------------------------------------------------------------


def _env(slack: FakeSlack, tmp_path: Path, **changes: str) -> dict[str, str]:
    env = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": "not-used",
        "SLACK_API_URL": slack.base_url,
        "OPENAI_API_KEY": "sk-not-used-0000",
        "PORT": str(free_port()),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'runs.sqlite3'}",
        **changes,
    }
    return {name: value for name, value in env.items() if value}


async def test_a_refused_bot_token_stops_start_up_with_one_line(tmp_path: Path) -> None:
    async with fake_slack_server() as slack:
        bot = await BotProcess.launch(
            _env(slack, tmp_path, SLACK_BOT_TOKEN="xoxb-revoked"), tmp_path
        )
        code = await bot.wait()

    assert code == 2
    assert bot.lines[-1] == (
        "SLACK_BOT_TOKEN was refused by Slack (invalid_auth); it must be the Bot User OAuth "
        "Token (xoxb-) of the installed app."
    )
    assert "Traceback" not in bot.log
    assert "xoxb-revoked" not in bot.log
    assert [c.method for c in slack.calls] == ["auth.test"]


async def test_an_unreachable_slack_does_not_stop_start_up(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/api/"
    env = _env(FakeSlack(), tmp_path, SLACK_API_URL=nowhere)
    bot = await BotProcess.start(env, tmp_path)
    try:
        # The real address: the default host is every interface.
        assert f"listening on http://0.0.0.0:{env['PORT']}/slack/events (every interface)" in (
            bot.log
        )
        line = await bot.wait_for_log("could not reach Slack")
        assert line.endswith(
            "could not reach Slack to check SLACK_BOT_TOKEN (ClientConnectorError, 4 tries); "
            "carrying on"
        ), line
        reader, writer = await asyncio.open_connection("127.0.0.1", int(env["PORT"]))
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        await writer.drain()
        assert b" 200 " in await reader.readline()
        writer.close()
        await writer.wait_closed()
    finally:
        code = await bot.stop()
    assert code == 0, bot.log
    assert "Traceback" not in bot.log


async def test_sigterm_stops_start_up_while_slack_is_unreachable(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/api/"
    env = _env(FakeSlack(), tmp_path, SLACK_API_URL=nowhere)
    bot = await BotProcess.start(env, tmp_path)  # listening; the token check still retrying

    code = await bot.stop()

    assert code == 0, bot.log
    assert "could not reach Slack" not in bot.log  # stopped before the check gave up
    assert "Traceback" not in bot.log
