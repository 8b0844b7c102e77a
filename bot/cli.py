"""`dagbot run "<goal>"`: plan and run a goal in this terminal.

On a terminal the plan tree is redrawn in place with rich, folded to fit the window; on a pipe or
a file it is one line per event, as it happens. Problems that stop the command are one line on
stderr with exit status 2; a failed or cancelled run exits 1, Ctrl-C 130, a closed pipe 141.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Protocol, TextIO

from rich.console import Console

from bot.cli_render import render_event, render_outcome, render_plan_tree, render_run_tree
from bot.live_board import Board
from bot.runtime import open_runtime
from bot.settings import ConfigError, Settings, load_settings
from bot.terminal import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PIPE_CLOSED,
    EXIT_RUN_FAILED,
    EXIT_TERMINATED,
    prepare_output,
    silence_stdout,
    stop,
)
from bot.terminal_approval import TerminalApprovals
from scheduler.dag.engine import Engine
from scheduler.dag.state import RunView
from scheduler.errors import SchedulerError
from storage.errors import StorageError
from storage.leases import OwnerKind
from storage.records import Event, EventKind, RunStatus

USAGE_EXAMPLE = 'dagbot run "What time is it in Tokyo?"'
CANCELLING = "Cancelling the run… (press Ctrl-C again to quit at once)"


class OutputClosed(Exception):
    """Whoever read stdout went away (a closed pipe): the run is cancelled, quietly."""


def run_goal(goal: str) -> int:
    """Plan and run one goal here, showing progress; the exit status says how it went."""
    goal = goal.strip()
    if not goal:
        return stop(f"The goal is empty. Say what you want done, e.g. {USAGE_EXAMPLE}")
    try:
        settings = load_settings()
        settings.require_llm_key()
    except ConfigError as error:
        return stop(str(error))
    if len(goal) > settings.max_goal_chars:
        return stop(
            f"The goal is {len(goal)} characters long; the limit is {settings.max_goal_chars} "
            "(DAGBOT_MAX_GOAL_CHARS)."
        )
    prepare_output()
    display: Display = (
        LiveDisplay(Console(file=sys.stdout, highlight=False))
        if sys.stdout.isatty()
        else LineDisplay(sys.stdout)
    )
    try:
        return asyncio.run(_run_goal(settings, goal, display))
    except KeyboardInterrupt:  # the second Ctrl-C: quit at once, the run resumes next time
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


def take_back_run(run_id: str, *, cancel: bool) -> int:
    """Resume (showing progress) or cancel a terminal run whose process stopped."""
    try:
        settings = load_settings()
    except ConfigError as error:
        return stop(str(error))
    prepare_output()
    display: Display = LineDisplay(sys.stdout)
    try:
        return asyncio.run(_take_back(settings, run_id, cancel, display))
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


async def _take_back(settings: Settings, run_id: str, cancel: bool, display: Display) -> int:
    try:
        async with open_runtime(settings, kind=OwnerKind.TERMINAL) as runtime:
            engine = runtime.engine
            record = await engine.find_run(run_id)
            if record is None:
                return stop(f"No run matches {run_id!r}. List runs with: dagbot runs")
            lease = await engine.lease(record.id)
            if record.status.finished:
                return stop(f"Run {record.id} is already {record.status.value}.")
            if lease is not None and lease.kind is not OwnerKind.TERMINAL:
                return stop(f"Run {record.id} belongs to the Slack bot, which carries it on.")
            if not await engine.adopt(record.id):
                holder = lease.owner if lease is not None else "another process"
                return stop(
                    f"Run {record.id} is still being worked on by {holder}; try again once "
                    "that process has stopped."
                )
            if cancel:
                await engine.cancel(record.id)  # before its driver ran a step
                view = await engine.view(record.id)
            else:
                view, _ = await follow_run(engine, record.goal, display, resumed=record.id)
            display.finish(view)
    except (ConfigError, SchedulerError, StorageError) as error:
        return stop(str(error))
    return EXIT_OK if view.run.status is RunStatus.SUCCEEDED else EXIT_RUN_FAILED


async def _run_goal(settings: Settings, goal: str, display: Display) -> int:
    try:
        async with open_runtime(settings, kind=OwnerKind.TERMINAL) as runtime:
            view, why = await follow_run(runtime.engine, goal, display)
            if why != "pipe":
                with contextlib.suppress(OutputClosed):
                    display.finish(view)  # before the servers are stopped, which takes a moment
    except (ConfigError, SchedulerError, StorageError) as error:
        return stop(str(error))
    finally:
        display.close()
    if why == "pipe":
        silence_stdout()
        return EXIT_PIPE_CLOSED
    if why == "interrupt":
        return EXIT_INTERRUPTED
    if why == "terminate":
        return EXIT_TERMINATED
    return EXIT_OK if view.run.status is RunStatus.SUCCEEDED else EXIT_RUN_FAILED


async def follow_run(
    engine: Engine, goal: str, display: Display, *, resumed: str | None = None
) -> tuple[RunView, str | None]:
    """Submit the goal, show each event as it is committed, cancel the run when told to stop.

    Returns the final view and why the run was stopped from here: "interrupt" (Ctrl-C),
    "terminate" (SIGTERM), "pipe" (stdout closed), or None. `resumed`: follow that run
    instead, just adopted by this engine (nothing is submitted).
    """
    with engine.bus.subscribe() as events:
        if resumed is None:
            run = await engine.submit(goal, meta={"source": "terminal"})
        else:
            run = (await engine.view(resumed)).run
        cancelling: list[asyncio.Task[bool]] = []
        why: list[str] = []
        shown = [True]
        approvals = TerminalApprovals(
            engine, run.id, lambda text: show(lambda: display.notice(text)), _stdin_fd()
        )
        if resumed is not None:
            approvals.ask_waiting(await engine.view(run.id))

        def cancel(reason: str) -> None:
            if cancelling:
                return
            why.append(reason)
            if reason == "pipe":
                shown[0] = False
            else:
                show(
                    lambda: display.notice(
                        "Cancelling the run… (press Ctrl-C again to quit at once)"
                    )
                )
            cancelling.append(
                asyncio.create_task(engine.cancel(run.id), name=f"dagbot cancel {run.id}")
            )

        def show(draw: Callable[[], None]) -> None:
            if not shown[0]:
                return
            try:
                draw()
            except OutputClosed:
                cancel("pipe")

        async def close_when_done() -> None:
            await engine.wait(run.id)
            if cancelling:
                await cancelling[0]  # its events are published after the run stops
            events.close()

        with _on_signals(
            interrupt=lambda: cancel("interrupt"), terminate=lambda: cancel("terminate")
        ):
            closer = asyncio.create_task(close_when_done(), name=f"dagbot follow {run.id}")
            try:
                async for event in events:
                    if event.run_id == run.id and shown[0]:
                        view = await engine.view(run.id)
                        show(functools.partial(display.update, event, view))
                        approvals.offer(event, view)
            finally:
                await approvals.aclose()
                if not closer.done():
                    closer.cancel()
                await asyncio.wait([closer])
        if not closer.cancelled() and (error := closer.exception()) is not None:
            raise error
    return await engine.view(run.id), (why[0] if why else None)


def _stdin_fd() -> int | None:
    """Where answers to approval questions come from; None when there is no standard input."""
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None


@contextlib.contextmanager
def _on_signals(*, interrupt: Callable[[], None], terminate: Callable[[], None]) -> Iterator[None]:
    """The first Ctrl-C calls `interrupt`, SIGTERM `terminate`; a second Ctrl-C interrupts."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C raises KeyboardInterrupt
        interrupt()

    loop.add_signal_handler(signal.SIGINT, first)
    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


