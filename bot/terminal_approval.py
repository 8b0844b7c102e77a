"""`dagbot run`: a task awaiting approval is a y/n question on the terminal.

Questions are asked one at a time, in the order tasks come to wait; an answer starting with
`y` approves, anything else denies (the prompt says `[y/N]`). Standard input is read without a
thread (the event loop watches its file descriptor), so a run that ends while a question is
open leaves nothing blocked behind it. When standard input is closed (a pipe that ended,
`< /dev/null`), nobody can answer: the question counts as denied.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
from collections.abc import Callable

from bot.wording import one_line, truncate
from scheduler.dag.engine import Engine
from scheduler.dag.state import RunView
from storage.records import Event, EventKind, TaskStatus

MAX_SHOWN_ARGS = 2000


def question(task_id: str, title: str, tool: str, args: object) -> str:
    """`Approve t2 "Publish" (test.echo {"text": "publish 42"})? [y/N]`."""
    shown = truncate(json.dumps(args, ensure_ascii=False), MAX_SHOWN_ARGS)
    return f'Approve {task_id} "{one_line(title)}" ({tool} {shown})? [y/N]'


def approves(answer: str) -> bool:
    return answer.strip().lower().startswith("y")


def who() -> str:
    """How a terminal decision records who took it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "the user"
    return f"{user} in the terminal"


class LineReader:
    """Lines of a file descriptor as they come, read by the event loop; None once it ends."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._watching = False
        try:
            self._loop.add_reader(fd, self._readable)
            self._watching = True
        except (OSError, ValueError, NotImplementedError):  # not watchable (a regular file)
            self._lines.put_nowait(None)

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._lines.put_nowait(line.decode(errors="replace"))

    async def readline(self) -> str | None:
        line = await self._lines.get()
        if line is None:
            self._lines.put_nowait(None)  # every later read sees the end too
        return line

    def close(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False
            self._lines.put_nowait(None)


class TerminalApprovals:
    """Asks about each of a run's tasks that comes to await approval, and records the answer."""

    def __init__(
        self, engine: Engine, run_id: str, say: Callable[[str], None], fd: int | None
    ) -> None:
        self._engine = engine
        self._run_id = run_id
        self._say = say
        self._fd = fd
        self._reader: LineReader | None = None
        self._questions: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def offer(self, event: Event, view: RunView) -> None:
        """Look at a run event: a task that comes to await approval is asked about."""
        if event.kind is EventKind.TASK_AWAITING_APPROVAL and event.run_id == self._run_id:
            data = event.data or {}
            self.ask(view, event.task_id or "", str(data.get("tool")), data.get("args"))

    def ask_waiting(self, view: RunView) -> None:
        """Ask about the tasks already awaiting approval (a run taken back after a stop)."""
        for request in view.approvals:
            if view.task(request.task_id).status is TaskStatus.AWAITING_APPROVAL:
                tool = view.task(request.task_id).spec.tool or ""
                self.ask(view, request.task_id, tool, request.args)

    def ask(self, view: RunView, task_id: str, tool: str, args: object) -> None:
        title = view.task(task_id).spec.title if task_id in {t.id for t in view.tasks} else ""
        self._questions.put_nowait((task_id, question(task_id, title, tool, args)))
        if self._worker is None:
            if self._fd is not None:
                self._reader = LineReader(self._fd)
            self._worker = asyncio.create_task(self._ask_all(), name=f"approvals {self._run_id}")

    async def _ask_all(self) -> None:
        while True:
            task_id, text = await self._questions.get()
            self._say(text)
            line = await self._reader.readline() if self._reader is not None else None
            approve = line is not None and approves(line)
            decided = await self._engine.decide(self._run_id, task_id, approve=approve, by=who())
            if line is None:
                self._say(f"No answer can be read (standard input is closed): {task_id} is denied.")
            elif decided is not None and not decided[1]:
                self._say(f"{task_id} was already {decided[0].decision}.")

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
