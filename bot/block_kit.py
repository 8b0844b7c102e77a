"""Slack's message limits, the message value every renderer returns, and text made safe for it.

Shared by the plan renderer (`bot.plan_blocks`) and the rest (`bot.blocks`), which re-exports
these names. `defuse_mentions` is the one escaping rule for text dagbot did not write itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bot.markdown import escape_mrkdwn
from bot.wording import TRUNCATED

MAX_BLOCKS = 50
MAX_HOME_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_MESSAGE_TEXT = 3900
"""Fallback `text` is kept short (notifications show it); Slack refuses past 40,000."""
MAX_MARKDOWN_TEXT = 12000
MAX_BLOCKS_TEXT = 11000
"""Budget for the text of all of one message's blocks: Slack refuses about 12,000
(`msg_blocks_too_long`, undocumented and approximate, hence the margin)."""
MAX_CONTEXT_TEXT = 2000


@dataclass(frozen=True, kw_only=True)
class SlackMessage:
    """What a chat.postMessage / chat.update sends: fallback `text` plus block dicts."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


# A Slack special token: `<!channel>`, `<!here>`, `<!everyone>`, `<!subteam^S1|@team>`,
# `<@U123>`, `<#C123>`, `<!date^…>`. Slack makes these live in mrkdwn, markdown and `text`.
_SPECIAL = re.compile(r"<([!@#][^<>\n]*)>")


def defuse_mentions(text: str) -> str:
    """Text from a model or a tool with its mentions and broadcasts made inert.

    `<!channel>` becomes `&lt;!channel&gt;`: shown as written, pinging nobody. Every renderer
    passes model and tool text through this (mrkdwn via `escape_mrkdwn`, which escapes more);
    only mentions dagbot adds itself (the requester, dates) are live. Rich text needs nothing:
    its text elements are never parsed for mentions.
    """
    return _SPECIAL.sub(lambda m: f"&lt;{m.group(1)}&gt;", text)


def truncate_mrkdwn(text: str, limit: int) -> str:
    """Escape then truncate, never leaving half an entity (`&am`) before the marker."""
    escaped = escape_mrkdwn(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: max(0, limit - len(TRUNCATED))]
    cut = re.sub(r"&[a-z]*$", "", cut)
    return cut.rstrip() + TRUNCATED


def short_id(run_id: str) -> str:
    return run_id[:8]


def blocks_text_length(blocks: Iterable[Any]) -> int:
    """Characters of visible text (texts, titles) across blocks, nested ones included."""
    total = 0

    def visit(value: Any) -> None:
        nonlocal total
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("text", "title") and isinstance(item, str):
                    total += len(item)
                elif key not in ("action_id", "block_id", "value", "type", "url", "task_id"):
                    visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(list(blocks))
    return total
