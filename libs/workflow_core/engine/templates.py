"""Templates: `{submission_id}`, `{data.name}`, `{steps.open.ticket_id}`.

A small renderer of our own rather than `str.format`: a placeholder is a dotted path resolved
with `paths.resolve` (dict keys and list indexes only), so `{data.__class__}` or `{0}` cannot
reach Python internals; they, and any placeholder that does not resolve, stay as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from workflow_core.engine.paths import MISSING, resolve

# A dotted name: it starts with a letter or `_` (so `{0}` stays text) and its parts are letters
# of any script, digits, `_` and `-` (`{data.名前}`, `{data.e-mail}`, `{data.tags.-1}`).
_TOKEN = re.compile(r"\{((?:[^\W\d])[\w-]*(?:\.[\w-]+)*)\}")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x85\x0b\x0c]+")


def to_text(value: Any) -> str:
    """How a context value reads inside text: strings as they are, JSON for the rest."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def render(template: str, context: Mapping[str, Any]) -> str:
    def substitute(match: re.Match[str]) -> str:
        value = resolve(context, match.group(1))
        return match.group(0) if value is MISSING else to_text(value)

    return _TOKEN.sub(substitute, template)


def render_header(template: str, context: Mapping[str, Any]) -> str:
    """Render for an email header: line breaks (from the template or user data) become spaces,
    so a form value can never add a header."""
    return strip_line_breaks(render(template, context))


def strip_line_breaks(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text).strip()


def placeholders(template: str) -> Iterator[str]:
    """The dotted paths a template refers to."""
    for match in _TOKEN.finditer(template):
        yield match.group(1)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside a JSON-like value (webhook bodies, ticket fields). A string
    that is nothing but one placeholder takes the value itself, so `"{data.amount}"` stays a
    number and `"{data.items}"` a list; text around placeholders makes text."""
    if isinstance(value, str):
        whole = _TOKEN.fullmatch(value)
        if whole:
            found = resolve(context, whole.group(1))
            return value if found is MISSING else found
        return render(value, context)
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, Mapping):
        return {key: render_value(item, context) for key, item in value.items()}
    return value
