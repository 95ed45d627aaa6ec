"""Turning a template into an answer: autoescaped Jinja2, and the headers every page carries.

The approval pages' URLs carry a signed token: `Referrer-Policy: same-origin` keeps it from
leaking to any other site (`no-referrer` would also make browsers send `Origin: null` with the
page's own form, which the approval page's check refuses), `Cache-Control: no-store` out of
shared caches, and the content security policy lets a page load only its style sheet and post
only to this API."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else ""


_TEMPLATES.filters["when"] = _when
STYLE_SHEET = "/docs/assets/pages.css"
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
}


def page(template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    text = _TEMPLATES.get_template(template).render(style_sheet=STYLE_SHEET, **values)
    return HTMLResponse(text, status_code=status_code, headers=HEADERS)
