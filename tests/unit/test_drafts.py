"""A summary's text reaches draft listeners while the model writes it; the output is the truth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from scheduler.dag.drafts import Draft, Drafts
from scheduler.dag.engine import Engine
from scheduler.dag.executors import TaskContext
from scheduler.dag.plan import TaskKind
from scheduler.planning.llm import LLM
from scheduler.planning.llm_steps import SummaryExecutor
from scheduler.planning.messages import Message
from storage.records import TaskStatus
from storage.sqlite import SqliteStore
from tests.fakes.openai_server import FakeOpenAI, Pacer, Reply, UsageCall, UsageLog
from tests.support.plans import plan, summary, tool


@pytest_asyncio.fixture
async def llm(fake_openai: FakeOpenAI) -> AsyncIterator[LLM]:
    client = LLM(model="m", api_key=fake_openai.api_key, base_url=fake_openai.base_url)
    yield client
    await client.aclose()


async def echo(context: TaskContext) -> str:
    return f"out {context.task.id}"


async def test_stream_text_hands_on_each_piece_and_returns_the_whole(
    fake_openai: FakeOpenAI, llm: LLM
) -> None:
    pacer = Pacer()
    fake_openai.script(Reply.paced(["Hel", "lo, ", "world"], pacer, completion_tokens=3))
    pieces: list[str] = []
    arrived = asyncio.Event()

    def on_text(text: str) -> None:
        pieces.append(text)
        arrived.set()

    usage = UsageLog()
    call = asyncio.create_task(
        llm.stream_text([Message(role="user", content="hi")], usage=usage, on_text=on_text)
    )
    pacer.release()
    await arrived.wait()
    assert pieces == ["Hel"]
    assert not call.done()
    pacer.release_all()
    completion = await call
    assert pieces == ["Hel", "lo, ", "world"]
    assert completion.content == "Hello, world"
    [request] = fake_openai.requests
    assert request.is_stream
    assert request.body["stream_options"] == {"include_usage": True}
    assert usage.calls == [UsageCall(model="m", prompt_tokens=11, completion_tokens=3)]


async def test_a_refusal_streamed_is_a_refusal(fake_openai: FakeOpenAI, llm: LLM) -> None:
    fake_openai.script(Reply.refused("no"))
    completion = await llm.stream_text(
        [Message(role="user", content="hi")], usage=UsageLog(), on_text=lambda _: None
    )
    assert (completion.content, completion.refusal) == (None, "no")


async def test_the_engine_publishes_summary_drafts_before_the_summary_succeeds(
    fake_openai: FakeOpenAI, llm: LLM, tmp_path: Path
) -> None:
    pacer = Pacer()
    fake_openai.script(Reply.paced_answer(["The ", "answer", "."], pacer))
    store = await SqliteStore.open(str(tmp_path / "drafts.sqlite3"))
    engine = Engine(store, {TaskKind.TOOL: echo, TaskKind.SUMMARY: SummaryExecutor(llm)})
    seen: list[Draft] = []
    first = asyncio.Event()

    def listener(draft: Draft) -> None:
        seen.append(draft)
        if draft.text:
            first.set()

    stop = engine.drafts.listen(listener)
    try:
        run = await engine.submit("goal", plan=plan(tool("t1"), summary("s", "t1")))
        pacer.release()
        await first.wait()
        view = await engine.view(run.id)
        assert {t.id: t.status for t in view.tasks}["s"] is TaskStatus.RUNNING
        assert [(d.task_id, d.attempt, d.text) for d in seen] == [("s", 1, ""), ("s", 1, "The ")]
        pacer.release_all()
        view = await engine.wait(run.id)
        assert "".join(d.text for d in seen) == "The answer."
        assert {t.id: t.output for t in view.tasks}["s"] == "The answer."
    finally:
        stop()
        await engine.close()
        await store.close()


def test_a_failing_listener_does_not_stop_the_others() -> None:
    drafts = Drafts()
    got: list[str] = []

    def broken(draft: Draft) -> None:
        raise RuntimeError("boom")

    drafts.listen(broken)
    stop = drafts.listen(lambda d: got.append(d.text))
    sink = drafts.sink("r", "s", 1)
    sink("")
    sink("a")
    stop()
    sink("b")
    assert got == ["", "a"]
