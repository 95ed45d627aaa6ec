"""The development catcher (`python -m dev.mailcatcher`), run as a process the way `make run`
and the Compose stack run it: every webhook call is caught whatever its method, with its
headers and its body byte for byte (a signature still verifies), every email with its sender,
recipients, subject, time and body; `GET /` is a readable page, `/api/...` the same as JSON."""

from __future__ import annotations

import base64
import json
import smtplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.net import free_port
from tests.support.processes import Service, start, wait_log

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Catcher:
    service: Service
    smtp_port: int
    base_url: str
    directory: Path

    def webhooks(self) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.base_url}/api/webhooks", timeout=5)
        assert answer.status_code == 200
        return list(answer.json()["webhooks"])

    def emails(self) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.base_url}/api/messages", timeout=5)
        assert answer.status_code == 200
        return list(answer.json()["emails"])


def run_catcher(tmp_path: Path, *extra: str) -> tuple[Service, int, int]:
    smtp_port, http_port = free_port(), free_port()
    args = ["--port", str(smtp_port), "--http-port", str(http_port), "--dir", str(tmp_path / "c")]
    return start("dev.mailcatcher", {}, tmp_path, "catcher", [*args, *extra]), smtp_port, http_port


@pytest.fixture
def catcher(tmp_path: Path) -> Iterator[Catcher]:
    service, smtp_port, http_port = run_catcher(tmp_path)
    try:
        wait_log(service, "catcher: smtp://", timeout=20)
        yield Catcher(service, smtp_port, f"http://127.0.0.1:{http_port}", tmp_path / "c")
    finally:
        assert service.stop(timeout=10) == 0, service.log()


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]


def test_every_method_is_caught_get_and_head_included(catcher: Catcher) -> None:
    for method in METHODS:
        answer = httpx.request(
            method, f"{catcher.base_url}/hooks/{method.lower()}?q=1", headers={"x-n": method}
        )
        assert answer.status_code == 200, (method, answer.text)

    caught = catcher.webhooks()
    assert [call["method"] for call in caught] == METHODS[::-1]  # newest first
    assert [call["path"] for call in caught] == [f"/hooks/{m.lower()}?q=1" for m in METHODS[::-1]]
    assert all(["x-n", call["method"]] in call["headers"] for call in caught)


def test_the_raw_body_and_headers_are_kept_so_a_signature_verifies(catcher: Catcher) -> None:
    raw = b'{"item":"a laptop",  "amount":1200, "note":"Gr\xc3\xbc\xc3\x9fe"}'  # spacing kept
    stamp = datetime.now(UTC)
    signature = Webhook(SECRET).sign("msg_1", stamp, raw.decode())
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
    }
    assert httpx.post(f"{catcher.base_url}/purchases", content=raw, headers=headers).is_success
    binary = bytes(range(256))
    assert httpx.put(f"{catcher.base_url}/blob", content=binary).is_success

    blob, call = catcher.webhooks()
    kept = base64.b64decode(call["body_base64"])
    assert kept == raw and call["body"] == raw.decode() and call["size"] == len(raw)
    received = {name: value for name, value in call["headers"]}
    Webhook(SECRET).verify(kept, received)  # raises when a byte or a header was changed
    assert base64.b64decode(blob["body_base64"]) == binary and blob["body"] is None
    on_disk = [json.loads(line) for line in (catcher.directory / "webhooks.jsonl").open()]
    assert [c["id"] for c in on_disk] == [call["id"], blob["id"]]


def test_a_chunked_body_is_read_whole(catcher: Catcher) -> None:
    chunks = [b"first,", b"second,", b"third"]
    answer = httpx.post(f"{catcher.base_url}/chunked", content=iter(chunks))
    assert answer.status_code == 200
    assert base64.b64decode(catcher.webhooks()[0]["body_base64"]) == b"".join(chunks)


def send_email(catcher: Catcher, subject: str, body: str) -> None:
    message = (
        "From: Flowline <flowline@example.com>\r\nTo: ada@example.com\r\n"
        f"Subject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    with smtplib.SMTP("127.0.0.1", catcher.smtp_port, timeout=10) as client:
        client.sendmail("flowline@example.com", ["ada@example.com"], message.encode())


def test_an_email_is_kept_with_sender_recipients_subject_time_and_body(catcher: Catcher) -> None:
    before = datetime.now(UTC)
    send_email(catcher, "Form Submission Confirmation", "Hello,\r\nYour form was received.")

    (email,) = catcher.emails()
    assert email["from"] == "Flowline <flowline@example.com>"
    assert email["envelope_from"] == "flowline@example.com"
    assert email["to"] == ["ada@example.com"]
    assert email["subject"] == "Form Submission Confirmation"
    assert "Your form was received." in email["body"]
    assert before <= datetime.fromisoformat(email["at"]) <= datetime.now(UTC)
    assert Path(email["file"]).read_bytes().startswith(b"From: Flowline")


def test_the_page_is_html_listing_emails_and_webhooks_newest_first(catcher: Catcher) -> None:
    send_email(catcher, "First <b>email</b>", "body one")
    send_email(catcher, "Second email", "body two")
    httpx.post(f"{catcher.base_url}/older-hook", content=b'{"n": 1}', headers={"x-trace": "t-1"})
    httpx.delete(f"{catcher.base_url}/newer-hook")

    page = httpx.get(f"{catcher.base_url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert html.index("Second email") < html.index("First &lt;b&gt;email&lt;/b&gt;")
    assert "<b>email</b>" not in html  # what was caught is shown, never interpreted
    assert "body one" in html and "body two" in html
    assert html.index("/newer-hook") < html.index("/older-hook")
    assert "x-trace: t-1" in html and "{&quot;n&quot;: 1}" in html
    assert "ada@example.com" in html and "flowline@example.com" in html
    assert httpx.head(f"{catcher.base_url}/").status_code == 200
    assert len(catcher.webhooks()) == 2  # looking at the page caught nothing


def test_a_port_in_use_stops_the_catcher_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service, _, _ = run_catcher(tmp_path, "--http-port", str(port))
        assert service.process.wait(timeout=20) != 0
    lines = service.log().strip().splitlines()
    assert len(lines) == 1 and "catcher: cannot listen" in lines[0], service.log()
