"""Every value a user types, as a type, and the one grammar each is parsed by.

    machine name  := [a-z] ( [a-z0-9-]{0,10} [a-z0-9] )?         1–12 characters
    image name    := [a-z] ( [a-z0-9-]{0,30} [a-z0-9] )?         1–32 characters
    count         := [0-9]{1,6}                                   ASCII digits only
    seconds       := count [ "s" | "m" | "h" | "d" ]
    size          := [0-9]{1,6} ( "." [0-9]{1,3} )? [KMGT]? ( "B" | "iB" )?   binary units
    cpu           := [0-9]{1,3} ( "." [0-9]{1,3} )?               CPUs' worth of time
    port          := [0-9]{1,5}                                   1–65535
    port spec     := port ":" port [ "/" ( "tcp" | "udp" ) ]
    address       := "auto" | "none" | ADDRESS "/" PREFIXLEN      (per family)
    bridge name   := [a-z] [a-z0-9-]{0,14}                        a Linux interface name
    user          := "local" | [UW] [A-Z0-9]{2,20} | "<@" id [ "|" label ] ">"   (Slack ids)
    login         := [a-z_] [a-z0-9_-]{0,30}                      a POSIX login in a machine
    from          := network { "," network }                     at most 16 (sshd from=)
    GitHub login  := [A-Za-z0-9] ( [A-Za-z0-9-]{0,37} [A-Za-z0-9] )?

Parsed once, where the text enters (a chat verb, a settings key); from there on only the
typed value travels, and what is stored (job arguments) is its canonical text. Twelve
characters keep every name derived from a machine name valid: host interface names are
at most 15 bytes (IFNAMSIZ - 1, linux/if.h) and nspawn derives ``vb-NAME`` and ``ve-NAME``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.core.errors import InvalidInput

MACHINE_NAME_MAX = 12
IMAGE_NAME_MAX = 32
INTERFACE_NAME_MAX = 15  # IFNAMSIZ (16) minus the terminating NUL

_MACHINE_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,10}[a-z0-9])?")
_IMAGE_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
_BRIDGE_RE = re.compile(r"[a-z][a-z0-9-]{0,14}")
_NFT_TABLE_RE = re.compile(r"[a-z][a-z0-9_]{0,30}")
_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian Policy 5.6.1
_SUITE_RE = re.compile(r"[a-z]+")
_SIZE_RE = re.compile(r"([0-9]{1,6}(?:\.[0-9]{1,3})?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_CPU_RE = re.compile(r"-?[0-9]{1,6}(?:\.[0-9]{1,3})?")
_SECONDS_RE = re.compile(r"([0-9]{1,6})([smhd]?)")

MACHINE_NAME_RULE = (f"1–{MACHINE_NAME_MAX} lowercase letters, digits and hyphens, starting "
                     "with a letter and not ending with a hyphen (e.g. `web1`)")
IMAGE_NAME_RULE = (f"1–{IMAGE_NAME_MAX} lowercase letters, digits and hyphens, starting "
                   "with a letter and not ending with a hyphen (e.g. `bookworm`)")
MIN_MEMORY_BYTES = 32 * 1024 * 1024  # below this a booted systemd is OOM-killed
CPU_RANGE = (0.05, 512.0)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# ---------------------------------------------------------------------------- names

def machine_name(raw: str) -> str:
    """``raw`` if it is a valid machine name; InvalidInput saying why otherwise."""
    return _name(raw, _MACHINE_RE, "machine name", MACHINE_NAME_RULE, MACHINE_NAME_MAX)


def machine_ref(raw: str) -> str:
    """A machine, ``NAME``, or a machine inside another, ``OUTER/INNER`` (one level of
    nesting): each part a valid machine name. InvalidInput saying why otherwise, before
    any path is built from it (``o1/``, ``/i1``, ``o1/i1/x``, ``o1/../x`` are refused)."""
    if "/" not in raw:
        return machine_name(raw)
    parts = raw.split("/")
    if len(parts) != 2:
        raise InvalidInput(f"machine {printable(raw)}: NAME or OUTER/INNER (machines nest "
                           "one level deep)")
    outer, inner = parts
    return f"{machine_name(outer)}/{machine_name(inner)}"


def split_ref(ref: str) -> tuple[str, str | None]:
    """``OUTER/INNER`` → (OUTER, INNER); ``NAME`` → (NAME, None). ``ref`` is parsed."""
    outer, _, inner = ref.partition("/")
    return outer, inner or None


def image_name(raw: str) -> str:
    """``raw`` if it is a valid image name; InvalidInput saying why otherwise."""
    return _name(raw, _IMAGE_RE, "image name", IMAGE_NAME_RULE, IMAGE_NAME_MAX)


def bridge_name(raw: str) -> str:
    """A Linux interface name ctbot may create: 1–15 lowercase letters, digits, hyphens."""
    if not _BRIDGE_RE.fullmatch(raw):
        raise InvalidInput(f"bridge name {printable(raw)}: 1–{INTERFACE_NAME_MAX} lowercase "
                           "letters, digits and hyphens, starting with a letter")
    return raw


def nft_table_name(raw: str) -> str:
    if not _NFT_TABLE_RE.fullmatch(raw):
        raise InvalidInput(f"{printable(raw)}: a lowercase letter, then up to 30 lowercase "
                           "letters, digits and underscores")
    return raw


def debian_package(raw: str) -> str:
    """A Debian package name (Debian Policy §5.6.1)."""
    if not _PACKAGE_RE.fullmatch(raw):
        raise InvalidInput(f"{printable(raw)} is not a Debian package name")
    return raw


def debian_suite(raw: str) -> str:
    if not _SUITE_RE.fullmatch(raw):
        raise InvalidInput(f"{printable(raw)} is not a Debian suite name (e.g. bookworm)")
    return raw


def _name(raw: str, pattern: re.Pattern[str], what: str, rule: str, maximum: int) -> str:
    if pattern.fullmatch(raw):
        return raw
    if not raw:
        reason = "it is empty"
    elif len(raw) > maximum:
        reason = f"it has {len(raw)} characters"
    elif not raw.isascii():
        reason = "it has non-ASCII characters"
    elif any(c.isupper() for c in raw):
        reason = "it has uppercase letters"
    elif not raw[0].isalpha():
        reason = "it does not start with a letter"
    elif raw.endswith("-"):
        reason = "it ends with a hyphen"
    else:
        reason = "it has characters other than a-z, 0-9 and -"
    raise InvalidInput(f"{what} {printable(raw)} is not valid: {reason}. Use {rule}.")


def printable(raw: str) -> str:
    """``raw`` as it can be shown safely in chat and logs (no control characters)."""
    if raw.isprintable() and "`" not in raw and len(raw) <= 40:
        return f"`{raw}`"
    return repr(raw[:40]) + ("…" if len(raw) > 40 else "")


# ---------------------------------------------------------------------------- numbers

def _digits(raw: str, max_digits: int) -> int | None:
    """ASCII digits only: ``int()`` would also take ``٨٠`` (Arabic-Indic) and ``1_000``."""
    if raw.isascii() and raw.isdigit() and len(raw) <= max_digits:
        return int(raw)
    return None


def count(raw: str, *, maximum: int) -> int:
    """A whole number from 1 to ``maximum`` (e.g. `audit 50`)."""
    value = _digits(raw, 6)
    if value is None:
        raise InvalidInput(f"{printable(raw)} is not a count; give a whole number from 1 to "
                           f"{maximum}")
    if not 1 <= value <= maximum:
        raise InvalidInput(f"count must be from 1 to {maximum}, not {value}")
    return value


def seconds(raw: str, *, maximum: int) -> int:
    """A duration: ``90`` or ``90s``, ``5m``, ``2h``, ``1d`` → seconds, 1 to ``maximum``."""
    match = _SECONDS_RE.fullmatch(raw) if raw.isascii() else None
    if match is None:
        examples = ("90, 90s or 5m" if maximum < 7200 else "90, 90s, 5m or 2h"
                    if maximum < 172800 else "90s, 5m, 8h or 30d")
        raise InvalidInput(f"{printable(raw)} is not a duration; write e.g. {examples}")
    value = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if not 1 <= value <= maximum:
        raise InvalidInput(f"the duration must be from 1s to {duration_text(maximum)}, not "
                           f"{printable(raw)}")
    return value


def duration_text(seconds: int) -> str:
    """``31622400`` → ``366d``; ``5400`` → ``90m``: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def human_duration(seconds: float) -> str:
    """``750`` → ``12m 30s``; ``5400`` → ``1h 30m``; ``93784`` → ``1d 2h``: the two
    largest units, for people reading how long something took."""
    total = max(round(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    shown = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"),
                                          (secs, "s")) if n][:2]
    return " ".join(shown) or "0s"


