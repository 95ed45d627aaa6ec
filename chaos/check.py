"""The invariant checker: what PostgreSQL says happened, against what the SMTP sink and the
webhook receiver actually got, against what the load was told (202s).

Expected emails come from the forms, not from Flowline: each accepted seed form is one email,
each approval form two (the assignee's notice and the confirmation), each wait form one, one
address per email. PostgreSQL is the cross-check: every run should be `completed`, and every
Message-ID its history records as sent should have been delivered (a `deduplicated` attempt of
an email the sink never got is one Flowline believes it handed over and nobody received)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from chaos.faults import Injected
from chaos.flows import Kind, expected_recipients, kind_of
from chaos.load import Outcome
from chaos.monitor import Samples
from chaos.receiver import WebhookCall
from chaos.sink import CLIENT_LEFT, DELIVERED, DROPPED, SinkRecord

MIB = 1024 * 1024
DUPLICATE_WINDOW_SECONDS = 0.5
"""CONTRACT §5: an email may be sent twice only when the worker that sent it died between the
server's 250 and the commit of its record. A repeat whose first 250 came less than this before
a worker was signalled (and before it was gone) is that window; any other repeat is a bug."""
GROWTH_RATIO, GROWTH_BYTES, GROWTH_MIN_SAMPLES = 1.5, 50 * MIB, 9


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    submission_id: str
    status: str
    step: str
    error: str


@dataclass(frozen=True, slots=True)
class EmailAttempt:
    """One attempt of an email action, as the run's history records it."""

    run_id: str
    step_id: str
    action_type: str  # send_email, or notify_assignee: a human task's notice to its assignee
    attempt: int
    status: str
    error: str
    message_id: str
    deduplicated: bool

    def short(self) -> str:
        dedup = " deduplicated" if self.deduplicated else ""
        error = f" ({self.error[:100]})" if self.error else ""
        return f"{self.action_type}#{self.attempt} {self.status}{dedup}{error}"


@dataclass
class Database:
    submissions: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """Id -> (template id, form data)."""
    runs: list[Run] = field(default_factory=list)
    attempts: dict[str, list[EmailAttempt]] = field(default_factory=dict)
    """Run id -> the attempts of its email actions, in order."""
    tickets_per_run: dict[str, int] = field(default_factory=dict)
    pending_tasks: int = 0
    outbox_unpublished: int = 0
    effects: dict[str, int] = field(default_factory=dict)


_EMAIL_ATTEMPTS = """
    SELECT run_id::text, step_id, action_type, attempt, status, coalesce(error, ''),
           coalesce(result->>'message_id', ''),
           coalesce((result->>'deduplicated')::boolean, false)
    FROM run_actions WHERE action_type IN ('send_email', 'notify_assignee')
    ORDER BY id
"""


async def read_database(dsn: str) -> Database:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        found = Database()
        for row in await connection.fetch("SELECT id::text, template_id, data FROM submissions"):
            found.submissions[row[0]] = (row[1], orjson.loads(row[2]))
        found.runs = [
            Run(row[0], row[1] or "", row[2], row[3] or "", row[4] or "")
            for row in await connection.fetch(
                "SELECT id::text, submission_id::text, status, current_step_id, error FROM runs"
            )
        ]
        for row in await connection.fetch(_EMAIL_ATTEMPTS):
            attempt = EmailAttempt(*row)
            found.attempts.setdefault(attempt.run_id, []).append(attempt)
        found.tickets_per_run = {
            row[0]: row[1]
            for row in await connection.fetch(
                "SELECT run_id::text, count(*) FROM tickets GROUP BY run_id"
            )
        }
        found.pending_tasks = await connection.fetchval(
            "SELECT count(*) FROM tasks WHERE kind = 'human' AND status = 'pending'"
        )
        found.outbox_unpublished = await connection.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        found.effects = {
            row[0]: row[1]
            for row in await connection.fetch("SELECT state, count(*) FROM effects GROUP BY state")
        }
        return found
    finally:
        await connection.close()


