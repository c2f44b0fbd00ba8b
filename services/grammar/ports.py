"""Ports a user types: a port, a forward's ``HOSTPORT:CTPORT[/PROTO]`` (`port add`) and a
host port ``HOSTPORT[/PROTO]`` (`port remove`), each as a typed value.

    port          := [0-9]{1,5}                                   1–65535
    port spec     := port ":" port [ "/" ( "tcp" | "udp" ) ]
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.core.errors import InvalidInput
from services.grammar.text import ascii_digits, printable


class PortProtocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True)
class PortSpec:
    """``HOSTPORT:CTPORT[/PROTO]`` of `port add`."""

    host_port: int
    machine_port: int
    protocol: PortProtocol

    def __str__(self) -> str:
        return f"{self.host_port}:{self.machine_port}/{self.protocol}"


@dataclass(frozen=True, slots=True)
class HostPort:
    """``HOSTPORT[/PROTO]`` of `port remove`."""

    port: int
    protocol: PortProtocol

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


def port(raw: str) -> int:
    value = ascii_digits(raw, 5)
    if value is None or not 1 <= value <= 65535:
        raise InvalidInput(f"{printable(raw)} is not a port (1–65535)")
    return value


def _protocol(raw: str, whole: str) -> PortProtocol:
    try:
        return PortProtocol(raw or "tcp")
    except ValueError:
        raise InvalidInput(f"{printable(whole)}: the protocol is tcp or udp, not "
                           f"{printable(raw)}") from None


def port_spec(raw: str) -> PortSpec:
    """``8080:80``, ``5353:53/udp``."""
    ports, _, proto = raw.partition("/")
    protocol = _protocol(proto, raw)
    host_text, sep, machine_text = ports.partition(":")
    if not sep:
        raise InvalidInput(f"{printable(raw)}: write HOSTPORT:CTPORT[/tcp|udp], e.g. 8080:80")
    try:
        return PortSpec(port(host_text), port(machine_text), protocol)
    except InvalidInput as exc:
        raise InvalidInput(f"{printable(raw)}: {exc}") from None


def host_port(raw: str) -> HostPort:
    """``8080``, ``8080/udp`` (``8080:80`` is taken too: the part after ``:`` is ignored)."""
    ports, _, proto = raw.partition("/")
    protocol = _protocol(proto, raw)
    try:
        return HostPort(port(ports.split(":", 1)[0]), protocol)
    except InvalidInput:
        raise InvalidInput(f"{printable(raw)}: give the host port, e.g. 8080 or "
                           "8080/udp") from None
