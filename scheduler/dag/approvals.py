"""Approval of sensitive tasks: which tasks need it, how long it may take, who is woken.

A task that needs approval waits in status awaiting_approval before it is started, holding no
slot. The request (with its deadline and the exact arguments) is stored in the commit of that
move; a decision is recorded in the store by whichever process receives it (storage decides the
first one, idempotently), and the run's owner reads it back: at once when it is this process
(the desk wakes it), else on its next poll. Nobody deciding before the deadline counts as a
denial, recorded as such, so a restart neither resets the deadline nor forgets the decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from domain.vocabulary import Decision
from scheduler.dag.plan import PlanTask
from storage.records import Approval

DEFAULT_APPROVAL_TIMEOUT = 24 * 3600.0
DEFAULT_APPROVAL_POLL = 2.0
"""Seconds between reads of a run's pending decisions: a decision taken by another replica
reaches the run's owner within this long."""


def never(task: PlanTask) -> bool:
    """No task needs approval (no tool is configured to require it)."""
    return False


@dataclass(frozen=True, kw_only=True)
class ApprovalRules:
    needs: Callable[[PlanTask], bool] = never
    """Whether a task must be approved before it runs (from the MCP servers file)."""
    timeout: float = DEFAULT_APPROVAL_TIMEOUT
    poll: float = DEFAULT_APPROVAL_POLL
    wakeups: dict[str, Callable[[], None]] = field(default_factory=dict)
    """Per run driven here: wakes its execution when a decision was just recorded here."""

    def wake(self, run_id: str) -> None:
        wake = self.wakeups.get(run_id)
        if wake is not None:
            wake()


def refusal(approval: Approval) -> str:
    """The error a task fails with when its approval was refused or never came."""
    if approval.decision is Decision.DENIED:
        return f"Denied by {approval.decided_by or 'an approver'}."
    return f"Not approved within {duration(approval.deadline - approval.requested_at)}: denied."


def duration(seconds: float) -> str:
    """`24 h`, `15 min`, `30 s`."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{round(seconds / size, 1):g} {unit}"
    return f"{round(seconds, 2):g} s"
