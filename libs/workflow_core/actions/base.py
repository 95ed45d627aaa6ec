"""What an action executor receives and what it may use.

An executor is `async def execute(call, config, deps) -> dict`: `call` says which run, step and
attempt it serves; `config` is its validated config; `deps` are the only doors to the outside
(mail, HTTP, records, the effect ledger). What it returns lands in `steps.<step_id>` of the run's
context. It raises `RetryableActionError` or `PermanentActionError` (workflow_core.errors).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from workflow_core.email_format import OutgoingEmail


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
    claimed: bool = False
    """An earlier attempt claimed this effect in the ledger and may have carried it out."""
    reserved: bool = False
    """This attempt already holds the effect's reservation (taken with the run's creation)."""


class CommitHook(Protocol):
    def __call__(self) -> Awaitable[None]: ...


class Mailer(Protocol):
    async def send(self, message: OutgoingEmail, *, before_data: CommitHook) -> None:
        """Deliver `message`. `before_data` runs once the recipients are accepted and before the
        message is handed over; if it raises, nothing is sent."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body_excerpt: str


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
    """Where an effect that cannot be taken back (an email) is recorded around its hand-over,
    so that a retry after a crash neither repeats it nor drops it."""

    @property
    def owner(self) -> str:
        """Who holds the reservations this process takes."""
        ...

    async def reserve(self, call: ActionCall) -> None:
        """Take the effect for this attempt, before any of its work. Raises
        `EffectAlreadyClaimed` when it was handed over already, and `RetryableActionError`
        while another live attempt holds it."""

    async def start_hand_over(self, call: ActionCall) -> Awaitable[None]:
        """Start recording, durably, that the effect is being handed over, and return as soon
        as that record is on its way: the caller hands the effect over at once (so a crash
        can fall between the two only for an instant) and then awaits the returned record."""

    async def release(self, key: str) -> None:
        """Give the effect up: it was refused outright, nothing was delivered."""


class EffectAlreadyClaimed(Exception):
    """An earlier attempt already handed this effect over; it must not be repeated."""


@dataclass(frozen=True, slots=True)
class ActionDeps:
    mailer: Mailer
    http: HttpClient
    records: Records
    ledger: EffectLedger
    from_email: str
    now: Callable[[], datetime]
    settings: Mapping[str, Any] = field(default_factory=dict)
