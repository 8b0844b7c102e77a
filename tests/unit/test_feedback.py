"""Feedback on a run's summary: parsed from the press, stored once per person, shown by `runs`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.payloads import FEEDBACK_ACTION, PressKind, parse_press
from bot.wording import feedback_line
from storage.records import NewRun
from storage.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(str(tmp_path / "dagbot.sqlite3"))
    yield opened
    await opened.close()


async def test_one_vote_per_person_the_latest_counts(store: SqliteStore) -> None:
    record, _ = await store.create_run(NewRun(goal="g"))
    assert await store.feedback(record.id) == {}
    assert await store.record_feedback(record.id, "U1", "good") is True
    assert await store.record_feedback(record.id, "U1", "good") is False  # a replay
    assert await store.record_feedback(record.id, "U2", "good") is True
    assert await store.feedback(record.id) == {"good": 2}
    assert await store.record_feedback(record.id, "U1", "bad") is True
    assert await store.feedback(record.id) == {"good": 1, "bad": 1}


async def test_votes_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "dagbot.sqlite3")
    first = await SqliteStore.open(path)
    record, _ = await first.create_run(NewRun(goal="g"))
    await first.record_feedback(record.id, "U1", "bad")
    await first.close()
    second = await SqliteStore.open(path)
    try:
        assert await second.feedback(record.id) == {"bad": 1}
    finally:
        await second.close()


def _press(value: str, **extra: Any) -> dict[str, Any]:
    return {
        "user": {"id": "U1"},
        "trigger_id": "1.2",
        "actions": [
            {"action_id": FEEDBACK_ACTION, "value": value, "type": "feedback_buttons", **extra}
        ],
    }


@pytest.mark.parametrize(
    ("value", "vote", "run_id"),
    [
        ("good:r1", "good", "r1"),
        ("bad:r:2", "bad", "r:2"),
        ("meh:r1", None, None),
        ("good:", None, None),
    ],
)
def test_feedback_presses_are_parsed(value: str, vote: str | None, run_id: str | None) -> None:
    press = parse_press(_press(value))
    if vote is None:
        assert press is None
    else:
        assert press is not None
        assert (press.kind, press.vote, press.run_id) == (PressKind.FEEDBACK, vote, run_id)
        assert press.delivery_id


def test_a_replayed_press_has_the_same_delivery_id() -> None:
    first, again = parse_press(_press("good:r1")), parse_press(_press("good:r1"))
    other = parse_press({**_press("good:r1"), "trigger_id": "9.9"})
    assert first is not None
    assert again is not None
    assert other is not None
    assert first.delivery_id == again.delivery_id != other.delivery_id


@pytest.mark.parametrize(
    ("votes", "line"),
    [
        ({}, "Feedback: none yet"),
        ({"good": 3}, "Feedback: 3 👍 · 0 👎"),
        ({"good": 1, "bad": 2}, "Feedback: 1 👍 · 2 👎"),
    ],
)
def test_feedback_line(votes: dict[str, int], line: str) -> None:
    assert feedback_line(votes) == line
