"""concurrency: concurrency keys and throttles. A run of a workflow with `concurrency` or
`throttle` keeps its keys (namespaced by organisation), what it is queued for while it waits
its turn, its place in the queue (when its form was submitted), and when it was let in; partial indexes keep the slot counts and the queues small
lookups (rows of other workflows are in none of them); a throttled run's pending wake-up is
found by an index of its own

Revision ID: 0014
Revises: 0012
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None

_QUEUED = "queued_for IS NOT NULL AND status = 'waiting'"
INDEXES = (
    (
        "ix_runs_concurrency_active",
        ["workflow_id", "concurrency_key"],
        "concurrency_key IS NOT NULL AND queued_for IS NULL AND status IN ('running', 'waiting')",
    ),
    ("ix_runs_concurrency_queued", ["workflow_id", "concurrency_key", "queued_at"], _QUEUED),
    ("ix_runs_throttle_queued", ["workflow_id", "throttle_key", "queued_at"], _QUEUED),
    (
        "ix_runs_throttle_starts",
        ["workflow_id", "throttle_key", "admitted_at"],
        "throttle_key IS NOT NULL AND admitted_at IS NOT NULL",
    ),
)


def upgrade() -> None:
    op.add_column("runs", sa.Column("concurrency_key", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("throttle_key", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("queued_for", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("runs", sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=True))
    for name, columns, where in INDEXES:
        op.create_index(name, "runs", columns, postgresql_where=sa.text(where))
    op.create_index(
        "ix_timers_admit_pending",
        "timers",
        ["run_id"],
        postgresql_where=sa.text("kind = 'admit' AND fired_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_timers_admit_pending", table_name="timers")
    for name, _, _ in INDEXES:
        op.drop_index(name, table_name="runs")
    for column in ("admitted_at", "queued_at", "queued_for", "throttle_key", "concurrency_key"):
        op.drop_column("runs", column)
