"""The live plan board of `dagbot run` on a terminal: the run tree folded to fit the window.

A board taller than the window cannot be redrawn in place (the terminal scrolls, and each frame
leaves a copy behind), so the tree is folded first: finished tasks give way to a count, then
waiting ones; running and failed tasks, the title and the progress line always show.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from bot.cli_render import MARK, render_progress, render_run_tree
from scheduler.dag.state import RunView
from storage.records import TaskStatus

_STATUS_OF_MARK = {mark: status for status, mark in MARK.items()}
# What gives way first when the tree does not fit.
_FOLD_ORDER = (
    (TaskStatus.SUCCEEDED, TaskStatus.SKIPPED, TaskStatus.CANCELLED),
    (TaskStatus.PENDING,),
)


def line_status(line: str) -> TaskStatus | None:
    """The status whose mark starts the task on this tree line (None for the title)."""
    for char in line:
        if char in _STATUS_OF_MARK:
            return _STATUS_OF_MARK[char]
        if char.isalnum():
            return None
    return None


def fit_lines(lines: Sequence[str], height: int) -> list[str]:
    """At most `height` lines of the tree: finished tasks folded first, then waiting ones, each
    run of folded lines replaced by one `… N tasks` line; the first line (the title) stays."""
    if len(lines) <= height:
        return list(lines)
    keep = [True] * len(lines)
    statuses = [line_status(line) for line in lines]

    def shown() -> int:
        # Kept lines, plus one line for each run of folded ones.
        count, folding = 0, False
        for kept in keep:
            if kept:
                count, folding = count + 1, False
            elif not folding:
                count, folding = count + 1, True
        return count

    for fold in _FOLD_ORDER:
        # From the bottom up: the first tasks of a plan are the ones already done.
        for index in range(len(lines) - 1, 0, -1):
            if shown() <= height:
                break
            if statuses[index] in fold:
                keep[index] = False
    out: list[str] = []
    folded = 0
    for line, kept in zip(lines, keep, strict=True):
        if kept:
            if folded:
                out.append(_folded(folded))
                folded = 0
            out.append(line)
        else:
            folded += 1
    if folded:
        out.append(_folded(folded))
    if len(out) > height:  # still too tall (many running tasks in a tiny window): crop
        hidden = len(out) - height + 1
        out = [*out[: height - 1], _folded(hidden, "more lines")]
    return out


def _folded(count: int, what: str = "") -> str:
    return f"  … {count} {what or ('task' if count == 1 else 'tasks')}"


class Board:
    """A rich renderable: the run's tree with statuses, then its progress line, fitted to the
    height rich offers (the terminal's), one screen line per tree line."""

    def __init__(self, view: RunView) -> None:
        self.view = view

    @staticmethod
    def progress(view: RunView) -> str:
        return render_progress(view)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or console.height
        lines = render_run_tree(self.view).split("\n")
        for line in fit_lines(lines, max(1, height - 1)):
            yield Text(line, no_wrap=True, overflow="ellipsis")
        yield Text(self.progress(self.view), no_wrap=True, overflow="ellipsis")