def job_id(raw: str) -> int:
    """``12`` or ``#12``."""
    value = _digits(raw.removeprefix("#"), 12)
    if value is None:
        raise InvalidInput(f"{printable(raw.removeprefix('#'))} is not a job id; job ids are "
                           "numbers, e.g. `job 12`")
    return value


def size(raw: str) -> int:
    """``512M``, ``2G``, ``1.5GiB`` → bytes. Binary units, as systemd reads them
    (systemd.resource-control(5): "suffixed with K, M, G or T … base 1024")."""
    match = _SIZE_RE.fullmatch(raw.strip()) if raw.isascii() else None
    if match is None:
        raise InvalidInput(f"{printable(raw)} is not a size; write e.g. 512M or 2G")
    factor = 1024 ** " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * factor)


def memory_limit(raw: str) -> int:
    """A machine's memory limit in bytes: a size of at least 32 MiB."""
    value = size(raw)
    if value < MIN_MEMORY_BYTES:
        raise InvalidInput(f"memory {raw} is too small: a booted machine needs at least 32M")
    return value


def cpu(raw: str) -> float:
    """A CPU limit in CPUs' worth of time (``1.5``: one and a half CPUs), 0.05–512."""
    if not (raw.isascii() and _CPU_RE.fullmatch(raw)):
        raise InvalidInput(f"--cpu {printable(raw)} is not a number; write e.g. 1 or 0.5")
    value = float(raw)
    if not CPU_RANGE[0] <= value <= CPU_RANGE[1]:
        raise InvalidInput(f"--cpu must be from {CPU_RANGE[0]:g} to {CPU_RANGE[1]:g} CPUs, "
                           f"not {value:g}")
    return value


