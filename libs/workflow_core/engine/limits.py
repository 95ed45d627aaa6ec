"""The limits a run (and a dry run) works within: how many recipients an email may have, how
many emails a run may send, how large a rendered field and a dry run's answer may grow. The
defaults are the settings' defaults (MAX_* in settings.py); the processes pass their own."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RENDERED_BYTES = 262_144


@dataclass(frozen=True, slots=True)
class Limits:
    rendered_bytes: int = DEFAULT_RENDERED_BYTES
    """The most bytes (UTF-8) one rendered field may take: a subject, a body, a webhook's
    body as JSON, a ticket's fields as JSON (MAX_RENDERED_BYTES)."""
    recipients_per_email: int = 50
    """To, Cc and Bcc together (MAX_RECIPIENTS_PER_EMAIL)."""
    emails_per_run: int = 25
    """Emails one run may send, the assignee's notices included (MAX_EMAILS_PER_RUN)."""
    dry_run_bytes: int = 4 * 1_048_576
    """The most bytes a dry run's answer may take, as JSON (MAX_DRY_RUN_BYTES)."""


DEFAULT_LIMITS = Limits()
