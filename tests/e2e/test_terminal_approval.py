"""`python -m bot run`: a task whose tool needs approval is a y/n question on the terminal."""

from __future__ import annotations

import asyncio
import sys

import pytest

from storage.records import RunStatus, TaskStatus
from storage.sqlite import open_store
from tests.e2e.test_terminal import (
    BotProcess,
    Terminal,
    summary_task,
    tool_task,
    wire,
    write_mcp_config,
)
from tests.e2e.test_terminal import terminal as terminal
from tests.fakes.mcp_test_server import stdio_entry

PLAN = wire(
    tool_task("t1", "test.echo", text="rm -rf /tmp/report"),
    tool_task("t2", "test.scale", value=2),
    summary_task("t3", "t1", "t2"),
    title="Clean up",
)


async def start(terminal: Terminal, *, stdin: int) -> BotProcess:
    config = write_mcp_config(
        terminal.home / "mcp-approval.json",
        test={**stdio_entry(), "requireApproval": ["echo"]},
    )
    terminal.answer(PLAN, summary="Cleaned up.")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        "clean up the report",
        cwd=terminal.home,
        env={**terminal.env, "DAGBOT_MCP_CONFIG": str(config)},
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return BotProcess(process)


async def statuses(terminal: Terminal, run_id: str) -> tuple[RunStatus, dict[str, TaskStatus]]:
    store = await open_store(f"sqlite:///{terminal.database}")
    try:
        run = await store.get_run(run_id)
        assert run is not None
        return run.status, {task.id: task.status for task in await store.get_tasks(run_id)}
    finally:
        await store.close()


@pytest.mark.parametrize(("answer", "approved"), [("y", True), ("yes", True), ("n", False)])
async def test_the_answer_to_the_question_approves_or_denies(
    terminal: Terminal, answer: str, approved: bool
) -> None:
    bot = await start(terminal, stdin=asyncio.subprocess.PIPE)
    prompt = await bot.wait_for_line(lambda line: line.endswith("[y/N]"))
    assert prompt == 'Approve t1 "call test.echo" (test.echo {"text": "rm -rf /tmp/report"})? [y/N]'
    # The other task does not wait for the answer.
    if not any("t2 call test.scale succeeded" in line for line in bot.lines):
        await bot.wait_for_line(lambda line: "t2 call test.scale succeeded" in line)
    assert bot.process.stdin is not None
    bot.process.stdin.write(f"{answer}\n".encode())
    await bot.process.stdin.drain()
    code = await bot.finish()

    status, tasks = await statuses(terminal, bot.run_id)
    if approved:
        assert code == 0, bot.stdout + bot.stderr
        assert (status, tasks["t1"]) == (RunStatus.SUCCEEDED, TaskStatus.SUCCEEDED)
    else:
        assert code == 1, bot.stdout + bot.stderr
        assert (status, tasks["t1"]) == (RunStatus.FAILED, TaskStatus.FAILED)
        assert "in the terminal." in bot.stdout
        assert "t1 call test.echo failed: Denied by " in bot.stdout
    assert tasks["t3"] is TaskStatus.SUCCEEDED


async def test_with_no_input_to_read_the_task_is_denied(terminal: Terminal) -> None:
    bot = await start(terminal, stdin=asyncio.subprocess.DEVNULL)
    code = await bot.finish()
    assert code == 1, bot.stdout + bot.stderr
    assert "No answer can be read (standard input is closed): t1 is denied." in bot.stdout
    status, tasks = await statuses(terminal, bot.run_id)
    assert (status, tasks["t1"], tasks["t2"]) == (
        RunStatus.FAILED,
        TaskStatus.FAILED,
        TaskStatus.SUCCEEDED,
    )
