"""Signed links to a human task, for its assignee's email: one per outcome ("approve",
"reject") and one to the task's page. Pure: no I/O, the clock is given.

A link's token carries the task id, the outcome (empty for the task's page) and the expiry,
signed with HMAC-SHA256 under TASK_LINK_SECRET. Whoever holds the link may decide the task,
as whoever holds the email could; the token proves nothing else. Opening a link changes
nothing (mail scanners open links): its page asks for a click that POSTs the token back.

    <task id, 32 hex>.<expiry, unix seconds>.<outcome, base64url>.<signature, base64url>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID


class BadLink(ValueError):
    """This link is not one Flowline made (altered, cut short, or signed with another key)."""


@dataclass(frozen=True, slots=True)
class TaskLink:
    task_id: UUID
    outcome: str | None
    """None: the link to the task's page, where the assignee picks the outcome."""
    expires: datetime

    def expired(self, now: datetime) -> bool:
        return now >= self.expires


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def sign(key: bytes, link: TaskLink) -> str:
    outcome = _b64((link.outcome or "").encode())
    payload = f"{link.task_id.hex}.{int(link.expires.timestamp())}.{outcome}"
    return f"{payload}.{_signature(key, payload)}"


def read(key: bytes, token: str) -> TaskLink:
    """The link a token stands for, expired or not; BadLink when it was not signed with `key`
    (or is not a token at all)."""
    parts = token.split(".")
    if len(parts) != 4:
        raise BadLink(BadLink.__doc__)
    task_hex, expiry, outcome, signature = parts
    if not hmac.compare_digest(_signature(key, f"{task_hex}.{expiry}.{outcome}"), signature):
        raise BadLink(BadLink.__doc__)
    try:  # signed by us, so well formed; checked all the same
        return TaskLink(
            UUID(hex=task_hex),
            _unb64(outcome).decode() or None,
            datetime.fromtimestamp(int(expiry), UTC),
        )
    except (ValueError, binascii.Error, OverflowError):
        raise BadLink(BadLink.__doc__) from None


def expiry(due_at: datetime | None, now: datetime, ttl_seconds: float) -> datetime:
    """A link lives until its task's due time, or TASK_LINK_TTL_SECONDS without one."""
    if due_at is not None:
        return due_at
    return datetime.fromtimestamp(now.timestamp() + ttl_seconds, UTC)
