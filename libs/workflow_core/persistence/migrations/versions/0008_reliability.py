"""reliability: workers keep a heartbeat (an email reservation is taken over only from an owner
that stopped beating); an event is marked taken with the runs it starts (the reconcile sweep
publishes again what no worker took); a run names the worker driving it; an email is `done`
only after its final 250 (the `committing` state is gone: what it marked was never confirmed
by the server, so it is to be sent again)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("owner", sa.Text(), primary_key=True),
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.add_column("outbox", sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox", sa.Column("publish_count", sa.Integer(), nullable=False,
                                      server_default=sa.text("0")))
    op.execute("UPDATE outbox SET taken_at = published_at WHERE published_at IS NOT NULL")
    op.execute("UPDATE outbox SET publish_count = 1 WHERE published_at IS NOT NULL")
    op.create_index(
        "ix_outbox_untaken",
        "outbox",
        ["published_at"],
        postgresql_where=sa.text("taken_at IS NULL AND published_at IS NOT NULL"),
    )
    op.add_column("runs", sa.Column("owner", sa.Text(), nullable=True))
    op.create_index(
        "ix_runs_running_updated",
        "runs",
        ["updated_at"],
        postgresql_where=sa.text("status = 'running'"),
    )
    op.execute("UPDATE effects SET state = 'reserved' WHERE state = 'committing'")


def downgrade() -> None:
    op.drop_index("ix_runs_running_updated", table_name="runs")
    op.drop_column("runs", "owner")
    op.drop_index("ix_outbox_untaken", table_name="outbox")
    op.drop_column("outbox", "publish_count")
    op.drop_column("outbox", "taken_at")
    op.drop_table("workers")
