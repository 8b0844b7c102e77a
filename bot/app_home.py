"""The App Home tab: each user's recent runs with status, time and a link to the thread."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import home_view
from bot.slack_client import error_code
from scheduler.dag.run_records import RunRecords

log = logging.getLogger("dagbot.slack")

HOME_RUNS = 20


class AppHome:
    def __init__(self, client: AsyncWebClient, records: RunRecords) -> None:
        self._client = client
        self._records = records
        # user -> whether another refresh was asked for while one is being published.
        self._publishing: dict[str, bool] = {}

    async def refresh(self, user_id: str) -> None:
        """Publish the user's App Home tab. A Slack error is logged, not raised.

        Refreshes asked for while one is in flight for the same user become one more publish
        when it ends (many runs of one user finishing together cost two views.publish, not one
        each: the method is Tier 4).
        """
        if user_id in self._publishing:
            self._publishing[user_id] = True
            return
        self._publishing[user_id] = False
        try:
            while True:
                await self._publish(user_id)
                if not self._publishing[user_id]:
                    return
                self._publishing[user_id] = False
        finally:
            del self._publishing[user_id]

    async def _publish(self, user_id: str) -> None:
        try:
            runs = await self._records.recent_runs(requester=user_id, limit=HOME_RUNS)
            view = home_view(runs)
            await self._client.views_publish(user_id=user_id, view=view)
        except (SlackApiError, SlackClientError) as error:
            log.warning("App Home of %s not refreshed: %s", user_id, error_code(error))
