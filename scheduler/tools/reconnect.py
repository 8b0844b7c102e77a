"""When to try a server again, and what to quote when it would not start: pure functions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

STARTUP_WAIT = 10.0
"""Seconds after start during which a plan waits for servers still making their first attempt
(`DAGBOT_MCP_STARTUP_WAIT`): long enough for a Python server or a cached `npx` package to come
up, so the first goal after a deploy (or `dagbot run`) sees them. After it, planning never waits:
a server that hangs at start-up delays only plans made within this time, by what is left of it."""
PING_INTERVAL = 15.0
"""Seconds between liveness checks of a connected HTTP server (`DAGBOT_MCP_PING_INTERVAL`)."""
PING_TIMEOUT = 10.0
"""A server that does not answer a liveness check within this is treated as gone."""


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Reconnection delays: exponential, capped; a server that ran for a while restarts at once."""

    base: float = 0.5
    cap: float = 60.0
    stable_after: float = 10.0
    """A session that lasted this long was healthy: its end does not count as a failure."""


def reconnect_delay(failures: int, policy: Backoff) -> float:
    """Seconds to wait before the next attempt after `failures` consecutive failures.

    0 failures (a healthy session just ended, e.g. a stdio server crashed mid-call) means at
    once; then base, 2 * base, 4 * base ... up to the cap, so a server that keeps failing costs
    a few attempts an hour, not a busy loop.
    """
    if failures <= 0:
        return 0.0
    return float(min(policy.cap, policy.base * 2 ** (failures - 1)))


def failures_after_session(failures: int, uptime: float, policy: Backoff) -> int:
    """The failure count once a session that lasted `uptime` seconds has ended.

    A long session resets the count (its crash is news: restart at once); a short one adds to it,
    so a server that crashes right after every start backs off like one that cannot start.
    """
    return 0 if uptime >= policy.stable_after else failures + 1


# A line that states an exception: "ValueError: bad", "git.exc.NoSuchPathError: /x",
# "Error: ENOENT: no such file", "McpError: ..." (Python and Node tracebacks end this way).
_EXCEPTION_LINE = re.compile(
    r"^(?P<type>(?:[A-Za-z_][\w.]*)?(?:Error|Exception|Exit|Interrupt))(?::\s*(?P<message>.*))?$"
)
_DECORATION = re.compile(r"^[\s|+\-]*")
_GROUP_LINE = re.compile(r"\(\d+ sub-exceptions?\)\s*$")
MAX_QUOTE = 300


def startup_error(stderr_lines: Sequence[str]) -> str | None:
    """What a server that died at start-up said about why, from its stderr, or None if nothing.

    A Python server that raises prints a traceback, often an `ExceptionGroup` whose last lines
    are decoration (`+------------`); a Node server prints `Error: ...` and a stack. The useful
    part is the innermost exception's own line, so that is what is quoted; a server that prints
    a plain message and exits gets its last line quoted.
    """
    lines = [_DECORATION.sub("", line).rstrip() for line in stderr_lines]
    lines = [line for line in lines if line]
    if not lines:
        return None
    stated = [
        line
        for line in lines
        if (match := _EXCEPTION_LINE.match(line)) is not None
        and not _GROUP_LINE.search(line)
        and match.group("type").split(".")[-1] not in ("ExceptionGroup", "BaseExceptionGroup")
    ]
    chosen = stated[-1] if stated else _last_plain_line(lines)
    return chosen[:MAX_QUOTE]


def _last_plain_line(lines: Sequence[str]) -> str:
    # Skip a stack's frames ("at main (file.js:1:2)", 'File "x.py", line 3') to reach the message.
    for line in reversed(lines):
        if not (line.startswith(("at ", 'File "', "Traceback ")) or line.startswith("^")):
            return line
    return lines[-1]
