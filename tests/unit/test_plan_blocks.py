"""The plan message always fits Slack, never sends blank text, and renders outputs as rich text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.approval_blocks import approval_blocks
from bot.block_kit import defuse_mentions
from bot.blocks import (
    FEEDBACK_ACTION,
    feedback_blocks,
    markdown_message,
    plan_message,
    planning_failed_message,
    task_card,
)
from bot.rich_text import cited_urls, markdown_elements, rich_text, url_sources
from bot.wording import progress_line
from scheduler.dag.plan import TaskKind
from scheduler.dag.state import Run
from storage.records import RunStatus, TaskStatus
from tests.fakes.slack_api import (
    MAX_BLOCKS,
    MAX_BLOCKS_TEXT,
    block_shape_problems,
    blocks_text_length,
)
from tests.unit.test_blocks import make_task, make_view, texts, walk

WORST_TITLE = "A **rather** long task title with <!channel> in it " * 20
WORST_OUTPUT = (
    "**Result** with `code`, a [link](https://example.com/a) and https://docs.example.org/x "
    + "more words " * 3000
)
WORST_ERROR = "Traceback <@U123> " * 500


def _worst_plan(count: int) -> list[Any]:
    statuses = list(TaskStatus)
    tasks = []
    for i in range(1, count + 1):
        kind = TaskKind.SUMMARY if i == count else TaskKind.TOOL if i % 2 else TaskKind.LLM
        tasks.append(
            make_task(
                i,
                statuses[i % len(statuses)] if i != count else TaskStatus.SUCCEEDED,
                kind=kind,
                title=WORST_TITLE,
                output=WORST_OUTPUT,
                error=WORST_ERROR,
                deps=[f"t{j}" for j in range(1, i)][:30],
                attempts=3,
            )
        )
    return tasks


def assert_slack_accepts(blocks: list[dict[str, Any]], text: str) -> None:
    """What the strict fake Slack checks, applied to a rendered message."""
    assert block_shape_problems(blocks) == []
    assert blocks_text_length(blocks) <= MAX_BLOCKS_TEXT
    assert len(list(walk(blocks))) <= MAX_BLOCKS
    assert text.strip()
    assert len(text) <= 4000


@pytest.mark.parametrize("count", range(1, 51))
@pytest.mark.parametrize("classic", [False, True])
@pytest.mark.parametrize("smallest", [False, True])
def test_every_plan_up_to_fifty_tasks_fits(count: int, classic: bool, smallest: bool) -> None:
    message = plan_message(
        make_view(_worst_plan(count), status=RunStatus.RUNNING), classic=classic, smallest=smallest
    )
    assert_slack_accepts(message.blocks, message.text)


def test_detail_shrinks_before_tasks_are_folded() -> None:
    """A plan of 50 worst-case tasks still shows every task, with less detail each."""
    view = make_view(_worst_plan(50))
    message = plan_message(view)
    cards = [b for b in walk(message.blocks) if b["type"] == "task_card"]
    # 50 blocks: the plan, the 'N more' line, the status line and the buttons take 4, and the
    # approval requests of the tasks awaiting approval (2 shown, 2 blocks each, 'N more') 5.
    assert len(approval_blocks(view)) == 5
    assert len(cards) == 41
    assert "more task" in texts(message.blocks)
    small = plan_message(make_view(_worst_plan(8)))
    assert any("details" in c for c in walk(small.blocks) if c["type"] == "task_card")


@pytest.mark.parametrize("title", ["", "   ", "\n\t"])
def test_blank_titles_outputs_and_errors_never_make_blank_text(title: str) -> None:
    tasks = [
        make_task(1, TaskStatus.SUCCEEDED, title=title or " ", output="   "),
        make_task(2, TaskStatus.FAILED, title=title or " ", error="  "),
        make_task(3, TaskStatus.SUCCEEDED, kind=TaskKind.SUMMARY, output="\n"),
    ]
    for classic in (False, True):
        message = plan_message(make_view(tasks, status=RunStatus.FAILED), classic=classic)
        assert_slack_accepts(message.blocks, message.text)
    cards = [b for b in walk(plan_message(make_view(tasks)).blocks) if b["type"] == "task_card"]
    assert cards[0]["title"] == "Task t1"
    assert "output" not in cards[0]
    assert texts(cards[1]["output"]) == "Failed"


def test_task_output_markdown_becomes_rich_text() -> None:
    task = make_task(
        1, TaskStatus.SUCCEEDED, output="**Tokyo** is `24C`, see [forecast](https://w.example/t)"
    )
    output = task_card(task).to_dict()["output"]
    elements = output["elements"][0]["elements"]
    assert elements == [
        {"type": "text", "text": "Tokyo", "style": {"bold": True}},
        {"type": "text", "text": " is "},
        {"type": "text", "text": "24C", "style": {"code": True}},
        {"type": "text", "text": ", see "},
        {"type": "link", "url": "https://w.example/t", "text": "forecast"},
    ]
    assert "**" not in json.dumps(output)


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("plain", [{"type": "text", "text": "plain"}]),
        ("*it*", [{"type": "text", "text": "it", "style": {"italic": True}}]),
        ("a_b_c", [{"type": "text", "text": "a_b_c"}]),
        ("2 * 3 * 4", [{"type": "text", "text": "2 * 3 * 4"}]),
        ("# Head", [{"type": "text", "text": "Head"}]),
        ("- one", [{"type": "text", "text": "• one"}]),
        (
            "see https://a.example/x.",
            [
                {"type": "text", "text": "see "},
                {"type": "link", "url": "https://a.example/x"},
                {"type": "text", "text": "."},
            ],
        ),
        ("", []),
    ],
)
def test_markdown_elements(markdown: str, expected: list[dict[str, Any]]) -> None:
    assert markdown_elements(markdown) == expected


def test_rich_text_is_none_when_blank() -> None:
    assert rich_text("  \n ", 100) is None


def test_summary_card_is_a_one_line_excerpt() -> None:
    summary = "# Report\n\n**Tokyo** is warmer.\n\n" + "Long paragraph. " * 200
    task = make_task(4, TaskStatus.SUCCEEDED, kind=TaskKind.SUMMARY, output=summary)
    output = task_card(task).to_dict()["output"]
    shown = "".join(e["text"] for e in output["elements"][0]["elements"])
    assert "\n" not in shown
    assert len(shown) <= 150
    assert shown.startswith("Report Tokyo is warmer.")


def test_urls_in_tool_outputs_become_sources() -> None:
    output = "See https://a.example/x, https://b.example/y/ and https://a.example/x again."
    assert cited_urls(output) == ["https://a.example/x", "https://b.example/y/"]
    card = task_card(make_task(1, TaskStatus.SUCCEEDED, output=output)).to_dict()
    assert card["sources"] == [
        {"type": "url", "url": "https://a.example/x", "text": "a.example/x"},
        {"type": "url", "url": "https://b.example/y/", "text": "b.example/y"},
    ]
    llm = task_card(make_task(2, TaskStatus.SUCCEEDED, kind=TaskKind.LLM, output=output))
    assert "sources" not in llm.to_dict()
    assert len(url_sources(" ".join(f"https://h{i}.example" for i in range(20)))) == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<!channel> look", "&lt;!channel&gt; look"),
        ("<!here|here> and <!everyone>", "&lt;!here|here&gt; and &lt;!everyone&gt;"),
        ("hi <@U123>", "hi &lt;@U123&gt;"),
        ("<!subteam^S1|@team>", "&lt;!subteam^S1|@team&gt;"),
        ("a < b > c and <https://x.example>", "a < b > c and <https://x.example>"),
    ],
)
def test_defuse_mentions(text: str, expected: str) -> None:
    assert defuse_mentions(text) == expected


def test_model_mentions_are_inert_everywhere_dagbot_renders_them() -> None:
    tasks = [make_task(1, TaskStatus.SUCCEEDED, title="<!channel> ping", output="<!here>")]
    view = make_view(tasks)
    for message in (
        plan_message(view),
        plan_message(view, classic=True),
        markdown_message("Hello <!channel> and <@U999>"),
        planning_failed_message(
            Run(
                id="r",
                goal="g",
                status=RunStatus.FAILED,
                created_at=0,
                updated_at=0,
                error="<!here>",
            )
        ),
    ):
        rendered = message.text + json.dumps(without_rich_text(message.blocks))
        for live in ("<!channel>", "<!here>", "<@U999>"):
            assert live not in rendered
    # The requester mention dagbot adds itself stays live.
    assert "<@U0ALICE>" in json.dumps(plan_message(view).blocks)


def without_rich_text(value: Any) -> Any:
    """Blocks minus the text of rich text elements, which Slack never parses for mentions."""
    if isinstance(value, dict):
        if value.get("type") == "text" and isinstance(value.get("text"), str):
            return {**value, "text": ""}
        return {k: without_rich_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_rich_text(v) for v in value]
    return value


def test_feedback_blocks_are_what_slack_accepts() -> None:
    blocks = feedback_blocks("run-1")
    assert block_shape_problems(blocks) == []
    [element] = blocks[0]["elements"]
    assert element["type"] == "feedback_buttons"
    assert element["action_id"] == FEEDBACK_ACTION
    assert element["positive_button"]["value"] == "good:run-1"
    assert element["negative_button"]["value"] == "bad:run-1"


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "Running · 0 of 0 tasks done"),
        ([TaskStatus.SUCCEEDED], "Running · 1 of 1 task done"),
        (
            [TaskStatus.SUCCEEDED, TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.SKIPPED],
            "Running · 3 of 4 tasks done · 1 running · 1 failed · 1 skipped",
        ),
    ],
)
def test_progress_line(statuses: list[TaskStatus], expected: str) -> None:
    assert progress_line(RunStatus.RUNNING, statuses) == expected
