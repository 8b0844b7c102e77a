"""`python -m bot` killed while the summary streams: the next process closes that stream."""

from __future__ import annotations

import sys
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
    is_summary_request,
)
from tests.e2e.test_slack_process import START_TIMEOUT, BotProcess, free_port
from tests.fakes.openai_server import ChatRequest, Pacer, Reply, fake_openai_server
from tests.fakes.slack_api import fake_slack_server
from tests.fakes.slack_requests import SlackSender

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

FIRST_WORDS = "**Tokyo** is "


async def test_a_stream_left_open_by_a_crash_is_closed_with_the_final_text(
    tmp_path: Path,
) -> None:
    first_attempt = Pacer()  # lets out the first words, then holds the rest for ever

    async def respond(request: ChatRequest) -> Reply | str:
        if request.is_plan_request:
            return Reply.json(WEATHER_PLAN)
        if is_summary_request(request):
            if first_attempt.released == 0:
                first_attempt.release()
                return Reply.paced_answer([FIRST_WORDS, SUMMARY[len(FIRST_WORDS) :]], first_attempt)
            return Reply.answer(SUMMARY)
        return STEP

    async with fake_slack_server() as slack, fake_openai_server() as openai:
        openai.respond_with(respond)
        env = bot_env(slack, openai, tmp_path, port=free_port())
        first = await BotProcess.start(env, tmp_path)
        root = slack.add_message(CHANNEL, f"<@{slack.bot_user_id}> weather", user=ALICE)
        async with SlackSender(first.base_url, team_id=slack.team_id) as sender:
            delivery = await sender.mention(root.text, user=ALICE, channel=CHANNEL, ts=root.ts)
        assert delivery.status == 200
        [start] = await slack.wait_for_call("chat.startStream", ok=True, within=START_TIMEOUT)
        stream_ts = str(start.response["ts"])
        assert start.body["markdown_text"] == FIRST_WORDS.strip()
        await first.kill()
        assert slack.message(CHANNEL, stream_ts).streaming, "left open by the crash"

        second = await BotProcess.start(env, tmp_path)
        await slack.wait_for(
            lambda s: (
                not s.message(CHANNEL, stream_ts).streaming
                and SUMMARY in s.message(CHANNEL, stream_ts).rendered
            ),
            within=START_TIMEOUT,
        )
        assert await second.stop() == 0, second.log

    summaries = [
        m
        for m in slack.replies(CHANNEL, root.ts)
        if (m.metadata or {}).get("event_type") == "dagbot_summary"
    ]
    assert [m.ts for m in summaries] == [stream_ts], "closed in place, never posted again"
    assert SUMMARY in slack.message(CHANNEL, stream_ts).rendered
    assert not slack.streaming_messages()
    assert [c for c in slack.calls if c.error == "streaming_state_conflict"] == []
    assert len(slack.calls_to("chat.startStream")) == 1, "the resumed summary is not re-streamed"
    store = await SqliteStore.open(str(tmp_path / "dagbot.sqlite3"))
    try:
        [run] = await store.recent_runs()
        assert run.status is RunStatus.SUCCEEDED
        record = run.meta["summary_stream"]
        assert (record["ts"], record["finished"]) == ([stream_ts], True)
    finally:
        await store.close()
