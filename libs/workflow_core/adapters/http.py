"""Outgoing HTTP (webhooks) with httpx. Errors are sorted here: connection problems, timeouts,
5xx and 429 are retryable; other 4xx are permanent. Nothing from httpx travels further.

Where a call may go is decided here too (workflow_core/destinations.py has the rules): the
URL's host is resolved once, every address it resolves to is checked, and the call is refused
(permanently, nothing sent) when one of them is loopback, private or otherwise internal and
WEBHOOK_ALLOWED_HOSTS does not list it. The connection then goes to an address that was
checked: the pool's network backend connects a host only to the address the current call
pinned for it, so nothing looks the name up a second time (no DNS rebinding between the check
and the connection). The URL keeps its host, so the Host header, TLS's server name and the
certificate's check are all for the name, and pooled connections are never shared between
names. Redirects are never followed, and no proxy from the environment is used (a proxy would
look the name up itself).

What a receiver can cost us is bounded: the whole call (connecting, sending, the answer's
head, the start of its body) by its `timeout`, however slowly the receiver trickles bytes
(httpx's own timeouts count per read); the answer's head by HEAD_LIMIT_BYTES (h11, under
httpcore, refuses a head still incomplete past it); its body by EXCERPT_BYTES, or for a JSON
answer by the client's `json_max_bytes` (WEBHOOK_RESPONSE_MAX_BYTES), read as sent (no content
decoding, so a compressed answer cannot expand in memory), the rest never read.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from ipaddress import ip_address

import httpcore
import httpx

from workflow_core import tracing
from workflow_core.actions.base import HttpResponse, is_json_media_type
from workflow_core.destinations import SETTING, Address, AllowedHosts, refusal
from workflow_core.errors import PermanentActionError, RetryableActionError

EXCERPT_BYTES = 2048
DEFAULT_JSON_MAX_BYTES = 65_536
HEAD_LIMIT_BYTES = httpcore.AsyncHTTP11Connection.MAX_INCOMPLETE_EVENT_SIZE
_IDENTITY = frozenset({"", "identity"})


async def _read(response: httpx.Response, json_max_bytes: int) -> tuple[str, bytes | None]:
    """The start of the body as sent, and the whole of a JSON body no larger than
    `json_max_bytes`; the rest is never read (a huge answer costs nothing). We ask for no
    content coding; an answer that has one anyway is not decoded."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    wants_json = (
        json_max_bytes > 0
        and encoding in _IDENTITY
        and is_json_media_type(response.headers.get("content-type"))
    )
    limit = max(EXCERPT_BYTES, json_max_bytes + 1) if wants_json else EXCERPT_BYTES
    collected = bytearray()
    async for chunk in response.aiter_raw():
        collected += chunk
        if len(collected) >= limit:
            break
    if encoding not in _IDENTITY:
        return f"({len(collected)}+ bytes, {encoding}-encoded: not shown)", None
    excerpt = bytes(collected[:EXCERPT_BYTES]).decode("utf-8", errors="replace")
    whole = wants_json and len(collected) <= json_max_bytes
    return excerpt, bytes(collected) if whole else None


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


