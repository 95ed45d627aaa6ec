"""The catcher's page (`GET /`): what was caught, newest first, readable in a browser."""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 72rem; padding: 1rem;
       color: #1d232b; background: #f6f7f9; }
h1 { font-size: 1.3rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
nav a { margin-right: 1rem; }
article { background: #fff; border: 1px solid #d8dce2; border-radius: 6px; margin: .6rem 0;
          padding: .6rem .9rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .8rem; margin: 0; }
dt { color: #5b6573; } dd { margin: 0; overflow-wrap: anywhere; }
pre { background: #f1f3f5; padding: .5rem; overflow-x: auto; white-space: pre-wrap;
      overflow-wrap: anywhere; margin: .4rem 0 0; }
.method { font-weight: 600; } .empty { color: #5b6573; }
"""


def render(emails: list[dict[str, Any]], webhooks: list[dict[str, Any]], where: str) -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>Flowline catcher</title><style>{_STYLE}</style></head><body>"
        "<h1>Flowline catcher</h1>"
        f"<p>{escape(where)} Newest first; reload to see more. JSON: "
        "<a href='/api/messages'>/api/messages</a>, <a href='/api/webhooks'>/api/webhooks</a>.</p>"
        f"<nav><a href='#emails'>Emails ({len(emails)})</a>"
        f"<a href='#webhooks'>Webhook calls ({len(webhooks)})</a></nav>"
        f"<h2 id=emails>Emails ({len(emails)})</h2>"
        + ("".join(_email(item) for item in emails) or _nothing("No email yet."))
        + f"<h2 id=webhooks>Webhook calls ({len(webhooks)})</h2>"
        + ("".join(_webhook(item) for item in webhooks) or _nothing("No webhook call yet."))
        + "</body></html>\n"
    )


def _nothing(text: str) -> str:
    return f"<p class=empty>{escape(text)}</p>"


def _fields(pairs: list[tuple[str, str]]) -> str:
    return (
        "<dl>"
        + "".join(
            f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in pairs if value
        )
        + "</dl>"
    )


def _email(item: dict[str, Any]) -> str:
    fields = [
        ("Subject", item["subject"]),
        ("From", item["from"]),
        ("To", ", ".join(item["to"])),
        ("Received", item["at"]),
        ("Message-ID", item["message_id"]),
        ("File", item["file"]),
    ]
    return f"<article class=email>{_fields(fields)}<pre>{escape(item['body'])}</pre></article>"


def _webhook(item: dict[str, Any]) -> str:
    body = item["body"] if item["body"] is not None else f"(base64) {item['body_base64']}"
    headers = "\n".join(f"{name}: {value}" for name, value in item["headers"])
    return (
        "<article class=webhook>"
        f"<p><span class=method>{escape(item['method'])}</span> {escape(item['path'])}"
        f" &middot; {escape(item['at'])} &middot; {item['size']} bytes</p>"
        f"<pre class=headers>{escape(headers)}</pre>"
        f"<pre class=body>{escape(body) if body else '(no body)'}</pre>"
        "</article>"
    )
