"""Markdown for Slack: split into parts that fit a message, and approximated in mrkdwn."""

from __future__ import annotations

import re


def escape_mrkdwn(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S[^\n]*$")


def split_markdown(text: str, limit: int) -> list[str]:
    """Split markdown into parts of at most `limit` characters, at the cleanest boundary.

    Paragraphs stay whole where they fit; otherwise lines, then words, then characters. A code
    fence cut in two is closed at the end of one part and reopened at the start of the next.
    """
    if limit < 40:
        raise ValueError("limit is too small to split markdown cleanly")
    text = text.strip("\n")
    if len(text) <= limit:
        return [text] if text else []
    parts: list[str] = []
    current: list[str] = []
    for paragraph in _paragraphs(text):
        if _joined_size([*current, paragraph]) <= limit:
            current.append(paragraph)
            continue
        # A heading belongs with what follows it, not at the end of the previous part.
        carry = [current.pop()] if len(current) > 1 and _HEADING.match(current[-1]) else []
        if current:
            parts.append("\n\n".join(current))
        current = carry
        if _joined_size([*current, paragraph]) <= limit:
            current.append(paragraph)
            continue
        if current:
            parts.append("\n\n".join(current))
            current = []
        if len(paragraph) <= limit:
            current = [paragraph]
            continue
        pieces = _split_long_paragraph(paragraph, limit)
        parts.extend(pieces[:-1])
        current = [pieces[-1]]
    if current:
        parts.append("\n\n".join(current))
    return parts


def _joined_size(paragraphs: list[str]) -> int:
    return sum(len(p) for p in paragraphs) + 2 * max(0, len(paragraphs) - 1)


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs; a fenced code block is never split by its blank lines."""
    paragraphs: list[str] = []
    current: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if match:
            fence = None if fence else match.group(1)
        if not line.strip() and fence is None:
            if current:
                paragraphs.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        paragraphs.append("\n".join(current))
    return paragraphs


def _split_long_paragraph(paragraph: str, limit: int) -> list[str]:
    close = "```"
    pieces: list[str] = []
    current: list[str] = []
    size = 0  # len("\n".join(current))
    fence: str | None = None  # the (shortened) opening line of the fence we are inside
    for line in paragraph.split("\n"):
        for segment in _split_line(line, limit - len(fence or "") - len(close) - 4):
            extra = len(segment) + (1 if current else 0)
            closing = len(close) + 1 if fence else 0
            if current and size + extra + closing > limit:
                pieces.append("\n".join([*current, close] if fence else current))
                current = [fence] if fence else []
                size = len(fence) if fence else 0
                extra = len(segment) + (1 if current else 0)
            current.append(segment)
            size += extra
        if _FENCE.match(line):
            fence = None if fence else line.strip()[:20]
    if current:
        pieces.append("\n".join(current))
    return pieces


def _split_line(line: str, limit: int) -> list[str]:
    if len(line) <= limit:
        return [line]
    segments: list[str] = []
    rest = line
    while len(rest) > limit:
        cut = rest.rfind(" ", 0, limit + 1)
        if cut <= limit // 2:
            cut = limit
        segments.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        segments.append(rest)
    return segments


def markdown_to_mrkdwn(markdown: str) -> str:
    """Standard markdown approximated in Slack mrkdwn: bold, headings, links, bullets."""
    out: list[str] = []
    fence = False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            fence = not fence
            out.append("```")
            continue
        if fence:
            out.append(escape_mrkdwn(line))
            continue
        line = escape_mrkdwn(line)
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.*)$", line)
        if heading:
            line = f"*{heading.group(1).strip()}*"
        line = re.sub(r"^(\s*)[-*+]\s+", lambda m: f"{m.group(1)}• ", line)
        line = re.sub(r"\*\*(.+?)\*\*|__(.+?)__", lambda m: f"*{m.group(1) or m.group(2)}*", line)
        line = re.sub(r"\[([^\]]+)\]\((https?://[^)\s]+)\)", r"<\2|\1>", line)
        out.append(line)
    return "\n".join(out)
