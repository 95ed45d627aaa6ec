"""The signed links of a task's email (workflow_core/task_links.py) and the email that carries
them (services/worker/notify.py): no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.worker.notify import LinkMaker, assignee_email
from workflow_core import task_links
from workflow_core.task_links import BadLink, TaskLink

KEY = b"k" * 32
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TASK = uuid.UUID("8a3b2c1d-0000-4000-8000-000000000001")


@pytest.mark.parametrize("outcome", ["approved", None, "nein, danke", "✓ ok"])
def test_a_link_reads_back_as_signed(outcome: str | None) -> None:
    link = TaskLink(TASK, outcome, NOW + timedelta(days=2))
    token = task_links.sign(KEY, link)
    assert task_links.read(KEY, token) == link
    assert all(c.isalnum() or c in "._-" for c in token), "a token is safe in a URL path"


def test_a_link_expires_at_its_time() -> None:
    link = task_links.read(KEY, task_links.sign(KEY, TaskLink(TASK, "approved", NOW)))
    assert not link.expired(NOW - timedelta(seconds=1))
    assert link.expired(NOW)


def _altered(token: str, index: int) -> str:
    swap = "A" if token[index] != "A" else "B"
    return token[:index] + swap + token[index + 1 :]


def test_an_altered_token_or_another_key_is_refused() -> None:
    token = task_links.sign(KEY, TaskLink(TASK, "approved", NOW))
    for index in (0, 33, len(token) - 5, token.index(".", 40) + 1):
        with pytest.raises(BadLink):
            task_links.read(KEY, _altered(token, index))
    with pytest.raises(BadLink):
        task_links.read(b"another key" * 3, token)
    for junk in ("", "a.b.c", "a.b.c.d", token + ".x", token.replace(".", "", 1)):
        with pytest.raises(BadLink):
            task_links.read(KEY, junk)


def test_a_link_lives_until_the_task_is_due_or_for_the_ttl() -> None:
    due = NOW + timedelta(hours=5)
    assert task_links.expiry(due, NOW, 60.0) == due
    assert task_links.expiry(None, NOW, 3600.0) == NOW + timedelta(hours=1)


def _task(**changes: Any) -> dict[str, Any]:
    return {
        "id": TASK,
        "title": "Buy <a laptop>",
        "description": "For Ada & Grace",
        "due_at": None,
        "fields": {
            "assignee_email": "boss@example.com",
            "outcomes": ["approved", "rejected"],
            "shown": [{"name": "amount", "value": "<1200>"}],
        },
        **changes,
    }


MAKER = LinkMaker("https://flows.example.com", KEY, 3600.0)


def test_the_assignee_email_has_a_link_per_outcome_and_to_the_page() -> None:
    spec = assignee_email(_task(), uuid.uuid4(), MAKER, NOW)
    config = spec.config
    assert config["to"] == "boss@example.com"
    body, html = config["body"], config["html_body"]
    lines = dict(line.split(": ", 1) for line in body.splitlines() if ": " in line)
    for label, outcome in (("Approved", "approved"), ("Rejected", "rejected")):
        token = lines[label].removeprefix("https://flows.example.com/t/")
        link = task_links.read(KEY, token)
        assert (link.task_id, link.outcome) == (TASK, outcome)
        assert link.expires == NOW + timedelta(hours=1)
        assert lines[label] in html
    page = task_links.read(KEY, lines["Open the task"].rsplit("/", 1)[1])
    assert page.outcome is None
    assert lines["amount"] == "<1200>"
    assert "&lt;1200&gt;" in html and "Buy &lt;a laptop&gt;" in html and "<1200>" not in html


def test_links_of_a_task_with_a_due_time_expire_then() -> None:
    due = NOW + timedelta(days=2)
    spec = assignee_email(_task(due_at=due), uuid.uuid4(), MAKER, NOW)
    token = spec.config["body"].split("/t/", 1)[1].split()[0]
    assert task_links.read(KEY, token).expires == due


def test_a_task_without_outcomes_links_only_to_its_page() -> None:
    task = _task(fields={"assignee_email": "boss@example.com"})
    body = assignee_email(task, uuid.uuid4(), MAKER, NOW).config["body"]
    assert body.count("/t/") == 1 and "Open the task: https://flows.example.com/t/" in body


def test_with_the_links_off_the_email_carries_none() -> None:
    """TASK_LINK_SECRET unset beside an operator's key: no link at all, the API still works."""
    spec = assignee_email(_task(), uuid.uuid4(), LinkMaker("https://f.example.com", None, 60), NOW)
    assert "/t/" not in spec.config["body"] and "/t/" not in spec.config["html_body"]
    assert "POST /tasks/" in spec.config["body"]
