"""What the catcher caught: emails and webhook calls, newest first, the latest 500 of each in
memory and every one on disk (`<dir>/<time>.eml`, `<dir>/webhooks.jsonl`)."""

from __future__ import annotations

import base64
import itertools
import json
import threading
from collections import deque
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

KEPT = 500


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Catch:
    """Thread-safe: the SMTP side runs in aiosmtpd's thread, the HTTP side in one per call."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._emails: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self._webhooks: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def email(self, envelope_from: str, recipients: list[str], content: bytes) -> dict[str, Any]:
        number = next(self._ids)
        path = self.directory / f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{number}.eml"
        path.write_bytes(content)
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        item = {
            "id": number,
            "at": now_iso(),
            "from": str(message["From"] or envelope_from),
            "envelope_from": envelope_from,
            "to": recipients,
            "subject": str(message["Subject"] or ""),
            "date": str(message["Date"] or ""),
            "message_id": str(message["Message-ID"] or ""),
            "body": _text_of(message),
            "html": _html_of(message),
            "size": len(content),
            "file": str(path),
        }
        with self._lock:
            self._emails.appendleft(item)
        return item

    def webhook(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> dict[str, Any]:
        try:
            text: str | None = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        item = {
            "id": next(self._ids),
            "at": now_iso(),
            "method": method,
            "path": path,
            "headers": [[name, value] for name, value in headers],
            "body": text,
            "body_base64": base64.b64encode(body).decode("ascii"),
            "size": len(body),
        }
        with self._lock:
            self._webhooks.appendleft(item)
            with (self.directory / "webhooks.jsonl").open("a", encoding="utf-8") as log:
                log.write(json.dumps(item) + "\n")
        return item

    def emails(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._emails)

    def webhooks(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._webhooks)


def _text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        return str(part.get_content())
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        return str(part.get_payload(decode=False) or "")


def _html_of(message: EmailMessage) -> str | None:
    part = message.get_body(preferencelist=("html",))
    if part is None:
        return None
    try:
        return str(part.get_content())
    except (LookupError, ValueError):
        return None
