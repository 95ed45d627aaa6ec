"""Who is looking at the console: the session cookie (session.py) turned into the `Principal`
the JSON routes use, so that every page applies the same scopes and organisation checks.

A session names its key by id; the key is read again at every request, so a revoked key's
sessions end at once. The operator's session names a fingerprint of API_ADMIN_KEY. With no
API_ADMIN_KEY the API is open, and so is the console: everyone is the operator.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request

from services.api.console.session import (
    COOKIE,
    OPERATOR,
    Session,
    operator_key,
    session_secret,
    unseal,
)
from services.api.deps import Database
from services.api.keys import OPERATOR as OPERATOR_PRINCIPAL
from services.api.keys import Principal
from workflow_core.persistence import api_keys
from workflow_core.settings import Settings


class SignInNeeded(Exception):
    """No valid session: the page sends the browser to the sign-in form."""


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    secret: bytes
    hours: float
    admin_key: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsoleConfig:
        return cls(session_secret(settings), settings.console_session_hours, settings.admin_key)

    @property
    def open(self) -> bool:
        return not self.admin_key

    @property
    def open_csrf(self) -> str:
        """The forms' token while the console is open (no sessions): unguessable, per process."""
        return hmac.new(self.secret, b"open console csrf", hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    who: str
    csrf: str
    open: bool = False

    def can(self, scope: str) -> bool:
        return self.principal.can(scope)

    @property
    def operator(self) -> bool:
        return self.principal.operator


def config(request: Request) -> ConsoleConfig:
    found = request.app.state.console
    assert isinstance(found, ConsoleConfig)
    return found


async def principal_of(database: Database, cfg: ConsoleConfig, key: str) -> Principal | None:
    """The principal a session's key stands for now; None when it is revoked or unknown."""
    if key.startswith(f"{OPERATOR}:"):
        valid = cfg.admin_key and hmac.compare_digest(key, operator_key(cfg.admin_key))
        return OPERATOR_PRINCIPAL if valid else None
    try:
        key_id = UUID(key)
    except ValueError:
        return None
    async with database.reading() as conn:
        found = await api_keys.get(conn, key_id)
    if found is None or found.revoked_at is not None:
        return None
    return Principal(found.id, found.org_id, frozenset(found.scopes), found.allowed_origins)


def session_of(request: Request) -> Session | None:
    return unseal(request.cookies.get(COOKIE), config(request).secret, now=time.time())


async def _viewer(request: Request) -> Viewer:
    cfg = config(request)
    if cfg.open:
        return Viewer(OPERATOR_PRINCIPAL, "operator", cfg.open_csrf, open=True)
    session = session_of(request)
    if session is None:
        raise SignInNeeded()
    principal = await principal_of(request.app.state.database, cfg, session.key)
    if principal is None or not (principal.can("tasks") or principal.can("admin")):
        raise SignInNeeded()
    # The access log names the key's id, as for a bearer key (observe.py).
    request.state.key_id = str(principal.key_id) if principal.key_id else "operator"
    return Viewer(principal, session.who, session.csrf)


Looker = Annotated[Viewer, Depends(_viewer)]
