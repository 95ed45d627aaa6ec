"""Concurrency keys and throttles, the pure part: which queue a run belongs to, and which queued
runs may start now (and when the others may try again).

A workflow's `concurrency` lets at most `limit` runs per key be active (running, or waiting for
a timer or a task) at once; its `throttle` lets at most `limit` runs per key start in any window
of `per`. The key is a template rendered from the run's first context. Keys are namespaced by
organisation (an organisation's backlog never takes another's slots), and within a key runs
start in the order their forms were submitted: the first queued run of a key that cannot start holds
back the ones behind it.

A placeholder without a value stays as written (as in every template), so the runs that lack
the value share one queue; a run is never failed for it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from workflow_core.definitions.models import WorkflowDefinition
from workflow_core.engine.durations import parse_duration
from workflow_core.engine.templates import render
from workflow_core.errors import TooLarge

MAX_KEY_CHARS = 200
"""A longer rendered key is stored as its SHA-256 (keys are compared, never shown)."""
KEY_RENDER_BYTES = 64 * 1024

QUEUED_FOR_CONCURRENCY = "concurrency"
QUEUED_FOR_THROTTLE = "throttle"


@dataclass(frozen=True, slots=True)
class Gate:
    """A workflow's limits (None: that kind of limit is not set)."""

    concurrency_limit: int | None
    throttle_limit: int | None
    per: timedelta


@dataclass(frozen=True, slots=True)
class GateKeys:
    """A run's namespaced keys, as stored (None where the workflow sets no such limit)."""

    concurrency: str | None
    throttle: str | None

    @property
    def first_reason(self) -> str:
        """What a new run waits for until it is admitted."""
        return QUEUED_FOR_CONCURRENCY if self.concurrency is not None else QUEUED_FOR_THROTTLE


@dataclass(frozen=True, slots=True)
class Queued:
    id: UUID
    concurrency_key: str | None
    throttle_key: str | None


@dataclass(slots=True)
class Admission:
    """What to do with the queued runs looked at: start `admitted` (in order); the others stay
    queued for the reason in `held`; `wake_at` holds when a throttled queue's first run may
    try again."""

    admitted: list[UUID] = field(default_factory=list)
    held: dict[UUID, str] = field(default_factory=dict)
    wake_at: dict[UUID, datetime] = field(default_factory=dict)


def gate_of(definition: WorkflowDefinition) -> Gate | None:
    """The workflow's limits, or None when it sets neither (its runs never queue)."""
    concurrency, throttle = definition.concurrency, definition.throttle
    if concurrency is None and throttle is None:
        return None
    return Gate(
        concurrency_limit=concurrency.limit if concurrency else None,
        throttle_limit=throttle.limit if throttle else None,
        per=parse_duration(throttle.per) if throttle else timedelta(0),
    )


def render_key(template: str, context: Mapping[str, Any]) -> str:
    """The key as the user reads it: the template rendered from the context."""
    try:
        return render(template, context, limit=KEY_RENDER_BYTES)
    except TooLarge:
        return template  # an absurd value: the runs lacking a usable one share a queue


def gate_keys(
    definition: WorkflowDefinition, context: Mapping[str, Any], org_id: str | None
) -> GateKeys | None:
    """The run's keys, namespaced by organisation; None when the workflow has no limits."""
    concurrency, throttle = definition.concurrency, definition.throttle
    if concurrency is None and throttle is None:
        return None
    return GateKeys(
        concurrency=stored_key(org_id, render_key(concurrency.key, context))
        if concurrency
        else None,
        throttle=stored_key(org_id, render_key(throttle.key, context)) if throttle else None,
    )


def stored_key(org_id: str | None, rendered: str) -> str:
    """`["org", "key"]`: one text that keeps organisations apart without any ambiguity."""
    if len(rendered) > MAX_KEY_CHARS:
        rendered = "sha256:" + hashlib.sha256(rendered.encode()).hexdigest()
    return json.dumps([org_id or "", rendered], ensure_ascii=False, separators=(",", ":"))


def next_slot(
    starts: Sequence[datetime], limit: int, per: timedelta, now: datetime
) -> datetime | None:
    """When the next start fits in the throttle (None: now). `starts` are the key's recent
    starts; a window is (t - per, t]."""
    recent = sorted(start for start in starts if start > now - per)
    if len(recent) < limit:
        return None
    return recent[len(recent) - limit] + per


def plan_admission(
    queued: Sequence[Queued],
    gate: Gate,
    *,
    active: Mapping[str, int],
    starts: Mapping[str, Sequence[datetime]],
    now: datetime,
) -> Admission:
    """Walk the queued runs oldest first and admit each whose concurrency key has a free slot
    and whose throttle key has room in its window. A run held by its throttle holds back its
    keys' later runs (first in, first out); one held by a full concurrency key holds back only
    that key, which is full anyway, so a throttle shared by many keys is not blocked by one."""
    running = dict(active)
    started = {key: list(times) for key, times in starts.items()}
    held_concurrency: set[str] = set()
    held_throttle: set[str] = set()
    plan = Admission()
    for run in queued:
        c_key, t_key = run.concurrency_key, run.throttle_key
        if c_key is not None and (
            c_key in held_concurrency or running.get(c_key, 0) >= (gate.concurrency_limit or 1)
        ):
            plan.held[run.id] = QUEUED_FOR_CONCURRENCY
            held_concurrency.add(c_key)
            continue
        if t_key is not None:
            if t_key in held_throttle:
                plan.held[run.id] = QUEUED_FOR_THROTTLE
                _hold(held_concurrency, c_key)
                continue
            slot = next_slot(started.get(t_key, ()), gate.throttle_limit or 1, gate.per, now)
            if slot is not None:
                plan.held[run.id] = QUEUED_FOR_THROTTLE
                plan.wake_at[run.id] = slot
                held_throttle.add(t_key)
                _hold(held_concurrency, c_key)
                continue
            started.setdefault(t_key, []).append(now)
        if c_key is not None:
            running[c_key] = running.get(c_key, 0) + 1
        plan.admitted.append(run.id)
    return plan


def _hold(keys: set[str], key: str | None) -> None:
    if key is not None:
        keys.add(key)
