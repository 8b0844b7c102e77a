"""Drafts: the text a task writes while it runs, for front ends that show it as it comes.

A draft is progress, not state: it is never stored, and a task's output (committed with its
success) stays the one source of truth. A front end that misses drafts (a restart, a late
subscription) loses nothing but the live view. Listeners are called inline and must not
block: the usual listener hands the draft to a queue or wakes a task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("dagbot.engine")


@dataclass(frozen=True, kw_only=True)
class Draft:
    """A piece of text a task has just written (appended to what its attempt wrote before)."""

    run_id: str
    task_id: str
    attempt: int
    """A new attempt starts its text afresh."""
    text: str


DraftSink = Callable[[str], None]
"""What an executor calls with each new piece of its output text; an empty piece announces,
before the first, that text is coming (so a front end can get ready while the model thinks)."""
DraftListener = Callable[[Draft], None]


def ignore_draft(text: str) -> None:
    """A DraftSink for contexts nobody watches."""


class Drafts:
    """Fans drafts out to listeners; publishing never waits and a failing listener is logged."""

    def __init__(self) -> None:
        self._listeners: list[DraftListener] = []

    def listen(self, listener: DraftListener) -> Callable[[], None]:
        """Call `listener` with every draft from now on; returns the function that stops it."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def sink(self, run_id: str, task_id: str, attempt: int) -> DraftSink:
        """The DraftSink of one task attempt."""

        def emit(text: str) -> None:
            if self._listeners:
                self.publish(Draft(run_id=run_id, task_id=task_id, attempt=attempt, text=text))

        return emit

    def publish(self, draft: Draft) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(draft)
            except Exception:
                log.exception("a draft listener failed on run %s", draft.run_id)
