"""Start-up checks of the Slack tokens: a refused token stops start-up in one line (exit 2);
an unreachable Slack does not (one log line, and the bot carries on).

The bot token is checked with `auth.test`; the app token (Socket Mode) with
`apps.connections.open`, the call Socket Mode makes to connect, which refuses a bot token with
`not_allowed_token_type`. Neither call changes anything on Slack's side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import ConfigError
from bot.slack_client import error_code, is_transient, normalise_base_url

log = logging.getLogger("dagbot.startup")

REFUSED = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "not_allowed_token_type",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "team_access_not_granted",
    }
)
"""Slack's answers that mean the token itself will not do: no retry can help."""

HINTS = {
    "SLACK_BOT_TOKEN": "the Bot User OAuth Token (xoxb-) of the installed app",
    "SLACK_APP_TOKEN": "an app-level token (xapp-) with the connections:write scope",
}


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Tries of one check while Slack cannot be reached: `tries` in all, waiting `first`
    seconds after the first failure and twice as long after each next one."""

    tries: int = 4
    first: float = 1.0
    request_timeout: int = 10

    def delays(self) -> list[float]:
        return [self.first * 2**n for n in range(self.tries - 1)]


async def check_slack_tokens(
    bot_token: str,
    app_token: str | None,
    api_url: str | None,
    *,
    backoff: Backoff = Backoff(),
) -> None:
    """Check each token once Slack answers; ConfigError naming the variable when refused."""
    client = AsyncWebClient(base_url=normalise_base_url(api_url), timeout=backoff.request_timeout)
    checks: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("SLACK_BOT_TOKEN", lambda: client.auth_test(token=bot_token)),
    ]
    if app_token:
        checks.append(
            ("SLACK_APP_TOKEN", lambda: client.apps_connections_open(app_token=app_token))
        )
    for variable, call in checks:
        await _check(variable, call, backoff)


async def _check(variable: str, call: Callable[[], Awaitable[object]], backoff: Backoff) -> None:
    delays = backoff.delays()
    while True:
        try:
            await call()
            return
        except SlackApiError as error:
            code = error_code(error)
            if code in REFUSED:
                raise ConfigError(
                    f"{variable} was refused by Slack ({code}); it must be {HINTS[variable]}."
                ) from None
            if not is_transient(error):
                log.warning("could not check %s: Slack answered %s; carrying on", variable, code)
                return
            why = code
        except Exception as error:  # the network: aiohttp's errors, OSError, timeouts
            if not is_transient(error):
                log.warning("could not check %s (%s); carrying on", variable, error_code(error))
                return
            why = error_code(error)
        if not delays:
            log.warning(
                "could not reach Slack to check %s (%s, %d tries); carrying on",
                variable,
                why,
                backoff.tries,
            )
            return
        await asyncio.sleep(delays.pop(0))
