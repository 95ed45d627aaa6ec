"""outbox NOTIFY only for events the relay publishes at once: a submission's event goes out
by the API's fast path (the relay picks it up only if that failed), so waking every relay on
every submission would only make them compete for nothing

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _function(condition: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION flowline_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM inserted WHERE {condition}) THEN
                PERFORM pg_notify('flowline_outbox', '');
            END IF;
            RETURN NULL;
        END $$
    """


def upgrade() -> None:
    op.execute(_function("event_type <> 'form_submitted'"))


def downgrade() -> None:
    op.execute(_function("true"))
