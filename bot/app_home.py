"""The App Home tab: each user's recent runs with status, time and a link to the thread."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import home_view
from bot.slack_client import error_code
from scheduler.dag.state import Run
from storage.store import Store

log = logging.getLogger("dagbot.slack")

HOME_RUNS = 20


class AppHome:
    def __init__(self, client: AsyncWebClient, store: Store) -> None:
        self._client = client
        self._store = store

    async def refresh(self, user_id: str) -> None:
        """Publish the user's App Home tab. A Slack error is logged, not raised."""
        try:
            records = await self._store.recent_runs(requester=user_id, limit=HOME_RUNS)
            view = home_view([Run.from_record(r) for r in records])
            await self._client.views_publish(user_id=user_id, view=view)
        except (SlackApiError, SlackClientError) as error:
            log.warning("App Home of %s not refreshed: %s", user_id, error_code(error))
