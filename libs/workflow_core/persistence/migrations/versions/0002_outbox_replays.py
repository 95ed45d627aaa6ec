"""outbox: an event id may be published again (a replayed dead letter keeps its event id, so
the worker finds the runs it started)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("uq_outbox_event_id", "outbox", type_="unique")
    op.create_index("ix_outbox_event_id", "outbox", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_event_id", table_name="outbox")
    op.create_unique_constraint("uq_outbox_event_id", "outbox", ["event_id"])
