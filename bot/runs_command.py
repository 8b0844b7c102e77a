"""`dagbot runs [id]`: reads the database and nothing else, so it imports nothing else.

Neither the LLM client, MCP nor Slack is imported here: listing runs answers at once.
"""

from __future__ import annotations

import asyncio
import sys

from rich.console import Console

from bot.cli_render import render_runs_table
from bot.run_details import render_run_details
from bot.settings import ConfigError, Settings, load_settings
from bot.terminal import EXIT_OK, EXIT_RUN_FAILED, prepare_output, stop
from bot.wording import feedback_line
from scheduler.dag.state import Run, RunView, TaskState
from storage.connect import open_store
from storage.errors import StorageError


def show_runs(run_id: str | None, *, limit: int) -> int:
    """List recent runs, or show one run (by id or unique id prefix) task by task."""
    if limit < 1:
        return stop("--limit must be at least 1.")
    try:
        settings = load_settings()
    except ConfigError as error:
        return stop(str(error))
    prepare_output()
    try:
        return asyncio.run(_show_runs(settings, run_id, limit))
    except StorageError as error:
        return stop(str(error))


async def _show_runs(settings: Settings, run_id: str | None, limit: int) -> int:
    store = await open_store(settings.database_url)
    try:
        if run_id is None:
            print(render_runs_table(await store.recent_runs(limit=limit)))
            return EXIT_OK
        record = await store.find_run(run_id)
        if record is None:
            print(
                f"No run matches {run_id!r} (or the prefix matches more than one run). "
                "List runs with: dagbot runs",
                file=sys.stderr,
            )
            return EXIT_RUN_FAILED
        view = RunView(
            run=Run.from_record(record),
            tasks=tuple(TaskState.from_record(t) for t in await store.get_tasks(record.id)),
        )
        details = render_run_details(
            view, await store.usage(record.id), await store.events(record.id)
        )
        votes = await store.feedback(record.id)
    finally:
        await store.close()
    output_console().print(details)
    output_console().print(feedback_line(votes))
    return EXIT_OK


def output_console() -> Console:
    """Rich on stdout; a pipe or file gets plain text, wide enough not to fold ordinary lines."""
    out = sys.stdout
    if out.isatty():
        return Console(file=out, highlight=False)
    return Console(file=out, width=160, highlight=False, color_system=None)
