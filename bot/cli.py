"""The terminal mode: `python -m bot run "<goal>"` and `python -m bot runs [id]`.

Output goes to stdout: a live board redrawn in place on a terminal, or one line per event when
stdout is a pipe or a file (so scripts and tests can read it as it happens). Problems that stop a
command go to stderr as one line, with exit status 2; a run that fails or is cancelled exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Protocol, TextIO

from bot.cli_render import (
    render_event,
    render_outcome,
    render_plan_tree,
    render_progress,
    render_run_details,
    render_run_tree,
    render_runs_table,
)
from bot.runtime import open_runtime
from bot.settings import ConfigError, Settings, load_settings
from scheduler.dag.engine import Engine
from scheduler.dag.state import Run, RunView, TaskState
from scheduler.errors import SchedulerError
from storage.connect import open_store
from storage.errors import StorageError
from storage.leases import OwnerKind
from storage.records import Event, EventKind, RunStatus

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
USAGE_EXAMPLE = 'python -m bot run "What time is it in Tokyo?"'


def run_goal(goal: str) -> int:
    """Plan and run one goal here, showing progress; 0 when the run succeeds, 1 when not."""
    goal = goal.strip()
    if not goal:
        return _stop(f"The goal is empty. Say what you want done, e.g. {USAGE_EXAMPLE}")
    try:
        settings = load_settings()
    except ConfigError as error:
        return _stop(str(error))
    if len(goal) > settings.max_goal_chars:
        return _stop(
            f"The goal is {len(goal)} characters long; the limit is {settings.max_goal_chars} "
            "(DAGBOT_MAX_GOAL_CHARS)."
        )
    _prepare_output()
    display: Display = (
        BoardDisplay(sys.stdout) if _is_terminal(sys.stdout) else LineDisplay(sys.stdout)
    )
    try:
        return asyncio.run(_run_goal(settings, goal, display))
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


def show_runs(run_id: str | None, *, limit: int) -> int:
    """List recent runs, or show one run (by id or unique id prefix) task by task."""
    if limit < 1:
        return _stop("--limit must be at least 1.")
    try:
        settings = load_settings()
    except ConfigError as error:
        return _stop(str(error))
    _prepare_output()
    try:
        return asyncio.run(_show_runs(settings, run_id, limit))
    except StorageError as error:
        return _stop(str(error))


# -- running a goal -------------------------------------------------------------------------------


async def _run_goal(settings: Settings, goal: str, display: Display) -> int:
    try:
        async with open_runtime(settings, kind=OwnerKind.TERMINAL) as runtime:
            view = await follow_run(runtime.engine, goal, display)
            display.finish(view)  # before the servers are stopped, which can take a moment
    except (ConfigError, SchedulerError, StorageError) as error:
        return _stop(str(error))
    return EXIT_OK if view.run.status is RunStatus.SUCCEEDED else EXIT_RUN_FAILED


async def follow_run(
    engine: Engine, goal: str, display: Display, *, resumed: str | None = None
) -> RunView:
    """Submit the goal, show each event as it is committed, and cancel the run on Ctrl-C.

    `resumed`: follow that run instead, just adopted by this engine (nothing is submitted).
    """
    with engine.bus.subscribe() as events:
        if resumed is None:
            run = await engine.submit(goal, meta={"source": "terminal"})
        else:
            run = (await engine.view(resumed)).run
        cancelling: list[asyncio.Task[bool]] = []

        def interrupt() -> None:
            if not cancelling:
                display.notice("Cancelling the run… (press Ctrl-C again to quit at once)")
                cancelling.append(
                    asyncio.create_task(engine.cancel(run.id), name=f"dagbot cancel {run.id}")
                )

        async def close_when_done() -> None:
            await engine.wait(run.id)
            if cancelling:
                await cancelling[0]  # its events are published after the run stops
            events.close()

        with _on_interrupt(interrupt):
            closer = asyncio.create_task(close_when_done(), name=f"dagbot follow {run.id}")
            try:
                async for event in events:
                    if event.run_id == run.id:
                        display.update(event, await engine.view(run.id))
            finally:
                if not closer.done():
                    closer.cancel()
                await asyncio.wait([closer])
        if not closer.cancelled() and (error := closer.exception()) is not None:
            raise error
    return await engine.view(run.id)


def take_back_run(run_id: str, *, cancel: bool) -> int:
    """Resume (showing progress) or cancel a terminal run whose process stopped."""
    try:
        settings = load_settings()
    except ConfigError as error:
        return _stop(str(error))
    _prepare_output()
    display: Display = (
        BoardDisplay(sys.stdout) if _is_terminal(sys.stdout) else LineDisplay(sys.stdout)
    )
    try:
        return asyncio.run(_take_back(settings, run_id, cancel, display))
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


async def _take_back(settings: Settings, run_id: str, cancel: bool, display: Display) -> int:
    try:
        async with open_runtime(settings, kind=OwnerKind.TERMINAL) as runtime:
            engine, store = runtime.engine, runtime.store
            record = await store.find_run(run_id)
            if record is None:
                return _stop(f"No run matches {run_id!r}. List runs with: python -m bot runs")
            lease = await store.lease(record.id)
            if record.status.finished:
                return _stop(f"Run {record.id} is already {record.status.value}.")
            if lease is not None and lease.kind is not OwnerKind.TERMINAL:
                return _stop(f"Run {record.id} belongs to the Slack bot, which carries it on.")
            if not await engine.adopt(record.id):
                holder = lease.owner if lease is not None else "another process"
                return _stop(
                    f"Run {record.id} is still being worked on by {holder}; try again once "
                    "that process has stopped."
                )
            if cancel:
                await engine.cancel(record.id)  # before its driver ran a step
                view = await engine.view(record.id)
            else:
                view = await follow_run(engine, record.goal, display, resumed=record.id)
            display.finish(view)
    except (ConfigError, SchedulerError, StorageError) as error:
        return _stop(str(error))
    return EXIT_OK if view.run.status is RunStatus.SUCCEEDED else EXIT_RUN_FAILED


@contextlib.contextmanager
def _on_interrupt(handler: Callable[[], None]) -> Iterator[None]:
    """The first Ctrl-C (or SIGTERM) calls `handler`; a second Ctrl-C interrupts as usual."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C raises KeyboardInterrupt
        handler()

    loop.add_signal_handler(signal.SIGINT, first)
    loop.add_signal_handler(signal.SIGTERM, handler)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


