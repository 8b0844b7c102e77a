"""What an HTTP request must be before bolt sees it: signed by Slack, then readable.

bolt parses a request's body before its own signature check runs, so a malformed body (forged
or not) used to end in a 500 and a traceback. Here the signature is checked first, on the raw
bytes (401 when it is missing, stale or wrong), and only then is the body read: bytes that are
not UTF-8, JSON that does not parse, or text holding a lone UTF-16 surrogate (which no database
or Slack call can carry) are a 400 with a one-line reason. Pure functions; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

MAX_AGE = 300
"""Seconds a request's timestamp may be off (Slack's rule, and bolt's): older is a replay."""


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """Why a request is refused: the HTTP status and a short reason (never the body)."""

    status: int
    reason: str


def check_request(
    signing_secret: str,
    headers: Mapping[str, str],
    body: bytes,
    content_type: str,
    *,
    now: float | None = None,
) -> Refusal | None:
    """None when the request is signed by Slack and its body is readable; else why not."""
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    if not signing_secret.strip() or not (
        timestamp.isascii() and timestamp.isdigit() and signature.startswith("v0=")
    ):
        return Refusal(status=401, reason="invalid request")
    moment = time.time() if now is None else now
    if abs(moment - int(timestamp)) > MAX_AGE:
        return Refusal(status=401, reason="stale request")
    # Slack's v0 scheme, over the raw bytes: slack_sdk's verifier decodes the body as UTF-8
    # first and raises on bytes that are not, which must be a 400 here, not a 500.
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return Refusal(status=401, reason="invalid request")
    return readable_body_problem(body, content_type)


def readable_body_problem(body: bytes, content_type: str) -> Refusal | None:
    """None when the body is UTF-8 whose JSON (or form `payload`) parses without lone
    surrogates; else a 400 saying what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal(status=400, reason="the body is not UTF-8")
    documents: list[str] = []
    if content_type == "application/json":
        documents.append(text)
    else:
        try:
            fields = parse_qsl(text, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            return Refusal(status=400, reason="a form field is not UTF-8")
        for key, value in fields:
            if key == "payload":
                documents.append(value)
            elif not _encodable(value):
                return Refusal(status=400, reason=f"field {key!r} is not valid Unicode")
    for document in documents:
        try:
            parsed = json.loads(document)
        except json.JSONDecodeError:
            return Refusal(status=400, reason="the body is not valid JSON")
        if not _encodable(json.dumps(parsed, ensure_ascii=False)):
            return Refusal(status=400, reason="the body holds text that is not valid Unicode")
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
