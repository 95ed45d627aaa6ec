"""Flowline's exceptions. Every one derives from `FlowlineError`; its docstring is its default
message, so `raise NotFound()` reads well and prints well.

    FlowlineError
    ├── DefinitionInvalid        a workflow definition failed validation (carries the problems)
    ├── NotFound                 an id that does not exist (or another organisation's)
    ├── Forbidden                the caller's key may not do this
    ├── Unprocessable            a request well-formed but incomplete or contradictory
    ├── Conflict                 the object is not in a state that allows the request
    ├── Unavailable              a dependency (PostgreSQL, Redis) does not answer
    ├── RateLimited              an organisation sends faster than SUBMIT_RATE_PER_ORG
    └── ActionFailed             an action could not do its work
        ├── RetryableActionError     try again later (connection refused, 4xx SMTP, 5xx HTTP)
        │   └── EffectBusy               another live attempt holds the effect: wait, uncounted
        └── PermanentActionError     do not try again (bad recipient, 4xx HTTP, bad config)
            └── LimitExceeded            a run went past one of the limits (MAX_* settings)
                └── TooLarge                 a rendered value would exceed MAX_RENDERED_BYTES

The adapters (smtp.py, http.py) turn library exceptions into these; nothing from aiosmtplib or
httpx travels further.
"""

from __future__ import annotations


class FlowlineError(Exception):
    """Flowline failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0])


class NotFound(FlowlineError):
    """Not found."""


class Forbidden(FlowlineError):
    """The key does not allow this."""


class Unprocessable(FlowlineError):
    """The request cannot be carried out as given."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.reason = path, message


class Conflict(FlowlineError):
    """The object's state does not allow this."""


class Unavailable(FlowlineError):
    """A dependency is unavailable."""


class RateLimited(FlowlineError):
    """Too many submissions from this organisation; try again later."""

    def __init__(self, message: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Whole seconds until the next submission would be accepted (Retry-After)."""


class DefinitionInvalid(FlowlineError):
    """The workflow definition is invalid."""

    def __init__(self, problems: list[dict[str, object]]) -> None:
        super().__init__("; ".join(f"{p['path']}: {p['msg']}" for p in problems))
        self.problems = problems


class ActionFailed(FlowlineError):
    """The action failed."""


class RetryableActionError(ActionFailed):
    """The action failed for a reason that may pass; it will be tried again."""

    def __init__(self, message: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EffectBusy(RetryableActionError):
    """Another attempt holds this effect; it is tried again once that one must be over.
    Waiting for it does not count as a failed attempt."""


class PermanentActionError(ActionFailed):
    """The action failed for a reason that trying again will not change."""


class LimitExceeded(PermanentActionError):
    """A limit was reached (MAX_RECIPIENTS_PER_EMAIL, MAX_EMAILS_PER_RUN, MAX_RENDERED_BYTES)."""


class TooLarge(LimitExceeded):
    """A rendered value would be larger than MAX_RENDERED_BYTES; it was not built."""

    def __init__(self, message: str | None = None, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc
        """Where in the definition, when known: ("steps", 3, "actions", 0)."""
