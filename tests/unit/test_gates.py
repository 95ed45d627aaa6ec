"""Concurrency keys and throttles, the pure part: keys, the throttle's window arithmetic, which
queued runs are let in, validation and the dry run's view of them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from tests.unit.factories import definition_dict, example_context, example_definition
from workflow_core.definitions.models import WorkflowDefinition
from workflow_core.dryrun import dry_run
from workflow_core.engine.gates import (
    MAX_KEY_CHARS,
    Gate,
    Queued,
    gate_keys,
    gate_of,
    next_slot,
    plan_admission,
    stored_key,
)
from workflow_core.validation import validate_definition

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def gated(**limits: Any) -> dict[str, Any]:
    return {**example_definition(), **limits}


def parsed(raw: dict[str, Any]) -> WorkflowDefinition:
    result = validate_definition(raw)
    assert result.definition is not None, [p.as_dict() for p in result.errors]
    return result.definition


# -- keys ---------------------------------------------------------------------------------------


def test_keys_are_rendered_from_the_context_and_namespaced_by_organisation() -> None:
    definition = parsed(
        gated(
            concurrency={"key": "{data.email}", "limit": 1},
            throttle={"key": "{org_id}", "per": "PT1M", "limit": 10},
        )
    )
    keys = gate_keys(definition, example_context(), "org_123")
    assert keys is not None
    assert json.loads(keys.concurrency or "") == ["org_123", "user@example.com"]
    assert json.loads(keys.throttle or "") == ["org_123", "org_123"]
    other = gate_keys(definition, example_context(), "org_456")
    assert other is not None and other.concurrency != keys.concurrency


def test_a_workflow_without_limits_has_no_keys() -> None:
    definition = parsed(example_definition())
    assert gate_keys(definition, example_context(), "org_123") is None
    assert gate_of(definition) is None


def test_a_missing_value_leaves_the_placeholder_so_such_runs_share_one_queue() -> None:
    definition = parsed(gated(concurrency={"key": "{data.phone}", "limit": 1}))
    first = gate_keys(definition, example_context(), "o")
    second = gate_keys(definition, example_context(email="else@example.com"), "o")
    assert first is not None and second is not None
    assert first.concurrency == second.concurrency == stored_key("o", "{data.phone}")
    assert json.loads(first.concurrency or "") == ["o", "{data.phone}"]
    assert first.throttle is None and first.first_reason == "concurrency"


def test_a_long_key_is_stored_as_its_digest_and_keys_never_collide_across_orgs() -> None:
    long = "x" * (MAX_KEY_CHARS + 1)
    org, key = json.loads(stored_key("o", long))
    assert org == "o" and key.startswith("sha256:") and len(key) < MAX_KEY_CHARS
    # an organisation name with the separator in it cannot fake another's key
    assert stored_key("a/b", "c") != stored_key("a", "b/c")


# -- the throttle's window ----------------------------------------------------------------------


def test_next_slot_is_now_while_the_window_has_room() -> None:
    assert next_slot([], 2, MINUTE, NOW) is None
    assert next_slot([NOW - timedelta(seconds=10)], 2, MINUTE, NOW) is None


def test_next_slot_is_when_the_oldest_start_leaves_the_window() -> None:
    starts = [NOW - timedelta(seconds=50), NOW - timedelta(seconds=10)]
    assert next_slot(starts, 2, MINUTE, NOW) == NOW + timedelta(seconds=10)
    three = [NOW - timedelta(seconds=s) for s in (5, 50, 30)]
    assert next_slot(three, 2, MINUTE, NOW) == NOW + timedelta(seconds=30)


def test_starts_older_than_the_window_do_not_count() -> None:
    starts = [NOW - MINUTE, NOW - timedelta(seconds=70)]
    assert next_slot(starts, 1, MINUTE, NOW) is None


# -- admission ---------------------------------------------------------------------------------


def ids(n: int) -> list[UUID]:
    return [uuid4() for _ in range(n)]


def test_concurrency_admits_up_to_the_limit_in_order() -> None:
    a, b, c = ids(3)
    queued = [Queued(a, "k", None), Queued(b, "k", None), Queued(c, "k", None)]
    gate = Gate(concurrency_limit=2, throttle_limit=None, per=timedelta(0))
    plan = plan_admission(queued, gate, active={"k": 1}, starts={}, now=NOW)
    assert plan.admitted == [a]
    assert plan.held == {b: "concurrency", c: "concurrency"}
    assert plan.wake_at == {}


def test_another_key_is_not_held_back_by_a_full_one() -> None:
    a, b = ids(2)
    queued = [Queued(a, "full", None), Queued(b, "free", None)]
    gate = Gate(concurrency_limit=1, throttle_limit=None, per=timedelta(0))
    plan = plan_admission(queued, gate, active={"full": 1}, starts={}, now=NOW)
    assert plan.admitted == [b]


def test_throttle_delays_the_run_to_its_slot_and_keeps_the_order() -> None:
    a, b, c = ids(3)
    queued = [Queued(a, None, "t"), Queued(b, None, "t"), Queued(c, None, "t")]
    gate = Gate(concurrency_limit=None, throttle_limit=2, per=MINUTE)
    earlier = NOW - timedelta(seconds=20)
    plan = plan_admission(queued, gate, active={}, starts={"t": [earlier]}, now=NOW)
    assert plan.admitted == [a]
    assert plan.held == {b: "throttle", c: "throttle"}
    assert plan.wake_at == {b: earlier + MINUTE}  # only the first of the queue gets a timer


def test_a_throttled_run_holds_back_later_runs_of_its_concurrency_key() -> None:
    a, b = ids(2)
    queued = [Queued(a, "k", "t1"), Queued(b, "k", "t2")]
    gate = Gate(concurrency_limit=5, throttle_limit=1, per=MINUTE)
    plan = plan_admission(queued, gate, active={}, starts={"t1": [NOW]}, now=NOW)
    assert plan.admitted == []
    assert plan.held == {a: "throttle", b: "concurrency"}


def test_a_full_concurrency_key_does_not_hold_back_a_shared_throttle() -> None:
    a, b = ids(2)
    queued = [Queued(a, "busy", "org"), Queued(b, "idle", "org")]
    gate = Gate(concurrency_limit=1, throttle_limit=10, per=MINUTE)
    plan = plan_admission(queued, gate, active={"busy": 1}, starts={}, now=NOW)
    assert plan.admitted == [b]


def test_admitted_runs_count_against_the_limits_of_the_same_pass() -> None:
    a, b = ids(2)
    queued = [Queued(a, "k", "t"), Queued(b, "j", "t")]
    gate = Gate(concurrency_limit=1, throttle_limit=1, per=MINUTE)
    plan = plan_admission(queued, gate, active={}, starts={}, now=NOW)
    assert plan.admitted == [a]
    assert plan.wake_at == {b: NOW + MINUTE}


# -- validation and the dry run -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "path"),
    [
        ({"concurrency": {"key": "{data.email}", "limit": 0}}, "concurrency.limit"),
        ({"concurrency": {"key": "", "limit": 1}}, "concurrency.key"),
        ({"concurrency": {"limit": 1}}, "concurrency.key"),
        ({"concurrency": {"key": "k", "limit": "1"}}, "concurrency.limit"),
        ({"throttle": {"key": "k", "limit": 1, "per": "soon"}}, "throttle.per"),
        ({"throttle": {"key": "k", "limit": 1, "per": "PT0S"}}, "throttle.per"),
        ({"throttle": {"key": "k", "limit": 0, "per": "PT1M"}}, "throttle.limit"),
        ({"throttle": {"key": "k", "limit": 1}}, "throttle.per"),
        ({"throttle": {"key": "k", "limit": 1, "per": "PT1M", "burst": 2}}, "throttle.burst"),
    ],
)
def test_bad_limits_are_refused_with_their_path(limits: dict[str, Any], path: str) -> None:
    result = validate_definition(gated(**limits))
    assert result.definition is None
    assert path in [problem.path for problem in result.errors]


def test_a_key_placeholder_that_can_never_resolve_is_a_warning() -> None:
    result = validate_definition(gated(concurrency={"key": "{date.email}", "limit": 1}))
    assert result.definition is not None
    assert [problem.path for problem in result.warnings] == ["concurrency.key"]


def test_the_dry_run_shows_the_rendered_keys() -> None:
    definition = parsed(
        gated(
            concurrency={"key": "{data.email}", "limit": 1},
            throttle={"key": "{template_id}", "per": "PT1M", "limit": 10},
        )
    )
    form = {"template_id": "form_submitted", "org_id": "org_1", "data": {"email": "a@b.c"}}
    report = dry_run(definition, form=form, now=NOW)
    assert report["concurrency"] == {"key": "a@b.c", "limit": 1}
    assert report["throttle"] == {"key": "form_submitted", "limit": 10, "per_seconds": 60.0}
    plain = dry_run(parsed(definition_dict()), form=form, now=NOW)
    assert "concurrency" not in plain and "throttle" not in plain


def test_the_readme_example_is_valid_and_its_keys_render_as_it_says() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Concurrency and throttling") :]
    block = section[section.index("```json") + len("```json") : section.index("```\n\n")]
    result = validate_definition(json.loads(block))
    assert result.definition is not None and not result.warnings, result.errors
    form = {"template_id": "support", "org_id": "org_123", "data": {"email": "ada@example.com"}}
    report = dry_run(result.definition, form=form, now=NOW)
    assert report["concurrency"] == {"key": "ada@example.com", "limit": 1}
    assert report["throttle"] == {"key": "org_123", "limit": 10, "per_seconds": 60.0}
    assert f'"concurrency": {json.dumps(report["concurrency"])}' in section
    assert f'"throttle": {json.dumps(report["throttle"])}' in section
