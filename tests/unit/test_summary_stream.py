"""The summary streamed into Slack while it is written, against the strict fake Slack."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bot.summary_stream import STREAM_KEY, cut_point, fitting, streamable
from scheduler.dag.executors import Executor, TaskContext
from scheduler.dag.plan import TaskKind
from tests.fakes.slack_api import FakeMessage, FakeSlack
from tests.unit.test_publisher import (
    ALICE,
    CHANNEL,
    db_path,
    event_type,
    executors,
    make_plan,
    running,
    slack,
    summaries,
)

__all__ = ["db_path", "slack"]  # fixtures shared with the publisher's tests

Script = Callable[[TaskContext], Any]


def streaming_executors(
    slack: FakeSlack, pieces: list[str], **hooks: Any
) -> dict[TaskKind, Executor]:
    """A summary that writes `pieces` one by one, each after Slack has shown the one before.

    `hooks[str(i)]` (an async function) runs before piece i is written.
    """
    base = executors()

    async def summarise(context: TaskContext) -> str:
        for index, piece in enumerate(pieces):
            hook = hooks.get(str(index))
            if hook is not None:
                await hook()
            context.emit_text(piece)
            if index == 0:
                await slack.wait_for_call("chat.startStream", ok=True)
        return "".join(pieces).strip()

    return {**base, TaskKind.SUMMARY: summarise}


def updates_of_streaming_messages(slack: FakeSlack) -> list[str]:
    return [
        str(c.error) for c in slack.calls_to("chat.update") if c.error == "streaming_state_conflict"
    ]


def shown(message: FakeMessage) -> str:
    for block in message.blocks:
        if block.get("type") == "markdown":
            return str(block["text"])
    return message.text


def feedback_of(message: FakeMessage) -> list[dict[str, Any]]:
    return [b for b in message.blocks if b.get("type") == "context_actions"]


async def test_the_summary_streams_while_it_is_written(slack: FakeSlack, db_path: str) -> None:
    async def appended() -> None:
        await slack.wait_for_call("chat.appendStream", ok=True)

    pieces = ["  The ", "answer ", "is <", "@U1>.", "\n\nMore."]
    hooks = {"2": appended}
    async with running(db_path, slack, streaming_executors(slack, pieces, **hooks)) as stack:
        thread = await stack.submit(slack, make_plan(1))
        await stack.settle(thread.run_id)
        [start] = slack.calls_to("chat.startStream")
        assert start.body["markdown_text"] == "The", "the first text goes with the start"
        assert (start.body["recipient_user_id"], start.body["recipient_team_id"]) == (
            ALICE,
            slack.team_id,
        )
        assert start.body["thread_ts"] == thread.ts
        appends = [c.body["markdown_text"] for c in slack.calls_to("chat.appendStream")]
        assert appends[0] == " answer", "trailing space waits for what follows"
        assert all("<" not in a or ">" in a for a in appends), "no half-written mention"
        [stop] = slack.calls_to("chat.stopStream")
        assert stop.body["metadata"]["event_payload"]["run_id"] == thread.run_id
        [summary] = summaries(slack, thread)
        assert summary.ts == start.response["ts"]
        assert not summary.streaming
        assert summary.text == "The answer is &lt;@U1&gt;.\n\nMore.", "model mentions defused"
        [feedback] = feedback_of(summary)
        assert feedback["elements"][0]["type"] == "feedback_buttons"
        assert (
            slack.calls_to("chat.postMessage", ok=True)[-1]
            .body.get("metadata", {})
            .get("event_type")
            != "dagbot_summary"
        ), "never posted a second time"
        assert slack.calls_to("chat.update", ok=False) == []
        meta = await stack.meta(thread.run_id)
        assert (meta[STREAM_KEY]["ts"], meta[STREAM_KEY]["finished"]) == ([summary.ts], True)
        delivery = await stack.store.delivery(thread.run_id)
        assert delivery.posts[f"summary@{meta[STREAM_KEY]['seq']}#0"] == summary.ts
        assert delivery.summary_message == summary.ts


async def test_an_expired_stream_is_finished_in_place(slack: FakeSlack, db_path: str) -> None:
    async def expire() -> None:
        [stream] = slack.streaming_messages()
        slack.expire_stream(CHANNEL, stream.ts)

    pieces = ["First part.", " Second part.", " Third part."]
    async with running(
        db_path, slack, streaming_executors(slack, pieces, **{"1": expire})
    ) as stack:
        thread = await stack.submit(slack, make_plan(1))
        await stack.settle(thread.run_id)
        [summary] = summaries(slack, thread)
        assert shown(summary) == "First part. Second part. Third part."
        assert feedback_of(summary)
        assert not slack.streaming_messages()
        assert updates_of_streaming_messages(slack) == []
        assert (
            len([m for m in slack.replies(CHANNEL, thread.ts) if m.user == slack.bot_user_id]) == 2
        )
        assert [c.ok for c in slack.calls_to("chat.update") if c.body["ts"] == summary.ts] == [True]


async def test_a_failed_stop_finishes_the_message_without_a_second_copy(
    slack: FakeSlack, db_path: str
) -> None:
    slack.fail("chat.stopStream", "invalid_blocks", times=1)
    pieces = ["Only ", "part."]
    async with running(db_path, slack, streaming_executors(slack, pieces)) as stack:
        thread = await stack.submit(slack, make_plan(1))
        await stack.settle(thread.run_id)
        [summary] = summaries(slack, thread)
        assert shown(summary) == "Only part."
        assert not summary.streaming
        assert updates_of_streaming_messages(slack) == []
        posted = [
            c for c in slack.calls_to("chat.postMessage") if event_type(c) == "dagbot_summary"
        ]
        assert posted == []


async def test_a_failed_append_is_finished_by_the_stop(slack: FakeSlack, db_path: str) -> None:
    slack.fail("chat.appendStream", "invalid_chunks")

    async def failed_once() -> None:
        await slack.wait_for_call("chat.appendStream", ok=False)

    pieces = ["One. ", "Two. ", "Three."]
    executor = streaming_executors(slack, pieces, **{"2": failed_once})
    async with running(db_path, slack, executor) as stack:
        thread = await stack.submit(slack, make_plan(1))
        await stack.settle(thread.run_id)
        [summary] = summaries(slack, thread)
        assert summary.text == "One. Two. Three."
        [stop] = slack.calls_to("chat.stopStream", ok=True)
        assert stop.body["markdown_text"] == " Two. Three."
        assert updates_of_streaming_messages(slack) == []


async def test_streaming_refused_posts_the_summary_whole(slack: FakeSlack, db_path: str) -> None:
    slack.fail("chat.startStream", "not_allowed_token_type")
    pieces = ["# Report", "\n\nDone."]

    async def refused() -> None:
        await slack.wait_for_call("chat.startStream", ok=False)

    base = executors()

    async def summarise(context: TaskContext) -> str:
        context.emit_text(pieces[0])
        await refused()
        context.emit_text(pieces[1])
        return "".join(pieces)

    async with running(db_path, slack, {**base, TaskKind.SUMMARY: summarise}) as stack:
        first = await stack.submit(slack, make_plan(1))
        await stack.settle(first.run_id)
        [summary] = summaries(slack, first)
        assert summary.block_types == ["markdown", "context_actions"]
        assert shown(summary) == "# Report\n\nDone."
        second = await stack.submit(slack, make_plan(1), team_id=None)
        await stack.settle(second.run_id)
        assert len(summaries(slack, second)) == 1
        assert len(slack.calls_to("chat.startStream")) == 1, "streaming not retried in that team"


@pytest.mark.parametrize("alphabet", ["sentence {i} ", "文章{i}を書く。"])
async def test_a_long_summary_rolls_over_into_clean_messages(
    slack: FakeSlack, db_path: str, alphabet: str
) -> None:
    paragraphs = [f"## Part {i}\n\n" + alphabet.format(i=i) * 120 for i in range(30)]
    text = "\n\n".join(paragraphs).strip()
    pieces = [p + "\n\n" for p in paragraphs]
    async with running(db_path, slack, streaming_executors(slack, pieces)) as stack:
        thread = await stack.submit(slack, make_plan(1))
        await stack.settle(thread.run_id)
        parts = summaries(slack, thread)
        assert len(parts) >= 3
        assert "\n\n".join(shown(p) for p in parts) == text
        for part in parts:
            assert not part.streaming
            assert len(part.text.encode()) <= 11_000
            assert shown(part).startswith("## Part ")
        assert [bool(feedback_of(p)) for p in parts] == [False] * (len(parts) - 1) + [True]
        assert slack.calls_to("chat.stopStream", ok=False) == []
        bot_replies = [m for m in slack.replies(CHANNEL, thread.ts) if m.user == slack.bot_user_id]
        assert len(bot_replies) == len(parts) + 1, "the plan and each part, once"


async def test_slack_msg_too_long_rolls_the_stream_over(slack: FakeSlack, db_path: str) -> None:
    slack.max_streamed_text = 60  # Slack's cap arrives before ours
    pieces = ["alpha " * 6, "beta " * 6, "gamma " * 6, "delta " * 6]

    def taken(count: int) -> Callable[[], Any]:
        async def wait() -> None:
            methods = ("chat.startStream", "chat.appendStream", "chat.stopStream")
            await slack.wait_for(lambda s: sum(len(s.calls_to(m)) for m in methods) >= count)

        return wait

    hooks = {"2": taken(2), "3": taken(4)}
    async with running(db_path, slack, streaming_executors(slack, pieces, **hooks)) as stack:
        thread = await stack.submit(slack, make_plan(1))
        await stack.settle(thread.run_id)
        starts = slack.calls_to("chat.startStream", ok=True)
        assert len(starts) >= 2, slack.describe()
        # The final summary is one part: the first message holds it, the overflow goes.
        [summary] = summaries(slack, thread)
        assert shown(summary) == "".join(pieces).strip()
        assert not slack.streaming_messages()
        assert [c.ok for c in slack.calls_to("chat.delete")] == [True] * (len(starts) - 1)


async def test_a_cancelled_run_leaves_no_stream_open(slack: FakeSlack, db_path: str) -> None:
    release = asyncio.Event()
    base = executors()

    async def summarise(context: TaskContext) -> str:
        context.emit_text("Halfway")
        await release.wait()
        return "never"

    async with running(db_path, slack, {**base, TaskKind.SUMMARY: summarise}) as stack:
        thread = await stack.submit(slack, make_plan(1))
        await slack.wait_for_call("chat.startStream", ok=True)
        await stack.engine.cancel(thread.run_id)
        await stack.settle(thread.run_id)
        assert not slack.streaming_messages()
        [summary] = summaries(slack, thread)
        assert "Cancel" in shown(summary)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Hello ", "Hello"),
        ("Hi <@U1", "Hi"),
        ("Hi <@U1> and", "Hi <@U1> and"),
        ("a < b", "a"),
        ("\n\n", ""),
    ],
)
def test_streamable_holds_back_what_may_still_change(raw: str, expected: str) -> None:
    assert streamable(raw) == expected


@pytest.mark.parametrize(
    ("text", "room", "expected"),
    [
        ("short", 10, (5, 5)),
        ("para one\n\npara two", 12, (8, 10)),
        ("line one\nline two", 12, (8, 9)),
        ("word word word", 11, (9, 10)),
        ("abcdefghij", 4, (4, 4)),
    ],
)
def test_cut_point(text: str, room: int, expected: tuple[int, int]) -> None:
    assert cut_point(text, room) == expected


def test_fitting_counts_bytes() -> None:
    assert fitting("abc", 2) == 2
    assert fitting("文章", 4) == 1
    assert fitting("文章", -1) == 0
