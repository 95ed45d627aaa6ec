"""Parallel steps, pure: where each branch of a parallel step stands, and what the step as a
whole decides (go on, fail, or keep waiting for its branches).

A parallel step's state lives in the run's context under `steps.<parallel step id>`:
`{"seq", "join", "status", "branches": {<branch id>: {"status", "step", "seq", "error"?}}}`,
so it is checkpointed with the run and shown in it. Each visit of a branch's step takes the
next visit number of the run (`seq`), so the step budget counts every branch's steps, and
effects stay keyed per visit.

The worker runs one branch step at a time, always the running branch whose visit is the
oldest: branches take turns (round robin), and a branch that waits (a task, a timer, a retry)
is parked while the others go on. A failed branch fails the step (whatever the join); the
step completes when every branch completed (`all`) or the first one did (`any`); the branches
still open then are cancelled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workflow_core.definitions.models import StepSpec, WorkflowDefinition
from workflow_core.engine import machine

RUNNING, WAITING, COMPLETED, FAILED, CANCELLED = (
    "running",
    "waiting",
    "completed",
    "failed",
    "cancelled",
)
OPEN = frozenset({RUNNING, WAITING})


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where one branch stands: the step it is in (or ended in) and that visit's number."""

    branch: str
    status: str
    step: str
    seq: int


def state(context: Mapping[str, Any], step_id: str) -> dict[str, Any] | None:
    found = context.get("steps", {}).get(step_id)
    return found if isinstance(found, dict) and "branches" in found else None


def is_open(context: Mapping[str, Any], step: StepSpec, seq: int) -> bool:
    """True when visit `seq` of the parallel `step` was entered and has not ended."""
    current = state(context, step.id)
    return current is not None and current["seq"] == seq and current["status"] == RUNNING


def enter(
    step: StepSpec, seq: int, context: Mapping[str, Any], step_budget: int
) -> dict[str, Any] | machine.Fail:
    """Start every branch at its first step; their visits are numbered after `seq`."""
    last = seq + len(step.branches)
    if last > step_budget:
        return machine.Fail(
            f"step budget exhausted: parallel step {step.id!r} would enter {last} steps (limit "
            f"{step_budget})"
        )
    branches = {
        branch.id: {"status": RUNNING, "step": branch.steps[0].id, "seq": seq + 1 + index}
        for index, branch in enumerate(step.branches)
    }
    fresh = {"seq": seq, "join": step.join, "status": RUNNING, "branches": branches}
    return _with_state(context, step.id, fresh)


def cursors(context: Mapping[str, Any], step_id: str) -> list[Cursor]:
    current = state(context, step_id) or {"branches": {}}
    return [
        Cursor(branch, entry["status"], entry["step"], entry["seq"])
        for branch, entry in current["branches"].items()
    ]


def next_branch(context: Mapping[str, Any], step_id: str) -> Cursor | None:
    """The running branch to move next: the one whose visit is the oldest."""
    running = [cursor for cursor in cursors(context, step_id) if cursor.status == RUNNING]
    return min(running, key=lambda cursor: cursor.seq, default=None)


def waiting_at(context: Mapping[str, Any], step_id: str, seq: int) -> Cursor | None:
    """The branch waiting in visit `seq` (a task, a timer, a retry), if one is."""
    for cursor in cursors(context, step_id):
        if cursor.seq == seq and cursor.status == WAITING:
            return cursor
    return None


def moved(
    context: Mapping[str, Any], step_id: str, branch: str, decision: machine.Decision
) -> dict[str, Any]:
    """The context once `branch` took `decision` after its current step."""
    if isinstance(decision, machine.RunStep):
        entry = {"status": RUNNING, "step": decision.step.id, "seq": decision.seq}
        return _with_branch(context, step_id, branch, entry)
    if isinstance(decision, machine.OpenTask | machine.Sleep | machine.AwaitEvent):
        return _with_branch(context, step_id, branch, {"status": WAITING})
    if isinstance(decision, machine.Fail):
        return _with_branch(context, step_id, branch, {"status": FAILED, "error": decision.reason})
    return _with_branch(context, step_id, branch, {"status": COMPLETED})


def waiting(context: Mapping[str, Any], step_id: str, branch: str) -> dict[str, Any]:
    """The context once `branch` waits where it stands (an action's next attempt)."""
    return _with_branch(context, step_id, branch, {"status": WAITING})


def resumed(context: Mapping[str, Any], step_id: str, branch: str) -> dict[str, Any]:
    """The context once `branch` runs again where it stands (its action's attempt is due)."""
    return _with_branch(context, step_id, branch, {"status": RUNNING})


def outcome(
    definition: WorkflowDefinition,
    step: StepSpec,
    context: Mapping[str, Any],
    last_seq: int,
    step_budget: int,
) -> machine.Decision | None:
    """What the parallel step decides now: None while its branches go on; a failure when one
    failed; else, once joined, the step's own transition (numbered after `last_seq`)."""
    found = cursors(context, step.id)
    current = state(context, step.id) or {}
    for cursor in found:
        if cursor.status == FAILED:
            error = current["branches"][cursor.branch].get("error", "")
            return machine.Fail(f"parallel step {step.id!r}, branch {cursor.branch!r}: {error}")
    done = [cursor for cursor in found if cursor.status == COMPLETED]
    joined = len(done) == len(found) if step.join == "all" else bool(done)
    if not joined:
        return None
    return machine.next_step(
        definition, step, current["seq"], context, step_budget, last_seq=last_seq
    )


def closed(context: Mapping[str, Any], step_id: str, status: str) -> dict[str, Any]:
    """The context once the parallel step ended (`completed` or `failed`): the branches still
    open are cancelled."""
    current = state(context, step_id)
    assert current is not None
    branches = {
        branch: {**entry, "status": CANCELLED} if entry["status"] in OPEN else entry
        for branch, entry in current["branches"].items()
    }
    return _with_state(context, step_id, {**current, "status": status, "branches": branches})


def open_visits(context: Mapping[str, Any], step_id: str) -> list[int]:
    """The visits of the branches still open: what ending the step cancels (tasks, timers)."""
    return [cursor.seq for cursor in cursors(context, step_id) if cursor.status in OPEN]


def _with_branch(
    context: Mapping[str, Any], step_id: str, branch: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    current = state(context, step_id)
    assert current is not None
    entry = {**current["branches"][branch], **changes}
    if entry["status"] != FAILED:
        entry.pop("error", None)
    branches = {**current["branches"], branch: entry}
    return _with_state(context, step_id, {**current, "branches": branches})


def _with_state(context: Mapping[str, Any], step_id: str, value: dict[str, Any]) -> dict[str, Any]:
    return {**context, "steps": {**context.get("steps", {}), step_id: value}}
