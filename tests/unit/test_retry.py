from __future__ import annotations

import random

import pytest

from scheduler.dag.retry import RetryPolicy, is_retryable, retry_delay
from scheduler.errors import TaskError


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (TaskError("429 Too Many Requests", retryable=True), True),
        (TaskError("bad arguments"), False),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (ConnectionRefusedError(), True),
        (ValueError("nope"), False),
        (KeyError("x"), False),
        (RuntimeError("boom"), False),
    ],
)
def test_is_retryable(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


POLICY = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=1.5)


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 0.5), (2, 1.0), (3, 1.5)],
)
def test_delay_is_jittered_below_an_exponential_capped_ceiling(
    attempt: int, ceiling: float
) -> None:
    rand = random.Random(7)
    delays = [retry_delay(TimeoutError(), attempt, POLICY, rand=rand) for _ in range(500)]
    values = [d for d in delays if d is not None]
    assert len(values) == 500
    assert all(0 <= d <= ceiling for d in values)
    # full jitter spreads retries over the whole window instead of bunching at the ceiling
    assert min(values) < ceiling * 0.1
    assert max(values) > ceiling * 0.9


@pytest.mark.parametrize(
    ("error", "attempt"),
    [
        (TimeoutError(), 4),
        (TimeoutError(), 9),
        (TaskError("bad arguments"), 1),
        (ValueError("nope"), 1),
    ],
    ids=["attempts used up", "far past the limit", "not retryable", "unknown error"],
)
def test_no_delay_means_fail_now(error: BaseException, attempt: int) -> None:
    assert retry_delay(error, attempt, POLICY) is None


def test_single_attempt_policy_never_retries() -> None:
    assert retry_delay(TimeoutError(), 1, RetryPolicy(max_attempts=1)) is None


def test_same_seed_same_delays() -> None:
    first = [retry_delay(TimeoutError(), 2, POLICY, rand=random.Random(3)) for _ in range(3)]
    second = [retry_delay(TimeoutError(), 2, POLICY, rand=random.Random(3)) for _ in range(3)]
    assert first == second
