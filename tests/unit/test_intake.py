from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from slack_sdk.web.async_client import AsyncWebClient

from bot.intake import Intake, TaskSet
from bot.payloads import (
    CANCEL_ACTION,
    RETRY_ACTION,
    Command,
    CommandKind,
    Press,
    PressKind,
    is_from_bot,
    parse_command,
    parse_command_text,
    parse_mention,
    parse_press,
    strip_bot_mentions,
    unescape,
)
from bot.replies import (
    cancel_refusal,
    escape,
    goal_problem,
    list_text,
    press_refusal,
    preview,
    requested_text,
)
from scheduler.dag.engine import Engine
from scheduler.dag.executors import PlanRequest, TaskContext
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from scheduler.dag.state import Run
from storage.records import EventKind, RunStatus
from storage.sqlite import SqliteStore
from tests.fakes.slack_api import FakeSlack, fake_slack_server
from tests.fakes.slack_requests import SlackSender

BOT = "UBOT"

# -- pure functions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<@UBOT> compare Tokyo and Paris", "compare Tokyo and Paris"),
        ("  <@UBOT>   spaced  ", "spaced"),
        ("<@UBOT|dagbot> with a label", "with a label"),
        ("ask <@UBOT> in the middle", "ask   in the middle"),
        ("<@UBOT> <@UBOT> twice", "twice"),
        ("<@UBOT> ping <@U123> about it", "ping <@U123> about it"),
        ("<@UBOTX> a longer id stays", "<@UBOTX> a longer id stays"),
        ("<@UBOT>", ""),
        ("", ""),
    ],
)
def test_strip_bot_mentions(text: str, expected: str) -> None:
    assert strip_bot_mentions(text, BOT) == expected


def test_strip_without_a_known_bot_id_only_trims() -> None:
    assert strip_bot_mentions("  <@UBOT> hi ", None) == "<@UBOT> hi"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"user": "U1", "text": "hi"}, False),
        ({"user": "U1", "bot_id": "B1"}, True),
        ({"subtype": "bot_message", "bot_id": "B1"}, True),
        ({"user": BOT, "text": "my own"}, True),
        ({"user": "U2", "bot_profile": {"id": "B2"}}, True),
    ],
)
def test_is_from_bot(event: dict[str, Any], expected: bool) -> None:
    assert is_from_bot(event, BOT) is expected


def _envelope(**event: Any) -> dict[str, Any]:
    return SlackSender("http://unused", team_id="T1", bot_user_id=BOT).envelope(
        {"type": "app_mention", "channel": "C1", "ts": "100.000001", **event}, event_id="Ev1"
    )


def test_parse_mention_top_level_threads_under_the_mention() -> None:
    mention = parse_mention(_envelope(user="U1", text="<@UBOT> do it"), BOT)
    assert mention is not None
    assert (mention.event_id, mention.team_id, mention.channel, mention.user) == (
        "Ev1",
        "T1",
        "C1",
        "U1",
    )
    assert mention.thread_ts == "100.000001"
    assert mention.thread_key == "T1:C1:100.000001"
    assert mention.goal == "do it"


def test_parse_mention_unescapes_what_slack_escaped() -> None:
    mention = parse_mention(
        _envelope(user="U1", text="<@UBOT> is 3 &lt; 4 &amp;&amp; 5 &gt; 2?"), BOT
    )
    assert mention is not None
    assert mention.goal == "is 3 < 4 && 5 > 2?"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a &amp;lt; b", "a &lt; b"), ("&lt;@U1&gt;", "<@U1>"), ("plain", "plain")],
)
def test_unescape(text: str, expected: str) -> None:
    assert unescape(text) == expected
    assert unescape(escape(expected)) == expected


def test_parse_mention_inside_a_thread_uses_the_thread_root() -> None:
    mention = parse_mention(_envelope(user="U1", text="<@UBOT> again", thread_ts="99.1"), BOT)
    assert mention is not None
    assert mention.thread_ts == "99.1"


@pytest.mark.parametrize(
    "event",
    [
        {"user": "U1", "text": "<@UBOT> hi", "bot_id": "B9"},
        {"text": "<@UBOT> hi", "subtype": "bot_message", "bot_id": "B9"},
        {"user": BOT, "text": "<@UBOT> talking to myself"},
        {"text": "<@UBOT> no author"},
    ],
    ids=["other bot", "bot_message subtype", "itself", "no user"],
)
def test_parse_mention_ignores_bots_and_authorless_events(event: dict[str, Any]) -> None:
    assert parse_mention(_envelope(**event), BOT) is None


