"""Typed references end to end: the engine runs plans whose `{{tN}}` feed number and array
arguments of real MCP servers (our test server over stdio, and mcp-server-time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scheduler.dag.engine import Engine, EngineConfig
from scheduler.dag.executors import TaskContext
from scheduler.dag.plan import Plan, TaskKind
from scheduler.dag.retry import RetryPolicies, RetryPolicy
from scheduler.dag.validation import validate_plan
from scheduler.tools.mcp_config import McpConfig
from scheduler.tools.tool_step import ToolExecutor
from scheduler.tools.toolbox import Toolbox
from storage.records import RunStatus
from storage.sqlite import SqliteStore
from tests.fakes.mcp_test_server import stdio_entry, time_server_entry
from tests.support.plans import plan, summary, tool


async def collect(context: TaskContext) -> str:
    """The summary step: the outputs it depends on, one a line (no LLM needed here)."""
    return "\n".join(f"{d}={context.results[d].output}" for d in context.task.deps)


@pytest.fixture
async def toolbox() -> AsyncIterator[Toolbox]:
    box = await Toolbox.start(McpConfig.model_validate({"mcpServers": {"test": stdio_entry()}}))
    yield box
    await box.aclose()


@pytest.fixture
async def engine(toolbox: Toolbox, tmp_path: Path) -> AsyncIterator[Engine]:
    store = await SqliteStore.open(str(tmp_path / "typed.sqlite3"))
    engine = Engine(
        store,
        {TaskKind.TOOL: ToolExecutor(toolbox), TaskKind.SUMMARY: collect},
        config=EngineConfig(
            retry=RetryPolicies(
                default=RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)
            )
        ),
    )
    yield engine
    await engine.close()
    await store.close()


async def test_an_exact_reference_reaches_a_number_and_an_array_argument_as_json(
    engine: Engine, toolbox: Toolbox
) -> None:
    the_plan = plan(
        tool("t1", name="test.echo", text="21"),
        tool("t2", "t1", name="test.scale", value="{{t1}}"),
        tool("t3", "t1", name="test.echo", text="[1, 2, {{t1}}]"),
        tool("t4", "t3", name="test.stats", values="{{t3}}"),
        tool("t5", "t2", name="test.echo", text="scaled: {{t2}}"),
        summary("s", "t2", "t4", "t5"),
    )
    assert validate_plan(the_plan, catalogue=await toolbox.catalogue()) == []

    run = await engine.submit("typed references", plan=the_plan)
    view = await engine.wait(run.id)

    assert view.run.status is RunStatus.SUCCEEDED, [t.error for t in view.tasks]
    assert view.task("t2").output == "42.0"
    assert '"count": 3' in (view.task("t4").output or "")
    assert '"total": 24.0' in (view.task("t4").output or "")
    assert view.task("t5").output == "scaled: 42.0"  # inside longer text: stays text


async def test_an_output_that_is_not_a_number_fails_the_task_once_naming_the_argument(
    engine: Engine,
) -> None:
    the_plan = plan(
        tool("t1", name="test.echo", text="twenty-one"),
        tool("t2", "t1", name="test.scale", value="{{t1}}"),
        summary("s", "t2"),
    )
    run = await engine.submit("typed references", plan=the_plan)
    view = await engine.wait(run.id)

    failed = view.task("t2")
    assert failed.status.value == "failed"
    assert failed.attempts == 1
    assert failed.error == (
        "Argument 'value' of test.scale wants a number, but the output of t1 is not JSON: "
        "'twenty-one'."
    )


async def test_validation_knows_an_object_output_cannot_be_a_number() -> None:
    config = McpConfig.model_validate(
        {"mcpServers": {"test": stdio_entry(), "time": time_server_entry()}}
    )
    toolbox = await Toolbox.start(config)
    try:
        catalogue = await toolbox.catalogue()
    finally:
        await toolbox.aclose()
    assert catalogue["time.get_current_time"].output_schema is not None
    the_plan: Plan = plan(
        tool("t1", name="time.get_current_time", timezone="UTC"),
        tool("t2", "t1", name="test.scale", value="{{t1}}"),
        summary("s", "t2"),
    )

    assert validate_plan(the_plan, catalogue=catalogue) == [
        "Task 't2': argument 'value' of test.scale wants a number, but {{t1}} is the output of "
        "time.get_current_time, which gives a JSON object (its output schema). Add an llm task "
        "that extracts a number from t1's output and reference that task instead."
    ]
