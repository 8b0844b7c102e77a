"""Configuration, read once from the environment (and a .env file) into a frozen object."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.dag.plan import TaskKind
from scheduler.dag.retry import PLANNING, RetryPolicies, RetryPolicy
from scheduler.planning.shortlist import DEFAULT_MAX_TOOL_TOKENS, DEFAULT_MAX_TOOLS
from scheduler.tools.reconnect import PING_INTERVAL, STARTUP_WAIT

DEFAULT_MODEL = "gpt-5-mini"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_api_url: str | None = Field(default=None, alias="SLACK_API_URL")
    slack_clock_speed: float = Field(default=1.0, gt=0, le=1000, alias="DAGBOT_SLACK_CLOCK_SPEED")
    """How many times faster than the wall clock the Slack at SLACK_API_URL counts its rate
    windows: 1 for Slack itself; more only against a fake Slack whose clock runs faster."""
    port: int = Field(default=3000, ge=1, le=65535, alias="PORT")
    host: str = Field(default="0.0.0.0", min_length=1, alias="DAGBOT_HOST")

    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    model: str = Field(default=DEFAULT_MODEL, min_length=1, alias="DAGBOT_MODEL")
    llm_timeout: float = Field(default=120.0, gt=0, alias="DAGBOT_LLM_TIMEOUT")

    database_url: str = Field(default="sqlite:///dagbot.sqlite3", alias="DATABASE_URL")
    lease_seconds: float = Field(default=30.0, gt=0, le=3600, alias="DAGBOT_LEASE_SECONDS")
    mcp_config: Path | None = Field(default=None, alias="DAGBOT_MCP_CONFIG")
    mcp_startup_wait: float = Field(
        default=STARTUP_WAIT, ge=0, le=600, alias="DAGBOT_MCP_STARTUP_WAIT"
    )
    mcp_ping_interval: float = Field(
        default=PING_INTERVAL, ge=0, le=3600, alias="DAGBOT_MCP_PING_INTERVAL"
    )

    max_concurrency: int = Field(default=8, ge=1, le=256, alias="DAGBOT_MAX_CONCURRENCY")
    max_total_concurrency: int = Field(
        default=32, ge=1, le=1024, alias="DAGBOT_MAX_TOTAL_CONCURRENCY"
    )
    task_timeout: float = Field(default=300.0, gt=0, alias="DAGBOT_TASK_TIMEOUT")
    max_tasks: int = Field(default=50, ge=2, le=500, alias="DAGBOT_MAX_TASKS")
    max_goal_chars: int = Field(default=4000, ge=10, alias="DAGBOT_MAX_GOAL_CHARS")
    max_replans: int = Field(default=2, ge=0, le=10, alias="DAGBOT_MAX_REPLANS")
    max_attempts: str = Field(default="3", alias="DAGBOT_MAX_ATTEMPTS")
    retry_base_delay: float = Field(default=0.5, gt=0, alias="DAGBOT_RETRY_BASE_DELAY")
    retry_max_delay: float = Field(default=20.0, gt=0, alias="DAGBOT_RETRY_MAX_DELAY")
    approvers: str = Field(default="", alias="DAGBOT_APPROVERS")
    approval_timeout: float = Field(default=24 * 3600.0, gt=0, alias="DAGBOT_APPROVAL_TIMEOUT")

    @field_validator("approvers")
    @classmethod
    def _approvers_parse(cls, value: str) -> str:
        parse_approvers(value)
        return value

    def approver_ids(self) -> frozenset[str]:
        """DAGBOT_APPROVERS: who may approve any run's sensitive tasks, besides its requester."""
        return parse_approvers(self.approvers)

    @field_validator("max_attempts")
    @classmethod
    def _attempts_parse(cls, value: str) -> str:
        parse_attempts(value)
        return value

    def retry_policies(self) -> RetryPolicies:
        """DAGBOT_MAX_ATTEMPTS and the delays as one policy per task kind and for planning."""
        default, overrides = parse_attempts(self.max_attempts)

        def policy(attempts: int) -> RetryPolicy:
            return RetryPolicy(
                max_attempts=attempts,
                base_delay=self.retry_base_delay,
                max_delay=self.retry_max_delay,
            )

        return RetryPolicies(
            default=policy(default),
            overrides={key: policy(attempts) for key, attempts in overrides.items()},
        )

    planner_max_tools: int = Field(
        default=DEFAULT_MAX_TOOLS, ge=1, le=1000, alias="DAGBOT_PLANNER_MAX_TOOLS"
    )
    planner_max_tool_tokens: int = Field(
        default=DEFAULT_MAX_TOOL_TOKENS, ge=100, alias="DAGBOT_PLANNER_MAX_TOOL_TOKENS"
    )

    def mcp_config_path(self) -> Path | None:
        """DAGBOT_MCP_CONFIG, else ./mcp.json when it exists, else None (no tools)."""
        if self.mcp_config is not None:
            return self.mcp_config
        default = Path("mcp.json")
        return default if default.exists() else None

    def require(self, *variables: str) -> None:
        """Stop with one line naming the first of `variables` that is unset or empty."""
        fields = {(info.alias or name): name for name, info in type(self).model_fields.items()}
        for variable in variables:
            value = getattr(self, fields[variable])
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if not value:
                raise ConfigError(f"{variable} is not set; it is required to run this command.")

    def require_llm_key(self) -> None:
        """OPENAI_API_KEY is needed against OpenAI itself; with OPENAI_BASE_URL it is optional,
        since local OpenAI-compatible servers (Ollama, vLLM, llama.cpp) usually take none."""
        key = self.openai_api_key.get_secret_value() if self.openai_api_key else ""
        if not key and not self.openai_base_url:
            raise ConfigError(
                "OPENAI_API_KEY is not set: set it to use OpenAI, or set OPENAI_BASE_URL to use "
                "an OpenAI-compatible server."
            )


RETRY_KEYS = (*(kind.value for kind in TaskKind), PLANNING)


def parse_attempts(text: str) -> tuple[int, dict[str, int]]:
    """`"3"` or `"3,tool=5,planning=2"`: attempts for everything, then per task kind or planning.

    Raises ValueError with a message naming what is wrong.
    """
    default: int | None = None
    overrides: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        key, _, number = item.rpartition("=")
        key = key.strip()
        if key and key not in RETRY_KEYS:
            raise ValueError(f"unknown kind {key!r}; use one of {', '.join(RETRY_KEYS)}")
        if not number.strip().isdigit() or int(number) < 1:
            raise ValueError(f"{item!r} is not a number of attempts of at least 1")
        if key:
            overrides[key] = int(number)
        elif default is None:
            default = int(number)
        else:
            raise ValueError("give the number for every kind once, before the per-kind ones")
    return (3 if default is None else default), overrides


SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


def parse_approvers(text: str) -> frozenset[str]:
    """`"U012AB3CD, U045EF6GH"`: Slack user ids, comma-separated (blank items ignored).

    Raises ValueError naming the first item that is not a user id (a name or `@handle` would
    silently match nobody).
    """
    ids = [item.strip() for item in text.split(",") if item.strip()]
    for item in ids:
        if not SLACK_USER_ID.match(item):
            raise ValueError(f"{item!r} is not a Slack user id (like U012AB3CD)")
    return frozenset(ids)


def load_settings() -> Settings:
    """Read the environment once; a malformed value raises ConfigError naming its variable."""
    try:
        return Settings()
    except ValidationError as error:
        first = error.errors()[0]
        variable = ".".join(str(part) for part in first["loc"]) or "configuration"
        raise ConfigError(f"{variable} is invalid: {first['msg']}.") from None
