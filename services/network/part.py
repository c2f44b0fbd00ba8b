"""Networking as a machine part: addresses at create, the networkd file inside, the
bridge in the .nspawn settings, the host side before boot, everything freed at teardown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.core.errors import Conflict
from services.core.progress import Progress
from services.grammar import AUTO, AddressRequest, Family, requests_from_json, requests_to_json
from services.machines.parts import BasePart, NspawnSettings, PartOptions
from services.machines.records import MachineRecord
from services.network import messages
from services.network.service import Networking

PART_NAME = "network"
LINK_GONE_TIMEOUT = 3.0  # seconds for the kernel to delete a stopped machine's veth


def nspawn_link_names(machine: str) -> tuple[str, ...]:
    """The host-side interfaces nspawn makes for a machine: ``vb-NAME`` with
    ``--network-bridge``/``Bridge=``, ``ve-NAME`` with ``--network-veth``
    (systemd-nspawn(1)). Machine names are at most 12 characters so these fit IFNAMSIZ."""
    return (f"vb-{machine}", f"ve-{machine}")


@dataclass(frozen=True, slots=True)
class Addressing:
    """The addresses asked for at `create` (``--ipv4``/``--ipv6``), per family."""

    requests: dict[Family, AddressRequest] = field(
        default_factory=lambda: {Family.V4: AUTO, Family.V6: AUTO})

    def to_json(self) -> dict[str, Any]:
        return requests_to_json(self.requests)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Addressing:
        return cls(requests_from_json(data))


class NetworkPart(BasePart):
    name = PART_NAME

    def __init__(self, networking: Networking) -> None:
        self.net = networking

    def options_from_json(self, data: Mapping[str, Any]) -> PartOptions:
        return Addressing.from_json(data)

    async def allocate(self, machine: MachineRecord, options: PartOptions | None,
                       progress: Progress) -> None:
        requests = options.requests if isinstance(options, Addressing) else Addressing().requests
        self.net.allocate(machine.name, requests)
        await progress(messages.addresses(self.describe(machine)))

    def write_files(self, machine: MachineRecord, root: Path) -> None:
        self.net.write_machine_files(root, machine.name)

    def settings(self, machine: MachineRecord) -> NspawnSettings:
        # On the bridge if it has an address; without one, nothing: the settings
        # template's default is a private network (loopback only).
        if self.net.of(machine.name):
            return NspawnSettings(network=(f"Bridge={self.net.config.bridge}",))
        return NspawnSettings()

    async def before_start(self, machine: MachineRecord, progress: Progress) -> None:
        if self.net.of(machine.name):
            await _check_link_free(machine.name)
            for note in await self.net.ensure_host():
                await progress(note)

    async def release(self, machine: MachineRecord) -> None:
        await self.net.release(machine.name)

    def describe(self, machine: MachineRecord) -> dict[str, Any]:
        addresses = self.net.of(machine.name)
        return {str(f): str(addresses[f]) if f in addresses else None for f in Family}


async def _check_link_free(machine: str) -> None:
    """A ``vb-NAME`` that outlives the machine's own stop (the kernel removes it within
    moments) belongs to another machine of the same name on this host: another ctbot
    instance, or nspawn started by hand. Say so, instead of nspawn's "File exists"."""
    link = Path("/sys/class/net") / nspawn_link_names(machine)[0]
    deadline = time.monotonic() + LINK_GONE_TIMEOUT
    while link.exists():
        if time.monotonic() > deadline:
            raise Conflict(messages.link_taken(link.name, machine))
        await asyncio.sleep(0.1)
