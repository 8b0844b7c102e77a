from __future__ import annotations

import pytest

from bot.settings import ConfigError, load_settings
from scheduler.tools.reconnect import PING_INTERVAL, STARTUP_WAIT


def test_mcp_timing_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGBOT_MCP_STARTUP_WAIT", raising=False)
    monkeypatch.delenv("DAGBOT_MCP_PING_INTERVAL", raising=False)
    settings = load_settings()
    assert settings.mcp_startup_wait == STARTUP_WAIT
    assert settings.mcp_ping_interval == PING_INTERVAL


def test_mcp_timing_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGBOT_MCP_STARTUP_WAIT", "0")
    monkeypatch.setenv("DAGBOT_MCP_PING_INTERVAL", "2.5")
    settings = load_settings()
    assert settings.mcp_startup_wait == 0
    assert settings.mcp_ping_interval == 2.5


@pytest.mark.parametrize("variable", ["DAGBOT_MCP_STARTUP_WAIT", "DAGBOT_MCP_PING_INTERVAL"])
def test_a_negative_mcp_time_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "-1")
    with pytest.raises(ConfigError, match=variable):
        load_settings()
