"""events: events posted to POST /events are kept (received_events) so that a run beginning to
wait for one finds it even when it came first; runs waiting in a wait_for_event step
(event_waits) with the correlation value they wait for and how their wait ended

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "received_events",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column("dedup_key", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_received_events")),
    )
    op.create_index(
        "ix_received_events_org_type_received",
        "received_events",
        ["org_id", "type", "received_at"],
    )
    op.create_index("ix_received_events_received", "received_events", ["received_at"])
    op.create_index(
        "uq_received_events_org_dedup",
        "received_events",
        ["org_id", "dedup_key"],
        unique=True,
        postgresql_where=sa.text("dedup_key IS NOT NULL"),
    )
    op.create_table(
        "event_waits",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("step_seq", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("expected", sa.Text(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("now()")),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("event", postgresql.JSONB(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE",
                                name=op.f("fk_event_waits_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "step_seq", name=op.f("pk_event_waits")),
    )
    op.create_index(
        "ix_event_waits_open",
        "event_waits",
        ["org_id", "event_type"],
        postgresql_where=sa.text("settled_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_event_waits_open", table_name="event_waits")
    op.drop_table("event_waits")
    op.drop_index("uq_received_events_org_dedup", table_name="received_events")
    op.drop_index("ix_received_events_received", table_name="received_events")
    op.drop_index("ix_received_events_org_type_received", table_name="received_events")
    op.drop_table("received_events")
