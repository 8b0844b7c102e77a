"""Messages that must reach a run's thread exactly once: the plan, each summary part, an error.

Each such post records its intent in the store (`delivery_posts`) before it is sent and its ts
after, and carries Slack message metadata naming it (`dagbot_<kind>`, run id, key). A crash
between the two leaves an intent without a ts; the next attempt then looks for the message in
the thread once (`conversations.replies`) instead of posting it twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.thread_writer import SlackTarget
from scheduler.dag.run_records import RunRecords
from storage.records import Delivery

REPLIES_PAGES = 10

Send = Callable[[dict[str, Any]], Awaitable[str]]


class DeliveryBook:
    """One run's delivery state: the stored `Delivery`, kept current as this process writes it.

    Only the run's publisher worker writes it, so the in-memory copy is the truth between
    writes; each write is one statement (no read-modify-write of a shared blob).
    """

    def __init__(self, records: RunRecords, run_id: str) -> None:
        self._records = records
        self.current = Delivery(run_id=run_id)
        self._saved = False
        # Keys whose last post Slack answered with an error: certainly not posted, so the next
        # attempt need not look for them in the thread.
        self.refused: set[str] = set()

    async def load(self) -> Delivery:
        """Read the stored state (at a worker's first sync, and after a restart)."""
        self.current = await self._records.delivery(self.current.run_id)
        return self.current

    async def ensure(self) -> None:
        """Create the run's delivery row, so a restart knows this run is shown in Slack."""
        if not self._saved:
            await self._records.save_delivery(self.current)
            self._saved = True

    async def update(self, **changes: Any) -> None:
        """Change and store the delivery's own fields (plan_message, plan_style, ...)."""
        updated = replace(self.current, **changes)
        if updated != self.current or not self._saved:
            await self._records.save_delivery(updated)
            self._saved = True
        self.current = updated

    async def intend(self, key: str) -> None:
        await self._records.record_post_intent(self.current.run_id, key)
        self.current = replace(self.current, posts={**self.current.posts, key: None})

    async def posted(self, key: str, message: str) -> None:
        await self._records.record_post(self.current.run_id, key, message)
        self.current = replace(self.current, posts={**self.current.posts, key: message})


class Outbox:
    """Posts each keyed message of a run at most once, across retries and restarts."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def post_once(
        self, book: DeliveryBook, target: SlackTarget, key: str, kind: str, send: Send
    ) -> str:
        """The ts of message `key`: the one already posted, or the one `send` posts now."""
        posts = book.current.posts
        posted = posts.get(key)
        if posted:
            return posted
        run_id = book.current.run_id
        if key in posts and key not in book.refused:
            # An earlier attempt may have reached Slack without us learning its ts.
            found = await self._find_posted(target, run_id, key)
            if found is not None:
                await book.posted(key, found)
                return found
        else:
            await book.intend(key)
        metadata = {"event_type": f"dagbot_{kind}", "event_payload": {"run_id": run_id, "key": key}}
        try:
            ts = await send(metadata)
        except SlackApiError as error:
            if _answered(error):
                book.refused.add(key)
            raise
        book.refused.discard(key)
        await book.posted(key, ts)
        return ts

    async def _find_posted(self, target: SlackTarget, run_id: str, key: str) -> str | None:
        cursor: str | None = None
        for _ in range(REPLIES_PAGES):
            response = await self._client.conversations_replies(
                channel=target.channel,
                ts=target.thread_ts,
                include_all_metadata=True,
                limit=200,
                cursor=cursor,
            )
            for message in response.get("messages") or []:
                metadata = _dict(message.get("metadata"))
                payload = _dict(metadata.get("event_payload"))
                if (
                    str(metadata.get("event_type", "")).startswith("dagbot_")
                    and payload.get("run_id") == run_id
                    and payload.get("key") == key
                ):
                    return str(message["ts"])
            cursor = _dict(response.get("response_metadata")).get("next_cursor") or None
            if cursor is None:
                break
        return None


def _answered(error: SlackApiError) -> bool:
    """Whether Slack itself refused the call (so nothing was posted), not a proxy or a 5xx."""
    status = error.response.status_code if error.response is not None else 0
    return status in (200, 429)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
