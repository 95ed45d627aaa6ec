"""Outgoing HTTP (webhooks) with httpx. Errors are sorted here: connection problems, timeouts,
5xx and 429 are retryable; other 4xx are permanent. Nothing from httpx travels further."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from workflow_core.actions.base import HttpResponse
from workflow_core.errors import PermanentActionError, RetryableActionError

EXCERPT_BYTES = 2048


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


class HttpxClient:
    """An `HttpClient` over one pooled httpx.AsyncClient."""

    def __init__(self, *, max_connections: int = 64, user_agent: str = "Flowline/0.1") -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=16),
            headers={"user-agent": user_agent},
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
        try:
            response = await self._client.request(
                method, url, headers=dict(headers), content=content, timeout=timeout
            )
        except httpx.InvalidURL as error:
            raise PermanentActionError(f"invalid URL {url!r}: {error}") from None
        except httpx.UnsupportedProtocol as error:
            raise PermanentActionError(f"unsupported URL {url!r}: {error}") from None
        except httpx.TimeoutException as error:
            raise RetryableActionError(
                f"{method} {url} timed out ({type(error).__name__})"
            ) from None
        except httpx.TransportError as error:
            raise RetryableActionError(
                f"{method} {url} failed: {type(error).__name__}: {error}"
            ) from None
        excerpt = response.content[:EXCERPT_BYTES].decode("utf-8", errors="replace")
        result = HttpResponse(response.status_code, dict(response.headers), excerpt)
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableActionError(
                f"{method} {url} answered {response.status_code}: {excerpt[:200]}",
                retry_after=_retry_after(response),
            )
        if response.status_code >= 400:
            raise PermanentActionError(
                f"{method} {url} answered {response.status_code}: {excerpt[:200]}"
            )
        return result

    async def close(self) -> None:
        await self._client.aclose()
