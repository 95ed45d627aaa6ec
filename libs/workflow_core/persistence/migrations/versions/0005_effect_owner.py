"""effects: who holds a reservation (an email's effect is reserved before its SMTP
transaction and marked handed over right before its content goes out)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("effects", sa.Column("owner", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("effects", "owner")
