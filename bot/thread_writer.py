"""Writing replies into a run's Slack thread: plain posts, and summaries posted whole.

What a workspace rejects (streaming, `markdown` blocks) is remembered per team and not tried
there again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import SlackMessage, classic_markdown_message, markdown_message
from bot.budgeted_client import BudgetedWebClient
from bot.capabilities import REFUSED_CONTENT, ChannelFacts, Feature
from bot.slack_client import error_code
from scheduler.dag.state import Run

log = logging.getLogger("dagbot.slack")


@dataclass(frozen=True, kw_only=True)
class SlackTarget:
    """Where a run lives in Slack, from the flat meta keys the intake records."""

    channel: str
    thread_ts: str
    team_id: str | None = None
    user: str | None = None

    @classmethod
    def of(cls, run: Run) -> SlackTarget | None:
        """None for runs that did not come from Slack (no channel in their meta)."""
        meta = run.meta
        channel, thread_ts = meta.get("channel"), meta.get("thread_ts")
        if not isinstance(channel, str) or not channel:
            return None
        if not isinstance(thread_ts, str) or not thread_ts:
            log.warning("run %s has a Slack channel but no thread_ts; not shown", run.id)
            return None
        team_id, user = meta.get("team_id"), meta.get("user") or run.requester
        return cls(
            channel=channel,
            thread_ts=thread_ts,
            team_id=team_id if isinstance(team_id, str) and team_id else None,
            user=user if isinstance(user, str) and user else None,
        )


class ThreadWriter:
    def __init__(self, client: AsyncWebClient, facts: ChannelFacts | None = None) -> None:
        self._client = client
        self.facts = facts or ChannelFacts()

    async def post_summary_part(
        self,
        target: SlackTarget,
        part: str,
        metadata: dict[str, Any],
        extra_blocks: Sequence[dict[str, Any]] = (),
    ) -> str:
        """Post one part of a summary whole (a summary is streamed only while it is written,
        by bot.summary_stream); `extra_blocks` go under the text (feedback buttons)."""
        return await self._post_summary_part(target, part, metadata, extra_blocks)

    def can_stream(self, target: SlackTarget) -> bool:
        """Whether a summary may be streamed to this thread's requester now.

        chat.startStream needs the recipient's user and team ids outside DMs, and a stream
        must be able to start and stop within Slack's Tier 2 budget.
        """
        if self.facts.refuses(Feature.STREAMING, target.team_id, target.channel):
            return False
        if not (target.channel.startswith("D") or (target.user and target.team_id)):
            return False
        return _stream_budget_free(self._client)

    def _summary_message(self, target: SlackTarget, part: str) -> SlackMessage:
        if self.facts.refuses(Feature.MARKDOWN_BLOCK, target.team_id, target.channel):
            return classic_markdown_message(part)
        return markdown_message(part)

    async def _post_summary_part(
        self,
        target: SlackTarget,
        part: str,
        metadata: dict[str, Any],
        extra_blocks: Sequence[dict[str, Any]],
    ) -> str:
        message = _with_blocks(self._summary_message(target, part), extra_blocks)
        try:
            return await self.post(target, message, metadata)
        except SlackApiError as error:
            if error_code(error) not in REFUSED_CONTENT or self.facts.refuses(
                Feature.MARKDOWN_BLOCK, target.team_id, target.channel
            ):
                raise
            log.warning("markdown block refused in channel %s; using mrkdwn", target.channel)
            self.facts.remember(Feature.MARKDOWN_BLOCK, target.team_id, target.channel)
            classic = _with_blocks(classic_markdown_message(part), extra_blocks)
            return await self.post(target, classic, metadata)

    async def post(
        self, target: SlackTarget, message: SlackMessage, metadata: dict[str, Any]
    ) -> str:
        """Post `message` as a reply in the run's thread; its ts."""
        response = await self._client.chat_postMessage(
            channel=target.channel,
            thread_ts=target.thread_ts,
            text=message.text,
            blocks=message.blocks,
            metadata=metadata,
        )
        return str(response["ts"])


def _with_blocks(message: SlackMessage, blocks: Sequence[dict[str, Any]]) -> SlackMessage:
    if not blocks:
        return message
    return SlackMessage(text=message.text, blocks=[*message.blocks, *blocks])


def _stream_budget_free(client: AsyncWebClient) -> bool:
    """Whether a stream can start and stop now within Slack's Tier 2 budget.

    Streaming is a nicety: when many summaries land at once, those past the budget are posted
    whole (chat.postMessage, budgeted per channel) rather than wait a minute for their turn.
    """
    if not isinstance(client, BudgetedWebClient):
        return True
    budget, workspace = client.budget, client.workspace
    return all(budget.delay(workspace, m) == 0.0 for m in ("chat.startStream", "chat.stopStream"))
