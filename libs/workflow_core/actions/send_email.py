"""send_email: a UTF-8 email through the configured SMTP server, once per run step.

Before its SMTP transaction the email is reserved in the effect ledger (a lock against a second
live attempt). It counts as sent once the server answered the end of its content with 250; the
run records it right after. Whatever happens before that 250 (a refusal, a timeout, a lost
connection, a crash) leaves it unsent, and it is sent again with the same Message-ID (see
persistence/effects.py).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workflow_core.actions.base import ActionCall, ActionDeps
from workflow_core.actions.registry import ActionType, register
from workflow_core.email_format import OutgoingEmail, compose
from workflow_core.engine.limits import DEFAULT_LIMITS, Limits
from workflow_core.engine.paths import MISSING, resolve
from workflow_core.engine.templates import render, render_header, render_html, strip_line_breaks
from workflow_core.errors import LimitExceeded, PermanentActionError
from workflow_core.ids import derived_id

# ASCII only: internationalised addresses would need SMTPUTF8 end to end.
_ATOM = r'[^@\s,;<>"\x00-\x1f\x7f-\U0010ffff]+'
_ADDRESS = re.compile(rf"^{_ATOM}@{_ATOM}$")

Recipients = str | list[str] | None


class SendEmailConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    to: Recipients = None
    to_path: str | None = None
    cc: Recipients = None
    cc_path: str | None = None
    bcc: Recipients = None
    bcc_path: str | None = None
    reply_to: str | None = None
    subject: str = Field(default="", max_length=2000)
    body: str = ""
    html_body: str | None = None

    @model_validator(mode="after")
    def _needs_recipient(self) -> SendEmailConfig:
        if not self.to and not self.to_path:
            raise ValueError("send_email needs `to` or `to_path`")
        return self


def _split(text: str) -> list[str]:
    """The addresses in a header-safe text, `,` or `;` between them."""
    return [address.strip() for address in text.replace(";", ",").split(",") if address.strip()]


def _addresses(
    literal: Recipients, path: str | None, context: Mapping[str, Any], limit: int
) -> list[str]:
    found: list[str] = []
    if literal:
        for item in [literal] if isinstance(literal, str) else literal:
            found.extend(_split(render_header(item, context, limit=limit)))
    if path:
        value = resolve(context, path)
        if value is not MISSING and value is not None:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    found.extend(_split(strip_line_breaks(item)))
    return found


def preview(
    config: SendEmailConfig, context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """The email this action would send in `context`. Values from the context are HTML-escaped
    in `html_body`; an email over MAX_RECIPIENTS_PER_EMAIL or MAX_RENDERED_BYTES raises
    `LimitExceeded`."""
    limit = limits.rendered_bytes
    email: dict[str, Any] = {
        "to": _addresses(config.to, config.to_path, context, limit),
        "cc": _addresses(config.cc, config.cc_path, context, limit),
        "bcc": _addresses(config.bcc, config.bcc_path, context, limit),
    }
    count = len(email["to"]) + len(email["cc"]) + len(email["bcc"])
    if count > limits.recipients_per_email:
        raise LimitExceeded(
            f"the email has {count} recipients (To, Cc and Bcc together); "
            f"MAX_RECIPIENTS_PER_EMAIL allows {limits.recipients_per_email}"
        )
    email["subject"] = render_header(config.subject, context, limit=limit)
    email["body"] = render(config.body, context, limit=limit)
    if config.reply_to:
        email["reply_to"] = render_header(config.reply_to, context, limit=limit)
    if config.html_body is not None:
        email["html_body"] = render_html(config.html_body, context, limit=limit)
    return email


def within_run_limit(call: ActionCall) -> None:
    """`LimitExceeded` when the run has sent as many emails as MAX_EMAILS_PER_RUN allows."""
    allowed = call.limits.emails_per_run
    if call.emails_sent >= allowed:
        raise LimitExceeded(
            f"the run has sent {call.emails_sent} emails; MAX_EMAILS_PER_RUN allows {allowed}, "
            "so this one was not sent"
        )


def build_message(call: ActionCall, email: Mapping[str, Any], from_email: str) -> OutgoingEmail:
    """The email as it goes on the wire; `PermanentActionError` when it cannot be sent."""
    reply_to = _split(email.get("reply_to") or "")
    everyone = [*email["to"], *email["cc"], *email["bcc"], *reply_to]
    bad = [address for address in everyone if not _ADDRESS.match(address)]
    if bad:
        raise PermanentActionError(f"not an email address: {', '.join(map(repr, bad))}")
    if not email["to"]:
        raise PermanentActionError("no recipient: `to`/`to_path` gave no address in this context")
    domain = from_email.rpartition("@")[2] or "flowline.local"
    extra = {"X-Flowline-Run-Id": str(call.run_id)}
    if call.submission_id:
        extra["X-Flowline-Submission-Id"] = str(call.submission_id)
    return compose(
        sender=from_email,
        to=email["to"],
        cc=email["cc"],
        bcc=email["bcc"],
        subject=email["subject"],
        text=email["body"],
        html=email.get("html_body"),
        reply_to=", ".join(reply_to) or None,
        # Derived from the idempotency key: a receiver can tell a repeat by its Message-ID.
        message_id=f"<{derived_id(call.key)}@{domain}>",
        extra_headers=extra,
    )


async def execute(call: ActionCall, config: SendEmailConfig, deps: ActionDeps) -> dict[str, Any]:
    within_run_limit(call)
    email = preview(config, call.context, call.limits)
    message = build_message(call, email, deps.from_email)
    result = {"message_id": message.message_id, "to": email["to"], "subject": email["subject"]}
    if await deps.ledger.reserve(call) is not None:
        return {**result, "deduplicated": True}
    try:
        await deps.mailer.send(message)
    except BaseException:
        # No 250 was read: the server did not take the message, and another attempt may send.
        with contextlib.suppress(Exception):
            await deps.ledger.release(call.key)
        raise
    await deps.ledger.sent(call, result)
    return result


register(ActionType("send_email", SendEmailConfig, execute, preview, reserves_effect=True))
