from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from tests.unit.factories import example_context, example_definition
from workflow_core.actions.base import ActionCall
from workflow_core.actions.send_email import SendEmailConfig, build_message, preview
from workflow_core.email_format import OutgoingEmail
from workflow_core.errors import PermanentActionError
from workflow_core.ids import derived_id

RUN_ID = UUID("00000000-0000-4000-8000-0000000000a1")
SUBMISSION_ID = UUID("00000000-0000-4000-8000-00000000005b")
FROM = "flowline@example.com"


def config(**fields: Any) -> SendEmailConfig:
    return SendEmailConfig.model_validate({"to": "someone@example.com", **fields})


def call(key: str = f"{RUN_ID}/1/0", **context: Any) -> ActionCall:
    return ActionCall(
        run_id=RUN_ID,
        workflow_id=UUID("00000000-0000-4000-8000-0000000000f1"),
        org_id="org_123",
        submission_id=SUBMISSION_ID,
        step_id="notify",
        step_seq=1,
        index=0,
        attempt=1,
        key=key,
        context=context or example_context(),
    )


def outgoing(**fields: Any) -> dict[str, Any]:
    """What `preview` produces for a simple email, with `fields` replaced."""
    simple = {"to": ["user@example.com"], "cc": [], "bcc": [], "subject": "Hi", "body": "Hello"}
    return {**simple, **fields}


def message(key: str = f"{RUN_ID}/1/0", **fields: Any) -> EmailMessage:
    """The message as a receiver parses it from the bytes on the wire."""
    return reparsed(build_message(call(key), outgoing(**fields), FROM))


def reparsed(sent: OutgoingEmail) -> EmailMessage:
    assert b"\n" not in sent.data.replace(b"\r\n", b"")  # SMTP wants CRLF line ends only
    local = sent.data.replace(b"\r\n", b"\n")  # as a mail client stores it
    parsed = email.message_from_bytes(local, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# config


def test_a_config_needs_to_or_to_path() -> None:
    with pytest.raises(ValidationError, match="to"):
        SendEmailConfig.model_validate({"subject": "Hi"})


def test_a_config_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="colour"):
        config(colour="blue")


# preview


def test_the_original_example_previews_as_designed() -> None:
    raw = example_definition()["steps"][0]["actions"][0]["config"]
    context = example_context()
    shown = preview(SendEmailConfig.model_validate(raw), context)
    assert shown["to"] == ["user@example.com"]
    assert shown["cc"] == []
    assert shown["bcc"] == []
    assert shown["subject"] == "Form Submission Confirmation - form_submitted"
    assert f"Submission ID: {context['submission_id']}\n" in shown["body"]


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("a@example.com", ["a@example.com"]),
        ("a@example.com, b@example.com", ["a@example.com", "b@example.com"]),
        ("a@example.com;b@example.com", ["a@example.com", "b@example.com"]),
        (["a@example.com", "b@example.com, c@example.com"], [f"{x}@example.com" for x in "abc"]),
        ("{data.email}", ["user@example.com"]),
        ("a@example.com, ,", ["a@example.com"]),
    ],
)
def test_literal_recipients(to: Any, expected: list[str]) -> None:
    assert preview(config(to=to), example_context())["to"] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@example.com", ["a@example.com"]),
        ("a@example.com, b@example.com", ["a@example.com", "b@example.com"]),
        (["a@example.com", "b@example.com"], ["a@example.com", "b@example.com"]),
        (["a@example.com", 42, None], ["a@example.com"]),
        (None, []),
        ({"address": "a@example.com"}, []),
    ],
)
def test_recipients_from_to_path(value: Any, expected: list[str]) -> None:
    shown = preview(SendEmailConfig(to_path="data.recipients"), example_context(recipients=value))
    assert shown["to"] == expected


def test_a_missing_to_path_gives_no_recipient() -> None:
    assert preview(SendEmailConfig(to_path="data.nobody"), example_context())["to"] == []


def test_to_and_to_path_add_up() -> None:
    shown = preview(config(to="boss@example.com", to_path="data.email"), example_context())
    assert shown["to"] == ["boss@example.com", "user@example.com"]


def test_cc_and_bcc_like_to() -> None:
    context = example_context(team=["t1@example.com", "t2@example.com"])
    shown = preview(config(cc="c@example.com", cc_path="data.email", bcc_path="data.team"), context)
    assert shown["cc"] == ["c@example.com", "user@example.com"]
    assert shown["bcc"] == ["t1@example.com", "t2@example.com"]


def test_the_subject_carries_no_line_break_from_user_data() -> None:
    context = example_context(name="x\r\nBcc: evil@x")
    subject = preview(config(subject="Hello {data.name}"), context)["subject"]
    assert "\r" not in subject
    assert "\n" not in subject


def test_the_body_keeps_its_lines() -> None:
    shown = preview(config(body="Dear {data.name},\n\n{data.message}"), example_context())
    assert shown["body"] == "Dear John Doe,\n\nHello world"


