"""The real bot, served over HTTP, against a fake Slack, a fake OpenAI and a real MCP server.

Shared by the Slack end-to-end tests: `slack_bot_running(tmp_path)` starts the fake Slack Web API,
the fake OpenAI server, a response_url sink, and then the bot itself (`bot.server.serve_http`,
real SQLite file, the MCP test server over stdio), and yields a `SlackBot` handle that sends
signed requests and reads what happened. `bot_env` gives the same configuration as environment
variables, for tests that start `python -m bot` as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.server import HttpBot, serve_http
from bot.settings import Settings
from scheduler.dag.engine import Engine
from storage.records import RunRecord
from storage.store import Store
from tests.fakes.mcp_test_server import stdio_entry
from tests.fakes.openai_server import (
    ChatRequest,
    FakeOpenAI,
    Reply,
    Responder,
    fake_openai_server,
)
from tests.fakes.slack_api import FakeMessage, FakeSlack, fake_slack_server
from tests.fakes.slack_requests import (
    FAKE_SIGNING_SECRET,
    Delivery,
    ResponseUrls,
    SlackSender,
    response_urls,
)

ALICE = "U0ALICE"
BOB = "U0BOB"
CHANNEL = "C0GENERAL"
SUMMARY = "**Tokyo** is sunny at 24C, while Paris has rain at 14C."
STEP = "Tokyo is warmer and drier than Paris."
FAST_UPDATES = 0.05
"""Seconds between plan edits in-process: coalescing still happens, tests need not wait 1 s."""


def wire_task(
    task_id: str,
    kind: str,
    title: str,
    *,
    tool: str | None = None,
    args: Mapping[str, Any] | None = None,
    prompt: str | None = None,
    deps: Iterable[str] = (),
) -> dict[str, Any]:
    """One task in the planner's strict wire format (every field present, args as JSON text)."""
    return {
        "id": task_id,
        "kind": kind,
        "title": title,
        "tool": tool,
        "args_json": json.dumps(dict(args)) if args is not None else None,
        "prompt": prompt,
        "deps": list(deps),
    }


def wire_plan(title: str, *tasks: dict[str, Any]) -> dict[str, Any]:
    return {"title": title, "tasks": list(tasks)}


WEATHER_PLAN = wire_plan(
    "Weather in Tokyo and Paris",
    wire_task("t1", "tool", "Tokyo weather", tool="test.echo", args={"text": "Tokyo: sunny, 24C"}),
    wire_task("t2", "tool", "Paris weather", tool="test.echo", args={"text": "Paris: rain, 14C"}),
    wire_task("t3", "llm", "Compare", prompt="Compare {{t1}} with {{t2}}.", deps=["t1", "t2"]),
    wire_task("t4", "summary", "Report", deps=["t3"]),
)


def is_summary_request(request: ChatRequest) -> bool:
    return "final answer to the user's goal" in request.system


def is_step_request(request: ChatRequest) -> bool:
    return not request.is_structured


def answering(
    plan: Mapping[str, Any] = WEATHER_PLAN,
    *,
    step: str = STEP,
    summary: str = SUMMARY,
    step_gate: asyncio.Event | None = None,
) -> Responder:
    """Answer by request kind: the plan to the planner, `step` to llm steps, `summary` last.

    With `step_gate`, llm steps are answered only once it is set: a run held mid-way.
    """

    async def respond(request: ChatRequest) -> Reply | str:
        if request.is_plan_request:
            return Reply.json(plan)
        if request.is_decision:
            return Reply.answer(summary)
        if step_gate is not None:
            await step_gate.wait()
        return step

    return respond


def write_mcp_config(directory: Path) -> Path:
    """An `mcp.json` naming our MCP test server `test` (tools such as `test.echo`)."""
    path = directory / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"test": stdio_entry()}}))
    return path


