"""webhook: one HTTP request with a JSON body, signed the Standard Webhooks way.

Delivery is at least once: a worker that dies after the receiver answered and before the run
was recorded calls again. Every attempt of one action in one visit of a step carries the same
`webhook-id` (derived from the idempotency key), so a receiver can tell a repeat. Once the
run records the call as done, a redelivered event does not call again.

The answer lands in `steps.<id>.response` for conditions and templates: its status, a few of
its headers, and its body parsed (`json`) when it is JSON no larger than
WEBHOOK_RESPONSE_MAX_BYTES, otherwise the start of it (`body_excerpt`). The run's history
keeps the status and headers only; the context holds the rest, so its size stays bounded by
that setting per webhook action.

What is retried is decided in the HTTP adapter (connection errors, timeouts, 5xx, 429 with its
Retry-After); other 4xx fail the run, and so does a redirect, which is never followed.

Where a call may go is decided in the adapter too (workflow_core/destinations.py): loopback,
private and other internal addresses are refused unless WEBHOOK_ALLOWED_HOSTS lists them.
Validation given that setting (the API) already refuses a URL written as such an address.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
)
from standardwebhooks.webhooks import Webhook

from workflow_core.actions.base import ActionCall, ActionDeps, HttpResponse, is_json_media_type
from workflow_core.actions.registry import ActionType, register
from workflow_core.destinations import ALLOWED_HOSTS, SETTING, AllowedHosts, literal_refusal
from workflow_core.engine.limits import DEFAULT_LIMITS, DEFAULT_RENDERED_BYTES, Limits
from workflow_core.engine.paths import MISSING, resolve
from workflow_core.engine.templates import (
    json_size,
    placeholders,
    render_header,
    render_value,
    to_text,
    too_large,
)
from workflow_core.errors import PermanentActionError
from workflow_core.ids import derived_id

USER_AGENT = "Flowline-Webhooks/1"
EXCERPT_BYTES = 1024
DEFAULT_TIMEOUT_SECONDS = 10.0
SECRET_PREFIX = "whsec_"
SECRET_BYTES = (24, 64)  # what the Standard Webhooks specification asks of a secret

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_PRINTABLE_ASCII = "".join(chr(code) for code in range(0x20, 0x7F))
# Set by Flowline (the signature covers them) or by the HTTP client (message framing).
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
    }
)
_NO_DEFAULT_BODY = frozenset({"GET", "DELETE"})
DEFAULT_RESPONSE_MAX_BYTES = 65_536
# The answer's headers a run keeps (lowercased): what a next step may want to act on.
RESPONSE_HEADERS = (
    "content-type",
    "content-length",
    "location",
    "etag",
    "last-modified",
    "retry-after",
    "x-request-id",
)
MAX_JSON_DEPTH = 64  # deeper answers are kept as an excerpt (what JSONB stores safely)
RESPONSE_SHAPE: dict[str, Any] = {
    "status": "<the answer's HTTP status>",
    "headers": {name: f"<its {name}, when sent>" for name in RESPONSE_HEADERS},
    "json": "<its body parsed, when it is JSON of at most WEBHOOK_RESPONSE_MAX_BYTES; "
    "otherwise `body_excerpt`: its first 1024 bytes as text>",
}


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Method = Annotated[Literal["GET", "POST", "PUT", "PATCH", "DELETE"], BeforeValidator(_upper)]


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, max_length=4096)
    method: Method = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: JsonValue = None
    """Absent (or null): the whole run context, except for GET and DELETE, which send none."""
    timeout: float | None = Field(default=None, gt=0, le=300)
    secret: str | None = Field(default=None, repr=False)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str, info: ValidationInfo) -> str:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError("the URL must start with http:// or https://")
        if _URL_FORBIDDEN.search(url):
            raise ValueError("the URL may not contain spaces or control characters")
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError("the URL has no host")
        allowed = (info.context or {}).get(ALLOWED_HOSTS)
        if isinstance(allowed, AllowedHosts) and parts.hostname:
            reason = literal_refusal(parts.hostname, allowed)
            if reason is not None:
                raise ValueError(
                    f"webhooks may not call this host: {reason}; only {SETTING} (a setting "
                    "of the deployment) can allow an internal address"
                )
        return url

    @field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name in headers:
            if not _TOKEN.match(name):
                raise ValueError(f"header name {name!r} is not an HTTP token")
            lowered = name.lower()
            if lowered in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by Flowline and cannot be configured")
            if lowered in seen:
                raise ValueError(f"header {name!r} is given twice (names ignore case)")
            seen.add(lowered)
        return headers

    @field_validator("secret")
    @classmethod
    def _standard_webhooks_secret(cls, secret: str | None) -> str | None:
        if secret is not None:
            signing_key(secret)
        return secret


def signing_key(secret: str) -> bytes:
    """The key inside a `whsec_<base64>` secret; ValueError saying what is wrong with it."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"the secret must look like {SECRET_PREFIX}<base64>")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"the part of the secret after {SECRET_PREFIX} is not base64") from None
    low, high = SECRET_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"the secret decodes to {len(key)} bytes; it needs {low} to {high}")
    return key


def render_url(
    template: str, context: Mapping[str, Any], limit: int = DEFAULT_RENDERED_BYTES
) -> str:
    """Render a URL template; each value is percent-encoded (as in RFC 6570's `{var}`), so form
    data stays inside its part of the URL and cannot add a path, a query or another host.
    `TooLarge` when the URL would be longer than `limit`, before it is built."""
    url, size = template, len(template)
    for path in dict.fromkeys(placeholders(template)):
        value = resolve(context, path)
        if value is not MISSING:
            if not isinstance(value, str) and json_size(value, limit) > limit:
                raise too_large(limit)
            placeholder, text = f"{{{path}}}", quote(to_text(value), safe="")
            size += url.count(placeholder) * (len(text) - len(placeholder))
            if size > limit:
                raise too_large(limit)
            url = url.replace(placeholder, text)
    return url


