"""Markdown as Slack rich text (bold, italic, code, links), and the URLs a text cites.

Task-card `details` and `output` take one `rich_text` block, whose `text` elements are shown
literally: asterisks written by a model would show as asterisks. Here the common inline markdown
becomes styled elements instead. Rich text is inert by construction (a mention or broadcast is
its own element type, never parsed out of text), so model text needs no escaping here.
Slack refuses an empty `text` element: none is ever emitted.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from bot.wording import truncate

# One inline token: a code span, bold, italic, a markdown link, or a bare URL.
_INLINE = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|\*\*(?P<bold>[^*\n]+?)\*\*|__(?P<bold2>[^_\n]+?)__"
    r"|(?<![\w*])\*(?P<italic>[^*\s][^*\n]*?)\*(?![\w*])"
    r"|(?<![\w_])_(?P<italic2>[^_\s][^_\n]*?)_(?![\w_])"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<href>https?://[^)\s]+)\)"
    r"|(?P<url>https?://[^\s<>()\[\]\"'`]+[^\s<>()\[\]\"'`.,;:!?])"
)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_BULLET = re.compile(r"^(\s*)[-*+]\s+")
_URL = re.compile(r"https?://[^\s<>()\[\]\"'`]+[^\s<>()\[\]\"'`.,;:!?]")

MAX_SOURCES = 5


def markdown_elements(markdown: str) -> list[dict[str, Any]]:
    """Rich text elements (`text` with styles, `link`) for inline markdown; never an empty one."""
    lines = []
    for line in markdown.split("\n"):
        line = _HEADING.sub("", line)
        line = _BULLET.sub(lambda m: f"{m.group(1)}• ", line)
        lines.append(line)
    text = "\n".join(lines)
    elements: list[dict[str, Any]] = []
    position = 0
    for match in _INLINE.finditer(text):
        _plain(elements, text[position : match.start()])
        position = match.end()
        groups = match.groupdict()
        if groups["code"] is not None:
            _plain(elements, groups["code"], {"code": True})
        elif groups["bold"] is not None or groups["bold2"] is not None:
            _plain(elements, groups["bold"] or groups["bold2"] or "", {"bold": True})
        elif groups["italic"] is not None or groups["italic2"] is not None:
            _plain(elements, groups["italic"] or groups["italic2"] or "", {"italic": True})
        elif groups["href"] is not None:
            elements.append({"type": "link", "url": groups["href"], "text": groups["label"]})
        else:
            elements.append({"type": "link", "url": groups["url"]})
    _plain(elements, text[position:])
    return elements


def rich_text(markdown: str, limit: int) -> dict[str, Any] | None:
    """One `rich_text` block for `markdown` cut to `limit` characters; None when it is blank."""
    cut = truncate(markdown.strip(), limit)
    elements = markdown_elements(cut)
    if not elements:
        return None
    return {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": elements}]}


def plain_rich_text(text: str) -> dict[str, Any] | None:
    """A `rich_text` block showing `text` as it is (no markdown); None when it is blank."""
    if not text.strip():
        return None
    section = {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
    return {"type": "rich_text", "elements": [section]}


def rich_text_length(block: dict[str, Any] | None) -> int:
    """Characters of visible text in a rich text block (what Slack counts toward its cap)."""
    if block is None:
        return 0
    total = 0
    for section in block.get("elements", []):
        for element in section.get("elements", []):
            total += len(str(element.get("text") or element.get("url") or ""))
    return total


def cited_urls(text: str, limit: int = MAX_SOURCES) -> list[str]:
    """The distinct http(s) URLs in `text`, in order of appearance, at most `limit`."""
    found: list[str] = []
    for match in _URL.finditer(text):
        url = match.group(0)
        if url not in found:
            found.append(url)
        if len(found) == limit:
            break
    return found


def url_sources(text: str, limit: int = MAX_SOURCES) -> list[dict[str, Any]]:
    """Task-card `sources` (url elements) for the URLs `text` cites, each labelled by its host."""
    sources = []
    for url in cited_urls(text, limit):
        parts = urlsplit(url)
        label = (parts.netloc + parts.path).rstrip("/") or url
        sources.append({"type": "url", "url": url, "text": truncate(label, 60, "…")})
    return sources


def _plain(elements: list[dict[str, Any]], text: str, style: dict[str, bool] | None = None) -> None:
    if not text:
        return
    element: dict[str, Any] = {"type": "text", "text": text}
    if style:
        element["style"] = style
    elements.append(element)
