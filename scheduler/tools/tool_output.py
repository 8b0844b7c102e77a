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

    Structured content is left out when a text part already carries it, as the spec asks servers
    to do for older clients (and as the Python SDK does, wrapping plain returns as {"result": x}).
    """
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    parts = [describe_block(block) for block in result.content]
    structured = result.structured_content
    if structured is not None and not _carried_by(structured, texts):
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


def _carried_by(structured: dict[str, Any], texts: list[str]) -> bool:
    if not texts:
        return False
    if set(structured) == {"result"} and _equal_to_text(structured["result"], "\n".join(texts)):
        return True
    return any(_parses_to(text, structured) for text in texts)


def _equal_to_text(value: Any, text: str) -> bool:
    return value == text or _parses_to(text, value)


def _parses_to(text: str, value: Any) -> bool:
    try:
        return bool(json.loads(text) == value)
    except ValueError:
        return False