def test_reply_to_and_html_appear_only_when_configured() -> None:
    plain = preview(config(), example_context())
    assert "reply_to" not in plain
    assert "html_body" not in plain
    rich = preview(
        config(reply_to="{data.email}", html_body="<p>{data.name}</p>"), example_context()
    )
    assert rich["reply_to"] == "user@example.com"
    assert rich["html_body"] == "<p>John Doe</p>"


# build_message


def test_the_message_has_its_headers() -> None:
    sent = message(
        to=["a@example.com", "b@example.com"], cc=["c@example.com"], subject="Hello there"
    )
    assert sent["From"] == FROM
    assert sent["To"] == "a@example.com, b@example.com"
    assert sent["Cc"] == "c@example.com"
    assert sent["Subject"] == "Hello there"
    assert sent["Date"] is not None
    assert sent["X-Flowline-Run-Id"] == str(RUN_ID)
    assert sent["X-Flowline-Submission-Id"] == str(SUBMISSION_ID)


def test_the_date_is_utc_with_a_known_zone() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    raw = build_message(call(), outgoing(), FROM).data
    after = datetime.now(UTC)

    date = re.search(rb"^Date: (.+)\r$", raw, re.MULTILINE)
    assert date is not None
    assert date[1].endswith(b" +0000"), date[1]  # "-0000" says the zone is unknown (RFC 5322)
    sent_at = parsedate_to_datetime(date[1].decode())
    assert sent_at.utcoffset() == timedelta(0)
    assert before <= sent_at <= after


def test_the_message_id_derives_from_the_idempotency_key() -> None:
    key = f"{RUN_ID}/3/1"
    assert message(key)["Message-ID"] == f"<{derived_id(key)}@example.com>"


def test_the_message_id_is_stable_for_a_key_and_differs_between_keys() -> None:
    assert message("r/1/0")["Message-ID"] == message("r/1/0")["Message-ID"]
    assert message("r/1/0")["Message-ID"] != message("r/1/1")["Message-ID"]


def test_the_body_is_utf8_and_survives_the_wire() -> None:
    body = "Grüße, Zoë! Ваша заявка принята ✓ 受付済み"
    received = message(body=body, subject="Bestätigung ✓")
    assert received.get_content_charset() == "utf-8"
    assert received.get_content().rstrip("\n") == body
    assert received["Subject"] == "Bestätigung ✓"


def test_a_plain_message_is_not_multipart() -> None:
    assert not message().is_multipart()


def test_an_html_body_is_an_alternative_to_the_text() -> None:
    received = message(body="Hello Zoë", html_body="<p>Hello <b>Zoë</b></p>")
    assert received.get_content_type() == "multipart/alternative"
    plain = received.get_body(("plain",))
    html = received.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().rstrip("\n") == "Hello Zoë"
    assert html.get_content().rstrip("\n") == "<p>Hello <b>Zoë</b></p>"


def test_reply_to_is_set_when_given() -> None:
    assert message(reply_to="help@example.com")["Reply-To"] == "help@example.com"
    assert message(reply_to="a@example.com; b@example.com")["Reply-To"] == (
        "a@example.com, b@example.com"
    )


def test_a_reply_to_that_is_not_an_address_fails_like_a_bad_recipient() -> None:
    """Line breaks from the form are gone by now; what is left must still be an address."""
    with pytest.raises(
        PermanentActionError, match=re.escape("not an email address: 'a@example.com X-Evil: 1'")
    ):
        build_message(call(), outgoing(reply_to="a@example.com X-Evil: 1"), FROM)


def test_bcc_recipients_are_in_the_envelope_and_in_no_header() -> None:
    sent = build_message(call(), outgoing(bcc=["hidden@example.com"]), FROM)
    assert sent.recipients == ("user@example.com", "hidden@example.com")
    assert b"hidden@example.com" not in sent.data


@pytest.mark.parametrize(
    "fields",
    [
        {"to": ["not-an-address"]},
        {"to": ["a@b@example.com"]},
        {"to": ["user@example.com Bcc: evil@x"]},
        {"to": ["Name <user@example.com>"]},
        {"to": ["user@example.com"], "cc": ["nope"]},
        {"to": ["user@example.com"], "bcc": ["@example.com"]},
    ],
)
def test_an_invalid_address_is_a_permanent_failure(fields: dict[str, Any]) -> None:
    with pytest.raises(PermanentActionError, match="not an email address"):
        message(**fields)


def test_no_recipient_is_a_permanent_failure() -> None:
    with pytest.raises(PermanentActionError, match="no recipient"):
        message(to=[], cc=["c@example.com"])


def test_an_address_with_an_injected_header_never_becomes_a_message() -> None:
    context = example_context(email="victim@example.com\r\nBcc: evil@example.com")
    shown = preview(SendEmailConfig(to_path="data.email"), context)
    with pytest.raises(PermanentActionError):
        build_message(call(**context), shown, FROM)


def test_a_subject_with_an_injected_header_adds_no_header() -> None:
    context = example_context(name="x\r\nBcc: evil@example.com")
    shown = preview(config(subject="Hello {data.name}"), context)
    received = reparsed(build_message(call(**context), shown, FROM))
    assert received["Bcc"] is None
    assert "evil@example.com" in received["Subject"]
