"""When to try an action again: exponential backoff with jitter, as a pure function."""

from __future__ import annotations

import random
from dataclasses import dataclass

from workflow_core.definitions.models import RetryPolicy


@dataclass(frozen=True, slots=True)
class RetryAfter:
    seconds: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


def next_attempt(
    attempt: int,
    policy: RetryPolicy,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> RetryAfter | GiveUp:
    """After failed attempt number `attempt` (1-based): wait, or give up.

    The delay doubles from `initial_delay` up to `max_delay`, and a random half of it is taken
    off ("equal jitter") so that retries of many runs spread out. A server's own Retry-After
    is honoured when it asks for longer, up to `max_delay`.
    """
    if attempt >= policy.max_attempts:
        return GiveUp(f"gave up after {attempt} attempts")
    ceiling = min(policy.max_delay, policy.initial_delay * 2 ** (attempt - 1))
    delay = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_delay))
    return RetryAfter(delay)
