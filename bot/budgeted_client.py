"""The Slack client every call of dagbot goes through: each call first takes its rate budget.

Calls are urgent unless made inside `background_calls()`; the publisher marks a running plan's
intermediate edits so, and they then never use the share kept for first posts and final states.
The budget is keyed by the bot token: one token is one workspace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.rate_budget import RateBudget

_urgent: ContextVar[bool] = ContextVar("dagbot_slack_urgent", default=True)
_run: ContextVar[str | None] = ContextVar("dagbot_slack_run", default=None)

Holds = Callable[[str], bool]
"""Whether this process may still speak for a run."""


class LeaseLapsed(Exception):
    """This process may no longer hold the run it was writing for: the call was not sent."""


def speak_for(run_id: str) -> None:
    """The Slack calls of the current task from now on are made for run `run_id`: each is sent
    only while this process surely still holds that run (see `BudgetedWebClient`)."""
    _run.set(run_id)


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

    def __init__(self, *, budget: RateBudget, holds: Holds | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget = budget
        self.holds = holds
        """Checked right before each call is sent, after any wait for the budget: a process
        paused past its lease, or whose run was taken over meanwhile, sends nothing for it."""

    @property
    def workspace(self) -> str:
        """The budget's key for this client's workspace."""
        return self.token or ""

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        channel = _channel_of(kwargs)
        await self.budget.acquire(self.workspace, api_method, channel=channel, urgent=_urgent.get())
        run_id = _run.get()
        if self.holds is not None and run_id is not None and not self.holds(run_id):
            raise LeaseLapsed(f"not sent: this process may no longer hold run {run_id}")
        return await super().api_call(api_method, **kwargs)


def _channel_of(kwargs: dict[str, Any]) -> str | None:
    for part in ("json", "data", "params"):
        body = kwargs.get(part)
        if isinstance(body, dict):
            channel = body.get("channel") or body.get("channel_id")
            if isinstance(channel, str) and channel:
                return channel
    return None
