"""The Slack Web API client, with the retry handlers slack_sdk leaves out by default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.budgeted_client import BudgetedWebClient, Holds, LeaseLapsed
from bot.rate_budget import RateBudget

SLACK_API_URL = "https://slack.com/api/"

# Errors after which trying the same call again later may succeed.
TRANSIENT_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",
    }
)


class GatewayErrorRetryHandler(AsyncServerErrorRetryHandler):
    """slack_sdk's 5xx retries, extended from 500/503 to every 5xx: a proxy or load balancer in
    front of Slack answers 502 and 504 (often as an HTML page) while Slack recovers."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and 500 <= response.status_code < 600


def make_client(
    token: str,
    base_url: str | None = None,
    *,
    rate_limit_retries: int = 2,
    budget: RateBudget | None = None,
    holds: Holds | None = None,
) -> BudgetedWebClient:
    """An AsyncWebClient that keeps within Slack's rate tiers (`budget`, one per workspace) and
    retries the 429s that still happen after Retry-After, plus connection and 5xx errors.

    `base_url` is SLACK_API_URL (None: Slack's own); a missing trailing slash is added, since
    slack_sdk joins method names onto it. `holds(run_id)`: whether this process may still
    write for a run (engine.holds); checked right before each call made for a run is sent.
    """
    handlers: list[AsyncRetryHandler] = [
        AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        GatewayErrorRetryHandler(max_retry_count=2),
    ]
    return BudgetedWebClient(
        budget=budget or RateBudget(),
        holds=holds,
        token=token,
        base_url=normalise_base_url(base_url),
        retry_handlers=handlers,
    )


def normalise_base_url(base_url: str | None) -> str:
    """Slack's API URL when unset; otherwise the given URL ending in exactly one slash."""
    if not base_url or not base_url.strip():
        return SLACK_API_URL
    return base_url.strip().rstrip("/") + "/"


def error_code(error: BaseException) -> str:
    """Slack's error code (`channel_not_found`, `ratelimited`, ...), `http_<status>` or
    `not_json` for answers that are not Slack's JSON, or else the exception's type name.

    Safe to log: it never contains the request, so never a token.
    """
    if isinstance(error, SlackApiError):
        status = _status(error)
        if status == 429:
            return "ratelimited"
        data = _data(error)
        if data is None:
            return f"http_{status}" if status and status != 200 else "not_json"
        code = data.get("error")
        return str(code) if code else f"http_{status or '?'}"
    return type(error).__name__


def is_transient(error: BaseException) -> bool:
    """True when the same Slack call may succeed later (rate limits, 5xx, network trouble,
    and any answer that is not Slack's JSON, such as a proxy's HTML error page)."""
    if isinstance(error, SlackApiError):
        status = _status(error)
        if status == 429 or status >= 500 or _data(error) is None:
            return True
        return error_code(error) in TRANSIENT_ERRORS
    if isinstance(error, SlackClientError):
        return False
    # LeaseLapsed: tried again once a renewal has said whether the run is still ours.
    return isinstance(error, aiohttp.ClientError | OSError | TimeoutError | LeaseLapsed)


def _status(error: SlackApiError) -> int:
    """The HTTP status, whatever slack_sdk put in `response` (its response, or aiohttp's)."""
    response = error.response
    status = getattr(response, "status_code", None)
    if status is None:
        status = getattr(response, "status", None)
    return status if isinstance(status, int) else 0


def _data(error: SlackApiError) -> Mapping[str, Any] | None:
    """Slack's JSON answer, or None when the body was not Slack's JSON (HTML, text, garbage)."""
    data = getattr(error.response, "data", None)
    if isinstance(data, Mapping) and "ok" in data:
        return data
    return None


def retry_after(error: BaseException) -> float | None:
    """The Retry-After of a 429 that slack_sdk's own retries did not absorb, in seconds."""
    if not isinstance(error, SlackApiError) or error.response is None:
        return None
    headers = getattr(error.response, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return None
    return None
