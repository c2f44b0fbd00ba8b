"""What is checked: every machine's built-in checks and the ones added with `check add`.

Every machine with an address of a family gets, for that family: `icmp` (echo) and `ssh`
(TCP connect and the server's `SSH-2.0` identification, RFC 4253 §4.2). A check added
with `check add NAME tcp:PORT | http://NAME[:PORT]/PATH | https://…` runs for each
family the machine has.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from services.core.errors import InvalidInput
from services.grammar.addresses import Family, IPAddress
from services.grammar.ports import port
from services.grammar.text import printable
from services.health import messages


class CheckKind(StrEnum):
    ICMP = "icmp"
    SSH = "ssh"
    TCP = "tcp"
    HTTP = "http"  # http and https


BUILT_IN = ("icmp", "ssh")
MAX_URL = 512
# RFC 3986 path, query: unreserved, pct-encoded, sub-delims, ":" "@" "/" "?"
_PATH_RE = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*")


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One check of a machine. ``id`` is `icmp`, `ssh`, or `c<N>` for an added one."""

    id: str
    kind: CheckKind
    port: int | None = None  # tcp, and http(s) (80/443 unless given)
    url: str | None = None  # http(s): as the user wrote it
    expect: int | None = None  # http(s): the status code that means UP
    insecure: bool = False  # https: do not verify the certificate

    @property
    def label(self) -> str:
        if self.kind is CheckKind.TCP:
            return f"tcp:{self.port}"
        return self.url or str(self.kind)

    def same_as(self, other: CheckSpec) -> bool:
        """The same check, whatever its id."""
        return (self.kind, self.port, self.url, self.expect, self.insecure) == (
            other.kind, other.port, other.url, other.expect, other.insecure)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": str(self.kind), "label": self.label, "port": self.port,
                "url": self.url, "expect": self.expect, "insecure": self.insecure}


ICMP = CheckSpec("icmp", CheckKind.ICMP)
SSH = CheckSpec("ssh", CheckKind.SSH, port=22)


@dataclass(frozen=True, slots=True)
class Target:
    """One check of one machine over one family, at the machine's address."""

    machine: str
    check: CheckSpec
    family: Family
    address: IPAddress

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.machine, self.check.id, str(self.family))


_CHECK_ID_RE = re.compile(r"c[0-9]{1,12}")
MAX_ADDED_PER_MACHINE = 20


def check_id(raw: str) -> str:
    """An added check's id as `check list` shows it: `c` and ASCII digits (`c12`)."""
    if raw in BUILT_IN:
        return raw
    if not _CHECK_ID_RE.fullmatch(raw):
        raise InvalidInput(messages.bad_check_id(printable(raw)))
    return raw


def parse_check(raw: str, machine: str, addresses: dict[Family, IPAddress], *,
                expect: int | None = None, insecure: bool = False) -> CheckSpec:
    """`tcp:PORT`, `http://HOST[:PORT]/PATH` or `https://…` for ``machine`` (id unset).

    HOST is the machine's name: the check goes to each of its addresses, with that Host
    header. InvalidInput on anything else."""
    if raw.startswith("tcp:"):
        if expect is not None or insecure:
            raise InvalidInput(messages.tcp_options())
        return CheckSpec("", CheckKind.TCP, port=port(raw[4:]))
    if not raw.startswith(("http://", "https://")):
        raise InvalidInput(messages.bad_check(printable(raw)))
    if len(raw) > MAX_URL or not raw.isascii() or not raw.isprintable() or " " in raw:
        raise InvalidInput(messages.bad_url(printable(raw)))
    try:
        parts = urlsplit(raw)
        given_port = parts.port
    except ValueError:
        raise InvalidInput(messages.bad_url(printable(raw))) from None
    short = machine.rpartition("/")[2]
    host = parts.hostname or ""
    if parts.username or parts.password or parts.fragment or given_port == 0:
        raise InvalidInput(messages.bad_url(printable(raw)))
    if host != short:
        # Not an address either: one written here would go stale at the next `net set`
        # (and then probe whichever machine gets it next).
        raise InvalidInput(messages.url_host(printable(host), machine))
    if not _PATH_RE.fullmatch(parts.path + ("?" + parts.query if parts.query else "")):
        raise InvalidInput(messages.bad_url(printable(raw)))
    if expect is not None and not 100 <= expect <= 599:
        raise InvalidInput(messages.bad_status(expect))
    https = parts.scheme == "https"
    if insecure and not https:
        raise InvalidInput(messages.insecure_needs_https())
    return CheckSpec("", CheckKind.HTTP, port=given_port or (443 if https else 80), url=raw,
                     expect=expect or 200, insecure=insecure)


def labels_of(added: Mapping[str, Sequence[CheckSpec]]) -> dict[tuple[str, str], str]:
    """(machine, check id) → how messages and metrics name an added check."""
    return {(machine, c.id): c.label for machine, checks in added.items() for c in checks}


def targets_of(machine: str, addresses: dict[Family, IPAddress],
               added: list[CheckSpec]) -> list[Target]:
    """Every check of ``machine``, for each family it has an address in."""
    found = []
    for family in Family:
        address = addresses.get(family)
        if address is None:
            continue
        for check in (ICMP, SSH, *added):
            found.append(Target(machine, check, family, address))
    return found
