"""One attempt of one action: the one place where an action is dispatched to its type, where
its error becomes a decision (the retry policy), and where the attempt enters the run's
journal. The runner acts on the decision: go on, wait for a retry, or fail the step. Each
attempt is counted here too (`flowline_action_attempts_total`, its duration, and for emails
`flowline_emails_total` by outcome): counters in memory, no I/O. With OTEL_ENABLED each
attempt is a span (`action send_email`) with its outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from workflow_core import actions, metrics, tracing
from workflow_core.actions.base import ActionCall, ActionDeps
from workflow_core.actions.registry import ActionType
from workflow_core.definitions.models import ActionSpec, RetryPolicy
from workflow_core.engine.retry import GiveUp, next_attempt
from workflow_core.errors import EffectBusy, PermanentActionError, RetryableActionError
from workflow_core.persistence.journal import Journal
from workflow_core.statuses import AttemptStatus

EFFECT_BUSY_POLL_SECONDS = 0.1
EMAIL_ACTION = "send_email"

# An attempt's status in the history -> what it counts as among emails (None: not counted).
_EMAIL_OUTCOMES = {
    AttemptStatus.SUCCEEDED: "sent",
    AttemptStatus.RETRYING: "retried",
    AttemptStatus.FAILED: "refused",
    AttemptStatus.WAITING: None,
}


@dataclass(frozen=True, slots=True)
class Succeeded:
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after `delay` seconds, as attempt number `attempt`."""

    delay: float
    attempt: int


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    gave_up: bool = False  # a passing failure, tried as often as the policy allows


Outcome = Succeeded | Retry | Failed


async def execute_action(
    call: ActionCall,
    spec: ActionSpec,
    deps: ActionDeps,
    *,
    policy: RetryPolicy,
    journal: Journal,
    now: Callable[[], datetime],
    label: str | None = None,
) -> Outcome:
    """Carry out one attempt of `spec` and record it in `journal` (with the effect, when it
    succeeded). `label` names the attempt in the history when it is not the action's type."""
    where = f"{call.step_id}.actions[{call.index}] ({spec.type})"
    action_type = actions.get(spec.type)
    if action_type is None:
        _count("unknown", AttemptStatus.FAILED, 0.0)
        return Failed(f"{where}: no executor for action type {spec.type!r}")
    clock = time.perf_counter()
    with tracing.span(f"action {spec.type}", _attributes(call, spec, label)):
        outcome = await _attempt(call, spec, action_type, deps, policy, journal, now, label)
        status = _status_of(outcome, call)
        _trace(outcome, status)
    _count(spec.type, status, time.perf_counter() - clock)
    if spec.type == EMAIL_ACTION:
        _count_email(outcome, status)
    return outcome


def _attributes(call: ActionCall, spec: ActionSpec, label: str | None) -> dict[str, Any] | None:
    if not tracing.ENABLED:
        return None
    return {
        "flowline.run_id": call.run_id,
        "flowline.workflow_id": call.workflow_id,
        "flowline.step_id": call.step_id,
        "flowline.action_index": call.index,
        "flowline.action_type": spec.type,
        "flowline.action_label": label,
        "flowline.attempt": call.attempt,
    }


def _trace(outcome: Outcome, status: AttemptStatus) -> None:
    """The attempt's outcome on its span; a failure as the span's error (the exception that
    made it was recorded where it was caught)."""
    if not tracing.ENABLED:
        return
    tracing.annotate({"flowline.outcome": str(status)})
    if isinstance(outcome, Failed):
        tracing.fail(outcome.reason)


def _status_of(outcome: Outcome, call: ActionCall) -> AttemptStatus:
    if isinstance(outcome, Succeeded):
        return AttemptStatus.SUCCEEDED
    if isinstance(outcome, Retry):
        return AttemptStatus.WAITING if outcome.attempt == call.attempt else AttemptStatus.RETRYING
    return AttemptStatus.FAILED


def _count(action_type: str, status: AttemptStatus, seconds: float) -> None:
    metrics.ACTION_ATTEMPTS.labels(action_type, status.value).inc()
    metrics.ACTION_DURATION.labels(action_type, status.value).observe(seconds)


def _count_email(outcome: Outcome, status: AttemptStatus) -> None:
    if isinstance(outcome, Succeeded) and outcome.result.get("deduplicated"):
        metrics.EMAILS.labels("deduplicated").inc()
    elif isinstance(outcome, Failed) and outcome.gave_up:
        metrics.EMAILS.labels("failed").inc()
    elif (counted := _EMAIL_OUTCOMES[status]) is not None:
        metrics.EMAILS.labels(counted).inc()


async def _attempt(
    call: ActionCall,
    spec: ActionSpec,
    action_type: ActionType,
    deps: ActionDeps,
    policy: RetryPolicy,
    journal: Journal,
    now: Callable[[], datetime],
    label: str | None,
) -> Outcome:
    where = f"{call.step_id}.actions[{call.index}] ({spec.type})"
    name = label or spec.type
    started = now()
    try:
        config = action_type.config.model_validate(spec.config)
        result = await action_type.execute(call, config, deps)
    except EffectBusy as error:
        # Waiting for another live attempt to end is not an attempt of ours: not counted.
        journal.attempt(call, name, AttemptStatus.WAITING, started, now(), error=error.message)
        return Retry(error.retry_after or EFFECT_BUSY_POLL_SECONDS, call.attempt)
    except RetryableActionError as error:
        tracing.record_error(error)
        plan = next_attempt(call.attempt, spec.retry or policy, retry_after=error.retry_after)
        if isinstance(plan, GiveUp):
            message = f"{error.message} ({plan.reason})"
            journal.attempt(call, name, AttemptStatus.FAILED, started, now(), error=message)
            return Failed(f"{where} failed: {message}", gave_up=True)
        journal.attempt(
            call,
            name,
            AttemptStatus.RETRYING,
            started,
            now(),
            error=f"{error.message}; attempt {call.attempt + 1} in {plan.seconds:.1f} s",
        )
        return Retry(plan.seconds, call.attempt + 1)
    except (PermanentActionError, ValidationError) as error:
        tracing.record_error(error)
        message = error.message if isinstance(error, PermanentActionError) else str(error)
        journal.attempt(call, name, AttemptStatus.FAILED, started, now(), error=message)
        return Failed(f"{where} failed: {message}")
    summary = action_type.history(result)
    journal.attempt(call, name, AttemptStatus.SUCCEEDED, started, now(), result=summary)
    journal.done(call, result)
    return Succeeded(result)
