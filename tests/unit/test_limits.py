"""The limits against amplification, in the pure core: rendering is refused before a text over
MAX_RENDERED_BYTES is built, recipients and emails per run are counted, values are escaped in
HTML, and a dry run's answer is bounded (engine/templates.py, engine/limits.py, the actions'
previews, dryrun/)."""

from __future__ import annotations

import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from tests.support.examples import EXAMPLE_FORM
from workflow_core.actions import send_email, webhook
from workflow_core.actions.base import ActionCall
from workflow_core.actions.create_ticket import CreateTicketConfig
from workflow_core.actions.create_ticket import preview as ticket_preview
from workflow_core.adapters.ratelimit import bucket_size, refusal, share
from workflow_core.definitions import WorkflowDefinition
from workflow_core.dryrun import dry_run
from workflow_core.engine import machine
from workflow_core.engine.limits import Limits
from workflow_core.engine.templates import (
    json_size,
    render,
    render_header,
    render_html,
    render_value,
)
from workflow_core.errors import LimitExceeded, PermanentActionError, TooLarge
from workflow_core.persistence.effects import DONE, RESERVED, EffectState, emails_done

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MiB = 1024 * 1024


def peak_while(work: Callable[[], object]) -> int:
    """The most memory (bytes, traced by Python) `work` held above what was held before."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


# -- rendering ------------------------------------------------------------------------------


def test_a_text_of_exactly_the_limit_renders_and_one_byte_more_does_not() -> None:
    context = {"data": {"v": "x" * 10}}
    assert render("{data.v}!", context, limit=11) == "x" * 10 + "!"
    with pytest.raises(TooLarge, match=r"MAX_RENDERED_BYTES \(10 bytes\)"):
        render("{data.v}!", context, limit=10)


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    context = {"data": {"v": "é" * 10}}  # 20 bytes
    assert render("{data.v}", context, limit=20) == "é" * 10
    with pytest.raises(TooLarge):
        render("{data.v}", context, limit=19)


def test_a_value_repeated_thousands_of_times_is_refused_before_it_is_built() -> None:
    context = {"data": {"blob": "x" * 100_000}}
    template = "{data.blob}" * 5_000  # 500 MB if it were built

    def attempt() -> None:
        with pytest.raises(TooLarge):
            render(template, context, limit=262_144)

    assert peak_while(attempt) < 2 * MiB


def test_an_object_value_is_measured_before_it_is_written_as_json() -> None:
    shared: list[Any] = ["x" * 1000]
    for _ in range(60):  # 2**60 copies of the string when written out: measured, never written
        shared = [shared, shared]
    context = {"data": {"deep": shared}}
    with pytest.raises(TooLarge):
        render("{data.deep}", context, limit=262_144)
    with pytest.raises(TooLarge):
        render_value({"a": "{data.deep}"}, context, limit=262_144)


def test_placeholders_that_do_not_resolve_stay_and_count_as_text() -> None:
    assert render("{nope} {data.v}", {"data": {"v": "ok"}}, limit=100) == "{nope} ok"
    with pytest.raises(TooLarge):
        render("{nope}" * 10, {}, limit=59)


def test_json_size_is_the_length_of_the_json_up_to_the_limit() -> None:
    value = {"a": [1, 2.5, None, True, False, "text"], "b": {"c": "d"}, "e": []}
    exact = len(orjson.dumps(value))
    assert json_size(value, 10_000) == exact
    assert json_size(value, 10) > 10


def test_render_value_bounds_the_whole_json_value() -> None:
    context = {"data": {"items": ["y" * 1000] * 10, "n": 3}}
    small = render_value({"n": "{data.n}", "all": "{data.items}"}, context, limit=20_000)
    assert small == {"n": 3, "all": ["y" * 1000] * 10}
    with pytest.raises(TooLarge):
        render_value([{"all": "{data.items}"}] * 30, context, limit=262_144)
    with pytest.raises(TooLarge):
        render_value({"text": "{data.items}" * 30}, context, limit=262_144)


def test_headers_are_bounded_too() -> None:
    with pytest.raises(TooLarge):
        render_header("{data.v}" * 100, {"data": {"v": "z" * 10_000}}, limit=262_144)


# -- HTML ------------------------------------------------------------------------------------


def test_values_from_the_context_are_escaped_in_html_and_the_template_is_not() -> None:
    context = {"data": {"name": '<script>alert("x")</script> & co', "n": 3}}
    html = render_html("<p><b>{data.name}</b> ({data.n})</p>", context)
    assert html == ("<p><b>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co</b> (3)</p>")


def test_an_email_escapes_context_values_in_its_html_body_only() -> None:
    config = send_email.SendEmailConfig(
        to="a@example.com", body="Hi {data.name}", html_body="<h1>Hi {data.name}</h1>"
    )
    email = send_email.preview(config, {"data": {"name": "<script>x()</script>"}})
    assert email["html_body"] == "<h1>Hi &lt;script&gt;x()&lt;/script&gt;</h1>"
    assert email["body"] == "Hi <script>x()</script>"


# -- recipients and emails per run -----------------------------------------------------------


def _addresses(count: int) -> list[str]:
    return [f"user{i}@example.com" for i in range(count)]


def test_an_email_may_have_as_many_recipients_as_the_limit_and_no_more() -> None:
    limits = Limits(recipients_per_email=50)
    at_limit = send_email.SendEmailConfig(to=_addresses(30), cc=_addresses(10), bcc_path="data.bcc")
    context = {"data": {"bcc": _addresses(10)}}
    assert len(send_email.preview(at_limit, context, limits)["bcc"]) == 10
    over = {"data": {"bcc": _addresses(11)}}
    with pytest.raises(LimitExceeded, match=r"51 recipients.*MAX_RECIPIENTS_PER_EMAIL allows 50"):
        send_email.preview(at_limit, over, limits)


def test_a_to_path_list_of_200_addresses_is_refused() -> None:
    config = send_email.SendEmailConfig(to_path="data.emails", subject="s", body="b")
    with pytest.raises(LimitExceeded, match="200 recipients"):
        send_email.preview(config, {"data": {"emails": _addresses(200)}})


def _call(emails_sent: int, limits: Limits) -> ActionCall:
    run_id = uuid.uuid4()
    return ActionCall(
        run_id=run_id,
        workflow_id=uuid.uuid4(),
        org_id=None,
        submission_id=None,
        step_id="s",
        step_seq=1,
        index=0,
        attempt=1,
        key=f"{run_id}/1/0",
        context={},
        limits=limits,
        emails_sent=emails_sent,
    )


def test_the_email_past_the_run_limit_is_refused_as_permanent() -> None:
    limits = Limits(emails_per_run=25)
    send_email.within_run_limit(_call(24, limits))
    with pytest.raises(PermanentActionError, match="sent 25 emails; MAX_EMAILS_PER_RUN allows 25"):
        send_email.within_run_limit(_call(25, limits))


def test_the_emails_a_run_sent_are_counted_from_its_ledger() -> None:
    ledger = {
        "r/1/0": EffectState(DONE, {"message_id": "<a@x>", "to": ["a@x.y"]}),
        "r/2/0": EffectState(DONE, {"message_id": "<b@x>", "deduplicated": True}),
        "r/2/notify": EffectState(DONE, {"message_id": "<c@x>"}),
        "r/2/1": EffectState(DONE, {"status": 200, "webhook_id": "msg_1"}),
        "r/3/0": EffectState(RESERVED, None),  # not sent (yet)
        "r/3/1": EffectState(DONE, {"ticket_id": "t"}),
    }
    assert emails_done(ledger) == 3


# -- webhooks and tickets --------------------------------------------------------------------


def test_a_webhook_body_url_and_headers_are_bounded() -> None:
    context = {"data": {"blob": "q" * 10_000}}
    limits = Limits(rendered_bytes=50_000)
    for config in (
        {"url": "http://h.example/x", "body": {"b": "{data.blob}" * 6}},
        {"url": "http://h.example/" + "{data.blob}" * 6},
        {"url": "http://h.example/", "headers": {"x-a": "{data.blob}" * 6}},
    ):
        with pytest.raises(TooLarge):
            webhook.preview(webhook.WebhookConfig.model_validate(config), context, limits)
    fits = webhook.WebhookConfig.model_validate({"url": "http://h.example/{data.blob}"})
    assert len(webhook.preview(fits, context, limits)["url"]) > 10_000


def test_a_webhook_that_sends_the_whole_context_is_bounded_by_it() -> None:
    config = webhook.WebhookConfig.model_validate({"url": "http://h.example/"})
    small = webhook.preview(config, {"data": {"a": "b"}}, Limits(rendered_bytes=1024))
    assert small["body"] == {"data": {"a": "b"}}
    with pytest.raises(TooLarge):
        webhook.preview(config, {"data": {"a": "b" * 2000}}, Limits(rendered_bytes=1024))


def test_ticket_fields_are_bounded() -> None:
    config = CreateTicketConfig(subject="s", fields={"all": ["{data}"] * 100})
    with pytest.raises(TooLarge):
        ticket_preview(config, {"data": {"v": "w" * 5000}}, Limits(rendered_bytes=262_144))


def test_a_human_tasks_text_is_bounded() -> None:
    definition = WorkflowDefinition.model_validate(
        {
            "trigger": {"type": "form_submitted"},
            "initial_step_id": "t",
            "steps": [
                {"id": "t", "type": "human_task", "config": {"description": "{data.v}" * 100}}
            ],
        }
    )
    step = definition.steps[0]
    context = {"data": {"v": "v" * 10_000}}
    with pytest.raises(TooLarge):
        machine.after_actions(definition, step, 1, context, NOW, 100, rendered_bytes=262_144)


# -- dry runs --------------------------------------------------------------------------------


def _looping(actions: list[dict[str, Any]]) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(
        {
            "trigger": {"type": "form_submitted"},
            "initial_step_id": "again",
            "steps": [
                {
                    "id": "again",
                    "type": "auto_action",
                    "actions": actions,
                    "transitions": [{"to": "again"}],
                }
            ],
        }
    )


EMAIL = {"type": "send_email", "config": {"to_path": "data.email", "subject": "s", "body": "b"}}


def test_a_dry_run_of_a_loop_that_emails_stops_at_the_emails_per_run() -> None:
    report = dry_run(_looping([EMAIL]), form=EXAMPLE_FORM, now=NOW, limits=Limits())
    assert report["status"] == "failed"
    assert "MAX_EMAILS_PER_RUN allows 25" in report["error"]
    assert len(report["path"]) == 26  # 25 emails, and the step that would send the 26th
    assert sum("would" in step["actions"][0] for step in report["steps"]) == 25
    assert "error" in report["steps"][-1]["actions"][0]


def test_a_dry_run_says_when_an_email_has_too_many_recipients() -> None:
    definition = _looping([{**EMAIL, "config": {**EMAIL["config"], "to_path": "data.list"}}])
    form = {**EXAMPLE_FORM, "data": {"list": _addresses(51)}}
    report = dry_run(definition, form=form, now=NOW)
    assert report["status"] == "failed"
    assert "MAX_RECIPIENTS_PER_EMAIL allows 50" in report["error"]
    assert report["path"] == ["again"]


def amplifying_definition(actions: int, copies: int) -> dict[str, Any]:
    """Each action's body refers to the form's `blob` `copies` times."""
    email = {
        "type": "send_email",
        "config": {"to": "a@example.com", "subject": "s", "body": "{data.blob}" * copies},
    }
    return {
        "trigger": {"type": "form_submitted"},
        "initial_step_id": "s0",
        "steps": [{"id": "s0", "type": "auto_action", "actions": [email] * actions}],
    }


def test_a_dry_run_answer_is_refused_past_its_limit_with_memory_flat() -> None:
    definition = WorkflowDefinition.model_validate(amplifying_definition(100, 25))
    form = {**EXAMPLE_FORM, "data": {"blob": "z" * 10_000}}  # 250 KB a body, 100 of them

    def attempt() -> None:
        with pytest.raises(TooLarge, match="MAX_DRY_RUN_BYTES") as refused:
            dry_run(definition, form=form, now=NOW, limits=Limits())
        assert refused.value.loc[:2] == ("steps", 0)

    assert peak_while(attempt) < 20 * MiB


def test_a_dry_run_refuses_a_field_over_the_limit_naming_the_action() -> None:
    definition = WorkflowDefinition.model_validate(amplifying_definition(3, 30))
    form = {**EXAMPLE_FORM, "data": {"blob": "z" * 10_000}}
    with pytest.raises(TooLarge, match="MAX_RENDERED_BYTES") as refused:
        dry_run(definition, form=form, now=NOW)
    assert refused.value.loc == ("steps", 0, "actions", 0)


def test_a_dry_run_whose_webhooks_nest_the_context_is_bounded() -> None:
    # Each webhook's default body is the context, which holds every earlier body: the answer
    # doubles with each step (2**40 here) unless it is measured as it grows.
    steps = [
        {
            "id": f"s{i}",
            "type": "auto_action",
            "actions": [{"type": "webhook", "config": {"url": "http://h.example/"}}],
            "transitions": [{"to": f"s{i + 1}"}] if i < 39 else [],
        }
        for i in range(40)
    ]
    definition = WorkflowDefinition.model_validate(
        {"trigger": {"type": "form_submitted"}, "initial_step_id": "s0", "steps": steps}
    )
    form = {**EXAMPLE_FORM, "data": {"blob": "n" * 1000}}
    with pytest.raises(TooLarge):
        dry_run(definition, form=form, now=NOW)


# -- the submission rate (the script's verdicts shared among the checks) ---------------------


def test_an_organisations_first_checks_pass_and_the_rest_wait_for_a_token() -> None:
    orgs = ["a", "b", "a", "a", "b"]
    verdicts = share(orgs, {"a": (2, 1500), "b": (2, 0)}, rate=1.0)
    assert [v is None for v in verdicts] == [True, True, True, False, True]
    refused = verdicts[3]
    assert refused is not None and refused.retry_after == 2
    assert "SUBMIT_RATE_PER_ORG allows 1 per second (bursts of 2)" in refused.message


def test_a_bucket_holds_twice_the_rate_and_one_submission_at_least() -> None:
    assert bucket_size(200) == 400
    assert bucket_size(0.1) == 1
    assert refusal("a", 1, 200).retry_after == 1  # Retry-After is whole seconds, at least 1