def bot_env(
    slack: FakeSlack, openai: FakeOpenAI, directory: Path, *, port: int = 3000
) -> dict[str, str]:
    """The bot's configuration, as the environment variables of the README's table."""
    return {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": FAKE_SIGNING_SECRET,
        "SLACK_API_URL": slack.base_url,
        "PORT": str(port),
        "DAGBOT_HOST": "127.0.0.1",
        "OPENAI_API_KEY": openai.api_key,
        "OPENAI_BASE_URL": openai.base_url,
        "DAGBOT_MODEL": "fake-model",
        "DATABASE_URL": f"sqlite:///{directory / 'dagbot.sqlite3'}",
        "DAGBOT_MCP_CONFIG": str(write_mcp_config(directory)),
        "DAGBOT_TASK_TIMEOUT": "30",
        # A killed process's runs are taken over after this long (30 s by default).
        "DAGBOT_LEASE_SECONDS": "2",
    }


def subprocess_env(env: Mapping[str, str]) -> dict[str, str]:
    """A clean environment for `python -m bot`: the bot's variables and what Python needs."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, "PYTHONUNBUFFERED": "1", **env}


def settings_from(env: Mapping[str, str]) -> Settings:
    """Settings from exactly these variables (neither the process environment nor .env)."""
    return Settings.model_validate(dict(env))


@dataclass(frozen=True, kw_only=True)
class SlackBot:
    slack: FakeSlack
    openai: FakeOpenAI
    http: HttpBot
    sender: SlackSender
    urls: ResponseUrls

    @property
    def engine(self) -> Engine:
        return self.http.bot.runtime.engine

    @property
    def store(self) -> Store:
        return self.engine.store

    async def wait_idle(self) -> None:
        """Until every request, run and Slack write started so far is done."""
        await self.http.bot.wait_idle()

    def mention_text(self, goal: str) -> str:
        return f"<@{self.slack.bot_user_id}> {goal}"

    async def mention(
        self,
        goal: str,
        *,
        user: str = ALICE,
        channel: str = CHANNEL,
        thread_ts: str | None = None,
        **options: Any,
    ) -> Delivery:
        """A person's message mentioning the bot: stored in the fake Slack, then delivered."""
        text = self.mention_text(goal)
        message = self.slack.add_message(channel, text, user=user, thread_ts=thread_ts)
        return await self.sender.mention(
            text, user=user, channel=channel, ts=message.ts, thread_ts=thread_ts, **options
        )

    async def run_in_thread(self, thread_ts: str, channel: str = CHANNEL) -> RunRecord:
        run = await self.store.latest_run_in_thread(f"{self.slack.team_id}:{channel}:{thread_ts}")
        assert run is not None, f"no run in thread {thread_ts}"
        return run

    async def run(self, run_id: str) -> RunRecord:
        run = await self.store.get_run(run_id)
        assert run is not None
        return run

    async def plan_message(self, run: RunRecord) -> FakeMessage:
        delivery = await self.store.delivery(run.id)
        assert delivery.plan_message is not None, f"run {run.id} has no plan message"
        return self.slack.message(run.meta["channel"], delivery.plan_message)

    def messages_containing(self, channel: str, thread_ts: str, text: str) -> list[FakeMessage]:
        return [m for m in self.slack.replies(channel, thread_ts) if text in m.text]


@asynccontextmanager
async def slack_bot_running(
    directory: Path, *, responder: Responder | None = None, env: Mapping[str, str] | None = None
) -> AsyncIterator[SlackBot]:
    """The fakes, then the bot over HTTP on a free port; everything stopped on exit.

    `env`: settings added to (or replacing) those of `bot_env`.
    """
    async with (
        fake_slack_server() as slack,
        fake_openai_server() as openai,
        response_urls() as urls,
    ):
        openai.respond_with(responder or answering())
        slack.join(CHANNEL, ALICE, BOB)
        async with bot_serving(slack, openai, urls, directory, env=env) as bot:
            yield bot


@asynccontextmanager
async def bot_serving(
    slack: FakeSlack,
    openai: FakeOpenAI,
    urls: ResponseUrls,
    directory: Path,
    *,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[SlackBot]:
    """The bot over HTTP against fakes that are already running (and outlive it: a restart is
    two of these in a row on one directory)."""
    settings = settings_from({**bot_env(slack, openai, directory), **(env or {})})
    async with (
        serve_http(settings, host="127.0.0.1", port=0, update_interval=FAST_UPDATES) as http,
        SlackSender(http.base_url, team_id=slack.team_id, bot_user_id=slack.bot_user_id) as sender,
    ):
        yield SlackBot(slack=slack, openai=openai, http=http, sender=sender, urls=urls)


PYTHON = sys.executable