# (host, address): the one address the current call checked for `host`, and connects to.
_PINNED: ContextVar[tuple[str, str] | None] = ContextVar("flowline_pinned", default=None)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens a connection to `host` only at the address the current call checked for it."""

    def __init__(self) -> None:
        self._network = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        pinned = _PINNED.get()
        if pinned is None or pinned[0] != host:
            raise httpcore.ConnectError(f"no address was checked for {host}")
        return await self._network.connect_tcp(
            pinned[1],
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose connections go to checked addresses."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinnedBackend(),
        )


async def resolve(host: str) -> list[str]:
    """Every address `host` resolves to, in the resolver's order of preference; an address
    written as one is taken as it is."""
    try:
        return [str(ip_address(host))]
    except ValueError:
        pass
    found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


class HttpxClient:
    """An `HttpClient` over one pooled httpx.AsyncClient, calling only the destinations
    `allowed` lets through (workflow_core/destinations.py)."""

    def __init__(
        self,
        *,
        allowed: AllowedHosts | None = None,
        max_connections: int = 64,
        user_agent: str = "Flowline/0.1",
        json_max_bytes: int = DEFAULT_JSON_MAX_BYTES,
    ) -> None:
        """`json_max_bytes`: a JSON answer up to this size is read whole (0: none is)."""
        self._allowed = allowed or AllowedHosts()
        self._json_max_bytes = json_max_bytes
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=16)
        # Certificates as httpx finds them (SSL_CERT_FILE / SSL_CERT_DIR, else certifi's).
        ssl_context = httpx.create_ssl_context(trust_env=True)
        self._client = httpx.AsyncClient(
            transport=_PinnedTransport(limits, ssl_context),
            headers={"user-agent": user_agent, "accept-encoding": "identity"},
            follow_redirects=False,
            trust_env=False,
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
        if tracing.ENABLED:
            return await self._traced(method, url, headers, content, timeout)
        where = f"{method} {_shown(url)}"
        return await self._request(where, method, url, headers, content, timeout)

    async def _traced(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        timeout: float,
    ) -> HttpResponse:
        """The call in a client span; the receiver gets its `traceparent` to go on with."""
        shown = _shown(url)
        attributes = {"http.request.method": method, "url.full": shown}
        with tracing.span(method, attributes, kind=tracing.SpanKind.CLIENT):
            headers = {**headers, **tracing.carried()}
            return await self._request(f"{method} {shown}", method, url, headers, content, timeout)

    async def _request(
        self,
        where: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        timeout: float,
    ) -> HttpResponse:
        try:
            async with asyncio.timeout(timeout):
                host = _host(url)
                addresses = await self._checked_addresses(where, host)
                response, (excerpt, body) = await self._exchange(
                    addresses, host, method, url, dict(headers), content, timeout
                )
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
        tracing.annotate({"http.response.status_code": response.status_code})  # a 5xx too
        return _judged(where, response, excerpt, body)

    async def _checked_addresses(self, where: str, host: str) -> list[str]:
        """The addresses `host` resolves to, each one checked; resolved once per call."""
        try:
            found = await resolve(host)
        except (OSError, UnicodeError) as error:
            raise RetryableActionError(f"{where} failed: cannot resolve {host}: {error}") from None
        if not found:
            raise RetryableActionError(f"{where} failed: {host} resolves to no address")
        reason = refusal(host, _addresses(found), self._allowed)
        if reason is not None:
            raise PermanentActionError(
                f"{where} refused: {reason}. Webhooks do not call loopback, private or other "
                f"internal addresses unless {SETTING} lists the host"
            )
        return found

    async def _exchange(
        self,
        addresses: Sequence[str],
        host: str,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | None,
        timeout: float,
    ) -> tuple[httpx.Response, tuple[str, bytes | None]]:
        """The answer from the first checked address that takes the connection."""
        for index, address in enumerate(addresses):
            pinned = _PINNED.set((host, address))
            try:
                async with self._client.stream(
                    method, url, headers=headers, content=content, timeout=timeout
                ) as response:
                    return response, await _read(response, self._json_max_bytes)
            except httpx.ConnectError:
                if index == len(addresses) - 1:
                    raise  # nothing was sent to the others either: the next one may answer
            finally:
                _PINNED.reset(pinned)
        raise AssertionError("unreachable: the last address's error is raised")

    async def close(self) -> None:
        await self._client.aclose()


def _host(url: str) -> str:
    """The URL's host as the connection pool sees it (IDNA-encoded, no brackets)."""
    parsed = httpx.URL(url)
    if parsed.scheme not in {"http", "https"}:
        raise httpx.UnsupportedProtocol(f"the scheme {parsed.scheme!r} is not http or https")
    if not parsed.raw_host:
        raise httpx.InvalidURL("the URL has no host")
    return parsed.raw_host.decode("ascii")


def _addresses(found: Iterable[str]) -> list[Address]:
    return [ip_address(text) for text in found]


def _judged(where: str, response: httpx.Response, excerpt: str, body: bytes | None) -> HttpResponse:
    """The answer, or the error it stands for (5xx and 429 retryable, other 4xx permanent)."""
    result = HttpResponse(response.status_code, dict(response.headers), excerpt, body)
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableActionError(
            f"{where} answered {response.status_code}: {excerpt[:200]}",
            retry_after=_retry_after(response),
        )
    if response.status_code >= 400:
        raise PermanentActionError(f"{where} answered {response.status_code}: {excerpt[:200]}")
    return result
