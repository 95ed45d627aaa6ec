"""Which addresses a webhook may call (workflow_core/destinations.py): every internal range is
refused with its reason, in every spelling of an address, unless WEBHOOK_ALLOWED_HOSTS lists
the host name, the address or a network holding it."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from workflow_core.destinations import (
    AllowedHosts,
    address_refusal,
    embedded_ipv4,
    literal_address,
    literal_refusal,
    refusal,
)

NOBODY = AllowedHosts()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("0.0.0.0", "the unspecified address"),
        ("0.1.2.3", "0.0.0.0/8"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private address (RFC 1918)"),
        ("10.255.255.255", "private address (RFC 1918)"),
        ("172.16.0.1", "private address (RFC 1918)"),
        ("172.31.255.254", "private address (RFC 1918)"),
        ("192.168.1.1", "private address (RFC 1918)"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.200", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.254", "benchmarking"),
        ("192.0.0.8", "IETF protocol assignment"),
        ("::", "the unspecified address"),
        ("::1", "loopback"),
        ("fe80::1", "link-local address (fe80::/10)"),
        ("fe80::1%eth0", "link-local address (fe80::/10)"),
        ("fec0::1", "site-local"),
        ("fc00::1", "unique local address (fc00::/7)"),
        ("fd12:3456:789a::1", "unique local address (fc00::/7)"),
        ("ff02::1", "multicast"),
        ("ff0e::101", "multicast"),
        ("2001:db8::1", "documentation"),
        ("2001::1", "not a global address"),  # Teredo
        ("100::1", "not a global address"),  # discard-only
        ("::ffff:127.0.0.1", "IPv4-mapped IPv6 address, standing for 127.0.0.1: a loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped IPv6 address, standing for 169.254.169.254"),
        ("::ffff:10.0.0.1", "IPv4-mapped IPv6 address, standing for 10.0.0.1: a private"),
        ("::ffff:8.8.8.8", "IPv4-mapped IPv6 address, standing for 8.8.8.8"),
        ("::127.0.0.1", "IPv4-compatible IPv6 address, standing for 127.0.0.1: a loopback"),
        ("::a9fe:a9fe", "IPv4-compatible IPv6 address, standing for 169.254.169.254"),
        ("64:ff9b::a9fe:a9fe", "leads to 169.254.169.254: a link-local"),
        ("64:ff9b::7f00:1", "leads to 127.0.0.1: a loopback"),
        ("2002:a9fe:a9fe::1", "leads to 169.254.169.254: a link-local"),
        ("2002:0a00:0001::1", "leads to 10.0.0.1: a private"),
    ],
)
def test_an_internal_address_is_refused_with_its_reason(address: str, reason: str) -> None:
    refused = address_refusal(ip_address(address))
    assert refused is not None
    assert reason in refused


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "100.63.255.255",  # just below CGNAT
        "100.128.0.0",  # just above it
        "172.15.255.255",  # just below 172.16/12
        "172.32.0.0",  # just above it
        "169.253.255.255",
        "2606:4700:4700::1111",
        "2a00:1450:4001:81c::200e",
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_a_global_unicast_address_may_be_called(address: str) -> None:
    assert address_refusal(ip_address(address)) is None


def test_the_ipv4_inside_a_mapped_or_compatible_address_is_found() -> None:
    assert str(embedded_ipv4(ip_address("::ffff:169.254.169.254"))) == "169.254.169.254"  # type: ignore[arg-type]
    assert str(embedded_ipv4(ip_address("::a9fe:a9fe"))) == "169.254.169.254"  # type: ignore[arg-type]
    assert embedded_ipv4(ip_address("::1")) is None  # type: ignore[arg-type]
    assert embedded_ipv4(ip_address("2606:4700::1")) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("169.254.169.254", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),  # decimal
        ("0xa9fea9fe", "169.254.169.254"),  # hex
        ("0xA9.0xFE.0xA9.0xFE", "169.254.169.254"),  # hex parts
        ("0251.0376.0251.0376", "169.254.169.254"),  # octal parts
        ("169.254.43518", "169.254.169.254"),  # short form
        ("127.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),  # a trailing dot
        ("%31%32%37.0.0.1", "127.0.0.1"),  # percent-encoded
        ("[::ffff:169.254.169.254]", "::ffff:169.254.169.254"),
        ("::ffff:a9fe:a9fe", "::ffff:169.254.169.254"),
        ("[::1]", "::1"),
        ("[FE80::1]", "fe80::1"),
    ],
)
def test_an_address_is_read_in_every_spelling_the_resolver_takes(host: str, address: str) -> None:
    assert literal_address(host) == ip_address(address)


@pytest.mark.parametrize(
    "host", ["example.com", "hooks.internal", "cafe.be", "0x.example", "{data.host}", "10.0.0.{n}"]
)
def test_a_name_or_a_template_is_not_an_address(host: str) -> None:
    assert literal_address(host) is None
    assert literal_refusal(host, NOBODY) is None


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("2852039166", "2852039166 is 169.254.169.254, a link-local address"),
        ("0251.0376.0251.0376", "is 169.254.169.254, a link-local address"),
        ("0x7f.1", "0x7f.1 is 127.0.0.1, a loopback address"),
        ("[::ffff:169.254.169.254]", "::ffff:169.254.169.254 is an IPv4-mapped IPv6 address"),
        ("10.1.2.3", "10.1.2.3 is a private address (RFC 1918)"),
    ],
)
def test_a_refused_literal_says_what_it_is(host: str, says: str) -> None:
    refused = literal_refusal(host, NOBODY)
    assert refused is not None
    assert says in refused


# WEBHOOK_ALLOWED_HOSTS


def test_an_empty_setting_allows_nothing() -> None:
    assert AllowedHosts.parse("") == AllowedHosts()
    assert AllowedHosts.parse(" , ,") == AllowedHosts()


def test_entries_are_names_addresses_and_networks() -> None:
    allowed = AllowedHosts.parse(" Hooks.Internal. , 127.0.0.1,10.1.0.0/16, [::1], fd00::/8 ")
    assert allowed.names == {"hooks.internal"}
    assert [str(network) for network in allowed.networks] == [
        "127.0.0.1/32",
        "10.1.0.0/16",
        "::1/128",
        "fd00::/8",
    ]
    assert str(allowed) == "hooks.internal,127.0.0.1/32,10.1.0.0/16,::1/128,fd00::/8"


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("10.0.0.1/8", "host bits set"),
        ("10.0.0.0/33", "not a host name, an IP address or a CIDR network"),
        ("::1/129", "not a host name, an IP address or a CIDR network"),
        ("http://hooks.internal", "not a host name, an IP address or a CIDR network"),
        ("hooks.internal:8080", "not a host name, an IP address or a CIDR network"),
        ("two words", "not a host name, an IP address or a CIDR network"),
        ("*.internal", "not a host name, an IP address or a CIDR network"),
        ("-bad.example", "not a host name, an IP address or a CIDR network"),
        ("999.1.1.1", "not an IP address"),
        ("2852039166", "not an IP address"),
        ("a" * 64 + ".example", "not a host name"),
    ],
)
def test_a_bad_entry_is_named(entry: str, says: str) -> None:
    with pytest.raises(ValueError, match=r"^'") as raised:
        AllowedHosts.parse(f"hooks.internal,{entry}")
    assert repr(entry) in str(raised.value)
    assert says in str(raised.value)


@pytest.mark.parametrize(
    ("setting", "address", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("127.0.0.0/8", "127.9.9.9", True),
        ("10.1.0.0/16", "10.1.255.255", True),
        ("10.1.0.0/16", "10.2.0.1", False),
        ("fd00::/8", "fd12::1", True),
        ("fd00::/8", "fc00::1", False),
        ("::1", "::1", True),
        ("127.0.0.1", "::1", False),
        # A mapped or compatible address connects to its IPv4 address: the entry for it counts.
        ("127.0.0.1", "::ffff:127.0.0.1", True),
        ("127.0.0.1", "::127.0.0.1", True),
        ("10.0.0.0/8", "::ffff:10.9.8.7", True),
        ("10.0.0.0/8", "::ffff:169.254.169.254", False),
        ("169.254.169.254", "64:ff9b::a9fe:a9fe", False),  # reached through a translator
        ("hooks.internal", "10.0.0.1", False),  # a name does not allow an address
    ],
)
def test_an_address_is_allowed_by_its_entry_or_a_network_holding_it(
    setting: str, address: str, allowed: bool
) -> None:
    assert AllowedHosts.parse(setting).allows_address(ip_address(address)) is allowed


def test_a_listed_name_allows_whatever_it_resolves_to() -> None:
    allowed = AllowedHosts.parse("hooks.internal,localhost")
    addresses = [ip_address("10.0.0.7"), ip_address("::1")]
    assert refusal("hooks.internal", addresses, allowed) is None
    assert refusal("HOOKS.internal.", addresses, allowed) is None  # case, trailing dot
    assert refusal("localhost", [ip_address("127.0.0.1")], allowed) is None
    assert refusal("other.internal", addresses, allowed) == (
        "other.internal resolves to 10.0.0.7, a private address (RFC 1918)"
    )
    assert refusal("evil.hooks.internal", addresses, allowed) is not None  # exact names only


def test_every_address_of_a_name_is_checked() -> None:
    """One internal address among global ones is enough to refuse: the connection could go
    to any of them."""
    addresses = [ip_address("93.184.216.34"), ip_address("127.0.0.1")]
    assert refusal("rebind.example", addresses, NOBODY) == (
        "rebind.example resolves to 127.0.0.1, a loopback address"
    )
    assert refusal("rebind.example", addresses, AllowedHosts.parse("127.0.0.1")) is None
    assert refusal("public.example", [ip_address("93.184.216.34")], NOBODY) is None


def test_a_literal_is_allowed_by_its_address_in_any_spelling() -> None:
    allowed = AllowedHosts.parse("169.254.169.254")
    for host in ("169.254.169.254", "2852039166", "0xa9fea9fe", "[::ffff:169.254.169.254]"):
        assert literal_refusal(host, allowed) is None, host
    assert literal_refusal("169.254.169.253", allowed) is not None
