"""notify relays and schedulers only when rows were inserted: a run's checkpoint inserts into
outbox and timers in every statement, mostly zero rows, and statement triggers fire anyway

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = (("outbox", "flowline_outbox"), ("timers", "flowline_timers"))


def upgrade() -> None:
    for table, channel in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify ON {table}")
        op.execute(f"""
            CREATE OR REPLACE FUNCTION {channel}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM inserted) THEN PERFORM pg_notify('{channel}', ''); END IF;
                RETURN NULL;
            END $$
        """)
        op.execute(f"""
            CREATE TRIGGER {table}_notify AFTER INSERT ON {table}
            REFERENCING NEW TABLE AS inserted
            FOR EACH STATEMENT EXECUTE FUNCTION {channel}_notify()
        """)


def downgrade() -> None:
    for table, channel in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify ON {table}")
        op.execute(f"""
            CREATE OR REPLACE FUNCTION {channel}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$
        """)
        op.execute(f"""
            CREATE TRIGGER {table}_notify AFTER INSERT ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION {channel}_notify()
        """)
