"""Names of the things ctbot makes or is told about, each checked against its own rule:
machines (``NAME`` and ``OUTER/INNER``), images, bridges, nftables tables, Debian packages
and suites, Docker containers, webhooks and hosts.

    machine name  := [a-z] ( [a-z0-9-]{0,10} [a-z0-9] )?         1–12 characters
    image name    := [a-z] ( [a-z0-9-]{0,30} [a-z0-9] )?         1–32 characters
    bridge name   := [a-z] [a-z0-9-]{0,14}                        a Linux interface name

Twelve characters keep every name derived from a machine name valid: host interface
names are at most 15 bytes (IFNAMSIZ - 1, linux/if.h) and nspawn derives ``vb-NAME`` and
``ve-NAME``.
"""

from __future__ import annotations

import re

from services.core.errors import InvalidInput
from services.grammar.text import printable

MACHINE_NAME_MAX = 12
IMAGE_NAME_MAX = 32
INTERFACE_NAME_MAX = 15  # IFNAMSIZ (16) minus the terminating NUL

_MACHINE_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,10}[a-z0-9])?")
_IMAGE_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
_BRIDGE_RE = re.compile(r"[a-z][a-z0-9-]{0,14}")
_NFT_TABLE_RE = re.compile(r"[a-z][a-z0-9_]{0,30}")
_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian Policy 5.6.1
_SUITE_RE = re.compile(r"[a-z]+")
_CONTAINER_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_WEBHOOK_NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")

MACHINE_NAME_RULE = (f"1–{MACHINE_NAME_MAX} lowercase letters, digits and hyphens, starting "
                     "with a letter and not ending with a hyphen (e.g. `web1`)")
IMAGE_NAME_RULE = (f"1–{IMAGE_NAME_MAX} lowercase letters, digits and hyphens, starting "
                   "with a letter and not ending with a hyphen (e.g. `bookworm`)")


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


def container(raw: str) -> str:
    """A Docker container name or id: Docker's own name rule (daemon/names.go:
    ``[a-zA-Z0-9][a-zA-Z0-9_.-]+``), ids being hex; at most 128 characters."""
    if not _CONTAINER_RE.fullmatch(raw):
        raise InvalidInput(f"{printable(raw)} is not a container name or id (letters, digits, "
                           "'_', '.', '-', starting with a letter or digit; at most 128)")
    return raw


def webhook_name(raw: str) -> str:
    """A webhook's name, the NAME of ``/hooks/NAME``: 1–32 lowercase letters, digits and
    hyphens, starting with a letter."""
    return _name(raw, _WEBHOOK_NAME_RE, "webhook name", "1–32 lowercase letters, digits "
                 "and hyphens, starting with a letter", 32)


def host_name(raw: str) -> str:
    """A host ctbot drives (`host add NAME`), as in ``--host NAME`` and ``NAME:MACHINE``:
    1–32 lowercase letters, digits and hyphens, starting with a letter (a DNS label's
    shape, RFC 1123); ``local`` is this host."""
    return _name(raw, _WEBHOOK_NAME_RE, "host name", "1–32 lowercase letters, digits "
                 "and hyphens, starting with a letter", 32)


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
