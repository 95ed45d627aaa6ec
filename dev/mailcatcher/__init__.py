"""The local mail catcher for development (`python -m dev.mailcatcher`)."""

from __future__ import annotations

from typing import Any


def advertise_pipelining(session: Any, hostname: str, responses: list[str]) -> list[str]:
    """The body of an aiosmtpd `handle_EHLO` hook that adds PIPELINING to the EHLO reply.
    aiosmtpd reads pipelined commands correctly but does not say so; the worker pipelines
    where the server says it may (RFC 2920). Shared by the catcher, the bench's sink and the
    tests' server."""
    session.host_name = hostname  # the hook's duty (aiosmtpd's handlers.rst)
    responses.insert(-1, "250-PIPELINING")
    return responses
