"""Retry decisions: a pure function of the error, the attempt and the policy."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from scheduler.errors import TaskError

PLANNING = "planning"
"""The key of the planner's policy among the task kinds' policies."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0


@dataclass(frozen=True, kw_only=True)
class RetryPolicies:
    """One policy per task kind and one for planning: the only retry layer there is.

    Clients below the engine (the OpenAI SDK) are built not to retry, so one attempt here is one
    request there and a hung call costs at most `max_attempts` timeouts.
    """

    default: RetryPolicy = field(default_factory=RetryPolicy)
    overrides: Mapping[str, RetryPolicy] = field(default_factory=lambda: MappingProxyType({}))
    """Keyed by task kind (`tool`, `llm`, `summary`) or PLANNING."""

    def of(self, kind: str) -> RetryPolicy:
        """The policy for tasks of `kind` (or PLANNING)."""
        return self.overrides.get(kind, self.default)


def is_retryable(error: BaseException) -> bool:
    """Timeouts, connection errors and errors an executor marked retryable; nothing else."""
    if isinstance(error, TaskError):
        return error.retryable
    return isinstance(error, TimeoutError | ConnectionError)


def retry_delay(
    error: BaseException,
    attempt: int,
    policy: RetryPolicy,
    *,
    rand: random.Random | None = None,
) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None when the task should fail now.

    Exponential backoff with full jitter (AWS architecture blog): uniform in [0, base * 2^n],
    capped, so retries of many tasks spread out instead of arriving together.
    """
    if attempt >= policy.max_attempts or not is_retryable(error):
        return None
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
    return (rand or random).uniform(0, ceiling)
