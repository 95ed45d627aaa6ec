"""Where a webhook may go. A workflow's author (or the form data in its URL) chooses the
destination, so without a rule a webhook is a way in: to the API on loopback, to PostgreSQL
and Redis, to a cloud's metadata service at 169.254.169.254, to anything on the private
network. Flowline refuses every address that is not global unicast unless the operator lists
the host in WEBHOOK_ALLOWED_HOSTS (names, addresses or CIDR networks).

Pure: nothing here looks a name up. The HTTP adapter resolves a host once and asks `refusal`
about every address it got (then connects to one of those addresses, never to a second
answer); validation asks about a host written as an address (`literal_address`), in any
spelling the system's resolver would take (`2852039166`, `0xa9fea9fe`, `0251.0376.0251.0376`,
`[::ffff:169.254.169.254]`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import unquote

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

SETTING = "WEBHOOK_ALLOWED_HOSTS"
ALLOWED_HOSTS = "allowed_hosts"
"""The key of an `AllowedHosts` in a pydantic validation context: configs that name a
destination check it against them."""

_LINK_LOCAL_V4 = "a link-local address (169.254.0.0/16: cloud metadata services answer there)"
# The ranges refused by name, first match wins; `is_global` is the rule for everything else.
_V4_RANGES: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(network), reason)
    for network, reason in (
        ("0.0.0.0/32", "the unspecified address"),
        ("0.0.0.0/8", "in 0.0.0.0/8 ('this network')"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", _LINK_LOCAL_V4),
        ("10.0.0.0/8", "a private address (RFC 1918)"),
        ("172.16.0.0/12", "a private address (RFC 1918)"),
        ("192.168.0.0/16", "a private address (RFC 1918)"),
        ("100.64.0.0/10", "a carrier-grade NAT address (100.64.0.0/10)"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address (240.0.0.0/4)"),
        ("192.0.2.0/24", "a documentation address (RFC 5737)"),
        ("198.51.100.0/24", "a documentation address (RFC 5737)"),
        ("203.0.113.0/24", "a documentation address (RFC 5737)"),
        ("198.18.0.0/15", "a benchmarking address (198.18.0.0/15)"),
        ("192.0.0.0/24", "an IETF protocol assignment (192.0.0.0/24)"),
    )
)
_V6_RANGES: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(network), reason)
    for network, reason in (
        ("fe80::/10", "a link-local address (fe80::/10)"),
        ("fec0::/10", "a site-local address (fec0::/10)"),
        ("fc00::/7", "a unique local address (fc00::/7)"),
        ("ff00::/8", "a multicast address"),
        ("2001:db8::/32", "a documentation address (2001:db8::/32)"),
        ("3fff::/20", "a documentation address (3fff::/20)"),
    )
)
_NOT_GLOBAL = "not a global address (an IANA special-purpose range)"
_NAT64 = IPv6Network("64:ff9b::/96")  # RFC 6052: a translator reaches the IPv4 inside

# What inet_aton reads as an IPv4 address: decimal, octal (0-led) or hex (0x) parts, 1 to 4.
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$")
_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def address_refusal(address: Address) -> str | None:
    """Why no webhook may call `address`, as a phrase ("a loopback address"), or None for a
    global unicast address. `is_global` is the base rule; the named ranges come first so the
    reason says which rule it is (and multicast and the IPv6 forms that carry an IPv4 address,
    which `is_global` lets through, are caught)."""
    if isinstance(address, IPv4Address):
        return _v4_refusal(address)
    return _v6_refusal(address)


def _v4_refusal(address: IPv4Address) -> str | None:
    for network, reason in _V4_RANGES:
        if address in network:
            return reason
    return None if address.is_global else _NOT_GLOBAL


def _v6_refusal(address: IPv6Address) -> str | None:
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    embedded = embedded_ipv4(address)
    if embedded is not None:
        kind = "IPv4-mapped" if address.ipv4_mapped else "IPv4-compatible"
        inner = _v4_refusal(embedded)
        return f"an {kind} IPv6 address, standing for {embedded}" + (f": {inner}" if inner else "")
    for network, reason in _V6_RANGES:
        if address in network:
            return reason
    translated = _translated_ipv4(address)
    if translated is not None and (inner := _v4_refusal(translated)) is not None:
        return f"an IPv6 address that leads to {translated}: {inner}"
    return None if address.is_global else _NOT_GLOBAL


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d)
    address stands for: a socket connects to that IPv4 address."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if int(address) >> 32 == 0 and int(address) > 1:  # ::/96 less :: and ::1
        return IPv4Address(int(address))
    return None


def shown_address(address: Address) -> str:
    """The address as people write it: an IPv4-mapped one as ::ffff:a.b.c.d."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _translated_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address a NAT64 (64:ff9b::/96) or 6to4 (2002::/16) address leads to."""
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def literal_address(host: str) -> Address | None:
    """`host` (from a URL) as an address when it is one in any spelling Python's `ipaddress`
    or the system's `inet_aton` reads (decimal `2852039166`, hex, octal, short forms,
    `[::ffff:…]`, percent-encoded), else None: a name, or a template placeholder."""
    for candidate in dict.fromkeys((host, unquote(host))):
        text = candidate.strip("[]").rstrip(".").lower()
        try:
            return ip_address(text)
        except ValueError:
            pass
        if _NUMERIC_HOST.match(text):
            try:
                return IPv4Address(socket.inet_aton(text))
            except OSError:
                pass
    return None


