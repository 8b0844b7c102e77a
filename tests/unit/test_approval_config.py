"""requireApproval in mcp.json, DAGBOT_APPROVERS and DAGBOT_APPROVAL_TIMEOUT, parsed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.settings import ConfigError, Settings, load_settings, parse_approvers
from scheduler.tools.mcp_config import McpConfigError, load_mcp_config

SERVERS = {
    "mcpServers": {
        "files": {"command": "files-server", "requireApproval": True},
        "git": {"command": "mcp-server-git", "requireApproval": ["git_commit", "git_reset"]},
        "web": {"url": "https://example.com/mcp", "requireApproval": ["post"]},
        "time": {"command": "mcp-server-time"},
    }
}


@pytest.mark.parametrize(
    ("tool", "needed"),
    [
        ("files.delete", True),
        ("files.read", True),
        ("git.git_commit", True),
        ("git.git_status", False),
        ("web.post", True),
        ("web.get", False),
        ("time.get_current_time", False),
        ("unknown.anything", False),
    ],
)
def test_require_approval_names_a_server_or_its_tools(
    tmp_path: Path, tool: str, needed: bool
) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(SERVERS))
    assert load_mcp_config(path).needs_approval(tool) is needed


@pytest.mark.parametrize("rule", ["yes", [""], [1], {"tools": ["x"]}])
def test_a_malformed_require_approval_is_refused_naming_it(tmp_path: Path, rule: object) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"s": {"command": "x", "requireApproval": rule}}}))
    with pytest.raises(McpConfigError, match="requireApproval"):
        load_mcp_config(path)


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("", frozenset()),
        ("U012AB3CD", {"U012AB3CD"}),
        (" U012AB3CD, W045EF6GH ,", {"U012AB3CD", "W045EF6GH"}),
    ],
)
def test_approvers_are_slack_user_ids(text: str, ids: set[str]) -> None:
    assert parse_approvers(text) == ids


@pytest.mark.parametrize("text", ["@alice", "alice", "U012AB3CD,C0GENERAL"])
def test_approvers_that_are_not_user_ids_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("DAGBOT_APPROVERS", text)
    with pytest.raises(ConfigError, match="DAGBOT_APPROVERS"):
        load_settings()


def test_the_approval_timeout_is_seconds_and_a_day_by_default() -> None:
    assert Settings.model_validate({}).approval_timeout == 86400
    assert Settings.model_validate({"DAGBOT_APPROVAL_TIMEOUT": "90"}).approval_timeout == 90
    with pytest.raises(ValueError, match="DAGBOT_APPROVAL_TIMEOUT"):
        Settings.model_validate({"DAGBOT_APPROVAL_TIMEOUT": "0"})
