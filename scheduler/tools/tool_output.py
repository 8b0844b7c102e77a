"""An MCP tool result as the text a later task (or an LLM) reads."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

NO_CONTENT = "(the tool returned no content)"


def result_text(result: CallToolResult) -> str:
    """Text parts joined; structured content as JSON; images, audio and resources described.

    Structured content is left out when the text already carries it (the spec asks servers to
    repeat it as text for older clients), whatever key the server wrapped it in, so an output is
    stored, substituted and shown to the LLM once.
    """
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    parts = [describe_block(block) for block in result.content]
    structured = result.structured_content
    if structured is not None and not text_carries(structured, texts):
        parts.append(json.dumps(structured, ensure_ascii=False, indent=2))
    text = "\n".join(part for part in parts if part)
    return text or NO_CONTENT


def error_text(result: CallToolResult) -> str:
    """The message of an is_error result (servers put it in text parts)."""
    text = result_text(result)
    return "(the server gave no message)" if text == NO_CONTENT else text


def describe_block(block: ContentBlock) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent):
        return f"[image {block.mime_type}, {_decoded_size(block.data)} bytes]"
    if isinstance(block, AudioContent):
        return f"[audio {block.mime_type}, {_decoded_size(block.data)} bytes]"
    if isinstance(block, ResourceLink):
        details = ", ".join(
            part
            for part in (
                block.mime_type,
                f"{block.size} bytes" if block.size is not None else None,
                block.description,
            )
            if part
        )
        return f"[resource link {block.name}: {block.uri}" + (f" ({details})]" if details else "]")
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, TextResourceContents):
            return f"[resource {resource.uri}]\n{resource.text}"
        if isinstance(resource, BlobResourceContents):
            mime = f"{resource.mime_type}, " if resource.mime_type else ""
            return f"[resource {resource.uri}, {mime}{_decoded_size(resource.blob)} bytes]"
    return f"[{type(block).__name__}]"


def _decoded_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        return len(data)


def text_carries(structured: dict[str, Any], texts: list[str]) -> bool:
    """Whether the text parts already say what `structured` says.

    Servers wrap the same payload in different keys: the Python SDK `{"result": x}`,
    server-filesystem `{"content": "<the text>"}`, server-memory `{"entities": [...]}` beside
    the list as JSON text. So the whole object, or the value of its only key, may equal the
    text or the JSON the text parses to.
    """
    if not texts:
        return False
    candidates: list[Any] = [structured]
    if len(structured) == 1:
        candidates.append(next(iter(structured.values())))
    joined = "\n".join(texts)
    sources = [joined, *texts] if len(texts) > 1 else [joined]
    return any(_text_says(text, candidate) for candidate in candidates for text in sources)


def _text_says(text: str, value: Any) -> bool:
    if isinstance(value, str):
        return value.strip() == text.strip()
    try:
        return bool(json.loads(text) == value)
    except ValueError:
        return False