def _host_key(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """WEBHOOK_ALLOWED_HOSTS, parsed: host names (exact, case ignored) and networks (an
    address is a network of one)."""

    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowedHosts:
        """Comma-separated entries; a ValueError names the first one that is none of a host
        name, an IP address or a CIDR network."""
        names: set[str] = set()
        networks: list[Network] = []
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            parsed = _parse_entry(entry)
            if isinstance(parsed, str):
                names.add(parsed)
            else:
                networks.append(parsed)
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return _host_key(host) in self.names

    def allows_address(self, address: Address) -> bool:
        """The address, or the IPv4 address a mapped or compatible one stands for, is listed."""
        candidates: list[Address] = [address]
        if isinstance(address, IPv6Address) and (embedded := embedded_ipv4(address)):
            candidates.append(embedded)
        return any(c in network for c in candidates for network in self.networks)

    def __str__(self) -> str:
        return ",".join([*sorted(self.names), *(str(n) for n in self.networks)])


def _parse_entry(entry: str) -> str | Network:
    if "/" in entry:
        try:
            return ip_network(entry.strip("[]"), strict=True)
        except ValueError as error:
            raise ValueError(
                f"{entry!r} is not a host name, an IP address or a CIDR network ({error})"
            ) from None
    try:
        address = ip_address(entry.strip("[]"))
    except ValueError:
        pass
    else:
        return ip_network(address)
    name = _host_key(entry)
    if not _HOST_NAME.match(name) or len(name) > 253:
        raise ValueError(f"{entry!r} is not a host name, an IP address or a CIDR network")
    if name.rpartition(".")[2].isdigit():
        raise ValueError(
            f"{entry!r} is not an IP address (write addresses as 10.0.0.5 or fd00::5) "
            "nor a host name (its last label is a number)"
        )
    return name


def refusal(host: str, addresses: Iterable[Address], allowed: AllowedHosts) -> str | None:
    """Why a call to `host`, which resolved to `addresses`, must not be made (naming the first
    address refused and why), or None when every address may be called: each is global, or
    listed, or the host name itself is listed."""
    if allowed.allows_name(host):
        return None
    written = literal_address(host)
    for address in addresses:
        reason = address_refusal(address)
        if reason is not None and not allowed.allows_address(address):
            shown = shown_address(address)
            if written is None:
                return f"{_host_key(host)} resolves to {shown}, {reason}"
            if _host_key(host) != shown:
                return f"{host} is {shown}, {reason}"
            return f"{shown} is {reason}"
    return None


def literal_refusal(host: str, allowed: AllowedHosts) -> str | None:
    """Why a URL whose host is written as an address may not be called, or None (a name, an
    allowed or a global address)."""
    address = literal_address(host)
    return None if address is None else refusal(host, [address], allowed)
