"""What every terminal command shares: exit statuses, one-line problems, output set-up.

Light on purpose: `runs` imports it, and must not pay for the LLM client, MCP or Slack.
"""

from __future__ import annotations

import io
import logging
import os
import sys

EXIT_OK = 0
EXIT_RUN_FAILED = 1
"""The run failed or was cancelled (from another place: Slack's Cancel button, a SIGTERM)."""
EXIT_USAGE = 2
"""A setting or the input is wrong; the reason is one line on stderr."""
EXIT_INTERRUPTED = 130
"""Ctrl-C, as shells report a command stopped by SIGINT (128 + 2)."""
EXIT_PIPE_CLOSED = 141
"""The reader of stdout went away (`| head`), as shells report SIGPIPE (128 + 13)."""
EXIT_TERMINATED = 143
"""SIGTERM (128 + 15)."""


def stop(message: str) -> int:
    """Say why the command cannot go on, in one line on stderr; the usage exit status."""
    print(message, file=sys.stderr)
    return EXIT_USAGE


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record comes (a live display may redirect it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


def prepare_output() -> None:
    """Unencodable marks become "?" rather than a crash; warnings go to stderr, one line each."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def silence_stdout() -> None:
    """After the reader of stdout went away: send what is left to /dev/null, so the final flush
    at exit does not end in a BrokenPipeError traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (tests): nothing to flush
        pass
