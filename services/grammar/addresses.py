"""IP addresses a user types, per family: a machine's address request (``auto``, ``none``
or ``ADDRESS/PREFIX``, stored as its canonical text), a pool's network, an IP address, and
the types they travel as.

    address       := "auto" | "none" | ADDRESS "/" PREFIXLEN      (per family)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.core.errors import InvalidInput
from services.grammar.text import printable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Family(StrEnum):
    V4 = "ipv4"
    V6 = "ipv6"

    @property
    def version(self) -> int:
        return 4 if self is Family.V4 else 6

    @property
    def example(self) -> str:
        return "10.231.0.10/24" if self is Family.V4 else "fd00::10/64"


@dataclass(frozen=True, slots=True)
class Auto:
    """Let ctbot pick the lowest free address of the pool."""

    def __str__(self) -> str:
        return "auto"


AUTO = Auto()
AddressRequest = Auto | IPInterface | None  # None: no address of this family


def address_request(raw: str, family: Family) -> AddressRequest:
    """``auto``, ``none`` or ``ADDRESS/PREFIX`` of ``family``."""
    if raw == "auto":
        return AUTO
    if raw == "none":
        return None
    if "/" not in raw or "%" in raw:  # no zone ids (%eth0): an address of the pool's bridge
        raise InvalidInput(f"--{family} {printable(raw)}: write auto, none or ADDRESS/PREFIX "
                           f"(e.g. {family.example})")
    try:
        interface = ipaddress.ip_interface(raw)
    except ValueError:
        raise InvalidInput(f"--{family} {printable(raw)} is not a valid address/prefix") from None
    if interface.version != family.version:
        raise InvalidInput(f"--{family} {printable(raw)} is an IPv{interface.version} address")
    return interface


def request_text(request: AddressRequest) -> str:
    """The canonical text of an address request: what ``address_request`` reads back."""
    return "none" if request is None else str(request)


def requests_to_json(requests: Mapping[Family, AddressRequest]) -> dict[str, str]:
    """``{"ipv4": "auto", "ipv6": "fd00::5/64"}``: what ``requests_from_json`` reads."""
    return {str(f): request_text(r) for f, r in requests.items()}


def requests_from_json(data: Mapping[str, Any]) -> dict[Family, AddressRequest]:
    """The families present in ``data``, each through ``address_request``."""
    return {f: address_request(str(data[str(f)]), f) for f in Family if str(f) in data}


POOL_PREFIXES = {Family.V4: range(8, 31), Family.V6: range(48, 125)}


def network(raw: str, family: Family) -> IPNetwork:
    """A pool: a unicast network of ``family``, /8–/30 for IPv4 and /48–/124 for IPv6
    (at least network, gateway, one machine and broadcast), never loopback, link-local,
    multicast, unspecified or reserved space (RFC 6890) — the bridge gets its first
    address, and such a pool would cut the host off from itself."""
    try:
        parsed = ipaddress.ip_network(raw, strict=True)
    except ValueError as exc:
        raise InvalidInput(f"{family} pool {printable(raw)} is not a network: {exc}") from None
    if parsed.version != family.version:
        raise InvalidInput(f"{family} pool {printable(raw)} is not an IPv{family.version} "
                           "network")
    allowed = POOL_PREFIXES[family]
    if parsed.prefixlen not in allowed:
        raise InvalidInput(f"{family} pool {printable(raw)}: the prefix must be from "
                           f"/{allowed.start} to /{allowed.stop - 1}")
    first = parsed.network_address
    this_network = ipaddress.ip_network("0.0.0.0/8" if family is Family.V4 else "::/8")
    if (first.is_loopback or first.is_link_local or first.is_multicast or first.is_reserved
            or parsed.overlaps(this_network)):
        raise InvalidInput(f"{family} pool {printable(raw)} is loopback, link-local, "
                           "multicast or reserved space; use a private network (e.g. "
                           f"{'10.231.0.0/24' if family is Family.V4 else 'fd00:1::/64'})")
    return parsed


def ip_address(raw: str) -> IPAddress:
    try:
        return ipaddress.ip_address(raw)
    except ValueError:
        raise InvalidInput(f"{printable(raw)} is not an IP address") from None


_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


def host_address(raw: str) -> str:
    """Where a host is reached: an IP address, or a DNS name (RFC 1123 labels, at most
    253 characters). InvalidInput otherwise, before it reaches a socket or a log."""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        pass
    if len(raw) <= 253 and _DNS_NAME_RE.fullmatch(raw) and not raw.replace(".", "").isdigit():
        return raw.lower()
    raise InvalidInput(f"{printable(raw)} is not an IP address or a DNS name")
