"""Capture the `tools/list` of the MCP reference servers into a JSON fixture, once.

    .venv/bin/pip install mcp-server-time mcp-server-git mcp-server-fetch
    .venv/bin/python -m benchmarks.capture_catalogues      # needs node's npx for the npm servers

Writes benchmarks/fixtures/reference_catalogues.json: for each server, how it was started, its
package version where known, and its tools exactly as `tools/list` gave them (camelCase, as on the
wire). The tool-selection benchmark reads that file, so its figures do not depend on what is
installed when it runs. A server that cannot be started is reported and left out.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

FIXTURE = Path(__file__).with_name("fixtures") / "reference_catalogues.json"
CONNECT_TIMEOUT = 120.0


def _python_server(script: str, *args: str) -> list[str]:
    return [str(Path(sys.executable).with_name(script)), *args]


def servers(scratch: Path) -> dict[str, tuple[list[str], str]]:
    """Each reference server: its command line, and the package it comes from."""
    repo = scratch / "repo"
    repo.mkdir(exist_ok=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return {
        "time": (_python_server("mcp-server-time", "--local-timezone", "UTC"), "mcp-server-time"),
        "git": (_python_server("mcp-server-git", "--repository", str(repo)), "mcp-server-git"),
        "fetch": (_python_server("mcp-server-fetch"), "mcp-server-fetch"),
        "everything": (
            ["npx", "-y", "@modelcontextprotocol/server-everything"],
            "@modelcontextprotocol/server-everything",
        ),
        "filesystem": (
            ["npx", "-y", "@modelcontextprotocol/server-filesystem", str(scratch)],
            "@modelcontextprotocol/server-filesystem",
        ),
        "memory": (
            ["npx", "-y", "@modelcontextprotocol/server-memory"],
            "@modelcontextprotocol/server-memory",
        ),
    }


async def list_tools(command: list[str], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every tool of the server started by `command`, as the wire shows it."""
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    tools: list[dict[str, Any]] = []
    async with Client(stdio_client(params)) as client:
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor)
            tools.extend(
                tool.model_dump(mode="json", by_alias=True, exclude_none=True)
                for tool in page.tools
            )
            cursor = page.next_cursor
            if cursor is None:
                return tools


def package_version(package: str) -> str | None:
    if package.startswith("@"):
        npm = shutil.which("npm")
        if npm is None:
            return None
        found = subprocess.run(
            [npm, "view", package, "version"], capture_output=True, text=True, check=False
        )
        return found.stdout.strip() or None
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


async def _try_list_tools(name: str, command: list[str]) -> list[dict[str, Any]] | None:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await list_tools(command)
    except* Exception as group:
        print(f"{name}: could not be captured: {group.exceptions[0]!r}", file=sys.stderr)
    return None


async def capture() -> dict[str, Any]:
    captured: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dagbot-capture-") as scratch:
        for name, (command, package) in servers(Path(scratch)).items():
            tools = await _try_list_tools(name, command)
            if tools is None:
                continue
            captured[name] = {
                "package": package,
                "version": package_version(package),
                "tools": tools,
            }
            print(f"{name}: {len(tools)} tools", file=sys.stderr)
    return captured


def main() -> None:
    captured = asyncio.run(capture())
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(captured, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    total = sum(len(server["tools"]) for server in captured.values())
    print(f"wrote {total} tools of {len(captured)} servers to {FIXTURE}", file=sys.stderr)


if __name__ == "__main__":
    main()
