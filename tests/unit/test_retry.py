from __future__ import annotations

import random

import pytest

from workflow_core.definitions.models import RetryPolicy
from workflow_core.engine.retry import GiveUp, RetryAfter, next_attempt

POLICY = RetryPolicy(max_attempts=10, initial_delay=1.0, max_delay=60.0)


def delays(attempt: int, policy: RetryPolicy = POLICY, **kwargs: float) -> list[float]:
    """The delays of 200 draws after failed attempt `attempt`, from a seeded generator."""
    rng = random.Random(1234)
    found = []
    for _ in range(200):
        decision = next_attempt(attempt, policy, rng=rng, **kwargs)
        assert isinstance(decision, RetryAfter)
        found.append(decision.seconds)
    return found


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 32.0), (7, 60.0), (9, 60.0)],
)
def test_the_delay_doubles_and_stays_within_half_to_all_of_its_ceiling(
    attempt: int, ceiling: float
) -> None:
    found = delays(attempt)
    assert all(ceiling / 2 <= seconds <= ceiling for seconds in found)


def test_the_delay_is_jittered() -> None:
    found = delays(4)
    assert len(set(found)) > 100
    assert min(found) < 5.0 < max(found)


def test_the_delay_is_capped_by_max_delay() -> None:
    policy = RetryPolicy(max_attempts=100, initial_delay=10.0, max_delay=15.0)
    assert max(delays(50, policy)) <= 15.0


def test_the_same_seed_gives_the_same_schedule() -> None:
    one, two = random.Random(7), random.Random(7)
    assert [next_attempt(n, POLICY, rng=one) for n in range(1, 10)] == [
        next_attempt(n, POLICY, rng=two) for n in range(1, 10)
    ]


def test_the_last_attempt_gives_up_naming_the_attempts() -> None:
    decision = next_attempt(10, POLICY, rng=random.Random(0))
    assert isinstance(decision, GiveUp)
    assert "10" in decision.reason


def test_the_attempt_before_the_last_is_retried() -> None:
    assert isinstance(next_attempt(9, POLICY, rng=random.Random(0)), RetryAfter)


def test_a_single_attempt_policy_never_retries() -> None:
    policy = RetryPolicy(max_attempts=1)
    assert isinstance(next_attempt(1, policy, rng=random.Random(0)), GiveUp)


def test_a_longer_retry_after_is_honoured() -> None:
    assert delays(1, retry_after=30.0) == [30.0] * 200


def test_retry_after_is_capped_by_max_delay() -> None:
    assert delays(1, retry_after=3600.0) == [60.0] * 200


def test_a_shorter_retry_after_does_not_shorten_the_backoff() -> None:
    assert min(delays(5, retry_after=0.1)) >= 8.0


def test_a_zero_initial_delay_retries_at_once() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=60.0)
    assert delays(2, policy) == [0.0] * 200
