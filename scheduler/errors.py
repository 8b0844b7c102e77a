"""Errors of the engine and its executors."""

from __future__ import annotations


class SchedulerError(Exception):
    """The scheduler could not do what was asked."""


class PlanInvalid(SchedulerError):
    """The plan is not valid."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("The plan is not valid:\n" + "\n".join(f"- {p}" for p in problems))


class RunNotFound(SchedulerError):
    """No run with that id."""


class TaskError(SchedulerError):
    """A task failed. `retryable` says whether trying again may succeed (timeouts, 429, 5xx)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class PlanningFailed(SchedulerError):
    """No valid plan could be made for the goal; the message is for the user."""


class AnotherRound(SchedulerError):
    """The final step found that the results do not answer the goal yet: plan another round."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
