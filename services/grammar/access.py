"""SSH access: a login in a machine, the networks a grant is limited to (``--from``, as
sshd's ``from=``) and a GitHub login whose keys are imported.

    login         := [a-z_] [a-z0-9_-]{0,30}                      a POSIX login in a machine
    from          := network { "," network }                     at most 16 (sshd from=)
    GitHub login  := [A-Za-z0-9] ( [A-Za-z0-9-]{0,37} [A-Za-z0-9] )?
"""

from __future__ import annotations

import ipaddress
import re

from services.core.errors import InvalidInput
from services.grammar.addresses import IPNetwork
from services.grammar.text import printable

_LOGIN_RE = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_GITHUB_LOGIN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?")
MAX_FROM_NETWORKS = 16
_NETWORK_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")


def login(raw: str) -> str:
    """A login in a machine: systemd's strict user-name rule (sysusers.d(5), "User/Group
    Name Syntax"): ASCII lowercase letters, digits, ``_`` and ``-``, not starting with a
    digit or ``-``, at most 31 characters."""
    if not _LOGIN_RE.fullmatch(raw):
        raise InvalidInput(f"{printable(raw)} is not a login: 1–31 lowercase letters, digits, "
                           "_ and -, starting with a letter or _")
    return raw


def source_networks(raw: str) -> tuple[IPNetwork, ...]:
    """``--from``: addresses or networks, comma-separated (``192.0.2.0/24,2001:db8::/32``),
    as sshd's ``from=`` takes them (sshd(8), AUTHORIZED_KEYS FILE FORMAT); host bits
    set are refused rather than silently dropped."""
    parts = raw.split(",")
    if not raw or len(parts) > MAX_FROM_NETWORKS:
        raise InvalidInput(f"give 1 to {MAX_FROM_NETWORKS} networks, comma-separated "
                           "(e.g. 192.0.2.0/24,2001:db8::/32)")
    networks = []
    for part in parts:
        # ipaddress takes an IPv6 zone ("fe80::1%eth0") with anything after the "%",
        # quotes and newlines included: only address characters reach sshd's from="…".
        if not _NETWORK_CHARS.fullmatch(part):
            raise InvalidInput(f"{printable(part)} is not an address or network (digits, "
                               "a–f, '.', ':' and one '/PREFIX'; no zone)")
        try:
            networks.append(ipaddress.ip_network(part, strict=True))
        except ValueError as exc:
            raise InvalidInput(f"{printable(part)} is not an address or network: {exc}") from None
    return tuple(networks)


def github_login(raw: str) -> str:
    """A GitHub user name: letters, digits and single hyphens, at most 39 characters."""
    if not _GITHUB_LOGIN_RE.fullmatch(raw) or "--" in raw:
        raise InvalidInput(f"{printable(raw)} is not a GitHub login")
    return raw
