"""What an action executor receives and what it may use.

An executor is `async def execute(call, config, deps) -> dict`: `call` says which run, step and
attempt it serves; `config` is its validated config; `deps` are the only doors to the outside
(mail, HTTP, records, the effect ledger). What it returns lands in `steps.<step_id>` of the run's
context. It raises `RetryableActionError` or `PermanentActionError` (workflow_core.errors).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from workflow_core.email_format import OutgoingEmail
from workflow_core.engine.limits import DEFAULT_LIMITS, Limits


@dataclass(frozen=True, slots=True)
class ActionCall:
    run_id: UUID
    workflow_id: UUID
    org_id: str | None
    submission_id: UUID | None
    step_id: str
    step_seq: int
    index: int
    attempt: int
    key: str
    """Idempotency key of this action in this visit of the step: the same on every attempt."""
    context: Mapping[str, Any] = field(repr=False)
    limits: Limits = DEFAULT_LIMITS
    emails_sent: int = 0
    """How many emails the run had sent before this action (MAX_EMAILS_PER_RUN)."""


class Mailer(Protocol):
    async def send(self, message: OutgoingEmail) -> None:
        """Deliver `message`: returns once the server confirmed it (its final 250). Raises
        `RetryableActionError` or `PermanentActionError` otherwise; either way the server did
        not take the message."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body_excerpt: str
    body: bytes | None = None
    """The whole body, when its content type is JSON and it is no larger than the cap the
    client was given (WEBHOOK_RESPONSE_MAX_BYTES); None otherwise."""


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json`, or any `+json` type (`application/problem+json` ...)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class HttpClient(Protocol):
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None,
        timeout: float,
    ) -> HttpResponse: ...


class Records(Protocol):
    """Tickets and tasks, stored in Flowline's database."""

    async def create_ticket(
        self, ticket_id: UUID, call: ActionCall, fields: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def update_ticket(
        self, ticket_id: UUID, org_id: str | None, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a ticket of organisation `org_id`; another organisation's is not found."""
        ...

    async def create_task(
        self, task_id: UUID, call: ActionCall, fields: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def update_task(
        self, task_id: UUID, org_id: str | None, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a to-do task of organisation `org_id`; another organisation's is not found."""
        ...


class EffectLedger(Protocol):
    """Where an effect that cannot be taken back (an email) is reserved before it is performed,
    so that a retry after a crash neither repeats it nor drops it."""

    async def reserve(self, call: ActionCall) -> Mapping[str, Any] | None:
        """Take the effect for this attempt, before any of its work: None when taken. Returns
        the recorded result when the effect was performed already (do not repeat it), and
        raises `EffectBusy` while another live attempt holds it."""

    async def sent(self, call: ActionCall, result: Mapping[str, Any]) -> None:
        """The effect was performed (the server confirmed it): record it before anything
        else happens."""

    async def release(self, key: str) -> None:
        """Give the effect up: nothing was delivered."""


@dataclass(frozen=True, slots=True)
class ActionDeps:
    mailer: Mailer
    http: HttpClient
    records: Records
    ledger: EffectLedger
    from_email: str
    now: Callable[[], datetime]
    settings: Mapping[str, Any] = field(default_factory=dict)
