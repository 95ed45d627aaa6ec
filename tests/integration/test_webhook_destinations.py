"""Where the webhook HTTP adapter may connect, against real receivers on 127.0.0.1: loopback,
private and other internal addresses are refused before anything is sent unless
WEBHOOK_ALLOWED_HOSTS lists them; a name is resolved once per call, every address it resolves
to is checked, and the connection goes to a checked address (never to a second answer); with
TLS the certificate is verified for the name. And the API refuses (422) a definition whose
webhook URL is written as an internal address.

Names under `.flowline.test` resolve only through the test's `resolver`, and `loopback_only`
turns any connection to an address other than loopback into a failed test: the tests make
names resolve to private addresses to see them refused, and nothing may ever go there."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SettingsFactory
from tests.support.http_receiver import RECEIVER_HOST, Answer, HttpReceiver, http_receiver
from tests.support.inprocess import in_process_api
from tests.support.resolver import FakeResolver
from tests.support.tls import server_tls
from tests.unit.factories import example_definition
from workflow_core.actions.base import HttpResponse
from workflow_core.adapters.http import HttpxClient
from workflow_core.destinations import AllowedHosts
from workflow_core.errors import PermanentActionError, RetryableActionError

HOOKS = "hooks.flowline.test"
URL_PATH = "steps[0].actions[0].config.url"


@pytest.fixture
async def receiver() -> AsyncIterator[HttpReceiver]:
    async with http_receiver() as started:
        yield started


@contextlib.asynccontextmanager
async def client_allowing(setting: str) -> AsyncIterator[HttpxClient]:
    """An adapter as a worker builds it with WEBHOOK_ALLOWED_HOSTS=`setting`."""
    created = HttpxClient(allowed=AllowedHosts.parse(setting))
    try:
        yield created
    finally:
        await created.close()


async def post(client: HttpxClient, url: str, timeout: float = 5.0) -> HttpResponse:
    return await client.request("POST", url, headers={}, content=b"{}", timeout=timeout)


def named(receiver: HttpReceiver, name: str = HOOKS, scheme: str = "http") -> str:
    return f"{scheme}://{name}:{receiver.port}/hook"


# loopback, by address and by name


async def test_loopback_is_refused_unless_listed_and_nothing_reaches_it(
    receiver: HttpReceiver, loopback_only: list[str]
) -> None:
    async with client_allowing("") as client:
        with pytest.raises(PermanentActionError) as refused:
            await post(client, f"{receiver.url}/hook")

    message = str(refused.value)
    assert f"POST {receiver.url}/hook refused: 127.0.0.1 is a loopback address" in message
    assert "unless WEBHOOK_ALLOWED_HOSTS lists the host" in message
    assert receiver.connections == 0
    assert loopback_only == []


@pytest.mark.parametrize("setting", [RECEIVER_HOST, "127.0.0.0/8", "hooks.internal,127.0.0.1"])
async def test_a_listed_loopback_address_is_called(
    receiver: HttpReceiver, loopback_only: list[str], setting: str
) -> None:
    receiver.answer(Answer(201, b'{"id": 7}'))
    async with client_allowing(setting) as client:
        response = await post(client, f"{receiver.url}/hook")

    assert (response.status, response.body_excerpt) == (201, '{"id": 7}')
    [request] = receiver.received
    assert request.headers["host"] == f"{RECEIVER_HOST}:{receiver.port}"
    assert loopback_only == [RECEIVER_HOST]


async def test_localhost_is_refused_as_what_it_resolves_to_unless_the_name_is_listed(
    receiver: HttpReceiver, loopback_only: list[str]
) -> None:
    """`localhost` is resolved for real (the system's resolver, /etc/hosts)."""
    async with client_allowing("") as client:
        with pytest.raises(PermanentActionError) as refused:
            await post(client, named(receiver, "localhost"))
    assert "refused: localhost resolves to " in str(refused.value)
    assert ", a loopback address" in str(refused.value)
    assert receiver.connections == 0

    async with client_allowing("localhost") as client:
        response = await post(client, named(receiver, "localhost"))
    assert response.status == 200
    [request] = receiver.received
    assert request.headers["host"] == f"localhost:{receiver.port}"
    assert loopback_only[-1] == RECEIVER_HOST


# one lookup, every address checked, the connection to a checked address


async def test_a_name_is_looked_up_once_and_the_connection_goes_to_the_checked_address(
    receiver: HttpReceiver, resolver: FakeResolver, loopback_only: list[str]
) -> None:
    """The name answers loopback (listed) first and a private address on any later lookup: a
    second lookup for the connection would go there (and the guard would fail the test)."""
    resolver.answer(HOOKS, [RECEIVER_HOST], ["10.0.0.1"])
    async with client_allowing(RECEIVER_HOST) as client:
        response = await post(client, named(receiver))
        assert response.status == 200
        assert resolver.count(HOOKS) == 1
        [request] = receiver.received
        assert request.headers["host"] == f"{HOOKS}:{receiver.port}"  # the name, not the IP
        assert loopback_only == [RECEIVER_HOST]

        # The next call looks the name up again, gets the private address, and is refused.
        with pytest.raises(PermanentActionError) as refused:
            await post(client, named(receiver))

    assert f"refused: {HOOKS} resolves to 10.0.0.1, a private address (RFC 1918)" in str(
        refused.value
    )
    assert resolver.count(HOOKS) == 2
    assert len(receiver.received) == 1
    assert loopback_only == [RECEIVER_HOST]


async def test_a_name_refused_at_its_lookup_is_refused_whatever_it_answers_next(
    receiver: HttpReceiver, resolver: FakeResolver, loopback_only: list[str]
) -> None:
    resolver.answer(HOOKS, ["169.254.169.254"], [RECEIVER_HOST])
    async with client_allowing(RECEIVER_HOST) as client:
        with pytest.raises(PermanentActionError) as refused:
            await post(client, named(receiver))

    assert f"{HOOKS} resolves to 169.254.169.254, a link-local address" in str(refused.value)
    assert resolver.count(HOOKS) == 1
    assert receiver.connections == 0
    assert loopback_only == []


@pytest.mark.parametrize(
    ("addresses", "says"),
    [
        ([RECEIVER_HOST, "192.168.1.10"], "192.168.1.10, a private address (RFC 1918)"),
        ([RECEIVER_HOST, "100.64.1.1"], "100.64.1.1, a carrier-grade NAT address"),
        ([RECEIVER_HOST, "fd00::1"], "fd00::1, a unique local address"),
        (["::ffff:169.254.169.254"], "::ffff:169.254.169.254, an IPv4-mapped IPv6 address"),
        ([RECEIVER_HOST, "fe80::1"], "fe80::1, a link-local address"),
        (["0.0.0.0"], "0.0.0.0, the unspecified address"),
    ],
)
async def test_every_address_a_name_resolves_to_is_checked(
    receiver: HttpReceiver,
    resolver: FakeResolver,
    loopback_only: list[str],
    addresses: list[str],
    says: str,
) -> None:
    resolver.answer(HOOKS, addresses)
    async with client_allowing(RECEIVER_HOST) as client:
        with pytest.raises(PermanentActionError) as refused:
            await post(client, named(receiver))

    assert f"{HOOKS} resolves to {says}" in str(refused.value)
    assert receiver.connections == 0
    assert loopback_only == []


async def test_a_listed_name_may_resolve_to_internal_addresses(
    receiver: HttpReceiver, resolver: FakeResolver, loopback_only: list[str]
) -> None:
    resolver.answer(HOOKS, [RECEIVER_HOST])
    async with client_allowing(f"other.flowline.test, {HOOKS.upper()}") as client:
        response = await post(client, named(receiver))

    assert response.status == 200
    assert len(receiver.received) == 1


async def test_the_next_checked_address_is_tried_when_one_refuses_the_connection(
    receiver: HttpReceiver, resolver: FakeResolver, loopback_only: list[str]
) -> None:
    """Nothing listens on 127.0.0.2 (the receiver is bound to 127.0.0.1 alone)."""
    resolver.answer(HOOKS, ["127.0.0.2", RECEIVER_HOST])
    async with client_allowing("127.0.0.0/8") as client:
        response = await post(client, named(receiver))

    assert response.status == 200
    assert loopback_only == ["127.0.0.2", RECEIVER_HOST]
    assert resolver.count(HOOKS) == 1
    assert len(receiver.received) == 1


async def test_the_lookup_is_bounded_by_the_calls_timeout(
    receiver: HttpReceiver, resolver: FakeResolver
) -> None:
    resolver.hang(HOOKS)
    started = time.monotonic()
    async with client_allowing(HOOKS) as client:
        with pytest.raises(RetryableActionError, match=r"timed out: no complete answer within"):
            await post(client, named(receiver), timeout=0.5)

    assert 0.5 <= time.monotonic() - started < 2.0
    assert receiver.connections == 0


async def test_a_name_that_does_not_resolve_is_a_retryable_failure(
    receiver: HttpReceiver, resolver: FakeResolver
) -> None:
    resolver.unknown(HOOKS)
    async with client_allowing(HOOKS) as client:
        with pytest.raises(RetryableActionError, match=rf"cannot resolve {HOOKS}"):
            await post(client, named(receiver))


async def test_a_redirect_is_answered_not_followed(
    receiver: HttpReceiver, loopback_only: list[str]
) -> None:
    async with http_receiver() as elsewhere:
        receiver.answer(Answer(302, b"", {"location": f"{elsewhere.url}/inside"}))
        async with client_allowing(RECEIVER_HOST) as client:
            response = await post(client, f"{receiver.url}/hook")

        assert response.status == 302
        assert response.headers["location"] == f"{elsewhere.url}/inside"
        assert elsewhere.connections == 0
    assert loopback_only == [RECEIVER_HOST]


# TLS: the certificate is checked for the name, although the connection goes to an address


async def test_tls_names_the_host_and_verifies_its_certificate_for_it(
    resolver: FakeResolver,
    loopback_only: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls = server_tls(tmp_path, HOOKS)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.certificate))  # trusted, as an operator would
    impostor = "impostor.flowline.test"
    resolver.answer(HOOKS, [RECEIVER_HOST])
    resolver.answer(impostor, [RECEIVER_HOST])
    async with (
        http_receiver(tls=tls.context) as secure,
        client_allowing(f"{HOOKS},{impostor}") as client,
    ):
        response = await post(client, named(secure, scheme="https"))
        assert response.status == 200
        assert tls.server_names == [HOOKS]
        [request] = secure.received
        assert request.headers["host"] == f"{HOOKS}:{secure.port}"

        # Same address, same certificate: valid for hooks.flowline.test, not for this name.
        with pytest.raises(RetryableActionError) as failed:
            await post(client, named(secure, impostor, scheme="https"))

    assert "certificate verify failed" in str(failed.value).lower()
    assert tls.server_names == [HOOKS, impostor]
    assert len(secure.received) == 1
    assert loopback_only == [RECEIVER_HOST, RECEIVER_HOST]


