"""The final step's decision: strict JSON (answer or another round), its answer streamed."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from scheduler.errors import AnotherRound, TaskError
from scheduler.planning.llm import LLM, Completion
from scheduler.planning.llm_steps import (
    CUT_OFF_MARKER,
    AnswerStream,
    SummaryExecutor,
    decision_from,
    decision_schema,
)
from storage.records import TaskStatus
from tests.fakes.openai_server import FakeOpenAI, Reply, UsageLog, strict_schema_error
from tests.unit.test_llm_steps import OK, context_for, state

ANSWER = 'Tokyo is "warmer" \\ drier:\n- 24C 😀'


def completion(content: str | None, finish_reason: str = "stop") -> Completion:
    return Completion(
        content=content,
        refusal=None,
        finish_reason=finish_reason,
        model="m",
        prompt_tokens=1,
        completion_tokens=1,
    )


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_the_answer_is_handed_on_as_it_streams_whatever_the_pieces(size: int) -> None:
    raw = json.dumps({"action": "answer", "answer": ANSWER, "reason": ""})
    got: list[str] = []
    stream = AnswerStream(got.append)
    for start in range(0, len(raw), size):
        stream(raw[start : start + size])
    assert "".join(got) == ANSWER
    assert all(got)  # nothing empty is handed on


def test_nothing_is_handed_on_for_another_round() -> None:
    got: list[str] = []
    stream = AnswerStream(got.append)
    for char in json.dumps({"action": "replan", "answer": "", "reason": "Paris is missing"}):
        stream(char)
    assert got == []


@pytest.mark.parametrize(
    ("content", "finish", "action", "text"),
    [
        ('{"action": "answer", "answer": "Hi", "reason": ""}', "stop", "answer", "Hi"),
        ('{"action": "replan", "answer": "", "reason": "More"}', "stop", "replan", ""),
        # A server without structured output: its text is the answer.
        ("Plain words.", "stop", "answer", "Plain words."),
        ('{"answer": "no action"}', "stop", "answer", '{"answer": "no action"}'),
        # Cut off at the output limit: what was written, marked as cut.
        ('{"action": "answer", "answer": "Tokyo is war', "length", "answer", "Tokyo is war"),
    ],
)
def test_decisions(content: str, finish: str, action: str, text: str) -> None:
    decision = decision_from(completion(content, finish))
    assert decision.action == action
    if finish == "length":
        assert decision.answer == text + CUT_OFF_MARKER
    elif action == "answer":
        assert decision.answer == text


def test_the_schemas_are_strict_and_at_the_bound_allow_only_an_answer() -> None:
    for may_replan in (True, False):
        schema = decision_schema(may_replan=may_replan)
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "dagbot_answer", "schema": schema, "strict": True},
        }
        assert strict_schema_error(response_format) is None
        assert list(schema["properties"]) == ["action", "answer", "reason"]
    assert decision_schema(may_replan=False)["properties"]["action"]["enum"] == ["answer"]


@pytest_asyncio.fixture
async def llm(fake_openai: FakeOpenAI) -> AsyncIterator[LLM]:
    client = LLM(model="m", api_key=fake_openai.api_key, base_url=fake_openai.base_url)
    yield client
    await client.aclose()


STATES = [
    state("t1", 0, OK, title="Tokyo weather", output="Tokyo: 24C"),
    state("s", 1, TaskStatus.RUNNING, kind="summary", deps=("t1",), title="Report"),
]


async def test_the_final_step_asks_for_another_round_in_its_one_call(
    fake_openai: FakeOpenAI, llm: LLM
) -> None:
    fake_openai.script(Reply.replan("Paris is missing"))
    context = dataclasses.replace(context_for("s", STATES, UsageLog()), replans_left=2)
    with pytest.raises(AnotherRound, match="Paris is missing"):
        await SummaryExecutor(llm)(context)
    [request] = fake_openai.requests
    assert request.is_decision
    assert request.is_stream
    assert request.body["response_format"]["json_schema"]["schema"]["properties"]["action"][
        "enum"
    ] == ["answer", "replan"]
    assert "replan" in request.last_user


async def test_at_the_bound_the_final_step_must_answer(fake_openai: FakeOpenAI, llm: LLM) -> None:
    fake_openai.script(Reply.answer("Tokyo is warm; Paris is unknown."))
    drafts: list[str] = []
    context = dataclasses.replace(
        context_for("s", STATES, UsageLog()), replans_left=0, emit_text=drafts.append
    )
    assert await SummaryExecutor(llm)(context) == "Tokyo is warm; Paris is unknown."
    [request] = fake_openai.requests
    assert request.body["response_format"]["json_schema"]["schema"]["properties"]["action"][
        "enum"
    ] == ["answer"]
    assert "no more steps can be run" in request.last_user
    assert "".join(drafts) == "Tokyo is warm; Paris is unknown."
    # The fake refuses, as OpenAI does, to answer outside the schema: "replan" is not allowed.
    fake_openai.script(Reply.replan("more"))
    with pytest.raises(TaskError, match="does not fit the strict schema"):
        await SummaryExecutor(llm)(context)
