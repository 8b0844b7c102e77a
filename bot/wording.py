"""dagbot's one vocabulary: status words, truncation and the progress line, for every renderer.

The Slack renderer (plan message, replies, App Home) and the terminal (progress line, truncated
outputs) use these, so that a run reads the same wherever it is shown. Pure functions of plain
data; nothing here knows about Slack or the terminal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from storage.records import RunStatus, TaskStatus

TRUNCATED = "… (truncated)"
"""The visible marker that ends a text cut short."""
MORE = "…"
"""What ends a one-line excerpt that was cut."""

RUN_WORDS: Mapping[RunStatus, str] = MappingProxyType(
    {
        RunStatus.PLANNING: "Planning",
        RunStatus.RUNNING: "Running",
        RunStatus.SUCCEEDED: "Done",
        RunStatus.FAILED: "Finished with problems",
        RunStatus.CANCELLED: "Cancelled",
    }
)
"""A run's status as a person reads it (capitalised: it starts a line)."""

TASK_WORDS: Mapping[TaskStatus, str] = MappingProxyType(
    {
        TaskStatus.PENDING: "pending",
        TaskStatus.AWAITING_APPROVAL: "awaiting approval",
        TaskStatus.RUNNING: "running",
        TaskStatus.SUCCEEDED: "done",
        TaskStatus.FAILED: "failed",
        TaskStatus.SKIPPED: "skipped",
        TaskStatus.CANCELLED: "cancelled",
    }
)
"""A task's status as a person reads it."""

FEEDBACK_GOOD = "good"
FEEDBACK_BAD = "bad"
"""The two votes of a summary's feedback buttons (👍, 👎)."""

PROBLEM_STATUSES = (TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED)
"""Statuses that end a task without its result: each is named in the progress line."""


def run_word(status: RunStatus) -> str:
    """`running`, `done`, `finished with problems`: a run's status inside a sentence."""
    return RUN_WORDS[status].lower()


def plural(count: int, noun: str) -> str:
    """`1 task`, `3 tasks`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def truncate(text: str, limit: int, marker: str = TRUNCATED) -> str:
    """`text` cut to at most `limit` characters, ending with `marker` when anything was cut."""
    if len(text) <= limit:
        return text
    if limit <= len(marker):
        return marker[:limit]
    return text[: limit - len(marker)].rstrip() + marker


def one_line(text: str) -> str:
    """Whitespace (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


def excerpt(text: str, limit: int) -> str:
    """The text on one line, cut to `limit` characters with a trailing `…`."""
    return truncate(one_line(text), limit, MORE)


def progress_parts(run_status: RunStatus, statuses: Iterable[TaskStatus]) -> list[str]:
    """`["Running", "3 of 7 tasks done", "1 running", "1 failed"]`: the progress line's parts."""
    counts = Counter(statuses)
    total = sum(counts.values())
    done = sum(n for status, n in counts.items() if status.finished)
    parts = [RUN_WORDS[run_status], f"{done} of {plural(total, 'task')} done"]
    for status in (TaskStatus.RUNNING, TaskStatus.AWAITING_APPROVAL, *PROBLEM_STATUSES):
        if counts[status]:
            parts.append(f"{counts[status]} {TASK_WORDS[status]}")
    return parts


def progress_line(run_status: RunStatus, statuses: Iterable[TaskStatus]) -> str:
    """One line on where a run stands, e.g. `Running · 3 of 7 tasks done · 1 failed`."""
    return " · ".join(progress_parts(run_status, statuses))


def more_tasks(count: int, detail: str = "") -> str:
    """The line that stands for tasks not shown: `… and 12 more tasks not shown: 12 pending`."""
    line = f"… and {plural(count, 'more task')} not shown"
    return f"{line}: {detail}" if detail else line


STEERING_RECEIVED = "eyes"
"""The reaction on a mention that steers a running run: seen, and handed to the run (the plan
message shows the revision; a message that comes during the final answer becomes a follow-up).
One reaction costs a Tier 3 call and adds no message to the thread."""


def round_line(number: int, reason: str) -> str:
    """`Round 2: Paris is missing` (why a plan grew a round)."""
    return f"Round {number}: {one_line(reason)}"


def revision_line(data: Mapping[str, object]) -> str:
    """What a revision of a running plan did, from its event's data: a new round, or a
    steering message from the thread, and the tasks it added and dropped."""
    changes = [f"+{task}" for task in _ids(data.get("added"))]
    changes += [f"-{task}" for task in _ids(data.get("removed"))]
    tail = f" ({', '.join(changes)})" if changes else ""
    failed = data.get("failed")
    if data.get("cause") == "steer":
        said = one_line(str(data.get("message") or ""))
        if failed:
            return f"Could not revise the plan for “{said}”: {one_line(str(failed))}"
        return f"Plan revised for “{said}”{tail}"
    number = data.get("round")
    if failed:
        return f"No further round could be planned: {one_line(str(failed))}"
    return f"Round {number} planned{tail}"


def _ids(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def feedback_line(votes: Mapping[str, int]) -> str:
    """`Feedback: 3 👍 · 1 👎` (the summary's feedback buttons), or that there is none yet."""
    good, bad = votes.get(FEEDBACK_GOOD, 0), votes.get(FEEDBACK_BAD, 0)
    return f"Feedback: {good} 👍 · {bad} 👎" if good or bad else "Feedback: none yet"
