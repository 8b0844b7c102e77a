"""Writing replies into a run's Slack thread: plain posts, and summaries streamed or whole.

What a channel refuses (streaming, `markdown` blocks) is remembered for that channel, for a
while (`bot.capabilities`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import (
    SlackMessage,
    classic_markdown_message,
    defuse_mentions,
    markdown_message,
)
from bot.budgeted_client import BudgetedWebClient
from bot.capabilities import REFUSED_CONTENT, ChannelFacts, Feature
from bot.slack_client import error_code, is_transient
from scheduler.dag.state import Run

log = logging.getLogger("dagbot.slack")

STREAM_BUFFER = 1024


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
        self, target: SlackTarget, part: str, metadata: dict[str, Any]
    ) -> str:
        """Post one part of a summary: streamed where the workspace allows, else whole."""
        if self._can_stream(target):
            streamed = await self._stream_summary_part(target, part, metadata)
            if streamed is not None:
                return streamed
        return await self._post_summary_part(target, part, metadata)

    def _can_stream(self, target: SlackTarget) -> bool:
        # chat.startStream needs the recipient's user and team ids outside DMs.
        if not (target.user and target.team_id) or self.facts.refuses(
            Feature.STREAMING, target.team_id, target.channel
        ):
            return False
        return _stream_budget_free(self._client)

    async def _stream_summary_part(
        self, target: SlackTarget, part: str, metadata: dict[str, Any]
    ) -> str | None:
        """The ts of the streamed message, or None when the part must be posted whole."""
        stream = await self._client.chat_stream(
            channel=target.channel,
            thread_ts=target.thread_ts,
            recipient_team_id=target.team_id,
            recipient_user_id=target.user,
            buffer_size=STREAM_BUFFER,
        )
        try:
            # Streamed text is markdown Slack renders: model-written mentions are defused.
            for piece in _stream_pieces(defuse_mentions(part)):
                await stream.append(markdown_text=piece)
            await stream.stop(metadata=metadata)
        except Exception as error:
            log.warning("streaming the summary failed (%s); posting it whole", error_code(error))
            if stream.ts is None:
                if not is_transient(error):
                    self.facts.remember(Feature.STREAMING, target.team_id, target.channel)
                return None
            # The stream began: complete that message in place rather than posting another.
            message = self._summary_message(target, part)
            try:
                await self._client.chat_update(
                    channel=target.channel,
                    ts=stream.ts,
                    text=message.text,
                    blocks=message.blocks,
                    metadata=metadata,
                )
            except SlackApiError as update_error:
                log.warning("completing the streamed summary failed (%s)", error_code(update_error))
                return None
        return stream.ts

    def _summary_message(self, target: SlackTarget, part: str) -> SlackMessage:
        if self.facts.refuses(Feature.MARKDOWN_BLOCK, target.team_id, target.channel):
            return classic_markdown_message(part)
        return markdown_message(part)

    async def _post_summary_part(
        self, target: SlackTarget, part: str, metadata: dict[str, Any]
    ) -> str:
        message = self._summary_message(target, part)
        try:
            return await self.post(target, message, metadata)
        except SlackApiError as error:
            if error_code(error) not in REFUSED_CONTENT or self.facts.refuses(
                Feature.MARKDOWN_BLOCK, target.team_id, target.channel
            ):
                raise
            log.warning("markdown block refused in channel %s; using mrkdwn", target.channel)
            self.facts.remember(Feature.MARKDOWN_BLOCK, target.team_id, target.channel)
            return await self.post(target, classic_markdown_message(part), metadata)

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


def _stream_budget_free(client: AsyncWebClient) -> bool:
    """Whether a stream can start and stop now within Slack's Tier 2 budget.

    Streaming is a nicety: when many summaries land at once, those past the budget are posted
    whole (chat.postMessage, budgeted per channel) rather than wait a minute for their turn.
    """
    if not isinstance(client, BudgetedWebClient):
        return True
    budget, workspace = client.budget, client.workspace
    return all(budget.delay(workspace, m) == 0.0 for m in ("chat.startStream", "chat.stopStream"))


def _stream_pieces(markdown: str) -> list[str]:
    """Paragraph-sized pieces that join back to exactly `markdown`."""
    pieces = markdown.split("\n\n")
    return [piece + "\n\n" for piece in pieces[:-1]] + [pieces[-1]]
