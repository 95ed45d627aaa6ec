"""Every status Flowline stores or shows, in one place. Each is a `StrEnum`: its members are
the strings stored in PostgreSQL and shown by the API, and compare equal to them."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class RunStatus(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # by POST /runs/{id}/cancel: it does nothing more


FINISHED_RUNS = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
UNFINISHED_RUNS = frozenset({RunStatus.RUNNING, RunStatus.WAITING})


class StepStatus(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # its run was cancelled while in it


class AttemptStatus(StrEnum):
    """An action attempt in a run's history."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    WAITING = "waiting"  # for another live attempt of the same effect to end
    FAILED = "failed"


class TaskStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


SETTLED_TASKS = frozenset({TaskStatus.COMPLETED, TaskStatus.TIMED_OUT})
# What an action may set a to-do item to (a deadline never closes one). Strings, so that a
# refusal reads "Input should be 'pending', 'completed' or 'cancelled'".
TodoStatus = Literal["pending", "completed", "cancelled"]


class TaskKind(StrEnum):
    HUMAN = "human"  # a human_task step: its run waits for it
    TODO = "todo"  # create_task: a to-do item, nothing waits


class TicketStatus(StrEnum):
    OPEN = "open"
    PENDING = "pending"
    RESOLVED = "resolved"
    CLOSED = "closed"


class TicketPriority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"
