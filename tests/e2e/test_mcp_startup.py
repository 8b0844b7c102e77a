"""`python -m bot` serves at once, whatever its MCP servers do at start-up."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.e2e.slack_harness import bot_env
from tests.e2e.test_slack_process import BotProcess, free_port
from tests.fakes.mcp_test_server import stdio_entry
from tests.fakes.openai_server import fake_openai_server
from tests.fakes.slack_api import fake_slack_server


async def test_healthz_answers_while_a_hanging_mcp_server_is_still_connecting(
    tmp_path: Path,
) -> None:
    hanging = tmp_path / "hanging-mcp.json"
    hanging.write_text(
        json.dumps({"mcpServers": {"hang": stdio_entry(MCP_TEST_SERVER_HANG_AT_START="1")}})
    )
    async with fake_slack_server() as slack, fake_openai_server() as openai:
        env = {
            **bot_env(slack, openai, tmp_path, port=free_port()),
            "DAGBOT_MCP_CONFIG": str(hanging),
        }

        bot = await BotProcess.start(env, tmp_path)  # returns once the bot says it listens
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{bot.base_url}/healthz") as answer,
            ):
                health = (answer.status, await answer.json())
            # The hanging server's first attempt lasts its 30 s connect timeout and ends with a
            # "failed to start" line; the bot served before any such line.
            not_yet = [line for line in bot.lines if "'hang'" in line]
        finally:
            assert await bot.stop() == 0, bot.log

    assert health == (200, {"ok": True})
    assert not_yet == []