class Display(Protocol):
    """Where progress goes; each method raises OutputClosed once nobody reads it any more."""

    def update(self, event: Event, view: RunView) -> None: ...

    def notice(self, text: str) -> None: ...

    def finish(self, view: RunView) -> None: ...

    def close(self) -> None:
        """Give the terminal back as it was (whatever happened)."""


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
        if event.kind is EventKind.RUN_REVISED and not (event.data or {}).get("failed"):
            self._write(render_run_tree(view))

    def notice(self, text: str) -> None:
        self._write(text)

    def finish(self, view: RunView) -> None:
        self._write("\n" + render_outcome(view))

    def close(self) -> None:
        pass

    def _write(self, text: str) -> None:
        try:
            print(text, file=self._out, flush=True)
        except BrokenPipeError:
            raise OutputClosed from None


class LiveDisplay:
    """The plan tree with live statuses, redrawn in place (rich Live) and folded to fit the
    window; once the run ends, the whole tree and the outcome are printed below for good."""

    def __init__(self, console: Console) -> None:
        from rich.live import Live  # only a terminal needs it

        self._console = console
        self._live = Live(
            console=console,
            auto_refresh=False,  # redrawn on each event: no thread
            transient=True,
            vertical_overflow="crop",
            redirect_stdout=False,
            redirect_stderr=True,  # warnings are printed above the board, not through it
        )

    def update(self, event: Event, view: RunView) -> None:
        with _pipe_closed():
            if not self._live.is_started:
                self._live.start()
            self._live.update(Board(view), refresh=True)

    def notice(self, text: str) -> None:
        with _pipe_closed():
            self._console.print(text, markup=False)

    def finish(self, view: RunView) -> None:
        with _pipe_closed():
            self._live.stop()
            self._console.print(render_run_tree(view), markup=False, highlight=False)
            self._console.print(Board.progress(view), markup=False)
            self._console.print("\n" + render_outcome(view), markup=False)

    def close(self) -> None:
        if self._live.is_started:
            with contextlib.suppress(BrokenPipeError):
                self._live.stop()


@contextlib.contextmanager
def _pipe_closed() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise OutputClosed from None
