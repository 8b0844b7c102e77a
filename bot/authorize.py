"""Authorizing Slack's requests without depending on Slack being up.

bolt's single-workspace authorization calls `auth.test` on the first request and answers 500
while that fails, so a bot started during a Slack outage lost every mention (Slack gives up after
its retries). Here `auth.test` is asked once it answers, within a short budget; until then a
request is authorized from what it carries (its team, its authorizations' bot user), the
listener acks and stores the run, and the publisher posts once Slack is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_client import error_code, is_transient

log = logging.getLogger("dagbot.slack")

AUTH_TEST_BUDGET = 1.0
"""Seconds a request may wait for `auth.test`: Slack wants its answer within 3."""

Authorize = Callable[..., Awaitable[AuthorizeResult]]


def outage_tolerant_authorize(
    client: AsyncWebClient, *, budget: float = AUTH_TEST_BUDGET
) -> Authorize:
    """An `authorize` function for bolt: `auth.test` once it answers, the request's own ids
    while it does not. A token Slack refuses (`invalid_auth`, revoked) still refuses requests."""
    # A closure rather than a class: bolt passes the arguments a function names.
    known: AuthorizeResult | None = None

    # Plain (not keyword-only) parameters: bolt passes those a function's signature names.
    async def authorize(
        enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        nonlocal known
        if known is not None:
            return known
        token = client.token
        try:
            async with asyncio.timeout(budget):
                response = await client.auth_test()
        except (
            SlackApiError,
            SlackClientError,
            aiohttp.ClientError,
            OSError,
            TimeoutError,
        ) as error:
            if isinstance(error, SlackApiError) and not is_transient(error):
                # bolt turns this into "not authorized": the token itself is refused.
                log.error("Slack refused the bot token: %s", error_code(error))
                raise
            log.warning(
                "auth.test unavailable (%s); taking the request's own ids", error_code(error)
            )
            return AuthorizeResult(
                enterprise_id=enterprise_id, team_id=team_id, user_id=user_id, bot_token=token
            )
        known = AuthorizeResult.from_auth_test_response(
            auth_test_response=response, bot_token=token, user_token=None
        )
        return known

    return authorize
