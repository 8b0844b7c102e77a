"""The planner with a catalogue above its budget, against the fake OpenAI server."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from scheduler.dag.catalogue import ToolSpec
from scheduler.dag.executors import History, PlanRequest
from scheduler.dag.plan import Plan
from scheduler.planning.llm import LLM
from scheduler.planning.planner import LLMPlanner, to_wire
from scheduler.planning.shortlist import Budget
from tests.fakes.openai_server import ChatRequest, FakeOpenAI, Reply, UsageLog


def spec(name: str, description: str, **properties: Any) -> ToolSpec:
    return ToolSpec(
        name=name,
        description=description,
        input_schema={
            "type": "object",
            "properties": properties,
            "required": sorted(properties),
            "additionalProperties": False,
        },
    )


TEXT = {"type": "string"}
TOOLS = [
    spec("time.get_current_time", "Get the current time in a timezone", timezone=TEXT),
    spec("time.convert_time", "Convert a time between timezones", time=TEXT, target=TEXT),
    spec("git.git_log", "Shows the commit logs", repo_path=TEXT),
    spec("git.git_status", "Shows the working tree status", repo_path=TEXT),
    spec("git.git_commit", "Records changes to the repository", repo_path=TEXT, message=TEXT),
    spec("files.read_text_file", "Read a file as text", path=TEXT),
    spec("files.write_file", "Create or overwrite a file", path=TEXT, content=TEXT),
    spec("fetch.fetch", "Fetches a URL from the internet", url=TEXT),
]
CATALOGUE = {tool.name: tool for tool in TOOLS}
BUDGET = Budget(max_tools=3, max_tokens=100_000)


class StaticCatalogue:
    def __init__(self, tools: dict[str, ToolSpec]) -> None:
        self.tools = tools

    async def catalogue(self) -> dict[str, ToolSpec]:
        return dict(self.tools)


def request_for(goal: str, *earlier: str) -> PlanRequest:
    history = tuple(History(goal=g, summary="done") for g in earlier)
    return PlanRequest(run_id="run-1", goal=goal, history=history, record_usage=UsageLog())


def tool_plan(tool: str, args: dict[str, Any]) -> Plan:
    return Plan.model_validate(
        {
            "title": "p",
            "tasks": [
                {"id": "t1", "kind": "tool", "title": "call", "tool": tool, "args": args},
                {"id": "t2", "kind": "summary", "title": "answer", "deps": ["t1"]},
            ],
        }
    )


def shown_tools(request: ChatRequest) -> list[str]:
    block = request.messages[1]["content"].split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    return [json.loads(line)["name"] for line in block.splitlines()]


@pytest_asyncio.fixture
async def llm(fake_openai: FakeOpenAI) -> AsyncIterator[LLM]:
    client = LLM(
        model="m", api_key=fake_openai.api_key, base_url=fake_openai.base_url, max_retries=0
    )
    yield client
    await client.aclose()


@pytest.fixture
def planner(llm: LLM) -> LLMPlanner:
    return LLMPlanner(llm, StaticCatalogue(CATALOGUE), budget=BUDGET)


async def test_above_the_budget_the_planner_sees_a_shortlist_and_the_other_names(
    fake_openai: FakeOpenAI, planner: LLMPlanner
) -> None:
    good = tool_plan("git.git_log", {"repo_path": "."})
    fake_openai.script(Reply.json(to_wire(good)))

    assert await planner(request_for("Show the last commits and the status")) == good

    (sent,) = fake_openai.requests
    shown = shown_tools(sent)
    assert len(shown) == 3
    assert {"git.git_log", "git.git_status"} <= set(shown)
    others = sent.last_user.split("<other_tools>\n", 1)[1].split("\n</other_tools>", 1)[0]
    assert others.split(", ") == sorted(set(CATALOGUE) - set(shown))
    assert "The <tools> list is a shortlist: the 3 of 8 available tools" in sent.last_user
    enum = sent.body["response_format"]["json_schema"]["schema"]["properties"]["tasks"]["items"][
        "properties"
    ]["tool"]["enum"]
    assert enum == [*sorted(CATALOGUE), None]  # any tool can still be named


async def test_earlier_goals_of_the_thread_steer_the_shortlist(
    fake_openai: FakeOpenAI, planner: LLMPlanner
) -> None:
    answer = Reply.json(to_wire(tool_plan("git.git_log", {"repo_path": "."})))
    fake_openai.script(answer, answer)

    await planner(request_for("And the 20 before those?"))
    await planner(request_for("And the 20 before those?", "Show me the last 5 commits"))

    alone, followed = (shown_tools(request) for request in fake_openai.requests)
    assert alone[0] != "git.git_log"  # nothing matches: each server takes a turn
    assert "git.git_log" in followed


async def test_within_the_budget_the_whole_catalogue_is_shown_and_no_shortlist_is_mentioned(
    fake_openai: FakeOpenAI, llm: LLM
) -> None:
    planner = LLMPlanner(llm, StaticCatalogue(CATALOGUE), budget=Budget(max_tools=8))
    fake_openai.script(Reply.json(to_wire(tool_plan("git.git_log", {"repo_path": "."}))))

    await planner(request_for("Show the last commits"))

    (sent,) = fake_openai.requests
    assert shown_tools(sent) == sorted(CATALOGUE)
    assert "<other_tools>" not in sent.last_user
    assert "shortlist" not in sent.last_user


async def test_a_tool_named_from_outside_the_shortlist_is_accepted_when_its_arguments_fit(
    fake_openai: FakeOpenAI, planner: LLMPlanner
) -> None:
    good = tool_plan("fetch.fetch", {"url": "https://example.com"})
    fake_openai.script(Reply.json(to_wire(good)))

    plan = await planner(request_for("Show the last commits and the status"))

    assert plan == good
    assert "fetch.fetch" not in shown_tools(fake_openai.requests[0])
    assert len(fake_openai.requests) == 1


async def test_a_repair_adds_a_named_tool_from_outside_the_shortlist_in_full(
    fake_openai: FakeOpenAI, planner: LLMPlanner
) -> None:
    guessed = tool_plan("fetch.fetch", {"address": "https://example.com"})
    good = tool_plan("fetch.fetch", {"url": "https://example.com"})
    fake_openai.script(Reply.json(to_wire(guessed)), Reply.json(to_wire(good)))

    plan = await planner(request_for("Show the last commits and the status"))

    assert plan == good
    repair = fake_openai.requests[1].last_user
    assert "arguments for fetch.fetch do not fit its schema" in repair
    assert "The plan uses tools that were not in the shortlist" in repair
    added = repair.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert json.loads(added) == {
        "name": "fetch.fetch",
        "description": "Fetches a URL from the internet",
        "input_schema": CATALOGUE["fetch.fetch"].input_schema,
    }


async def test_a_tool_in_no_catalogue_is_still_rejected(
    fake_openai: FakeOpenAI, planner: LLMPlanner
) -> None:
    unknown = tool_plan("mail.send", {"to": "x"})
    good = tool_plan("git.git_log", {"repo_path": "."})
    # A server without strict structured output (OpenAI's enum would refuse the name).
    fake_openai.script(Reply.json(to_wire(unknown), off_schema=True), Reply.json(to_wire(good)))

    assert await planner(request_for("Show the last commits")) == good

    repair = fake_openai.requests[1].last_user
    assert "calls unknown tool 'mail.send'" in repair
    assert "not in the shortlist" not in repair


async def test_a_broken_input_schema_is_reported_once_and_planning_goes_on(
    fake_openai: FakeOpenAI, llm: LLM, caplog: pytest.LogCaptureFixture
) -> None:
    broken = ToolSpec(
        name="odd.tool",
        input_schema={"type": "object", "properties": {"pair": {"items": [{"type": "number"}]}}},
    )
    planner = LLMPlanner(llm, StaticCatalogue({**CATALOGUE, broken.name: broken}))
    odd = tool_plan("odd.tool", {"pair": ["not checked"]})
    fake_openai.script(Reply.json(to_wire(odd)), Reply.json(to_wire(odd)))

    with caplog.at_level(logging.WARNING, logger="scheduler.planning.planner"):
        assert await planner(request_for("Use the odd tool")) == odd
        assert await planner(request_for("Use the odd tool again")) == odd

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "The input schema of tool odd.tool is not a valid JSON Schema ([{'type': 'number'}] is "
        "not of type 'object', 'boolean' (at properties/pair/items, read as JSON Schema "
        "2020-12)); its arguments are not checked before it is called."
    ]
