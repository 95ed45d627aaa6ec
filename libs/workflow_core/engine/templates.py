"""Templates: `{submission_id}`, `{data.name}`, `{steps.open.ticket_id}`.

A small renderer of our own rather than `str.format`: a placeholder is a dotted path resolved
with `paths.resolve` (dict keys and list indexes only), so `{data.__class__}` or `{0}` cannot
reach Python internals; they, and any placeholder that does not resolve, stay as written.

Rendering is bounded: a form value referred to thousands of times must not make a text of
gigabytes. Every function that renders takes a `limit` in bytes (MAX_RENDERED_BYTES) and adds
up the size of the pieces as it finds them, so a result over the limit raises `TooLarge`
before it is built, and memory stays flat.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from workflow_core.engine.limits import DEFAULT_RENDERED_BYTES
from workflow_core.engine.paths import MISSING, resolve
from workflow_core.errors import TooLarge

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


def text_size(text: str) -> int:
    """Its length in UTF-8 bytes (an ASCII text is not encoded to count it)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def json_size(value: Any, limit: int) -> int:
    """About how many bytes `value` takes as JSON, counted no further than just past `limit`:
    the answer is exact up to `limit`, and some number above it beyond. A part shared by several
    places (the same list or object) is measured once, so a value that refers to one part many
    times costs no more to measure than to hold."""
    return _json_size(value, limit, {})


def _json_size(value: Any, limit: int, known: dict[int, int]) -> int:
    if isinstance(value, str):
        return text_size(value) + 2
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    if isinstance(value, int | float):
        return len(repr(value))
    if not isinstance(value, Mapping | list | tuple):
        return text_size(str(value)) + 2  # a date, a UUID: JSON carries its text
    size = known.get(id(value))
    if size is not None:
        return size
    size = 1  # the opening bracket; each item adds its own comma, or the closing bracket
    if isinstance(value, Mapping):
        for key, item in value.items():
            size += text_size(str(key)) + 4 + _json_size(item, limit - size, known)
            if size > limit:
                return size
    else:
        for item in value:
            size += 1 + _json_size(item, limit - size, known)
            if size > limit:
                return size
    size += not value  # an empty one closes by itself
    known[id(value)] = size
    return size


def too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"a rendered value would be larger than MAX_RENDERED_BYTES ({limit} bytes); "
        "it was not built"
    )


def render(
    template: str,
    context: Mapping[str, Any],
    *,
    limit: int = DEFAULT_RENDERED_BYTES,
    escape: Callable[[str], str] | None = None,
) -> str:
    """`template` with its placeholders replaced by values from `context`. `escape` is applied
    to each value (never to the template's own text). Raises `TooLarge` when the result would
    be larger than `limit` bytes, before it is built: the size of each piece is added up as it
    is found."""
    text = _render(template, context, limit, escape)
    if text is None:
        raise too_large(limit)
    return text


def _render(
    template: str,
    context: Mapping[str, Any],
    room: int,
    escape: Callable[[str], str] | None,
) -> str | None:
    """The rendered text, or None as soon as it is known to be larger than `room` bytes."""
    pieces: list[str] = []
    size = position = 0
    for match in _TOKEN.finditer(template):
        value = resolve(context, match.group(1))
        if value is MISSING:
            continue  # left as written: part of the text that follows
        literal = template[position : match.start()]
        size += text_size(literal)
        if not isinstance(value, str) and json_size(value, room - size) > room - size:
            return None  # never turned into text
        text = to_text(value)
        if escape is not None:
            text = escape(text)
        size += text_size(text)
        if size > room:
            return None
        pieces += (literal, text)
        position = match.end()
    tail = template[position:]
    size += text_size(tail)
    if size > room:
        return None
    pieces.append(tail)
    return "".join(pieces)


def render_header(
    template: str, context: Mapping[str, Any], *, limit: int = DEFAULT_RENDERED_BYTES
) -> str:
    """Render for an email header: line breaks (from the template or user data) become spaces,
    so a form value can never add a header."""
    return strip_line_breaks(render(template, context, limit=limit))


def render_html(
    template: str, context: Mapping[str, Any], *, limit: int = DEFAULT_RENDERED_BYTES
) -> str:
    """Render an HTML template: the values from the context are HTML-escaped (`<script>` in a
    form becomes `&lt;script&gt;`), the template's own markup stays as written."""
    return render(template, context, limit=limit, escape=_html_escape)


def _html_escape(text: str) -> str:
    return html.escape(text, quote=True)


def strip_line_breaks(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text).strip()


def placeholders(template: str) -> Iterator[str]:
    """The dotted paths a template refers to."""
    for match in _TOKEN.finditer(template):
        yield match.group(1)


def render_value(
    value: Any, context: Mapping[str, Any], *, limit: int = DEFAULT_RENDERED_BYTES
) -> Any:
    """Render every string inside a JSON-like value (webhook bodies, ticket fields). A string
    that is nothing but one placeholder takes the value itself, so `"{data.amount}"` stays a
    number and `"{data.items}"` a list; text around placeholders makes text. Raises `TooLarge`
    when the result, as JSON, would be larger than `limit` bytes, before it is built."""
    meter = _Meter(limit)
    return _render_json(value, context, meter)


class _Meter:
    """Bytes used so far of one rendered value."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    @property
    def room(self) -> int:
        return self.limit - self.used

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise too_large(self.limit)


def _render_json(value: Any, context: Mapping[str, Any], meter: _Meter) -> Any:
    if isinstance(value, str):
        whole = _TOKEN.fullmatch(value)
        found = resolve(context, whole.group(1)) if whole else MISSING
        if found is not MISSING:
            meter.take(json_size(found, meter.room))
            return found
        text = _render(value, context, meter.room, None)
        if text is None:
            raise too_large(meter.limit)
        meter.take(text_size(text) + 2)
        return text
    if isinstance(value, list):
        meter.take(2)
        rendered = []
        for item in value:
            meter.take(1)
            rendered.append(_render_json(item, context, meter))
        return rendered
    if isinstance(value, Mapping):
        meter.take(2)
        result = {}
        for key, item in value.items():
            meter.take(text_size(str(key)) + 4)
            result[key] = _render_json(item, context, meter)
        return result
    meter.take(json_size(value, meter.room))
    return value