def header_value(
    template: str, context: Mapping[str, Any], limit: int = DEFAULT_RENDERED_BYTES
) -> str:
    """A header value: no line breaks or control characters (form data cannot add a header),
    and anything outside ASCII percent-encoded as UTF-8, since HTTP headers carry ASCII."""
    text = _CONTROL.sub(" ", render_header(template, context, limit=limit))
    return quote(text, safe=_PRINTABLE_ASCII)


def preview(
    config: WebhookConfig, context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """The request this action would make in `context` (without the signing headers). Its
    body, URL and each header are bounded by MAX_RENDERED_BYTES (`TooLarge`)."""
    limit = limits.rendered_bytes
    if config.body is not None:
        body: Any = render_value(config.body, context, limit=limit)
    elif config.method in _NO_DEFAULT_BODY:
        body = None
    else:
        body = dict(context)
        if json_size(body, limit) > limit:
            raise too_large(limit)
    headers = {"user-agent": USER_AGENT}
    if body is not None:
        headers["content-type"] = "application/json"
    for name, template in config.headers.items():
        headers[name.lower()] = header_value(template, context, limit)
    return {
        "method": config.method,
        "url": render_url(config.url, context, limit),
        "headers": headers,
        "body": body,
        "response": RESPONSE_SHAPE,  # what `steps.<id>.response` will hold
    }


def webhook_id(call: ActionCall) -> str:
    """The same for every attempt and redelivery of one action in one visit of a step."""
    return f"msg_{derived_id(call.key).hex}"


def signed_headers(
    message_id: str, sent_at: datetime, content: str, secret: str | None
) -> dict[str, str]:
    """The Standard Webhooks headers: id, timestamp and (with a secret) the v1 signature."""
    timestamp = int(sent_at.timestamp())
    headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp)}
    if secret is not None:
        at = datetime.fromtimestamp(timestamp, UTC)
        headers["webhook-signature"] = Webhook(secret).sign(message_id, at, content)
    return headers


def encode_body(body: Any) -> bytes:
    try:
        return orjson.dumps(body, default=_plain, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as error:
        raise PermanentActionError(f"the webhook body is not JSON: {error}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _excerpt(response: HttpResponse) -> str:
    return response.body_excerpt.encode()[:EXCERPT_BYTES].decode(errors="ignore")


def _refusal(method: str, url: str, response: HttpResponse, excerpt: str) -> str:
    """Why an answer the adapter let through is no success: a redirect is never followed, so
    the receiver never saw the call."""
    note = ""
    if 300 <= response.status < 400:
        location = {k.lower(): v for k, v in response.headers.items()}.get("location")
        note = " (redirects are not followed" + (f"; Location: {location})" if location else ")")
    return f"{method} {url} answered {response.status}{note}: {excerpt[:200]}"


def shape_response(response: HttpResponse, max_bytes: int) -> dict[str, Any]:
    """What a run keeps of an answer: its status, the chosen headers (lowercased), and its body
    parsed when it is JSON no larger than `max_bytes`, otherwise an excerpt of it."""
    sent = {name.lower(): value for name, value in response.headers.items()}
    shaped: dict[str, Any] = {
        "status": response.status,
        "headers": {name: sent[name] for name in RESPONSE_HEADERS if name in sent},
    }
    parsed = _json_body(response, max_bytes)
    if parsed is _NOT_JSON:
        shaped["body_excerpt"] = _excerpt(response)
    else:
        shaped["json"] = parsed
    return shaped


_NOT_JSON = object()


def _json_body(response: HttpResponse, max_bytes: int) -> Any:
    body = response.body
    content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type")
    if body is None or len(body) > max_bytes or not is_json_media_type(content_type):
        return _NOT_JSON
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NOT_JSON
    return parsed if _storable(parsed, 0) else _NOT_JSON


def _storable(value: Any, depth: int) -> bool:
    """What PostgreSQL's JSONB keeps faithfully: no NUL in text, bounded nesting."""
    if depth > MAX_JSON_DEPTH:
        return False
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all("\x00" not in k and _storable(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(item, depth + 1) for item in value)
    return True


def history_of(result: dict[str, Any]) -> dict[str, Any]:
    """The run's history keeps what it kept before answers were kept: not the parsed body."""
    response = result.get("response")
    if not isinstance(response, dict) or "json" not in response:
        return result
    return {**result, "response": {k: v for k, v in response.items() if k != "json"}}


async def execute(call: ActionCall, config: WebhookConfig, deps: ActionDeps) -> dict[str, Any]:
    request = preview(config, call.context, call.limits)
    content = None if request["body"] is None else encode_body(request["body"])
    message_id = webhook_id(call)
    headers = {
        **request["headers"],
        **signed_headers(message_id, deps.now(), (content or b"").decode(), config.secret),
    }
    timeout = config.timeout or float(
        deps.settings.get("webhook_timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    )
    method, url = request["method"], request["url"]
    response = await deps.http.request(
        method, url, headers=headers, content=content, timeout=timeout
    )
    excerpt = _excerpt(response)
    if response.status >= 300:
        raise PermanentActionError(_refusal(method, url, response, excerpt))
    max_bytes = int(deps.settings.get("webhook_response_max_bytes", DEFAULT_RESPONSE_MAX_BYTES))
    return {
        "status": response.status,
        "webhook_id": message_id,
        "url": url,
        "response_excerpt": excerpt,
        "response": shape_response(response, max_bytes),
    }


register(ActionType("webhook", WebhookConfig, execute, preview, history=history_of))
