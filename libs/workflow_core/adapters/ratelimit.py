"""SUBMIT_RATE_PER_ORG: a token bucket per organisation in Redis, shared by every API replica.

A bucket holds up to twice the rate in tokens (the burst) and refills at the rate; each
submission takes one, and one that finds none is refused (`RateLimited`, the API's 429) with
the time until the next token. The bucket lives in one Redis hash per organisation (its key
name is in streams.StreamKeys.rate, with every other key name) and is read, refilled and taken
from by one Lua script, so replicas never race. Its clock is Redis's, not a replica's.

The check is on the hot path of POST /submit, so it costs no round trip of its own per request
where it can be helped: the checks that arrive while one script call is out go together in the
next (runtime/coalesce.py), whatever their organisations. Redis being away does not refuse
submissions: the check lets them through (fail open), says so in the log (at most once every
few seconds), and does not ask Redis again for a moment, so an outage adds no wait to each
request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from workflow_core.adapters.streams import REDIS_ERRORS, StreamKeys
from workflow_core.errors import RateLimited
from workflow_core.log import get_logger
from workflow_core.runtime.coalesce import Coalescer

log = get_logger(__name__)

# KEYS: one bucket per organisation. ARGV[1]: tokens per second; ARGV[2]: the bucket's size;
# ARGV[2 + i]: how many submissions want a token from KEYS[i]. Returns, for each key, the
# tokens granted and the milliseconds until the next one (0 when all were granted).
_TAKE = """
local rate, size = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local ttl = math.ceil(size / rate) + 1
local answer = {}
for i, key in ipairs(KEYS) do
  local wanted = tonumber(ARGV[2 + i])
  local bucket = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(bucket[1]), tonumber(bucket[2])
  if tokens == nil or at == nil then tokens, at = size, now end
  tokens = math.min(size, tokens + math.max(0, now - at) * rate)
  local granted = math.min(wanted, math.floor(tokens))
  tokens = tokens - granted
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', key, ttl)
  local wait = 0
  if granted < wanted then wait = math.ceil((1 - tokens) / rate * 1000) end
  answer[#answer + 1] = granted
  answer[#answer + 1] = wait
end
return answer
"""

CHECK_TIMEOUT_SECONDS = 0.5
"""The longest a check waits for Redis before it lets the submission through."""
OPEN_AFTER_FAILURE_SECONDS = 1.0
"""After Redis failed a check, checks let submissions through without asking for this long."""
LOG_EVERY_SECONDS = 10.0


def share(
    orgs: Sequence[str], granted: dict[str, tuple[int, int]], rate: float
) -> list[RateLimited | None]:
    """Each check's verdict, in order: an organisation's first `granted` checks pass, the rest
    are refused with the wait until its next token (whole seconds, at least 1)."""
    passed: Counter[str] = Counter()
    verdicts: list[RateLimited | None] = []
    for org in orgs:
        count, wait_ms = granted[org]
        if passed[org] < count:
            passed[org] += 1
            verdicts.append(None)
        else:
            verdicts.append(refusal(org, wait_ms, rate))
    return verdicts


def refusal(org: str, wait_ms: int, rate: float) -> RateLimited:
    return RateLimited(
        f"too many submissions from organisation {org!r}: SUBMIT_RATE_PER_ORG allows "
        f"{rate:g} per second (bursts of {bucket_size(rate):g}); try again later",
        retry_after=max(1, math.ceil(wait_ms / 1000)),
    )


def bucket_size(rate: float) -> float:
    """Twice the rate, and room for one submission at least."""
    return max(2 * rate, 1.0)


class SubmitRate:
    """`await check(org_id)`: returns when the organisation may submit, raises `RateLimited`
    when it may not. With a rate of 0 it never refuses and never asks Redis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: StreamKeys,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis, self._keys, self.rate = redis, keys, rate
        self._size = bucket_size(rate) if rate > 0 else 0.0
        self._clock = clock
        self._script = redis.register_script(_TAKE)
        self._open_until = float("-inf")
        self._logged_at = float("-inf")
        self._checks: Coalescer[str, RateLimited | None] = Coalescer(
            self._take, max_in_flight=1, max_batch=1024
        )

    async def check(self, org_id: str) -> None:
        if self.rate <= 0 or self._clock() < self._open_until:
            return
        verdict = await self._checks(org_id)
        if verdict is not None:
            raise verdict

    async def _take(self, orgs: list[str]) -> list[RateLimited | None]:
        wanted = Counter(orgs)
        distinct = list(wanted)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                answer = await self._script(
                    keys=[self._keys.rate(org) for org in distinct],
                    args=[self.rate, self._size, *(wanted[org] for org in distinct)],
                )
        except (*REDIS_ERRORS, RedisError) as error:
            self._fail_open(error, len(orgs))
            return [None] * len(orgs)
        granted = {
            org: (int(answer[2 * i]), int(answer[2 * i + 1])) for i, org in enumerate(distinct)
        }
        return share(orgs, granted, self.rate)

    def _fail_open(self, error: BaseException, checks: int) -> None:
        now = self._clock()
        self._open_until = now + OPEN_AFTER_FAILURE_SECONDS
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            self._logged_at = now
            log.warning(
                "submit_rate_unchecked",
                reason="Redis does not answer: submissions are accepted without the "
                "SUBMIT_RATE_PER_ORG check until it does",
                error=f"{type(error).__name__}: {error}",
                checks=checks,
            )