# the API: a definition whose webhook URL is an internal address is refused


def webhook_definition(url: str) -> dict[str, Any]:
    definition = example_definition()
    definition["steps"][0]["actions"] = [{"type": "webhook", "config": {"url": url}}]
    return definition


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://2852039166/latest/meta-data/", "2852039166 is 169.254.169.254"),
        ("http://[::ffff:169.254.169.254]/", "an IPv4-mapped IPv6 address"),
        ("http://10.0.0.5:8080/in", "10.0.0.5 is a private address (RFC 1918)"),
        ("http://127.0.0.2:5432/", "127.0.0.2 is a loopback address"),
    ],
)
async def test_the_api_refuses_a_webhook_url_that_is_an_internal_address(
    make_settings: SettingsFactory, url: str, says: str
) -> None:
    async with in_process_api(make_settings()) as api:  # the tests allow 127.0.0.1 alone
        created = await api.client.post(
            "/workflows", json={"name": "inside", "definition": webhook_definition(url)}
        )
        checked = await api.client.post(
            "/workflows/validate", json={"definition": webhook_definition(url)}
        )
        allowed = await api.client.post(
            "/workflows",
            json={"name": "ok", "definition": webhook_definition("http://127.0.0.1:8025/in")},
        )
        updated = await api.client.put(
            f"/workflows/{allowed.json()['id']}", json={"definition": webhook_definition(url)}
        )

    assert created.status_code == 422, created.text
    [problem] = created.json()["detail"]
    assert problem["path"] == URL_PATH
    assert says in problem["msg"]
    assert "WEBHOOK_ALLOWED_HOSTS" in problem["msg"]
    assert checked.status_code == 200
    assert checked.json()["valid"] is False
    assert [(p["path"], p["msg"]) for p in checked.json()["errors"]] == [(URL_PATH, problem["msg"])]
    assert allowed.status_code == 201, allowed.text
    assert updated.status_code == 422


async def test_an_api_whose_setting_lists_the_address_accepts_the_url(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(webhook_allowed_hosts="169.254.169.254, 10.0.0.0/8")
    async with in_process_api(settings) as api:
        for url in ("http://2852039166/latest", "http://10.1.2.3/in"):
            created = await api.client.post(
                "/workflows", json={"name": "inside", "definition": webhook_definition(url)}
            )
            assert created.status_code == 201, created.text
            assert created.json()["warnings"] == []
