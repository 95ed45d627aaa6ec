"""Ids. Every object id is a UUID; the ids of effects are derived, so that a redelivered event
computes the same ones and finds the work it already did."""

from __future__ import annotations

import uuid

# A fixed namespace for Flowline's derived ids (uuid5).
_NAMESPACE = uuid.UUID("5b0c5f4e-6a53-4f3a-9f0e-2a2f6d1c7e11")


DRY_RUN_ID = "dry-run"
"""What a dry run shows where a real run would have an id (a run, a ticket, a task)."""


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def run_id_for(event_id: uuid.UUID | str, workflow_id: uuid.UUID | str) -> uuid.UUID:
    """One run per (event, workflow): a redelivered event finds the run it already started."""
    return uuid.uuid5(_NAMESPACE, f"run:{event_id}:{workflow_id}")


def effect_key(run_id: uuid.UUID | str, step_seq: int, action_index: int) -> str:
    """The idempotency key of one action of one visit of a step in a run."""
    return f"{run_id}/{step_seq}/{action_index}"


def derived_id(key: str) -> uuid.UUID:
    """A stable id for the object an effect creates (a ticket, a task)."""
    return uuid.uuid5(_NAMESPACE, f"effect:{key}")


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None
