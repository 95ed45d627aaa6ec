"""Every Prometheus series Flowline exports, in one registry of its own (so every series is
named `flowline_*`: the client's default collectors are not in it).

Counting is cheap and local: a counter or a histogram is a few hundred nanoseconds and no I/O.
What lives elsewhere (the outbox, the stream, the runs table) is sampled every few seconds by
`sampler.py`, never read per scrape. No label carries an unbounded value: routes are templates,
action types come from the registry, outcomes and statuses from fixed sets.

The API is one uvicorn process and each worker one process, each with its own /metrics: no
multiprocess mode (its files and locks) is needed.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(namespace="flowline", registry=REGISTRY)

# Seconds: from a millisecond (a cached answer) to a minute (an SMTP server that is slow).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# -- API -------------------------------------------------------------------------------------

SUBMISSIONS_ACCEPTED = Counter(
    "flowline_submissions_accepted",
    "Submissions stored with their event (202); a repeated Idempotency-Key is not counted",
    registry=REGISTRY,
)
EVENTS_ACCEPTED = Counter(
    "flowline_events_accepted",
    "Events posted to /events and stored (202); a repeated id is not counted",
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "flowline_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "flowline_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method, route and status",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)

# -- worker ----------------------------------------------------------------------------------

EVENTS_HANDLED = Counter(
    "flowline_events_handled",
    "Stream entries a worker finished, by outcome (handled, failed, dead_lettered)",
    ["outcome"],
    registry=REGISTRY,
)
ACTION_ATTEMPTS = Counter(
    "flowline_action_attempts",
    "Action attempts, by action type and outcome (succeeded, retrying, failed, waiting)",
    ["type", "outcome"],
    registry=REGISTRY,
)
ACTION_DURATION = Histogram(
    "flowline_action_duration_seconds",
    "How long one action attempt took, by action type and outcome",
    ["type", "outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
EMAILS = Counter(
    "flowline_emails",
    "Emails by outcome: sent (the server said 250), deduplicated (sent before, not again), "
    "retried (to be tried again), refused (permanently: by the server, or not sendable), "
    "failed (given up after the last retry)",
    ["outcome"],
    registry=REGISTRY,
)
EMAIL_OUTCOMES = ("sent", "deduplicated", "retried", "refused", "failed")
for _outcome in EMAIL_OUTCOMES:  # every outcome shows from the start, at 0
    EMAILS.labels(_outcome)
RUNS_PURGED = Counter(
    "flowline_runs_purged",
    "Finished runs deleted with their history by the retention purge (RUN_RETENTION_DAYS)",
    registry=REGISTRY,
)
SCHEDULE_TICKS = Counter(
    "flowline_schedule_ticks",
    "Schedule ticks this worker handled, by outcome: fired (its event queued), skipped (missed "
    "during an outage and not fired: catch_up is false, or past SCHEDULE_CATCH_UP_LIMIT)",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in ("fired", "skipped"):
    SCHEDULE_TICKS.labels(_outcome)
SMTP_CONNECTION_FAILURES = Counter(
    "flowline_smtp_connection_failures",
    "SMTP connections that could not be opened (refused, timed out, greeting or login refused)",
    registry=REGISTRY,
)

# -- shared state, sampled (sampler.py) ------------------------------------------------------

DEPENDENCY_UP = Gauge(
    "flowline_dependency_up",
    "1 when the dependency answered its last use or probe, 0 when it did not "
    "(postgresql, redis: sampled; smtp: the worker's last connection attempt)",
    ["dependency"],
    registry=REGISTRY,
)
OUTBOX_UNPUBLISHED = Gauge(
    "flowline_outbox_unpublished",
    "Events stored and not yet published to the stream",
    registry=REGISTRY,
)
STREAM_LENGTH = Gauge(
    "flowline_stream_length",
    "Entries in the events stream (XLEN)",
    registry=REGISTRY,
)
STREAM_LAG = Gauge(
    "flowline_stream_lag",
    "Entries of the stream not yet delivered to the consumer group",
    ["group"],
    registry=REGISTRY,
)
STREAM_PENDING = Gauge(
    "flowline_stream_pending",
    "Entries delivered to the consumer group and not yet acknowledged",
    ["group"],
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "flowline_dead_letters",
    "Entries in the dead-letter stream",
    registry=REGISTRY,
)
RUNS = Gauge(
    "flowline_runs",
    "Runs by status",
    ["status"],
    registry=REGISTRY,
)
SAMPLE_AGE = Gauge(
    "flowline_sample_timestamp_seconds",
    "When the sampled gauges (outbox, stream, runs) were last read successfully (Unix time)",
    registry=REGISTRY,
)

KNOWN_DEPENDENCIES = ("postgresql", "redis", "smtp")


def dependency(name: str, up: bool) -> None:
    DEPENDENCY_UP.labels(name).set(1 if up else 0)


def render() -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def exported_names() -> set[str]:
    """Every sample name the registry can show (counters' `_total`, histograms' `_bucket` ...),
    with labelled series included once they exist."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        names.update(_suffixed(family.name, family.type))
    return names


def _suffixed(name: str, kind: str) -> Iterable[str]:
    if kind == "counter":
        return (f"{name}_total", f"{name}_created")
    if kind == "histogram":
        return tuple(f"{name}_{suffix}" for suffix in ("bucket", "count", "sum", "created"))
    return ()