def test_parse_mention_ignores_malformed_envelopes() -> None:
    body = _envelope(user="U1", text="hi")
    del body["event_id"]
    assert parse_mention(body, BOT) is None
    assert parse_mention({"event": "not an object"}, BOT) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Command(kind=CommandKind.HELP)),
        ("   ", Command(kind=CommandKind.HELP)),
        ("help", Command(kind=CommandKind.HELP)),
        ("HELP", Command(kind=CommandKind.HELP)),
        ("list", Command(kind=CommandKind.LIST)),
        (" cancel 3fa9 ", Command(kind=CommandKind.CANCEL, argument="3fa9")),
        ("cancel", Command(kind=CommandKind.CANCEL, argument="")),
        ("help me plan a trip", Command(kind=CommandKind.START, argument="help me plan a trip")),
        ("list the planets", Command(kind=CommandKind.START, argument="list the planets")),
        (
            "cancel my 3pm meeting",
            Command(kind=CommandKind.START, argument="cancel my 3pm meeting"),
        ),
        ("  weather in Paris\n", Command(kind=CommandKind.START, argument="weather in Paris")),
    ],
)
def test_parse_command_text(text: str, expected: Command) -> None:
    assert parse_command_text(text) == expected


def test_parse_command_reads_the_form_fields() -> None:
    parsed = parse_command(
        {
            "team_id": "T1",
            "channel_id": "C1",
            "user_id": "U1",
            "trigger_id": "tr1",
            "text": "list",
            "command": "/dagbot",
        }
    )
    assert parsed is not None
    assert (parsed.team_id, parsed.channel, parsed.user, parsed.trigger_id) == (
        "T1",
        "C1",
        "U1",
        "tr1",
    )
    assert parsed.command.kind is CommandKind.LIST
    assert parse_command({"text": "no ids"}) is None


def _action_body(action_id: str, value: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": "U1"},
        "channel": {"id": "C1"},
        "container": {"type": "message", "message_ts": "5.5", "channel_id": "C1"},
        "message": {"ts": "5.5", "thread_ts": "5.1"},
        "actions": [{"action_id": action_id, "value": value}],
        **extra,
    }


@pytest.mark.parametrize(
    ("action_id", "kind"), [(CANCEL_ACTION, PressKind.CANCEL), (RETRY_ACTION, PressKind.RETRY)]
)
def test_parse_press(action_id: str, kind: PressKind) -> None:
    assert parse_press(_action_body(action_id, "run1")) == Press(
        kind=kind, run_id="run1", user="U1", channel="C1", thread_ts="5.1"
    )


def test_parse_press_ignores_other_actions_and_empty_values() -> None:
    assert parse_press(_action_body("something_else", "run1")) is None
    assert parse_press(_action_body(CANCEL_ACTION, "")) is None
    assert parse_press({"type": "block_actions", "actions": []}) is None


@pytest.mark.parametrize(
    ("goal", "source", "expected"),
    [
        ("Tokyo and Paris", "mention", None),
        ("x" * 20, "mention", None),
        ("", "mention", "after the mention"),
        ("   ", "command", "/dagbot <goal>"),
        ("x" * 21, "mention", "21 characters long; the limit is 20"),
        ("x" * 2000, "command", "2,000 characters long; the limit is 20"),
    ],
)
def test_goal_problem(goal: str, source: str, expected: str | None) -> None:
    problem = goal_problem(goal, 20, source=source)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert expected in problem


def test_escape_and_preview() -> None:
    assert escape("a <!channel> & <@U1>") == "a &lt;!channel&gt; &amp; &lt;@U1&gt;"
    assert preview("short") == "short"
    assert preview("first line\nsecond") == "first line…"
    long = preview("y" * 200, limit=10)
    assert long.endswith("…")
    assert len(long) <= 10


def test_requested_text_names_the_requester_and_quotes_the_goal_safely() -> None:
    text = requested_text("U1", "ping <!channel>\nand then this")
    assert text.startswith("<@U1> asked dagbot:")
    assert ">ping &lt;!channel&gt;\n>and then this" in text
    assert "<!channel>" not in text
    assert len(requested_text("U1", "z" * 10_000)) < 3_200


