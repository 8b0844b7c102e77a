"""Retry decisions: a pure function of the error, the attempt and the policy."""

from __future__ import annotations

import random
from dataclasses import dataclass

from scheduler.errors import TaskError


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0


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