# ---------------------------------------------------------------------------- ports

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
    value = _digits(raw, 5)
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


# ---------------------------------------------------------------------------- addresses

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


# Machine features, each a machine part that a flag turns on (`create --docker`,
# `feature NAME docker on`).
FEATURES = ("docker", "nesting")


def feature(raw: str) -> str:
    if raw not in FEATURES:
        raise InvalidInput(f"{printable(raw)} is not a feature; features: {', '.join(FEATURES)}")
    return raw


_CONTAINER_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")


def container(raw: str) -> str:
    """A Docker container name or id: Docker's own name rule (daemon/names.go:
    ``[a-zA-Z0-9][a-zA-Z0-9_.-]+``), ids being hex; at most 128 characters."""
    if not _CONTAINER_RE.fullmatch(raw):
        raise InvalidInput(f"{printable(raw)} is not a container name or id (letters, digits, "
                           "'_', '.', '-', starting with a letter or digit; at most 128)")
    return raw


def on_off(raw: str) -> bool:
    if raw not in ("on", "off"):
        raise InvalidInput(f"say `on` or `off`, not {printable(raw)}")
    return raw == "on"


# Slack user ids: U… for users, W… for Enterprise Grid users, B… for bots. Local callers
# (`ctbot cmd`, the console) are the reserved id "local".
SLACK_USER_ID_RE = re.compile(r"[UWB][A-Z0-9]{2,20}")
_MENTION_RE = re.compile(r"<@([UW][A-Z0-9]{2,20})(?:\|[^<>]{0,80})?>")
LOCAL_USER = "local"
_LOGIN_RE = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_GITHUB_LOGIN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?")
MAX_FROM_NETWORKS = 16
_NETWORK_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")


_CHANNEL_RE = re.compile(r"[CGD][A-Z0-9]{8,12}|#[a-z0-9_\-]{1,80}")


def slack_channel(raw: str) -> str:
    """A channel as chat.postMessage takes it: an id (C…, G…, D…) or ``#name``."""
    if not _CHANNEL_RE.fullmatch(raw):
        raise InvalidInput(f"must be a channel id like C0123456789 or a #name, not "
                           f"{printable(raw)}")
    return raw


def user(raw: str) -> str:
    """A person, by immutable id: ``local``, a Slack user id (``U012ABCDEF``, ``W…``) or a
    Slack mention as Slack sends it (``<@U012ABCDEF|ana>``) → the id. Display names are
    refused: anyone can change theirs."""
    mention = _MENTION_RE.fullmatch(raw)
    if mention is not None:
        return mention.group(1)
    bare = raw.removeprefix("@")
    if raw == LOCAL_USER or (SLACK_USER_ID_RE.fullmatch(bare) and bare[0] in "UW"):
        return bare
    raise InvalidInput(f"{printable(raw)} is not a user ctbot can tell by id: in Slack, "
                       "mention them (pick @ana from the list, so Slack sends their id); "
                       "elsewhere give their Slack user id (U012ABCDEF: their profile → ⋮ "
                       "→ Copy member ID), or `local` for the host's own operator")


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


# ---------------------------------------------------------------------------- webhooks

_WEBHOOK_NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
# GitHub's X-GitHub-Delivery is a UUID, Standard Webhooks' webhook-id e.g. msg_2b…, an
# Idempotency-Key (IETF draft-ietf-httpapi-idempotency-key-header) any token: printable
# ASCII without spaces, quotes or backslashes, at most 128 characters.
_DELIVERY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:~+=@/-]{0,127}")
_ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")


def webhook_name(raw: str) -> str:
    """A webhook's name, the NAME of ``/hooks/NAME``: 1–32 lowercase letters, digits and
    hyphens, starting with a letter."""
    return _name(raw, _WEBHOOK_NAME_RE, "webhook name", "1–32 lowercase letters, digits "
                 "and hyphens, starting with a letter", 32)


def delivery_id_or_none(raw: str) -> str | None:
    """A delivery id as a sender sends it, or None when it is not one."""
    return raw if _DELIVERY_ID_RE.fullmatch(raw) else None


def env_name(raw: str) -> str:
    """An environment variable's name: uppercase letters, digits and _ (POSIX.1-2017
    §8.1, the portable subset), not starting with a digit."""
    if not _ENV_NAME_RE.fullmatch(raw):
        raise InvalidInput(f"{printable(raw)} is not an environment variable name "
                           "(A–Z, 0–9 and _, not starting with a digit)")
    return raw


class QuotedWord(str):
    """A word of a command line that is a value and nothing else: a field a webhook
    substituted into its command. The command grammar (handlers/grammar.py) binds it to
    a positional or an option's value, never reads it as a verb, an option, ``--`` or
    ``--yes``."""

    __slots__ = ()
