"""Outgoing HTTP (webhooks) with httpx. Errors are sorted here: connection problems, timeouts,
5xx and 429 are retryable; other 4xx are permanent. Nothing from httpx travels further.

What a receiver can cost us is bounded: the whole call (connecting, sending, the answer's
head, the start of its body) by its `timeout`, however slowly the receiver trickles bytes
(httpx's own timeouts count per read); the answer's head by HEAD_LIMIT_BYTES (h11, under
httpcore, refuses a head still incomplete past it); its body by EXCERPT_BYTES, read as sent
(no content decoding, so a compressed answer cannot expand in memory), the rest never read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpcore
import httpx

from workflow_core.actions.base import HttpResponse
from workflow_core.errors import PermanentActionError, RetryableActionError

EXCERPT_BYTES = 2048
HEAD_LIMIT_BYTES = httpcore.AsyncHTTP11Connection.MAX_INCOMPLETE_EVENT_SIZE
_IDENTITY = frozenset({"", "identity"})


async def _excerpt(response: httpx.Response) -> str:
    """The start of the body as sent; the rest is never read (a huge answer costs nothing).
    We ask for no content coding; an answer that has one anyway is not decoded."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    collected = b""
    async for chunk in response.aiter_raw():
        collected += chunk
        if len(collected) >= EXCERPT_BYTES:
            break
    if encoding not in _IDENTITY:
        return f"({len(collected)}+ bytes, {encoding}-encoded: not shown)"
    return collected[:EXCERPT_BYTES].decode("utf-8", errors="replace")


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, given as a number or as an HTTP date."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _shown(url: str) -> str:
    """The URL for messages and history: no credentials, no query string (tokens live there)."""
    try:
        parts = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    return str(parts.copy_with(userinfo=b"", query=None, fragment=None))


class HttpxClient:
    """An `HttpClient` over one pooled httpx.AsyncClient."""

    def __init__(self, *, max_connections: int = 64, user_agent: str = "Flowline/0.1") -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=16),
            headers={"user-agent": user_agent, "accept-encoding": "identity"},
            follow_redirects=False,
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None,
        timeout: float,
    ) -> HttpResponse:
        where = f"{method} {_shown(url)}"
        try:
            async with (
                asyncio.timeout(timeout),
                self._client.stream(
                    method, url, headers=dict(headers), content=content, timeout=timeout
                ) as response,
            ):
                excerpt = await _excerpt(response)
        except TimeoutError:
            raise RetryableActionError(
                f"{where} timed out: no complete answer within {timeout:g} s"
            ) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
            raise PermanentActionError(f"{where}: not a URL that can be called: {error}") from None
        except httpx.LocalProtocolError as error:
            raise PermanentActionError(
                f"{where}: the request cannot be sent as given: {error}"
            ) from None
        except (UnicodeEncodeError, ValueError) as error:
            raise PermanentActionError(
                f"{where}: the request cannot be sent as given: {error}"
            ) from None
        except httpx.TimeoutException as error:
            raise RetryableActionError(
                f"{where} timed out: no complete answer within {timeout:g} s "
                f"({type(error).__name__})"
            ) from None
        except httpx.RemoteProtocolError as error:
            if "buffer too long" in str(error):  # h11's refusal of an endless head
                raise RetryableActionError(
                    f"{where} failed: the answer's head is larger than "
                    f"{HEAD_LIMIT_BYTES // 1024} KiB"
                ) from None
            raise RetryableActionError(f"{where} failed: RemoteProtocolError: {error}") from None
        except httpx.TransportError as error:
            raise RetryableActionError(f"{where} failed: {type(error).__name__}: {error}") from None
        result = HttpResponse(response.status_code, dict(response.headers), excerpt)
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableActionError(
                f"{where} answered {response.status_code}: {excerpt[:200]}",
                retry_after=_retry_after(response),
            )
        if response.status_code >= 400:
            raise PermanentActionError(f"{where} answered {response.status_code}: {excerpt[:200]}")
        return result

    async def close(self) -> None:
        await self._client.aclose()
