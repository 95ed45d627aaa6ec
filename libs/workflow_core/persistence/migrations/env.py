"""Alembic environment: always run through `workflow_core.persistence.migrate`, which passes
an open connection (holding the migration advisory lock) in `config.attributes`."""

from __future__ import annotations

from alembic import context

from workflow_core.persistence.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations with `make migrate` (python -m workflow_core.persistence.migrate)"
    )

context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
