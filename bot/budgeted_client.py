"""The Slack client every call of dagbot goes through: each call first takes its rate budget.

Calls are urgent unless made inside `background_calls()`; the publisher marks a running plan's
intermediate edits so, and they then never use the share kept for first posts and final states.
The budget is keyed by the bot token: one token is one workspace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.rate_budget import RateBudget

_urgent: ContextVar[bool] = ContextVar("dagbot_slack_urgent", default=True)


@contextmanager
def background_calls() -> Iterator[None]:
    """Slack calls made inside this block are background calls (see bot.rate_budget)."""
    token = _urgent.set(False)
    try:
        yield
    finally:
        _urgent.reset(token)


class BudgetedWebClient(AsyncWebClient):
    """An AsyncWebClient whose calls wait for their turn in `budget` before they are sent."""

    def __init__(self, *, budget: RateBudget, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget = budget

    @property
    def workspace(self) -> str:
        """The budget's key for this client's workspace."""
        return self.token or ""

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        channel = _channel_of(kwargs)
        await self.budget.acquire(self.workspace, api_method, channel=channel, urgent=_urgent.get())
        return await super().api_call(api_method, **kwargs)


def _channel_of(kwargs: dict[str, Any]) -> str | None:
    for part in ("json", "data", "params"):
        body = kwargs.get(part)
        if isinstance(body, dict):
            channel = body.get("channel") or body.get("channel_id")
            if isinstance(channel, str) and channel:
                return channel
    return None
