"""Tickets the workflows opened: list and read."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter

from services.api.access import Caller, acting_for, must_see, needs
from services.api.deps import Db, Filter, Limit, Offset
from services.api.schemas.tasks import TicketOut
from workflow_core.errors import NotFound
from workflow_core.persistence import records
from workflow_core.statuses import TicketStatus

router = APIRouter(prefix="/tickets", tags=["tickets"])


@router.get("", response_model=list[TicketOut])
async def list_tickets(
    db: Db,
    principal: Caller,
    org_id: Filter = None,
    status: TicketStatus | None = None,
    run_id: UUID | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Tickets, newest first, filtered by organisation, status or the run that opened them."""
    needs(principal, "admin")
    org_id = acting_for(principal, org_id)
    async with db.reading() as conn:
        return await records.list_tickets(
            conn, org_id=org_id, status=status, run_id=run_id, limit=limit, offset=offset
        )


@router.get(
    "/{ticket_id}", response_model=TicketOut, responses={404: {"description": "no such ticket"}}
)
async def get_ticket(ticket_id: UUID, db: Db, principal: Caller) -> dict[str, Any]:
    needs(principal, "admin")
    missing = f"no ticket with id {ticket_id}"
    async with db.reading() as conn:
        ticket = await records.get_ticket(conn, ticket_id)
    if ticket is None:
        raise NotFound(missing)
    must_see(principal, ticket["org_id"], missing)
    return ticket
