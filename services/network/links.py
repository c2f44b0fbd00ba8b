"""The host's network interfaces as `ip -j -d address show` (iproute2) lists them.

Reading goes through `ip` (~4 ms) rather than pyroute2, whose import alone costs ~100 ms
that every ctbot command would pay to *look* at the host on start (drift checks);
changes still go through netlink (services/network/bridge.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import time
from dataclasses import dataclass

from services.core import host
from services.core.errors import Conflict
from services.grammar.addresses import IPInterface
from services.network import messages

LINK_GONE_TIMEOUT = 3.0  # seconds for the kernel to delete a stopped machine's veth


def machine_mac(machine: str) -> str:
    """The MAC address ctbot gives a machine's host0 (in its networkd file), and the
    only one the bridge accepts from it: locally administered, unicast (IEEE 802:
    02 in the first octet), derived from the name, so stable across restarts."""
    digest = hashlib.sha256(f"ctbot-mac:{machine}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def nspawn_link_names(machine: str) -> tuple[str, ...]:
    """The host-side interfaces nspawn makes for a machine: ``vb-NAME`` with
    ``--network-bridge``/``Bridge=``, ``ve-NAME`` with ``--network-veth``
    (systemd-nspawn(1)). Machine names are at most 12 characters so these fit IFNAMSIZ."""
    return (f"vb-{machine}", f"ve-{machine}")


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    kind: str | None  # "bridge", "veth", … (None for plain devices)
    master: str | None  # the bridge it is enslaved to
    up: bool  # administratively up (IFF_UP)
    addresses: tuple[IPInterface, ...]  # link-local IPv6 left out


async def host_links() -> dict[str, Link]:
    """Every interface of the network namespace ctbot runs in, by name."""
    listed = await host.run(["ip", "-j", "-d", "address", "show"], timeout=30)
    links = {}
    for item in json.loads(listed.stdout or "[]"):
        addresses = tuple(
            ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
            for a in item.get("addr_info", [])
            if "local" in a and not str(a["local"]).startswith("fe80:"))
        links[item["ifname"]] = Link(
            name=item["ifname"], kind=item.get("linkinfo", {}).get("info_kind"),
            master=item.get("master"), up="UP" in item.get("flags", []), addresses=addresses)
    return links


async def wait_link_free(machine: str) -> None:
    """A ``vb-NAME`` that outlives the machine's own stop (the kernel removes it within
    moments) belongs to another machine of the same name on this host: another ctbot
    instance, or nspawn started by hand. Say so, instead of nspawn's "File exists"."""
    name = nspawn_link_names(machine)[0]
    deadline = time.monotonic() + LINK_GONE_TIMEOUT
    while name in await host_links():
        if time.monotonic() > deadline:
            raise Conflict(messages.link_taken(name, machine))
        await asyncio.sleep(0.1)
