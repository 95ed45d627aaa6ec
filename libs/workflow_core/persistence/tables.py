"""The database schema as SQLAlchemy Core tables. Alembic migrations (migrations/) create it;
the repositories query it. Times are `timestamptz`, ids UUIDs, documents JSONB."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _created() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated() -> Column[object]:
    return Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now())


workflows = Table(
    "workflows",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("org_id", Text, nullable=True),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("current_version", Integer, nullable=False),
    _created(),
    _updated(),
    # What names the workflow in a file (`workflows apply`): unique per organisation.
    Column("key", Text, nullable=True),
    Index("ix_workflows_active_org", "active", "org_id"),
    Index(
        "ix_workflows_org_key",
        func.coalesce(text("org_id"), ""),
        "key",
        unique=True,
        postgresql_where=text("key IS NOT NULL"),
    ),
)

workflow_versions = Table(
    "workflow_versions",
    metadata,
    Column("workflow_id", UUID(as_uuid=True), ForeignKey("workflows.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("definition", JSONB, nullable=False),
    _created(),
    PrimaryKeyConstraint("workflow_id", "version"),
)

submissions = Table(
    "submissions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("template_id", Text, nullable=False),
    Column("org_id", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    _created(),
    Index("ix_submissions_org_created", "org_id", "created_at"),
)

# The first answer to each (organisation, Idempotency-Key) of POST /submit, written in the
# statement that stores the submission. A key older than 24 hours is taken over by the next
# submission that brings it, and the API deletes old ones now and then.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("org_id", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("submission_id", UUID(as_uuid=True), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    _created(),
    PrimaryKeyConstraint("org_id", "key"),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

# Events waiting to be published to the stream; written in the same transaction as what they
# announce, published by the relay, kept for inspection (OUTBOX_RETENTION_SECONDS bounds it).
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("submission_id", UUID(as_uuid=True), nullable=True),
    _created(),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("stream_entry_id", Text, nullable=True),
    # Set in the transaction that starts the event's runs (or finds none to start): an event
    # published and never taken is published again (the reconcile sweep, relay.py).
    Column("taken_at", DateTime(timezone=True), nullable=True),
    Column("publish_count", Integer, nullable=False, server_default=text("0")),
    Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
    Index(
        "ix_outbox_untaken",
        "published_at",
        postgresql_where=text("taken_at IS NULL AND published_at IS NOT NULL"),
    ),
    Index("ix_outbox_submission", "submission_id"),
    Index("ix_outbox_event_id", "event_id"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("workflow_id", UUID(as_uuid=True), ForeignKey("workflows.id"), nullable=False),
    Column("workflow_version", Integer, nullable=False),
    Column("submission_id", UUID(as_uuid=True), ForeignKey("submissions.id"), nullable=True),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("org_id", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("current_step_id", Text, nullable=True),
    Column("step_seq", Integer, nullable=False, server_default=text("0")),
    Column("context", JSONB, nullable=False),
    Column("error", Text, nullable=True),
    Column("deliveries", Integer, nullable=False, server_default=text("1")),
    # Bumped by every write: a writer that loaded an older revision lost a race and backs off.
    Column("revision", Integer, nullable=False, server_default=text("0")),
    _created(),
    _updated(),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # The worker (effect owner) that wrote it last: a running run whose owner stopped beating
    # is picked up again by the reconcile sweep.
    Column("owner", Text, nullable=True),
    # Concurrency keys and throttles (engine/gates.py): the run's keys, namespaced by
    # organisation (NULL: its workflow sets no such limit); while it is queued, what it waits
    # for (`concurrency` or `throttle`, status `waiting`); its place in the queue (when its
    # form was submitted: runs created by one statement share `created_at`); when it was let in.
    Column("concurrency_key", Text, nullable=True),
    Column("throttle_key", Text, nullable=True),
    Column("queued_for", Text, nullable=True),
    Column("queued_at", DateTime(timezone=True), nullable=True),
    Column("admitted_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("event_id", "workflow_id"),
    Index("ix_runs_running_updated", "updated_at", postgresql_where=text("status = 'running'")),
    Index("ix_runs_submission", "submission_id"),
    Index("ix_runs_workflow_status", "workflow_id", "status", "created_at"),
    Index("ix_runs_status_created", "status", "created_at"),
    # What RUN_RETENTION_DAYS purges, and what POST /runs/retry's window filters by.
    Index("ix_runs_finished_at", "finished_at", postgresql_where=text("finished_at IS NOT NULL")),
    Index(
        "ix_runs_concurrency_active",
        "workflow_id",
        "concurrency_key",
        postgresql_where=text(
            "concurrency_key IS NOT NULL AND queued_for IS NULL "
            "AND status IN ('running', 'waiting')"
        ),
    ),
    Index(
        "ix_runs_concurrency_queued",
        "workflow_id",
        "concurrency_key",
        "queued_at",
        postgresql_where=text("queued_for IS NOT NULL AND status = 'waiting'"),
    ),
    Index(
        "ix_runs_throttle_queued",
        "workflow_id",
        "throttle_key",
        "queued_at",
        postgresql_where=text("queued_for IS NOT NULL AND status = 'waiting'"),
    ),
    Index(
        "ix_runs_throttle_starts",
        "workflow_id",
        "throttle_key",
        "admitted_at",
        postgresql_where=text("throttle_key IS NOT NULL AND admitted_at IS NOT NULL"),
    ),
)

run_steps = Table(
    "run_steps",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("run_id", UUID(as_uuid=True), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("step_id", Text, nullable=False),
    Column("step_type", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("entered_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("transition_to", Text, nullable=True),
    Column("error", Text, nullable=True),
    UniqueConstraint("run_id", "seq"),
)

run_actions = Table(
    "run_actions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("run_id", UUID(as_uuid=True), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("step_seq", Integer, nullable=False),
    Column("step_id", Text, nullable=False),
    Column("action_index", Integer, nullable=False),
    Column("action_type", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("result", JSONB, nullable=True),
    Column("error", Text, nullable=True),
    Column("delivery", Integer, nullable=True),
    Index("ix_run_actions_run", "run_id", "step_seq", "action_index", "attempt"),
)

# One row per effect (email, webhook call, ticket ...), marked done with its result when it is
# recorded. An email is reserved by its owner first (see persistence/effects.py).
effects = Table(
    "effects",
    metadata,
    Column("key", Text, primary_key=True),
    Column("run_id", UUID(as_uuid=True), nullable=False),
    Column("state", Text, nullable=False),
    Column("result", JSONB, nullable=True),
    _created(),
    _updated(),
    Column("owner", Text, nullable=True),
    Index("ix_effects_run", "run_id"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("kind", Text, nullable=False),  # statuses.TaskKind
    Column("run_id", UUID(as_uuid=True), ForeignKey("runs.id"), nullable=True),
    Column("workflow_id", UUID(as_uuid=True), nullable=True),
    Column("step_id", Text, nullable=True),
    Column("step_seq", Integer, nullable=True),
    Column("submission_id", UUID(as_uuid=True), nullable=True),
    Column("org_id", Text, nullable=True),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=True),
    Column("assignee", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("outcome", Text, nullable=True),
    Column("data", JSONB, nullable=True),
    Column("fields", JSONB, nullable=True),
    Column("due_at", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Column("completed_by", Text, nullable=True),
    _created(),
    _updated(),
    Index("ix_tasks_status_created", "status", "created_at"),
    Index("ix_tasks_run", "run_id"),
)

tickets = Table(
    "tickets",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("run_id", UUID(as_uuid=True), nullable=True),
    Column("workflow_id", UUID(as_uuid=True), nullable=True),
    Column("submission_id", UUID(as_uuid=True), nullable=True),
    Column("org_id", Text, nullable=True),
    Column("subject", Text, nullable=False),
    Column("description", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("priority", Text, nullable=False),
    Column("assignee", Text, nullable=True),
    Column("fields", JSONB, nullable=False),
    _created(),
    _updated(),
    Index("ix_tickets_org_created", "org_id", "created_at"),
)

# Durable wake-ups: a wait step's end, a task's deadline, an action's next attempt.
timers = Table(
    "timers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("run_id", UUID(as_uuid=True), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("payload", JSONB, nullable=False),
    _created(),
    Column("fired_at", DateTime(timezone=True), nullable=True),
    Index("ix_timers_due", "due_at", postgresql_where=text("fired_at IS NULL")),
    # A throttled run's pending wake-up, looked for before another is set (persistence/gates.py).
    Index(
        "ix_timers_admit_pending",
        "run_id",
        postgresql_where=text("kind = 'admit' AND fired_at IS NULL"),
    ),
)

# Every worker process, with the heartbeat it keeps: an owner whose heartbeat is older than
# WORKER_DEAD_AFTER_SECONDS is dead, and its email reservations may be taken over.
workers = Table(
    "workers",
    metadata,
    Column("owner", Text, primary_key=True),
    Column("consumer", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The next tick of each active workflow whose trigger is a schedule. A worker claims a due row
# (FOR UPDATE SKIP LOCKED), queues the tick's event and moves next_fire_at on, in one
# transaction: each tick fires once however many workers run.
schedules = Table(
    "schedules",
    metadata,
    Column(
        "workflow_id",
        UUID(as_uuid=True),
        ForeignKey("workflows.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version", Integer, nullable=False),
    Column("org_id", Text, nullable=True),
    Column("cron", Text, nullable=False),
    Column("timezone", Text, nullable=False),
    Column("catch_up", Boolean, nullable=False),
    Column("next_fire_at", DateTime(timezone=True), nullable=False),
    Column("last_fired_at", DateTime(timezone=True), nullable=True),
    _created(),
    _updated(),
    Index("ix_schedules_next_fire_at", "next_fire_at"),
)

# An organisation's API keys: a keyed hash of each key (its text is shown once, when it is made).
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("name", Text, nullable=True),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("allowed_origins", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("prefix", Text, nullable=False),
    Column("digest", LargeBinary, nullable=False, unique=True),
    _created(),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_api_keys_org_created", "org_id", "created_at"),
)

# Events posted to POST /events, kept EVENT_RETENTION_SECONDS: a wait_for_event step that
# begins after its event came finds it here (events of its type and organisation received
# since its run's own event was). `dedup_key` is the client's `id` (or Idempotency-Key): a
# repeat of it within the organisation stores nothing and gets the first answer.
received_events = Table(
    "received_events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("dedup_key", Text, nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("ix_received_events_org_type_received", "org_id", "type", "received_at"),
    Index("ix_received_events_received", "received_at"),
    Index(
        "uq_received_events_org_dedup",
        "org_id",
        "dedup_key",
        unique=True,
        postgresql_where=text("dedup_key IS NOT NULL"),
    ),
)

# A run waiting in a wait_for_event step (one row per step visit): what it waits for (the
# correlation rendered when it began to wait), and how the wait ended: settled once, by the
# first matching event (`event`) or by its timeout, in the transaction that queues the run's
# resume event.
event_waits = Table(
    "event_waits",
    metadata,
    Column("run_id", UUID(as_uuid=True), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("step_seq", Integer, nullable=False),
    Column("org_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("path", Text, nullable=True),
    Column("expected", Text, nullable=True),
    Column("since", DateTime(timezone=True), nullable=True),
    _created(),
    Column("settled_at", DateTime(timezone=True), nullable=True),
    Column("outcome", Text, nullable=True),  # 'event' | 'timed_out'
    Column("event", JSONB, nullable=True),
    PrimaryKeyConstraint("run_id", "step_seq"),
    Index(
        "ix_event_waits_open", "org_id", "event_type", postgresql_where=text("settled_at IS NULL")
    ),
)
