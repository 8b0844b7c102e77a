"""How soon Slack shows what the engine did, against a fake Slack as strict as Slack's tiers.

    python -m benchmarks.slack_latency [--sequential 10] [--concurrent 20]

The real bot (bot.server.serve_http, default update interval, real SQLite file, the MCP test
server over stdio) takes mentions over HTTP with real signatures; the fake OpenAI server plays
the LLM; the fake Slack Web API enforces Slack's rate tiers per workspace on the wall clock
(Tier 2/3/4 per method, chat.postMessage about one a second per channel) and answers 429 past
them. Each run is the 4-task weather plan (two MCP tool calls, one LLM step, the summary).

Printed:
- plan visible: from the plan's commit (the RUN_PLANNED event) to the answer to the
  chat.postMessage that shows it, p50 and max over runs made one after another;
- summary's first text: from the moment the fake LLM starts answering the summary request to
  the first Slack call carrying summary text (chat.startStream/appendStream, or the posted
  summary), p50 and max;
- for `--concurrent` runs at once in one workspace (one channel each, their LLM steps released
  together so that all of them finish in the same instant): the 429s the fake served and the
  worst delay from a run's end (RUN_FINISHED committed) to Slack showing its final plan state,
  and to its summary being fully posted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.server import serve_http
from storage.records import Event, EventKind
from tests.e2e.slack_harness import (
    SUMMARY,
    WEATHER_PLAN,
    bot_env,
    is_summary_request,
    settings_from,
)
from tests.fakes.openai_server import ChatRequest, Reply, fake_openai_server
from tests.fakes.slack_api import FakeSlack, SlackCall, fake_slack_server
from tests.fakes.slack_requests import SlackSender

FINAL_CARD_STATUSES = frozenset({"complete", "error"})


@dataclass
class Timings:
    """Wall-clock moments per run (run id -> time.time())."""

    planned: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    first_token: dict[str, float] = field(default_factory=dict)  # by thread ts


def _payload(call: SlackCall) -> dict[str, Any]:
    metadata = call.body.get("metadata")
    payload = metadata.get("event_payload") if isinstance(metadata, dict) else None
    return payload if isinstance(payload, dict) else {}


def _event_type(call: SlackCall) -> str:
    metadata = call.body.get("metadata")
    return str(metadata.get("event_type", "")) if isinstance(metadata, dict) else ""


def _is_final_plan(call: SlackCall) -> bool:
    cards = [b for b in _walk(call.blocks) if b.get("type") == "task_card"]
    return bool(cards) and all(c.get("status") in FINAL_CARD_STATUSES for c in cards)


def _walk(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for block in blocks:
        found.append(block)
        nested = block.get("tasks")
        if isinstance(nested, list):
            found.extend(_walk([b for b in nested if isinstance(b, dict)]))
    return found


def _carries_summary_text(call: SlackCall) -> bool:
    if call.method == "chat.postMessage":
        return _event_type(call) == "dagbot_summary"
    if call.method in ("chat.startStream", "chat.appendStream", "chat.stopStream"):
        return bool(call.body.get("markdown_text") or call.body.get("chunks"))
    return False


@asynccontextmanager
async def bot_against_fakes(directory: Path, timings: Timings) -> AsyncIterator[Any]:
    step_gate = asyncio.Event()
    step_gate.set()

    async def respond(request: ChatRequest) -> Reply | str:
        if request.is_structured:
            return Reply.json(WEATHER_PLAN)
        if is_summary_request(request):
            # The summary's thread is in its transcript only indirectly; key by order instead.
            timings.first_token[f"summary-{len(timings.first_token)}"] = time.time()
            return SUMMARY
        await step_gate.wait()
        return "Tokyo is warmer and drier than Paris."

    async with fake_slack_server() as slack, fake_openai_server() as openai:
        openai.respond_with(respond)
        settings = settings_from(bot_env(slack, openai, directory))
        async with (
            serve_http(settings, host="127.0.0.1", port=0) as http,
            SlackSender(
                http.base_url, team_id=slack.team_id, bot_user_id=slack.bot_user_id
            ) as sender,
        ):
            subscription = http.bot.runtime.engine.bus.subscribe()

            async def watch() -> None:
                while (event := await subscription.get()) is not None:
                    _note(event, timings)

            watcher = asyncio.create_task(watch(), name="benchmark event watcher")
            try:
                yield slack, sender, http, step_gate
            finally:
                subscription.close()
                watcher.cancel()


def _note(event: Event, timings: Timings) -> None:
    if event.kind is EventKind.RUN_PLANNED:
        timings.planned[event.run_id] = event.at
    elif event.kind is EventKind.RUN_FINISHED:
        timings.finished[event.run_id] = event.at


async def _mention(slack: FakeSlack, sender: SlackSender, channel: str) -> str:
    text = f"<@{slack.bot_user_id}> compare the weather in Tokyo and Paris"
    message = slack.add_message(channel, text, user="U0ALICE")
    await sender.mention(text, user="U0ALICE", channel=channel, ts=message.ts)
    return message.ts


async def _runs_by_thread(slack: FakeSlack, http: Any, threads: dict[str, str]) -> dict[str, str]:
    """thread ts -> run id, for the given thread ts -> channel."""
    store = http.bot.runtime.engine.store
    found: dict[str, str] = {}
    for ts, channel in threads.items():
        run = await store.latest_run_in_thread(f"{slack.team_id}:{channel}:{ts}")
        if run is not None:
            found[ts] = run.id
    return found


def _plan_visible(slack: FakeSlack, run_id: str) -> float | None:
    for call in slack.calls_to("chat.postMessage", ok=True):
        if _event_type(call) == "dagbot_plan" and _payload(call).get("run_id") == run_id:
            return call.at
    return None


def _final_visible(slack: FakeSlack, run_id: str, after: float) -> float | None:
    plan_ts = {
        str(c.response.get("ts"))
        for c in slack.calls_to("chat.postMessage", ok=True)
        if _event_type(c) == "dagbot_plan" and _payload(c).get("run_id") == run_id
    }
    for call in slack.calls:
        if not call.ok or call.at < after or not _is_final_plan(call):
            continue
        if call.method == "chat.update" and call.body.get("ts") in plan_ts:
            return call.at
        if call.method == "chat.postMessage" and _payload(call).get("run_id") == run_id:
            return call.at
    return None


def _summary_calls(slack: FakeSlack, channel: str, thread_ts: str) -> list[SlackCall]:
    return [
        c
        for c in slack.calls
        if c.ok
        and c.body.get("channel") == channel
        and _carries_summary_text(c)
        and (c.body.get("thread_ts") in (thread_ts, None))
    ]


def _ms(seconds: list[float]) -> str:
    if not seconds:
        return "n/a"
    return f"p50 {statistics.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms"


async def sequential(directory: Path, count: int) -> tuple[list[float], list[float]]:
    timings = Timings()
    plan_delays: list[float] = []
    summary_delays: list[float] = []
    async with bot_against_fakes(directory, timings) as (slack, sender, http, _):
        for index in range(count):
            channel = f"C0SEQ{index:03d}"
            ts = await _mention(slack, sender, channel)
            await http.bot.wait_idle()
            [run_id] = (await _runs_by_thread(slack, http, {ts: channel})).values()
            visible = _plan_visible(slack, run_id)
            if visible is not None and run_id in timings.planned:
                plan_delays.append(visible - timings.planned[run_id])
            token = timings.first_token.get(f"summary-{index}")
            calls = _summary_calls(slack, channel, ts)
            if token is not None and calls:
                summary_delays.append(calls[0].at - token)
    return plan_delays, summary_delays


async def concurrent(directory: Path, count: int) -> dict[str, Any]:
    timings = Timings()
    async with bot_against_fakes(directory, timings) as (slack, sender, http, gate):
        gate.clear()
        threads: dict[str, str] = {}
        for index in range(count):
            channel = f"C0CON{index:03d}"
            threads[await _mention(slack, sender, channel)] = channel
        runs = await _wait_for_runs(slack, http, threads)
        await slack.wait_for(
            lambda s: all(_plan_visible(s, r) is not None for r in runs.values()), within=120
        )
        gate.set()
        await http.bot.wait_idle()
        final_delays: list[float] = []
        summary_delays: list[float] = []
        for ts, run_id in runs.items():
            end = timings.finished[run_id]
            shown = _final_visible(slack, run_id, end)
            if shown is not None:
                final_delays.append(shown - end)
            calls = _summary_calls(slack, threads[ts], ts)
            if calls:
                summary_delays.append(calls[-1].at - end)
        return {
            "runs": len(runs),
            "final_shown": len(final_delays),
            "worst_final": max(final_delays) if final_delays else float("nan"),
            "worst_summary": max(summary_delays) if summary_delays else float("nan"),
            "limited": sum(1 for c in slack.calls if c.status == 429),
            "calls": len(slack.calls),
        }


async def _wait_for_runs(slack: FakeSlack, http: Any, threads: dict[str, str]) -> dict[str, str]:
    while True:
        runs = await _runs_by_thread(slack, http, threads)
        if len(runs) == len(threads):
            return runs
        await asyncio.sleep(0.05)


async def main_async(sequential_runs: int, concurrent_runs: int) -> None:
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        plan_delays, summary_delays = await sequential(Path(first), sequential_runs)
        result = await concurrent(Path(second), concurrent_runs)
    print(f"runs one after another: {sequential_runs}")
    print(f"  plan visible after the plan is stored:         {_ms(plan_delays)}")
    print(f"  summary's first text after the LLM's first token: {_ms(summary_delays)}")
    print(f"runs at once in one workspace (one channel each): {result['runs']}")
    print(f"  429s served by the fake Slack:                 {result['limited']}")
    print(
        f"  final plan state shown for {result['final_shown']}/{result['runs']}; worst delay "
        f"after the run's end: {result['worst_final'] * 1000:.0f} ms"
    )
    print(
        f"  worst delay from a run's end to its summary fully in Slack: "
        f"{result['worst_summary'] * 1000:.0f} ms"
    )
    print(f"  Slack API calls: {result['calls']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main_async(args.sequential, args.concurrent))


if __name__ == "__main__":
    main()
