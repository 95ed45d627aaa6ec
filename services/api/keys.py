"""Who is calling: API keys and what each may do (CONTRACT §7).

- The operator's key, API_ADMIN_KEY (settings), may do everything, for every organisation.
  Without it the API is open: a request without a key is the operator (the API then listens on
  loopback only, unless API_ALLOW_OPEN=true).
- An organisation's key (`fl_live_` + 43 characters: 256 random bits) belongs to one
  organisation and has scopes: `submit` (POST /submit and the form endpoint: safe in a web
  page), `tasks` (the organisation's tasks), `admin` (everything of the organisation).

A key is stored as a keyed hash (HMAC-SHA256): the key is 256 random bits, so a fast hash is
right (a password hash would cost CPU on every request for nothing). Keys are looked up once
and then served from memory; a revocation reaches every API process through Redis pub/sub
within a moment, and while that channel is down a cached key is trusted for a second only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from uuid import UUID

import redis.asyncio as aioredis

from workflow_core.adapters.streams import REDIS_ERRORS, StreamKeys
from workflow_core.log import get_logger
from workflow_core.persistence import api_keys
from workflow_core.persistence.pool import Pool, translate_errors
from workflow_core.runtime.pacing import Backoff, sleep_unless

log = get_logger(__name__)

KEY_PREFIX = "fl_live_"
SCOPES = ("submit", "tasks", "admin")
# Not a secret: the keys are 256 random bits. Keying the hash only keeps these digests from
# matching any other system's.
_HASH_KEY = b"flowline api keys v1"
_TRUSTED_SECONDS = 300.0  # a cached key, while revocations are heard
_DOUBTED_SECONDS = 1.0  # a cached key, while they may be missed
_UNKNOWN_SECONDS = 5.0  # a key that matched nothing
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for."""

    key_id: UUID | None
    """None: the operator (API_ADMIN_KEY, or an open API)."""
    org_id: str | None
    """None: every organisation."""
    scopes: frozenset[str]
    allowed_origins: tuple[str, ...] = ()

    @property
    def operator(self) -> bool:
        return self.org_id is None

    def can(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def sees(self, org_id: str | None) -> bool:
        """Whether an object of organisation `org_id` exists for this caller."""
        return self.operator or org_id == self.org_id


OPERATOR = Principal(None, None, frozenset({"admin"}))


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> bytes:
    return hmac.new(_HASH_KEY, key.encode(), hashlib.sha256).digest()


def shown_prefix(key: str) -> str:
    """What lists show of a key, so that people can tell theirs apart (never enough to use)."""
    return key[: len(KEY_PREFIX) + 6]


def bearer(authorization: bytes | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip().decode("latin-1")


@dataclass(slots=True)
class _Cached:
    principal: Principal | None
    at: float


class KeyRing:
    def __init__(
        self, pool: Pool, redis: aioredis.Redis, keys: StreamKeys, *, admin_key: str
    ) -> None:
        self._pool, self._redis, self._channel = pool, redis, keys.key_revocations
        self._admin = admin_key.encode()
        self._cache: dict[bytes, _Cached] = {}
        self._hearing = False

    @property
    def open(self) -> bool:
        return not self._admin

    async def principal(self, token: str | None) -> Principal | None:
        """The caller a bearer token stands for; None when it stands for nobody."""
        if token is None:
            return OPERATOR if self.open else None
        # Compared in constant time, so the answer's timing does not spell out the key.
        if self._admin and hmac.compare_digest(token.encode(), self._admin):
            return OPERATOR
        if not token.startswith(KEY_PREFIX):
            return None  # not one of ours: no lookup
        return await self._lookup(digest(token))

    async def _lookup(self, hashed: bytes) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get(hashed)
        if cached is not None and now - cached.at < self._lifetime(cached.principal):
            return cached.principal
        async with translate_errors():
            found = await api_keys.by_digest(self._pool, hashed)
        principal = (
            Principal(found.id, found.org_id, frozenset(found.scopes), found.allowed_origins)
            if found is not None
            else None
        )
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[hashed] = _Cached(principal, now)
        return principal

    def _lifetime(self, principal: Principal | None) -> float:
        if principal is None:
            return _UNKNOWN_SECONDS
        return _TRUSTED_SECONDS if self._hearing else _DOUBTED_SECONDS

    def forget(self, key_id: UUID) -> None:
        for hashed, cached in list(self._cache.items()):
            if cached.principal is not None and cached.principal.key_id == key_id:
                del self._cache[hashed]

    async def revoked(self, key_id: UUID) -> None:
        """Tell every API process (this one first) that the key is no more."""
        self.forget(key_id)
        try:
            await self._redis.publish(self._channel, str(key_id))
        except REDIS_ERRORS as error:  # the others doubt their caches while they cannot hear
            log.warning("key_revocation_not_published", key_id=str(key_id), error=str(error))

    async def hear_revocations(self, stop: asyncio.Event) -> None:
        """Until `stop`: forget the keys other processes revoke."""
        backoff = Backoff(ceiling=2.0)
        while not stop.is_set():
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._hearing = True
                    self._cache.clear()  # what was cached while deaf may be revoked already
                    backoff.reset()
                    while not stop.is_set():
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=0.5
                        )
                        if message is not None:
                            self._heard(message.get("data"))
            except REDIS_ERRORS as error:
                log.warning("key_revocations_unheard", error=str(error))
            finally:
                self._hearing = False
            await sleep_unless(stop, backoff.next_delay())

    def _heard(self, data: object) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        try:
            self.forget(UUID(text))
        except ValueError:
            log.warning("key_revocation_unreadable", data=text[:100])