def _record(run_id: str, **fields: Any) -> Run:
    values: dict[str, Any] = {
        "goal": "a goal",
        "status": RunStatus.RUNNING,
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_000.0,
        "requester": "U1",
    }
    values.update(fields)
    return Run(id=run_id, **values)


def test_list_text() -> None:
    assert "no runs yet" in list_text([], {})
    text = list_text(
        [
            _record("aaa", goal="weather <today>", status=RunStatus.SUCCEEDED),
            _record("bbb", goal="second", status=RunStatus.RUNNING),
        ],
        {"aaa": "https://x.slack.com/archives/C1/p1"},
    )
    first, second = text.splitlines()[1:]
    assert "`aaa` done" in first
    assert "<https://x.slack.com/archives/C1/p1|weather &lt;today&gt;>" in first
    assert "<!date^1700000000^" in first
    assert "`bbb` running" in second
    assert "<http" not in second


@pytest.mark.parametrize(
    ("argument", "run", "expected"),
    [
        ("", None, "Say which run"),
        ("zz", None, "No run matches `zz`"),
        ("aaa", _record("aaa", requester="U2"), "started by someone else"),
        ("aaa", _record("aaa", status=RunStatus.SUCCEEDED), "already finished (done)"),
        ("aaa", _record("aaa"), None),
    ],
)
def test_cancel_refusal(argument: str, run: Run | None, expected: str | None) -> None:
    refusal = cancel_refusal(argument, run, "U1")
    assert refusal is None if expected is None else expected in (refusal or "")


@pytest.mark.parametrize(
    ("kind", "run", "expected"),
    [
        (PressKind.CANCEL, None, "no longer exists"),
        (PressKind.CANCEL, _record("r", requester="U2"), "Only <@U2> can cancel"),
        (PressKind.RETRY, _record("r", requester="U2"), "Only <@U2> can retry"),
        (PressKind.CANCEL, _record("r", requester="U1"), None),
    ],
)
def test_press_refusal(kind: PressKind, run: Run | None, expected: str | None) -> None:
    press = Press(kind=kind, run_id="r", user="U1", channel="C1", thread_ts=None)
    refusal = press_refusal(press, run)
    assert refusal is None if expected is None else expected in (refusal or "")


# -- the task set ----------------------------------------------------------------------------------


async def test_task_set_keeps_tasks_until_done_and_cancels_the_rest_on_close() -> None:
    tasks = TaskSet("test")
    finished = asyncio.Event()
    gate = asyncio.Event()

    async def quick() -> None:
        finished.set()

    async def stuck() -> None:
        await gate.wait()

    tasks.spawn(quick(), "quick")
    tasks.spawn(stuck(), "stuck")
    assert len(tasks) == 2
    await finished.wait()
    await tasks.aclose()
    assert len(tasks) == 0

    late_ran = False

    async def late() -> None:
        nonlocal late_ran
        late_ran = True

    tasks.spawn(late(), "late")
    assert len(tasks) == 0
    assert not late_ran


async def test_task_set_logs_a_failure_without_losing_other_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = TaskSet("test")

    async def boom() -> None:
        raise RuntimeError("kaput")

    done: list[str] = []

    async def fine() -> None:
        done.append("fine")

    tasks.spawn(boom(), "boom")
    tasks.spawn(fine(), "fine")
    await tasks.wait_idle()
    assert done == ["fine"]
    assert any("boom failed" in r.getMessage() for r in caplog.records)


# -- the shell, against a real store and engine and the fake Slack Web API -------------------------

PLAN = Plan(
    title="Say hello",
    tasks=[PlanTask(id="t1", kind=TaskKind.SUMMARY, title="Report")],
)


