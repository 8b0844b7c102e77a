"""The Slack app manifest and Procfile agree with what the bot listens to and calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bot.payloads import COMMAND
from bot.server import EVENTS_PATH

ROOT = Path(__file__).resolve().parents[2]


def _manifest() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_manifest_declares_what_the_bot_handles() -> None:
    manifest = _manifest()
    features, settings = manifest["features"], manifest["settings"]
    [command] = features["slash_commands"]
    assert command["command"] == COMMAND
    assert command["should_escape"] is False  # goals arrive as typed; the bot escapes them
    assert set(settings["event_subscriptions"]["bot_events"]) == {"app_mention", "app_home_opened"}
    assert settings["interactivity"]["is_enabled"] is True
    assert features["app_home"]["home_tab_enabled"] is True
    assert settings["socket_mode_enabled"] is True
    urls = [
        command["url"],
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
    ]
    assert all(url.endswith(EVENTS_PATH) for url in urls)


def test_the_manifest_asks_for_the_least_it_needs() -> None:
    scopes = _manifest()["oauth_config"]["scopes"]
    assert set(scopes) == {"bot"}
    assert sorted(scopes["bot"]) == [
        "app_mentions:read",
        "channels:history",
        "chat:write",
        "commands",
        "groups:history",
        "reactions:write",
    ]


def test_the_procfile_starts_the_bot_over_http() -> None:
    assert (ROOT / "Procfile").read_text() == "web: python -m bot\n"