class Display(Protocol):
    def update(self, event: Event, view: RunView) -> None: ...

    def notice(self, text: str) -> None: ...

    def finish(self, view: RunView) -> None: ...


class LineDisplay:
    """One line per event, flushed at once; the plan tree when the run is planned."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def update(self, event: Event, view: RunView) -> None:
        line = render_event(event, view)
        if line is not None:
            self._write(line)
        if event.kind is EventKind.RUN_PLANNED and view.run.plan is not None:
            self._write(render_plan_tree(view.run.plan))

    def notice(self, text: str) -> None:
        self._write(text)

    def finish(self, view: RunView) -> None:
        self._write("\n" + render_outcome(view))

    def _write(self, text: str) -> None:
        print(text, file=self._out, flush=True)


class BoardDisplay:
    """The plan tree with live statuses, redrawn in place after every event."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._drawn = 0

    def update(self, event: Event, view: RunView) -> None:
        self._draw(render_run_tree(view) + "\n" + render_progress(view))

    def notice(self, text: str) -> None:
        self._drawn = 0  # keep the notice: the next board is drawn below it
        print(f"\n{text}", file=self._out, flush=True)

    def finish(self, view: RunView) -> None:
        self._draw(render_run_tree(view) + "\n" + render_progress(view))
        print("\n" + render_outcome(view), file=self._out, flush=True)

    def _draw(self, board: str) -> None:
        width = max(20, shutil.get_terminal_size().columns - 1)
        # Lines that wrapped would break the count of lines to move up over.
        lines = [
            line if len(line) <= width else line[: width - 1] + "…" for line in board.split("\n")
        ]
        erase = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self._out.write(erase + "\n".join(lines) + "\n")
        self._out.flush()
        self._drawn = len(lines)


# -- showing runs ---------------------------------------------------------------------------------


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
                "List runs with: python -m bot runs",
                file=sys.stderr,
            )
            return EXIT_RUN_FAILED
        view = RunView(
            run=Run.from_record(record),
            tasks=tuple(TaskState.from_record(t) for t in await store.get_tasks(record.id)),
        )
        print(render_run_details(view, await store.usage(record.id)))
        return EXIT_OK
    finally:
        await store.close()


# -- plumbing -------------------------------------------------------------------------------------


def _stop(message: str) -> int:
    print(message, file=sys.stderr)
    return EXIT_USAGE


def _is_terminal(out: TextIO) -> bool:
    return out.isatty()


def _prepare_output() -> None:
    # A terminal or pipe that cannot encode the status marks gets "?" instead of a crash.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
