from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from bot.blocks import (
    CANCEL_ACTION,
    MAX_BLOCKS,
    MAX_MESSAGE_TEXT,
    MAX_SECTION_TEXT,
    MAX_SNIPPET,
    RETRY_ACTION,
    SUMMARY_PART_LIMIT,
    TASK_CARD_STATUS,
    TRUNCATED,
    classic_markdown_message,
    home_view,
    markdown_message,
    pack_lines,
    placeholder_message,
    plan_message,
    planning_failed_message,
    status_line,
    summary_markdown,
    task_card,
    task_details,
    truncate,
    truncate_mrkdwn,
)
from bot.markdown import escape_mrkdwn, markdown_to_mrkdwn, split_markdown
from scheduler.dag.plan import Plan, PlanTask, TaskKind
from scheduler.dag.state import Run, RunView, TaskState
from storage.records import RunStatus, TaskStatus

RUN_ID = "0123456789abcdef"


def make_task(
    index: int,
    status: TaskStatus = TaskStatus.PENDING,
    *,
    kind: TaskKind = TaskKind.TOOL,
    title: str | None = None,
    output: str | None = None,
    error: str | None = None,
    deps: list[str] | None = None,
    attempts: int = 0,
) -> TaskState:
    spec = PlanTask(
        id=f"t{index}",
        kind=kind,
        title=title or f"Task number {index}",
        tool="time.get_current_time" if kind is TaskKind.TOOL else None,
        prompt=None if kind is TaskKind.TOOL else "do it",
        deps=deps or [],
    )
    return TaskState(
        run_id=RUN_ID,
        spec=spec,
        position=index,
        status=status,
        attempts=attempts,
        output=output,
        error=error,
    )


def make_view(
    tasks: list[TaskState],
    *,
    status: RunStatus = RunStatus.RUNNING,
    title: str = "Compare the weather",
    planned: bool = True,
    error: str | None = None,
) -> RunView:
    plan = Plan(title=title, tasks=[t.spec for t in tasks]) if planned else None
    run = Run(
        id=RUN_ID,
        goal="Compare the weather in Tokyo and Paris",
        status=status,
        created_at=1_700_000_000.0,
        updated_at=1_700_000_000.0,
        plan=plan,
        error=error,
        requester="U0ALICE",
        meta={"channel": "C1", "thread_ts": "1.000001"},
    )
    return RunView(run=run, tasks=tuple(tasks))


