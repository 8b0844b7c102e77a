"""The bolt AsyncApp: dagbot's Slack client, request signature checks, and its listeners."""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import (
    warning_client_prioritized_and_token_skipped,
    warning_token_skipped,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.authorize import outage_tolerant_authorize
from bot.intake import Intake
from bot.listeners import register_listeners


class _QuietTokenNotice(logging.Filter):
    """bolt reads SLACK_BOT_TOKEN itself and warns that the client's token wins: it is the same."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in (
            warning_client_prioritized_and_token_skipped(),
            warning_token_skipped(),
        )


def build_app(client: AsyncWebClient, intake: Intake, *, signing_secret: str | None) -> AsyncApp:
    """An AsyncApp whose own Web API calls go through `client` (SLACK_API_URL, retry handlers).

    Every HTTP request must carry a valid, fresh `X-Slack-Signature` (forged or stale: 401).
    Socket Mode requests carry no signature; there `signing_secret` may be None.

    Requests are authorized without waiting on Slack (`bot.authorize`): a bot started during a
    Slack outage still acks and keeps every mention.

    Listeners run before the response is sent (`process_before_response`): each one only claims
    the delivery, records the run and hands slow work to tasks the intake owns, so the answer
    still leaves well within Slack's 3 seconds, and bolt never starts tasks nobody references.
    """
    logger = logging.getLogger("dagbot.bolt")
    if not any(isinstance(f, _QuietTokenNotice) for f in logger.filters):
        logger.addFilter(_QuietTokenNotice())
    app = AsyncApp(
        client=client,
        authorize=outage_tolerant_authorize(client),
        signing_secret=signing_secret or "",
        request_verification_enabled=True,
        process_before_response=True,
        logger=logger,
        name="dagbot",
    )
    register_listeners(app, intake)
    return app
