"""The body of POST /runs/retry and POST /runs/{id}/cancel, validated before any I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.api.schemas.runs import RunCancel, RunRetryFilter
from workflow_core.persistence.control import cancel_reason


def test_an_empty_filter_matches_every_failed_run_a_hundred_at_a_time() -> None:
    empty = RunRetryFilter.model_validate({})
    assert (empty.workflow_id, empty.org_id, empty.since, empty.until) == (None,) * 4
    assert (empty.error_contains, empty.limit) == (None, 100)


def test_a_full_filter() -> None:
    given = RunRetryFilter.model_validate(
        {
            "workflow_id": "0b566ef7-5d5a-4c5e-9a43-3c4a4f7d2b10",
            "org_id": "org_123",
            "since": "2026-11-30T14:00:00+01:00",
            "until": "2026-11-30T15:00:00Z",
            "error_contains": "timed out",
            "limit": 1000,
        }
    )
    assert given.since == datetime(2026, 11, 30, 13, tzinfo=UTC)
    assert given.limit == 1000


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"limit": 0}, "greater than or equal to 1"),
        ({"limit": 1001}, "less than or equal to 1000"),
        ({"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}, "earlier than"),
        ({"since": "2030-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"}, "earlier than"),
        ({"until": "2030-01-01T00:00:00"}, "timezone"),
        ({"error_contains": ""}, "at least 1 character"),
        ({"error_contains": "a\x00b"}, "NUL"),
        ({"org_id": "x" * 501}, "at most 500"),
        ({"workflow_id": "nope"}, "UUID"),
        ({"status": "failed"}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_filter_says_what_is_wrong(body: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        RunRetryFilter.model_validate(body)


def test_the_reason_of_a_cancel() -> None:
    assert RunCancel.model_validate({}).reason is None
    with pytest.raises(ValidationError):
        RunCancel.model_validate({"reason": "x" * 501})
    assert cancel_reason(None) == "cancelled"
    assert cancel_reason("wrong team") == "cancelled: wrong team"