def walk(blocks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for block in blocks:
        yield block
        yield from walk(block.get("tasks") or [])


def block_count(blocks: list[dict[str, Any]]) -> int:
    return sum(1 for _ in walk(blocks))


def texts(value: Any) -> str:
    """All strings in a block structure, joined: for `in` checks."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(texts(v) for k, v in value.items() if k != "type")
    if isinstance(value, list):
        return "\n".join(texts(v) for v in value)
    return ""


def cards(message_blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in walk(message_blocks) if b["type"] == "task_card"]


def buttons(message_blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in message_blocks if b["type"] == "actions" for e in b["elements"]]


# -- text helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("a" * 30, 20, "a" * (20 - len(TRUNCATED)) + TRUNCATED),
        ("word " * 10, 20, ("word " * 10)[: 20 - len(TRUNCATED)].rstrip() + TRUNCATED),
        ("anything", 3, TRUNCATED[:3]),
    ],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    result = truncate(text, limit)
    assert result == expected
    assert len(result) <= limit


@pytest.mark.parametrize(
    ("text", "limit"),
    [("&" * 50, 30), ("<b>" * 40, 31), ("a&b" * 20, 25)],
)
def test_truncate_mrkdwn_never_leaves_half_an_entity(text: str, limit: int) -> None:
    result = truncate_mrkdwn(text, limit)
    assert len(result) <= limit
    body = result.removesuffix(TRUNCATED)
    assert re.search(r"&[a-z]*$", body) is None
    assert "<" not in result
    assert ">" not in result


def test_escape_mrkdwn() -> None:
    assert escape_mrkdwn("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"


@pytest.mark.parametrize(
    ("lines", "limit", "expected"),
    [
        (["a", "b", "c"], 10, ["a\nb\nc"]),
        (["aaaa", "bbbb", "cccc"], 9, ["aaaa\nbbbb", "cccc"]),
        (["x" * 20], 10, [truncate("x" * 20, 10)]),
        ([], 10, []),
    ],
)
def test_pack_lines(lines: list[str], limit: int, expected: list[str]) -> None:
    assert pack_lines(lines, limit) == expected


# -- task cards --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "card_status", "label"),
    [
        (TaskStatus.PENDING, "pending", None),
        (TaskStatus.RUNNING, "in_progress", None),
        (TaskStatus.SUCCEEDED, "complete", None),
        (TaskStatus.FAILED, "error", "failed"),
        (TaskStatus.SKIPPED, "error", "skipped"),
        (TaskStatus.CANCELLED, "error", "cancelled"),
    ],
)
def test_task_card_status_and_labels(
    status: TaskStatus, card_status: str, label: str | None
) -> None:
    error = {
        TaskStatus.FAILED: "TimeoutError: too slow",
        TaskStatus.SKIPPED: "Skipped because t1 did not succeed.",
    }.get(status)
    task = make_task(
        2,
        status,
        output="42 °C" if status is TaskStatus.SUCCEEDED else None,
        error=error,
        deps=["t1"],
    )
    card = task_card(task).to_dict()
    assert card["type"] == "task_card"
    assert card["status"] == card_status == TASK_CARD_STATUS[status]
    assert card["task_id"] == "t2"
    details = texts(card["details"])
    assert "tool" in details
    assert "time.get_current_time" in details
    assert "after t1" in details
    if label is None:
        assert "failed" not in details
        assert "skipped" not in details
    else:
        assert label in details
    if status in (TaskStatus.SKIPPED, TaskStatus.CANCELLED):
        assert f"({label})" in card["title"]
    if status is TaskStatus.SUCCEEDED:
        assert texts(card["output"]) == "42 °C"
    elif status is TaskStatus.FAILED:
        assert "TimeoutError: too slow" in texts(card["output"])
    elif status in (TaskStatus.PENDING, TaskStatus.RUNNING):
        assert "output" not in card


def test_task_details_mentions_kind_dependencies_and_attempts() -> None:
    llm = make_task(3, TaskStatus.RUNNING, kind=TaskKind.LLM, deps=["t1", "t2"], attempts=2)
    assert task_details(llm) == "llm · after t1, t2 · attempt 2"
    assert task_details(make_task(1)) == "tool · time.get_current_time · no dependencies"


@pytest.mark.parametrize("size", [MAX_SNIPPET + 1, 10_000, 1_000_000])
def test_giant_output_is_cut_with_a_visible_marker(size: int) -> None:
    task = make_task(1, TaskStatus.SUCCEEDED, output="x" * size)
    output = texts(task_card(task).to_dict()["output"])
    assert len(output) <= MAX_SNIPPET
    assert output.endswith(TRUNCATED)


# -- the plan message --------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 10, 46, 47, 48, 50, 120, 500])
@pytest.mark.parametrize("classic", [False, True])
def test_plans_of_any_size_fit_the_limits(count: int, classic: bool) -> None:
    statuses = list(TaskStatus)
    tasks = [
        make_task(
            i,
            statuses[i % len(statuses)],
            title="A rather long task title " * 20,
            output="output " * 2000,
            error="error text " * 500,
        )
        for i in range(1, count + 1)
    ]
    message = plan_message(make_view(tasks), classic=classic)
    assert block_count(message.blocks) <= MAX_BLOCKS
    assert len(message.text) <= MAX_MESSAGE_TEXT
    for block in walk(message.blocks):
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= MAX_SECTION_TEXT
    rendered = texts(message.blocks)
    hidden = re.search(r"and (\d+) more tasks? not shown", rendered)
    shown = count - int(hidden.group(1)) if hidden else count
    if classic:
        assert {b["type"] for b in walk(message.blocks)}.isdisjoint({"plan", "task_card"})
        for i in range(1, shown + 1):
            assert f"`t{i}`" in rendered
    else:
        assert [c["task_id"] for c in cards(message.blocks)] == [
            f"t{i}" for i in range(1, shown + 1)
        ]
    assert shown >= min(count, 40)
    assert (hidden is None) == (count == shown)


def test_fifty_task_plan_native_shows_cards_and_counts_the_rest() -> None:
    tasks = [
        make_task(i, TaskStatus.SUCCEEDED if i <= 20 else TaskStatus.PENDING, output="ok")
        for i in range(1, 51)
    ]
    message = plan_message(make_view(tasks))
    shown = cards(message.blocks)
    assert len(shown) < 50
    rendered = texts(message.blocks)
    assert f"and {50 - len(shown)} more tasks not shown" in rendered
    assert f"{50 - len(shown)} pending" in rendered
    assert block_count(message.blocks) == MAX_BLOCKS


def test_classic_plan_uses_emoji_and_escapes_titles() -> None:
    tasks = [
        make_task(1, TaskStatus.SUCCEEDED, title="<Tokyo> & weather", output="sunny"),
        make_task(2, TaskStatus.FAILED, error="boom"),
        make_task(3, TaskStatus.SKIPPED, error="Skipped because t2 did not succeed."),
    ]
    message = plan_message(make_view(tasks, status=RunStatus.FAILED), classic=True)
    rendered = texts(message.blocks)
    assert ":white_check_mark: *&lt;Tokyo&gt; &amp; weather*" in rendered
    assert ":x:" in rendered
    assert ">boom" in rendered
    assert ":heavy_minus_sign:" in rendered
    assert "skipped" in rendered
    assert message.blocks[0]["type"] == "header"


@pytest.mark.parametrize(
    ("status", "task_status", "action"),
    [
        (RunStatus.RUNNING, TaskStatus.RUNNING, CANCEL_ACTION),
        (RunStatus.FAILED, TaskStatus.FAILED, RETRY_ACTION),
        (RunStatus.CANCELLED, TaskStatus.CANCELLED, RETRY_ACTION),
        (RunStatus.SUCCEEDED, TaskStatus.SUCCEEDED, None),
    ],
)
@pytest.mark.parametrize("classic", [False, True])
def test_buttons_follow_the_run(
    status: RunStatus, task_status: TaskStatus, action: str | None, classic: bool
) -> None:
    message = plan_message(make_view([make_task(1, task_status)], status=status), classic=classic)
    found = buttons(message.blocks)
    if action is None:
        assert found == []
    else:
        assert [(b["action_id"], b["value"]) for b in found] == [(action, RUN_ID)]


def test_plan_text_fallback_lists_tasks_and_status() -> None:
    tasks = [make_task(1, TaskStatus.SUCCEEDED), make_task(2, TaskStatus.RUNNING)]
    message = plan_message(make_view(tasks))
    assert message.text.startswith("Plan: Compare the weather (Running · 1 of 2 tasks done")
    assert "• [succeeded] Task number 1" in message.text
    assert "• [running] Task number 2" in message.text


@pytest.mark.parametrize(
    ("statuses", "run_status", "expected"),
    [
        ([TaskStatus.PENDING] * 3, RunStatus.RUNNING, "Running · 0 of 3 tasks done"),
        (
            [TaskStatus.SUCCEEDED, TaskStatus.RUNNING, TaskStatus.FAILED],
            RunStatus.RUNNING,
            "Running · 2 of 3 tasks done · 1 running · 1 failed",
        ),
        ([TaskStatus.SUCCEEDED], RunStatus.SUCCEEDED, "Done · 1 of 1 task done"),
        (
            [TaskStatus.FAILED, TaskStatus.SKIPPED],
            RunStatus.FAILED,
            "Finished with problems · 2 of 2 tasks done · 1 failed · 1 skipped",
        ),
        ([TaskStatus.CANCELLED], RunStatus.CANCELLED, "Cancelled · 1 of 1 task done · 1 cancelled"),
    ],
)
def test_status_line(statuses: list[TaskStatus], run_status: RunStatus, expected: str) -> None:
    view = make_view([make_task(i, s) for i, s in enumerate(statuses, 1)], status=run_status)
    assert status_line(view) == expected


@pytest.mark.parametrize(
    ("status", "phrase", "has_cancel"),
    [
        (RunStatus.PLANNING, "Planning:", True),
        (RunStatus.CANCELLED, "Cancelled before a plan", False),
        (RunStatus.FAILED, "No plan could be made", False),
    ],
)
def test_placeholder(status: RunStatus, phrase: str, has_cancel: bool) -> None:
    view = make_view([], status=status, planned=False)
    message = plan_message(view)
    assert message == placeholder_message(view.run)
    assert phrase in message.text
    assert bool(buttons(message.blocks)) == has_cancel


# -- summary -----------------------------------------------------------------------------------


def test_summary_markdown_is_the_summary_output() -> None:
    tasks = [
        make_task(1, TaskStatus.SUCCEEDED, output="12 °C"),
        make_task(2, TaskStatus.SUCCEEDED, kind=TaskKind.SUMMARY, output="\n# Report\nWarm.\n"),
    ]
    assert summary_markdown(make_view(tasks, status=RunStatus.SUCCEEDED)) == "# Report\nWarm."


def test_summary_markdown_without_a_summary_explains_the_failure() -> None:
    tasks = [
        make_task(1, TaskStatus.FAILED, error="MCPError: server gone"),
        make_task(2, TaskStatus.FAILED, kind=TaskKind.SUMMARY, error="RateLimitError: slow down"),
    ]
    view = make_view(tasks, status=RunStatus.FAILED, error="2 task(s) failed and 0 were skipped.")
    text = summary_markdown(view)
    assert text.startswith("**Finished with problems")
    assert "2 task(s) failed" in text
    assert "- Task number 1 (t1): MCPError: server gone" in text
    assert "- Task number 2 (t2): RateLimitError: slow down" in text


def _words(text: str) -> list[str]:
    return [w for w in text.split() if not w.startswith("```")]


def _paragraphs(count: int, size: int) -> str:
    return "\n\n".join(
        f"Paragraph {i}: " + " ".join(f"w{i}_{j}" for j in range(size)) for i in range(count)
    )


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("short text", 100),
        (_paragraphs(40, 60), 1000),
        (_paragraphs(5, 3000), SUMMARY_PART_LIMIT),
        ("x" * 25_000, SUMMARY_PART_LIMIT),
        ("word " * 9000, 3000),
        ("intro\n\n```python\n" + "print('hello world')\n" * 900 + "```\n\noutro", 3000),
        ("- item\n" * 3000, 2000),
        ("a" * 100 + "\n" + "b" * 100, 60),
    ],
)
def test_split_markdown_respects_the_limit_and_keeps_everything(text: str, limit: int) -> None:
    parts = split_markdown(text, limit)
    assert parts
    assert all(0 < len(part) <= limit for part in parts)
    assert "".join(_words(" ".join(parts))) == "".join(_words(text))
    for part in parts:
        fences = [line for line in part.split("\n") if line.strip().startswith("```")]
        assert len(fences) % 2 == 0, "every part closes the code fences it opens"


def test_split_markdown_prefers_paragraph_boundaries() -> None:
    text = _paragraphs(10, 50)
    parts = split_markdown(text, 1000)
    assert len(parts) > 1
    for part in parts:
        assert part.startswith("Paragraph ")
        assert re.search(r"w\d+_49$", part), "a part ends where a paragraph ends"


def test_split_markdown_rejects_a_useless_limit() -> None:
    with pytest.raises(ValueError, match="too small"):
        split_markdown("text", 10)


@pytest.mark.parametrize("size", [10, 3_899, 3_901, SUMMARY_PART_LIMIT])
def test_markdown_message_fits(size: int) -> None:
    message = markdown_message("m" * size)
    assert len(message.text) <= MAX_MESSAGE_TEXT
    assert message.blocks == [{"type": "markdown", "text": "m" * size}]


def test_classic_markdown_message_converts_and_fits() -> None:
    markdown = "# Title\n\n**bold** and [link](https://example.com)\n\n" + "text " * 2500
    message = classic_markdown_message(markdown)
    assert all(b["type"] == "section" for b in message.blocks)
    assert all(len(b["text"]["text"]) <= MAX_SECTION_TEXT for b in message.blocks)
    rendered = texts(message.blocks)
    assert "*Title*" in rendered
    assert "*bold*" in rendered
    assert "<https://example.com|link>" in rendered
    assert len(message.text) <= MAX_MESSAGE_TEXT


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("## Heading", "*Heading*"),
        ("**strong** text", "*strong* text"),
        ("- one\n* two", "• one\n• two"),
        ("[docs](https://x.org/a)", "<https://x.org/a|docs>"),
        ("a < b & c", "a &lt; b &amp; c"),
        ("```\n**not bold** <tag>\n```", "```\n**not bold** &lt;tag&gt;\n```"),
    ],
)
def test_markdown_to_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert markdown_to_mrkdwn(markdown) == mrkdwn


@pytest.mark.parametrize("error", ["I need a city.", "x" * 10_000, "<script> & more\nline two"])
def test_planning_failed_message(error: str) -> None:
    view = make_view([], status=RunStatus.FAILED, planned=False, error=error)
    message = planning_failed_message(view.run)
    rendered = texts(message.blocks)
    assert "could not make a plan" in rendered
    for line in error.splitlines():
        assert f">{escape_mrkdwn(line)[:50]}" in rendered
    assert len(message.text) <= MAX_MESSAGE_TEXT
    assert all(
        len(b["text"]["text"]) <= MAX_SECTION_TEXT for b in message.blocks if b["type"] == "section"
    )


# -- App Home ----------------------------------------------------------------------------------


def _run(index: int, **meta: Any) -> Run:
    return Run(
        id=f"run{index:05d}xyz",
        goal=f"Goal number {index} <with> & symbols",
        status=RunStatus.SUCCEEDED,
        created_at=1_700_000_000.0 + index,
        updated_at=1_700_000_000.0 + index,
        requester="U0ALICE",
        meta=meta,
    )


def test_home_view_lists_runs_with_links() -> None:
    view = home_view([_run(1, permalink="https://fake.slack.com/archives/C1/p1"), _run(2)])
    assert view["type"] == "home"
    rendered = texts(view["blocks"])
    assert "<https://fake.slack.com/archives/C1/p1|Goal number 1 &lt;with&gt; &amp; symbols>" in (
        rendered
    )
    assert "Goal number 2 &lt;with&gt;" in rendered
    assert "<!date^1700000001^{date_short_pretty} at {time}|1700000001>" in rendered
    assert ":white_check_mark: done" in rendered


def test_home_view_empty_and_huge() -> None:
    assert "No runs yet." in texts(home_view([])["blocks"])
    assert len(home_view([_run(i) for i in range(300)])["blocks"]) <= 100
