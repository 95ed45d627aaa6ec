"""The console's session: a signed, expiring cookie that names the API key it was opened with
(its id, never its text), who signed in, and the CSRF token of its forms.

The cookie is `<payload>.<signature>`, both base64url: the payload is JSON, the signature an
HMAC-SHA256 of it with the session secret (CONSOLE_SESSION_SECRET, or one derived from
API_ADMIN_KEY). A cookie that is altered, expired or signed with another secret is no session.
Whether its key is still valid (not revoked) is checked at every request (identity.py).
Pure: no I/O here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass

import orjson

from workflow_core.settings import Settings

COOKIE = "flowline_console"
OPERATOR = "operator"
# Derivation labels: the same secret never signs two kinds of thing.
_DERIVED = b"flowline console sessions v1"
_FINGERPRINT = b"flowline console operator v1"


@dataclass(frozen=True, slots=True)
class Session:
    key: str
    """An API key's id, or `operator:<fingerprint of API_ADMIN_KEY>`."""
    who: str
    """The name or email given at sign-in (the inbox's "mine"), else the key's name."""
    csrf: str
    expires: int
    """Unix time."""


def session_secret(settings: Settings) -> bytes:
    """CONSOLE_SESSION_SECRET; else derived from API_ADMIN_KEY (every replica derives the same
    one, and a new admin key ends every session); else, for an open API, random per process."""
    if settings.console_session_secret:
        return settings.console_session_secret.encode()
    if settings.admin_key:
        return hmac.new(settings.admin_key.encode(), _DERIVED, hashlib.sha256).digest()
    return secrets.token_bytes(32)


def operator_key(admin_key: str) -> str:
    """What an operator's session names: a fingerprint of API_ADMIN_KEY, so that a session
    opened with an old admin key is no longer valid once the key changes."""
    digest = hmac.new(admin_key.encode(), _FINGERPRINT, hashlib.sha256).hexdigest()
    return f"{OPERATOR}:{digest[:32]}"


def new_session(key: str, who: str, *, now: float, hours: float) -> Session:
    return Session(key, who, secrets.token_urlsafe(24), int(now + hours * 3600))


def seal(session: Session, secret: bytes) -> str:
    payload = _b64(orjson.dumps(asdict(session)))
    return f"{payload}.{_b64(_sign(payload, secret))}"


def unseal(cookie: str | None, secret: bytes, *, now: float) -> Session | None:
    """The session the cookie holds, or None (missing, altered, unreadable or expired)."""
    if not cookie or cookie.count(".") != 1:
        return None
    payload, signature = cookie.split(".")
    try:
        if not hmac.compare_digest(_unb64(signature), _sign(payload, secret)):
            return None
        fields = orjson.loads(_unb64(payload))
        session = Session(
            key=str(fields["key"]),
            who=str(fields["who"]),
            csrf=str(fields["csrf"]),
            expires=int(fields["expires"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > now else None


def csrf_matches(expected: str, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(expected.encode(), token.encode())


def _sign(payload: str, secret: bytes) -> bytes:
    return hmac.new(secret, payload.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
