"""One attempt of one action: the one place where an action is dispatched to its type, where
its error becomes a decision (the retry policy), and where the attempt enters the run's
journal. The runner acts on the decision: go on, wait for a retry, or fail the step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from workflow_core import actions
from workflow_core.actions.base import ActionCall, ActionDeps
from workflow_core.definitions.models import ActionSpec, RetryPolicy
from workflow_core.engine.retry import GiveUp, next_attempt
from workflow_core.errors import EffectBusy, PermanentActionError, RetryableActionError
from workflow_core.persistence.journal import Journal
from workflow_core.statuses import AttemptStatus

EFFECT_BUSY_POLL_SECONDS = 0.1


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
        return Failed(f"{where}: no executor for action type {spec.type!r}")
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
        plan = next_attempt(call.attempt, spec.retry or policy, retry_after=error.retry_after)
        if isinstance(plan, GiveUp):
            message = f"{error.message} ({plan.reason})"
            journal.attempt(call, name, AttemptStatus.FAILED, started, now(), error=message)
            return Failed(f"{where} failed: {message}")
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
        message = error.message if isinstance(error, PermanentActionError) else str(error)
        journal.attempt(call, name, AttemptStatus.FAILED, started, now(), error=message)
        return Failed(f"{where} failed: {message}")
    journal.attempt(call, name, AttemptStatus.SUCCEEDED, started, now(), result=result)
    journal.done(call, result)
    return Succeeded(result)