@dataclass
class Facts:
    """Everything the soak saw, gathered once the system is quiet (or the wait gave up)."""

    outcomes: list[Outcome]
    late_sends: int
    person: Counter[str]
    db: Database
    sink: list[SinkRecord]
    webhooks: list[WebhookCall]
    samples: Samples
    injected: list[Injected]
    unexpected_exits: list[str]
    t0_wall: float
    """time.time() when the load started: fault times are relative to it."""
    quiescent: bool
    settle_seconds: float
    unchanged_seconds: float
    """For how long, at the end of the wait, nothing had moved."""


Row = tuple[str, str]


@dataclass
class Findings:
    sections: list[tuple[str, list[Row]]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    evidence: dict[str, list[str]] = field(default_factory=dict)
    """Reason -> one line per missing or duplicated email, or submission without a run."""
    runs_to_explain: dict[str, list[str]] = field(default_factory=dict)
    """Reason -> the runs that show it; a few of each go into evidence.txt in full."""

    submissions_to_explain: list[str] = field(default_factory=list)
    """Submissions without a run: their events, in evidence.txt."""

    def note(self, reason: str, line: str) -> None:
        self.evidence.setdefault(reason, []).append(line)

    def explain(self, reason: str, run_ids: Sequence[str]) -> None:
        known = self.runs_to_explain.setdefault(reason, [])
        known += [run_id for run_id in run_ids if run_id not in known]

    def section(self, title: str, rows: list[Row]) -> None:
        self.sections.append((title, rows))

    def count(self, items: Sequence[object] | int, what: str) -> str:
        """The count, marked FAIL (and the failure recorded) when it is not 0."""
        n = items if isinstance(items, int) else len(items)
        if n:
            self.failures.append(f"{n} {what}")
            return f"{n}  FAIL"
        return "0"


@dataclass(frozen=True, slots=True)
class Expected:
    recipient: str
    kind: Kind
    submission_id: str


def _expected(facts: Facts) -> dict[str, Expected]:
    """One entry per expected email, keyed by its (unique) recipient: from the 202s, and from
    PostgreSQL for forms stored without the client seeing a 202 (it is the truth)."""
    wanted: dict[str, Expected] = {}
    for outcome in facts.outcomes:
        if outcome.status == "accepted":
            for recipient in outcome.form.recipients:
                wanted[recipient] = Expected(
                    recipient, outcome.form.kind, outcome.submission_id or ""
                )
    for submission_id, (template_id, data) in facts.db.submissions.items():
        kind = kind_of(template_id)
        if kind is not None:
            for recipient in expected_recipients(kind, data):
                wanted.setdefault(recipient, Expected(recipient, kind, submission_id))
    return wanted


def _active_faults(facts: Facts, wall: float) -> str:
    at = wall - facts.t0_wall
    active = [
        item.fault.kind
        for item in facts.injected
        if item.started - 1 <= at <= max(item.ended, item.started + item.fault.duration) + 1
    ]
    return ",".join(active) or "-"


def _submissions(facts: Facts, findings: Findings, runs_of: dict[str, list[Run]]) -> None:
    counts = Counter(outcome.status for outcome in facts.outcomes)
    rejected = Counter(o.detail for o in facts.outcomes if o.status == "rejected")
    unknown = Counter(o.detail for o in facts.outcomes if o.status == "unknown")
    accepted_ids = {o.submission_id for o in facts.outcomes if o.status == "accepted"}
    lost = sorted(i for i in accepted_ids if i and i not in facts.db.submissions)
    stored_emails = {
        str(data.get("email", "")).lower() for _, data in facts.db.submissions.values()
    }
    refused_yet_stored = Counter(
        o.detail
        for o in facts.outcomes
        if o.status != "accepted" and o.form.recipients[-1] in stored_emails
    )
    no_run = sorted(i for i in facts.db.submissions if not runs_of.get(i))
    several = sorted(i for i, found in runs_of.items() if len(found) > 1)
    refused = sum(n for detail, n in refused_yet_stored.items() if detail.startswith("HTTP"))
    if refused:
        findings.warnings.append(
            f"{refused} submissions were answered with an error (a client retries them) and "
            "stored and run all the same"
        )
    findings.section(
        "submissions",
        [
            ("sent", str(len(facts.outcomes))),
            ("accepted (202)", str(counts["accepted"])),
            ("refused", f"{counts['rejected']}  {_top(rejected)}"),
            ("no answer", f"{counts['unknown']}  {_top(unknown)}"),
            ("refused or unanswered, yet stored", f"{refused_yet_stored.total()}"
             f"  {_top(refused_yet_stored)}"),
            ("sent late (too many in flight)", str(facts.late_sends)),
            ("accepted, not in PostgreSQL", findings.count(lost, "accepted submissions lost")),
            ("stored, without a run", findings.count(no_run, "stored submissions without a run")),
            ("with more than one run", findings.count(several, "submissions with several runs")),
        ],
    )  # fmt: skip
    for submission_id in no_run:
        findings.note("no run", f"submission {submission_id}: stored, no run")
    findings.submissions_to_explain = no_run


def _runs(facts: Facts, findings: Findings) -> None:
    by_status = Counter(run.status for run in facts.db.runs)
    unfinished = [run for run in facts.db.runs if run.status != "completed"]
    where = Counter(f"{run.status} at {run.step}" for run in unfinished)
    errors = Counter(run.error[:80] for run in unfinished if run.status == "failed")
    for run in unfinished:
        findings.explain(f"run {run.status} at {run.step}", [run.id])
    findings.section(
        "runs",
        [
            ("total", str(len(facts.db.runs))),
            *((status, str(count)) for status, count in sorted(by_status.items())),
            ("not completed", findings.count(unfinished, "runs not completed")),
            *((f"  {place}", str(count)) for place, count in where.most_common(6)),
            *(("  failed because", f"{count}x {error}") for error, count in errors.most_common(3)),
        ],
    )


def _emails(facts: Facts, findings: Findings, runs_of: dict[str, list[Run]]) -> None:
    wanted = _expected(facts)
    delivered = [r for r in facts.sink if r.outcome == DELIVERED]
    per_recipient: dict[str, list[SinkRecord]] = defaultdict(list)
    for record in delivered:
        for recipient in record.rcpt:
            per_recipient[recipient].append(record)
    per_message = Counter(record.message_id for record in delivered)
    repeated = sorted(r for r in wanted if len(per_recipient.get(r, [])) > 1)
    in_window = [r for r in repeated if _in_a_death_window(facts, per_recipient[r])]
    twice = [r for r in repeated if r not in in_window]
    missing = sorted(r for r in wanted if not per_recipient.get(r))
    reasons: Counter[str] = Counter()
    for recipient in missing:
        email = wanted[recipient]
        reason = _why_missing(facts, email, runs_of)
        reasons[reason] += 1
        findings.note(reason, _missing_line(facts, email, runs_of, reason))
        if runs_of.get(email.submission_id):
            findings.explain(reason, [r.id for r in runs_of[email.submission_id]])
    for recipient in twice:
        findings.explain(
            "email duplicated", [r.id for r in runs_of.get(wanted[recipient].submission_id, [])]
        )
        findings.note(
            "email duplicated",
            f"duplicate to {recipient}: "
            + "; ".join(
                f"{c.message_id} at +{c.t - facts.t0_wall:.1f}s "
                f"(faults: {_active_faults(facts, c.t)})"
                for c in per_recipient[recipient]
            ),
        )
    sent = {
        a.message_id: a
        for attempts in facts.db.attempts.values()
        for a in attempts
        if a.status == "succeeded"
    }
    never = [a for message_id, a in sent.items() if message_id not in per_message]
    outcomes = Counter(record.outcome for record in facts.sink)
    left = {r.message_id for r in facts.sink if r.outcome == CLIENT_LEFT}
    findings.section(
        "emails",
        [
            ("expected", str(len(wanted))),
            ("delivered once", str(sum(1 for r in wanted if len(per_recipient.get(r, [])) == 1))),
            ("duplicated (recipients with 2+)", findings.count(twice, "emails duplicated")),
            ("  repeated in a killed worker's 250->record window (allowed, CONTRACT §5)",
             str(len(in_window))),
            ("  same Message-ID delivered 2+ times",
             str(sum(1 for n in per_message.values() if n > 1))),
            ("missing", findings.count(missing, "emails missing")),
            *((f"  {reason}", str(count)) for reason, count in reasons.most_common()),
            ("delivered, not expected", str(sum(1 for r in per_recipient if r not in wanted))),
            ("recorded sent in PostgreSQL, never delivered",
             f"{len(never)} (of which 'deduplicated': {sum(1 for a in never if a.deduplicated)})"),
            ("sink: client left before the 250", f"{outcomes[CLIENT_LEFT]} ({len(left)} emails)"),
            ("sink: connection dropped mid-DATA", str(outcomes[DROPPED])),
            ("effects left, by state", _top(Counter(facts.db.effects), 5) or "-"),
        ],
    )  # fmt: skip


def _in_a_death_window(facts: Facts, copies: list[SinkRecord]) -> bool:
    """Whether the first copy's 250 came just before a worker died: the one window the
    contract leaves for a duplicate. A SIGKILL ends a worker when it is sent; a SIGTERM lets it
    finish its work first, and cancels what is left when the grace period ends (its death)."""
    first = min(copy.t for copy in copies) - facts.t0_wall
    for injected in facts.injected:
        if injected.death is None:
            continue
        signalled, gone = injected.death
        dies = signalled if injected.fault.kind == "worker_sigkill" else gone
        if dies - DUPLICATE_WINDOW_SECONDS <= first <= gone:
            return True
    return False


def _why_missing(facts: Facts, email: Expected, runs_of: dict[str, list[Run]]) -> str:
    if email.submission_id not in facts.db.submissions:
        return "submission not stored"
    found = runs_of.get(email.submission_id, [])
    if not found:
        return "no run"
    run = found[0]
    if run.status != "completed":
        return f"run {run.status} at {run.step}"
    if _is_assignee_notice(email):
        return "run completed, the assignee's notice never delivered"
    return "run completed, email never delivered"


def _is_assignee_notice(email: Expected) -> bool:
    return email.kind == "approval" and email.recipient.startswith("manager-")


def _missing_line(facts: Facts, email: Expected, runs_of: dict[str, list[Run]], reason: str) -> str:
    found = runs_of.get(email.submission_id, [])
    run_id = found[0].id if found else "-"
    seen = "; ".join(
        f"{r.outcome} at +{r.t - facts.t0_wall:.1f}s (faults: {_active_faults(facts, r.t)})"
        for r in facts.sink
        if email.recipient in r.rcpt
    )
    notice = _is_assignee_notice(email)
    history = ", ".join(
        a.short()
        for a in facts.db.attempts.get(run_id, [])
        if (a.action_type == "notify_assignee") == notice
    )
    return (
        f"missing {email.kind} email to {email.recipient}: {reason}; run {run_id}; "
        f"history: {history or '-'}; sink saw: {seen or 'nothing'}"
    )


def _webhooks_and_tickets(facts: Facts, findings: Findings) -> None:
    calls = Counter(call.webhook_id for call in facts.webhooks)
    answered = {call.submission_id for call in facts.webhooks if call.answered == 200}
    approvals_done = [
        run
        for run in facts.db.runs
        if run.status == "completed"
        and kind_of(facts.db.submissions.get(run.submission_id, ("", {}))[0]) == "approval"
    ]
    unanswered = [run for run in approvals_done if run.submission_id not in answered]
    no_ticket = [run for run in approvals_done if not facts.db.tickets_per_run.get(run.id)]
    tickets_twice = [run for run, n in facts.db.tickets_per_run.items() if n > 1]
    by_answer = Counter(
        "hung" if call.answered is None else str(call.answered) for call in facts.webhooks
    )
    findings.section(
        "webhooks and tickets",
        [
            ("webhook calls", f"{len(facts.webhooks)}  {_top(by_answer)}"),
            ("distinct webhook-ids", str(len(calls))),
            ("webhook-ids called 2+ times",
             f"{sum(1 for n in calls.values() if n > 1)}  (allowed: at least once)"),
            ("approval runs completed", str(len(approvals_done))),
            ("  without a webhook answered 200",
             findings.count(unanswered, "completed runs whose webhook got no 200")),
            ("tickets", str(sum(facts.db.tickets_per_run.values()))),
            ("  completed approval runs without one",
             findings.count(no_ticket, "completed runs without their ticket")),
            ("  runs with 2+", findings.count(tickets_twice, "runs with duplicated tickets")),
        ],
    )  # fmt: skip


def _system(facts: Facts, findings: Findings) -> None:
    for gone in facts.unexpected_exits:
        # A process that cannot reach the database at start stops with one line; the README
        # leaves the restart to a supervisor (the soak is one). Any other exit is news.
        if "cannot use the database" not in gone:
            findings.warnings.append(f"a process exited by itself: {gone}")
    if facts.db.pending_tasks:
        findings.warnings.append(f"{facts.db.pending_tasks} human tasks still pending")
    quiet = (
        "yes"
        if facts.quiescent
        else f"NO (nothing moved in the last {facts.unchanged_seconds:.0f}s)"
    )
    findings.section(
        "system at the end",
        [
            ("quiescent", f"{quiet} after {facts.settle_seconds:.0f}s"),
            ("human tasks still pending", str(facts.db.pending_tasks)),
            ("the person's answers", _top(facts.person, 6) or "-"),
            ("outbox unpublished", str(facts.db.outbox_unpublished)),
            ("process exits nobody asked for", str(len(facts.unexpected_exits))),
            *(("  (restarted)", gone) for gone in facts.unexpected_exits),
        ],
    )  # fmt: skip


def growth(values: Sequence[int]) -> tuple[float, float] | None:
    """Median of the first third and of the last third, when there are samples enough."""
    if len(values) < GROWTH_MIN_SAMPLES:
        return None
    third = len(values) // 3
    return statistics.median(values[:third]), statistics.median(values[-third:])


def _memory(facts: Facts, findings: Findings) -> None:
    rows: list[Row] = []
    for label, samples in sorted(facts.samples.rss.items()):
        values = [rss for _, rss in samples]
        line = (
            f"min {min(values) / MIB:.0f}  max {max(values) / MIB:.0f}  "
            f"last {values[-1] / MIB:.0f} MiB  ({len(values)} samples)"
        )
        grown = growth(values)
        if grown is not None:
            first, last = grown
            line += f"; thirds' medians {first / MIB:.0f} -> {last / MIB:.0f} MiB"
            if last > GROWTH_RATIO * first and last - first > GROWTH_BYTES:
                line += "  " + findings.count(1, f"process lifetime with growing memory ({label})")
        rows.append((label, line))
    findings.section("memory (VmRSS per process lifetime)", rows)


def _stream(facts: Facts, findings: Findings) -> None:
    samples = facts.samples.stream
    rows: list[Row] = []
    for name in ("length", "pending", "lag"):
        values = [v for s in samples if (v := getattr(s, name)) is not None]
        if values:
            rows.append((name, f"min {min(values)}  max {max(values)}  last {values[-1]}"))
    picks = samples[:: max(1, len(samples) // 8)][:8] + samples[-1:]
    rows.append(
        (
            "samples (t: length/pending/lag)",
            "  ".join(
                f"+{s.t - facts.t0_wall:.0f}s:{_n(s.length)}/{_n(s.pending)}/{_n(s.lag)}"
                for s in picks
            ),
        )
    )
    findings.section("stream", rows)


def _faults(facts: Facts, findings: Findings) -> None:
    kinds = Counter(item.fault.kind for item in facts.injected)
    rows: list[Row] = [(kind, f"{count}") for kind, count in sorted(kinds.items())] or [
        ("none", "a control run")
    ]
    rows += [
        (
            f"  +{item.started:.0f}s",
            f"{item.fault.kind} {item.fault.target} {item.fault.duration}s {item.detail}".strip(),
        )
        for item in sorted(facts.injected, key=lambda i: i.started)
    ]
    findings.section("faults injected", rows)


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def _top(counts: Counter[str], n: int = 3) -> str:
    if not counts:
        return ""
    return "(" + ", ".join(f"{key}: {count}" for key, count in counts.most_common(n)) + ")"


def evaluate(facts: Facts) -> Findings:
    findings = Findings()
    runs_of: dict[str, list[Run]] = defaultdict(list)
    for run in facts.db.runs:
        runs_of[run.submission_id].append(run)
    _faults(facts, findings)
    _submissions(facts, findings, runs_of)
    _runs(facts, findings)
    _emails(facts, findings, runs_of)
    _webhooks_and_tickets(facts, findings)
    _system(facts, findings)
    _memory(facts, findings)
    _stream(facts, findings)
    return findings
