"""The MCP servers file, in the common `mcp.json` shape, read and checked at the boundary."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    ValidationError,
    field_validator,
)

from scheduler.errors import SchedulerError

SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_REPORTED_PROBLEMS = 5


class McpConfigError(SchedulerError):
    """The MCP servers file cannot be used; the message names the file and the problem."""


ApprovalRule = StrictBool | list[Annotated[str, Field(min_length=1)]]
"""`requireApproval`: true for every tool of the server, or the names of the tools that need it
(without the server prefix): a task calling one waits for a person's approval before it runs."""


class StdioServer(BaseModel):
    """A server started as a subprocess and spoken to over its stdin and stdout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["stdio"] | None = None
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    """Added to a minimal inherited environment (PATH, HOME, ...); nothing else is inherited."""
    cwd: str | None = None
    require_approval: ApprovalRule = Field(default=False, alias="requireApproval")

    def describe(self) -> str:
        # Only the command: arguments and env often carry tokens.
        return f"stdio: {self.command}"


class HttpServer(BaseModel):
    """A server reached over streamable HTTP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["http", "streamable-http", "streamableHttp"] | None = None
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    require_approval: ApprovalRule = Field(default=False, alias="requireApproval")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return url

    def describe(self) -> str:
        # Without userinfo or query string, which may hold credentials.
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def resolve_command(command: str, bin_dir: Path | None = None) -> str:
    """A bare command found beside the running interpreter (its venv's `bin`), else unchanged.

    Servers installed with dagbot (`mcp-server-time`) live in the same environment as dagbot,
    which is often not on PATH (`.venv/bin/python -m bot`); commands with a path, or not there,
    are left for the usual PATH lookup.
    """
    if os.sep in command or (os.altsep and os.altsep in command):
        return command
    # The interpreter's own directory, not its resolved target: a venv's python is a symlink.
    candidate = (bin_dir or Path(sys.executable).parent) / command
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return command


def _server_kind(value: Any) -> str:
    if isinstance(value, dict) and ("url" in value or value.get("type") not in (None, "stdio")):
        return "http"
    return "stdio"


ServerConfig = Annotated[
    Annotated[StdioServer, Tag("stdio")] | Annotated[HttpServer, Tag("http")],
    Discriminator(_server_kind),
]


class McpConfig(BaseModel):
    """`{"mcpServers": {"<name>": {"command": ...} | {"url": ...}}}`; names prefix tool names."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    servers: dict[str, ServerConfig] = Field(default_factory=dict, alias="mcpServers")

    def needs_approval(self, tool: str) -> bool:
        """Whether calling `<server>.<tool>` needs a person's approval first (requireApproval)."""
        server, _, name = tool.partition(".")
        config = self.servers.get(server)
        if config is None:
            return False
        rule = config.require_approval
        return rule if isinstance(rule, bool) else name in rule

    @field_validator("servers")
    @classmethod
    def _names(cls, servers: dict[str, Any]) -> dict[str, Any]:
        for name in servers:
            if not SERVER_NAME.match(name):
                raise ValueError(
                    f"server name {name!r} may contain only letters, digits, '-' and '_' "
                    "(it prefixes tool names as <server>.<tool>)"
                )
        return servers


def load_mcp_config(path: Path | None) -> McpConfig:
    """Read the MCP servers file; None means no servers. Raises McpConfigError, naming the file."""
    if path is None:
        return McpConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise McpConfigError(f"MCP servers file {path}: the file does not exist.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise McpConfigError(f"MCP servers file {path}: cannot be read ({error}).") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise McpConfigError(
            f"MCP servers file {path}: not valid JSON ({error.msg} at line {error.lineno}, "
            f"column {error.colno})."
        ) from None
    if not isinstance(data, dict) or "mcpServers" not in data:
        raise McpConfigError(
            f'MCP servers file {path}: expected an object with an "mcpServers" key, '
            'like {"mcpServers": {"time": {"command": "mcp-server-time"}}}.'
        )
    try:
        return McpConfig.model_validate(data)
    except ValidationError as error:
        raise McpConfigError(f"MCP servers file {path}: {describe_problems(error)}") from None


def describe_problems(error: ValidationError) -> str:
    """Each problem as `where: what`, where being the JSON path inside the file."""
    problems = []
    for problem in error.errors()[:MAX_REPORTED_PROBLEMS]:
        # Tags added by the discriminated union ("stdio", "http") are not part of the file's shape.
        where = ".".join(str(part) for part in problem["loc"] if part not in ("stdio", "http"))
        message = problem["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    more = error.error_count() - MAX_REPORTED_PROBLEMS
    suffix = f" (and {more} more)" if more > 0 else ""
    return "; ".join(problems) + suffix + "."
