"""The email that tells a human task's assignee about the task. It goes through the same
action path as a workflow's own emails (effect ledger, retries); its text is built from the
stored task, which was rendered once when the task opened and is never rendered again (form
data in a title must not act as a template).

It carries signed links (workflow_core/task_links.py) at PUBLIC_BASE_URL: one per outcome the
task lists, and one to the task's page. They are signed with TASK_LINK_SECRET, which the API
checks: both processes need the same one."""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from workflow_core import task_links
from workflow_core.definitions.models import ActionSpec
from workflow_core.settings import Settings
from workflow_core.task_links import TaskLink


@dataclass(frozen=True, slots=True)
class LinkMaker:
    """Signs a task's links; with no key (TASK_LINK_SECRET unset beside an operator's key) the
    emails carry none."""

    base_url: str
    key: bytes | None
    ttl_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkMaker:
        return cls(settings.base_url, settings.task_link_key, settings.task_link_ttl_seconds)

    def url(self, task: Mapping[str, Any], outcome: str | None, now: datetime) -> str | None:
        if self.key is None:
            return None
        expires = task_links.expiry(task.get("due_at"), now, self.ttl_seconds)
        token = task_links.sign(self.key, TaskLink(task["id"], outcome, expires))
        return f"{self.base_url}/t/{token}"


@dataclass(frozen=True, slots=True)
class _Links:
    page: str | None
    outcomes: list[tuple[str, str]]


def assignee_email(
    task: Mapping[str, Any], run_id: UUID, links: LinkMaker, now: datetime
) -> ActionSpec:
    fields = task.get("fields") or {}
    outcomes = [
        (outcome, links.url(task, outcome, now)) for outcome in fields.get("outcomes") or ()
    ]
    made = _Links(
        links.url(task, None, now),
        [(outcome, url) for outcome, url in outcomes if url is not None],
    )
    return ActionSpec(
        type="send_email",
        config={
            "to": fields.get("assignee_email", ""),
            "subject": f"Task for you: {task['title']}",
            "body": _text(task, run_id, made),
            "html_body": _html(task, made),
        },
    )


def _shown(task: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(item["name"], item["value"]) for item in (task.get("fields") or {}).get("shown", ())]


def _text(task: Mapping[str, Any], run_id: UUID, links: _Links) -> str:
    due = task.get("due_at")
    lines = [f"A task is waiting for you: {task['title']}", ""]
    if task.get("description"):
        lines += [task["description"], ""]
    shown = [f"{name}: {value}" for name, value in _shown(task)]
    lines += [*shown, ""] if shown else []
    lines += [f"Task: {task['id']}", f"Run: {run_id}"]
    if due is not None:
        lines.append(f"Due: {due.isoformat()}")
    lines.append("")
    for outcome, url in links.outcomes:
        lines.append(f"{outcome.capitalize()}: {url}")
    if links.page is not None:
        lines += [f"Open the task: {links.page}", ""]
    lines.append(f"(Or with the API: POST /tasks/{task['id']}/complete)")
    return "\n".join(lines) + "\n"


def _html(task: Mapping[str, Any], links: _Links) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><th align='left'>{e(name)}</th><td>{e(value)}</td></tr>"
        for name, value in _shown(task)
    )
    buttons = " ".join(
        f"<a href='{e(url)}' style='display:inline-block;padding:8px 16px;margin:4px;"
        f"background:#1d4ed8;color:#fff;text-decoration:none;border-radius:4px'>"
        f"{e(outcome.capitalize())}</a>"
        for outcome, url in links.outcomes
    )
    description = f"<p>{e(task['description'])}</p>" if task.get("description") else ""
    return (
        f"<p>A task is waiting for you: <strong>{e(task['title'])}</strong></p>{description}"
        + (f"<table cellpadding='4'>{rows}</table>" if rows else "")
        + (f"<p>{buttons}</p>" if buttons else "")
        + (f"<p><a href='{e(links.page)}'>Open the task</a></p>" if links.page else "")
    )
