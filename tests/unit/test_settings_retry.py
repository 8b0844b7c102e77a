from __future__ import annotations

import pytest

from bot.settings import ConfigError, Settings, load_settings, parse_attempts
from scheduler.dag.retry import PLANNING, RetryPolicy


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("3", (3, {})),
        ("1", (1, {})),
        ("4,tool=6,planning=2", (4, {"tool": 6, "planning": 2})),
        ("llm=1", (3, {"llm": 1})),
        (" 5 , summary = 2 ", (5, {"summary": 2})),
    ],
)
def test_attempts_parse(text: str, parsed: tuple[int, dict[str, int]]) -> None:
    assert parse_attempts(text) == parsed


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("0", "not a number of attempts of at least 1"),
        ("three", "not a number of attempts"),
        ("3,robot=2", "unknown kind 'robot'"),
        ("3,4", "give the number for every kind once"),
        ("tool=", "not a number of attempts"),
    ],
)
def test_bad_attempts_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, text: str, complaint: str
) -> None:
    monkeypatch.setenv("DAGBOT_MAX_ATTEMPTS", text)
    with pytest.raises(ConfigError, match="DAGBOT_MAX_ATTEMPTS") as raised:
        load_settings()
    assert complaint in str(raised.value)


def test_policies_from_settings() -> None:
    settings = Settings.model_validate(
        {"DAGBOT_MAX_ATTEMPTS": "2,planning=4", "DAGBOT_RETRY_BASE_DELAY": 1.0}
    )
    policies = settings.retry_policies()
    assert policies.of("tool") == RetryPolicy(max_attempts=2, base_delay=1.0, max_delay=20.0)
    assert policies.of(PLANNING) == RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=20.0)