class _Gate:
    """A summary executor that holds every run open until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, context: TaskContext) -> str:
        await self.release.wait()
        return f"done: {context.goal}"


class _Home:
    async def refresh_home(self, user_id: str) -> None:
        raise AssertionError("App Home is not part of these tests")


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(str(tmp_path / "runs.sqlite3"))
    yield opened
    await opened.close()


@pytest_asyncio.fixture
async def gate() -> _Gate:
    return _Gate()


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack_server() as server:
        server.join("C1", "U1", "U2")  # the people of these tests are in the channel
        yield server


@pytest_asyncio.fixture
async def intake(store: SqliteStore, slack: FakeSlack, gate: _Gate) -> AsyncIterator[Intake]:
    async def planner(request: PlanRequest) -> Plan:
        return PLAN

    engine = Engine(store, {TaskKind.SUMMARY: gate}, planner=planner)
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
    made = Intake(engine, client, _Home(), max_goal_chars=50)
    yield made
    gate.release.set()
    await made.aclose()
    await engine.close()


def _mention(text: str, *, event_id: str = "Ev1", thread_ts: str | None = None) -> dict[str, Any]:
    sender = SlackSender("http://unused", team_id="T1", bot_user_id=BOT)
    event = sender.mention_event(
        text, user="U1", channel="C1", ts="100.000001", thread_ts=thread_ts
    )
    return sender.envelope(event, event_id=event_id)


class _Responses:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def __call__(self, text: str = "", *, response_type: str | None = None) -> None:
        assert response_type == "ephemeral"
        self.texts.append(text)


async def test_a_mention_starts_one_run_and_a_redelivery_none(
    intake: Intake, store: SqliteStore
) -> None:
    await intake.mention(_mention("<@UBOT> say hello"), BOT)
    await intake.mention(_mention("<@UBOT> say hello"), BOT)
    [run] = await store.recent_runs()
    assert run.goal == "say hello"
    assert run.requester == "U1"
    assert run.thread_key == "T1:C1:100.000001"
    assert run.parent_run_id is None
    assert run.meta == {
        "team_id": "T1",
        "channel": "C1",
        "thread_ts": "100.000001",
        "user": "U1",
        "source": "mention",
    }


async def test_a_mention_in_a_thread_with_a_run_is_a_follow_up(
    intake: Intake, store: SqliteStore, gate: _Gate
) -> None:
    await intake.mention(_mention("<@UBOT> first"), BOT)
    gate.release.set()
    await intake.engine.run_until_idle()  # ended: a mention while it runs would steer it
    await intake.mention(_mention("<@UBOT> second", event_id="Ev2", thread_ts="100.000001"), BOT)
    second, first = await store.recent_runs()
    assert second.goal == "second"
    assert second.parent_run_id == first.id
    assert second.thread_key == first.thread_key


async def test_a_mention_while_the_final_step_runs_follows_up_once_the_run_ends(
    intake: Intake, store: SqliteStore, gate: _Gate
) -> None:
    with intake.engine.bus.subscribe() as events:
        await intake.mention(_mention("<@UBOT> first"), BOT)
        async for event in events:
            if event.kind is EventKind.TASK_STARTED:
                break  # the summary, the plan's only task, is being written
    [first] = await store.recent_runs()
    later = _mention("<@UBOT> and Berlin?", event_id="Ev2", thread_ts="100.000001")
    await intake.mention(later, BOT)
    await intake.mention(later, BOT)  # Slack's redelivery changes nothing
    # Recorded for the run's owner, not started: the answer being written is not revised.
    assert [r.id for r in await store.recent_runs()] == [first.id]
    [waiting] = await store.open_steering(first.id)
    assert waiting.message == "and Berlin?"
    gate.release.set()
    await intake.engine.run_until_idle()
    follow_up, ended = await store.recent_runs()
    assert ended.id == first.id
    assert ended.status is RunStatus.SUCCEEDED
    assert follow_up.goal == "and Berlin?"
    assert follow_up.parent_run_id == first.id
    assert follow_up.meta["thread_ts"] == "100.000001"
    assert await store.open_steering(first.id) == []


async def test_an_empty_mention_is_answered_in_its_thread(
    intake: Intake, store: SqliteStore, slack: FakeSlack
) -> None:
    await intake.mention(_mention("<@UBOT>   "), BOT)
    await intake.wait_idle()
    [answer] = slack.calls_to("chat.postMessage")
    assert answer.body["thread_ts"] == "100.000001"
    assert "after the mention" in answer.body["text"]
    assert await store.recent_runs() == []


async def test_a_command_goal_is_posted_then_run_in_its_thread(
    intake: Intake, store: SqliteStore, slack: FakeSlack
) -> None:
    responses = _Responses()
    payload = {
        "team_id": "T1",
        "channel_id": "C1",
        "user_id": "U1",
        "trigger_id": "tr1",
        "text": "say hello",
    }
    assert await intake.command(payload, responses) is None
    assert await intake.command(payload, responses) is None  # the same trigger, redelivered
    await intake.wait_idle()
    [posted] = slack.calls_to("chat.postMessage")
    assert posted.body["channel"] == "C1"
    assert "<@U1> asked dagbot" in posted.body["text"]
    [run] = await store.recent_runs()
    root = posted.response["ts"]
    assert run.thread_key == f"T1:C1:{root}"
    assert run.meta["thread_ts"] == root
    assert run.meta["source"] == "command"
    assert responses.texts == []


async def test_command_help_and_problems_answer_at_once(intake: Intake) -> None:
    base = {"team_id": "T1", "channel_id": "C1", "user_id": "U1"}
    help_text = await intake.command({**base, "trigger_id": "a", "text": "help"}, _Responses())
    assert help_text is not None
    assert "/dagbot list" in help_text
    assert "50 characters" in help_text
    too_long = await intake.command({**base, "trigger_id": "b", "text": "w" * 51}, _Responses())
    assert too_long is not None
    assert "the limit is 50" in too_long


async def test_command_goal_in_a_channel_the_bot_cannot_post_in(
    intake: Intake, store: SqliteStore, slack: FakeSlack
) -> None:
    slack.fail("chat.postMessage", "not_in_channel")
    responses = _Responses()
    payload = {
        "team_id": "T1",
        "channel_id": "C9",
        "user_id": "U1",
        "trigger_id": "t",
        "text": "go",
    }
    await intake.command(payload, responses)
    await intake.wait_idle()
    [answer] = responses.texts
    assert "not_in_channel" in answer
    assert "nothing was started" in answer
    assert await store.recent_runs() == []


async def test_command_list_and_cancel(
    intake: Intake, store: SqliteStore, slack: FakeSlack
) -> None:
    root = slack.add_message("C1", "hi", user="U1")
    body = SlackSender("http://unused", team_id="T1", bot_user_id=BOT).envelope(
        {"type": "app_mention", "user": "U1", "channel": "C1", "ts": root.ts, "text": "<@UBOT> go"},
        event_id="Ev1",
    )
    await intake.mention(body, BOT)
    [run] = await store.recent_runs()
    base = {"team_id": "T1", "channel_id": "C1"}

    listed = _Responses()
    await intake.command({**base, "user_id": "U1", "trigger_id": "l", "text": "list"}, listed)
    stranger = _Responses()
    await intake.command(
        {**base, "user_id": "U2", "trigger_id": "s", "text": f"cancel {run.id[:4]}"}, stranger
    )
    await intake.wait_idle()
    [listing] = listed.texts
    assert f"`{run.id}` " in listing
    assert f"archives/C1/p{root.ts.replace('.', '')}" in listing
    assert "someone else" in stranger.texts[0]

    owner = _Responses()
    await intake.command(
        {**base, "user_id": "U1", "trigger_id": "o", "text": f"cancel {run.id[:4]}"}, owner
    )
    await intake.wait_idle()
    assert owner.texts[0].startswith(f"Cancelled run `{run.id}`")
    cancelled = await store.get_run(run.id)
    assert cancelled is not None
    assert cancelled.status is RunStatus.CANCELLED


async def test_presses_by_a_stranger_are_refused_and_by_the_requester_honoured(
    intake: Intake, store: SqliteStore, slack: FakeSlack
) -> None:
    await intake.mention(_mention("<@UBOT> go"), BOT)
    [run] = await store.recent_runs()

    stranger = _action_body(CANCEL_ACTION, run.id)
    stranger["user"] = {"id": "U2"}
    intake.press(stranger)
    await intake.wait_idle()
    [refusal] = slack.calls_to("chat.postEphemeral")
    assert refusal.body["user"] == "U2"
    assert refusal.body["thread_ts"] == "100.000001"
    assert "Only <@U1> can cancel" in refusal.body["text"]
    assert intake.engine.is_active(run.id)

    intake.press(_action_body(CANCEL_ACTION, run.id))
    await intake.wait_idle()
    cancelled = await store.get_run(run.id)
    assert cancelled is not None
    assert cancelled.status is RunStatus.CANCELLED
    assert len(slack.calls_to("chat.postEphemeral")) == 1

    intake.press(_action_body(CANCEL_ACTION, run.id))
    await intake.wait_idle()
    again = slack.calls_to("chat.postEphemeral")[-1]
    assert "nothing to cancel" in again.body["text"]
