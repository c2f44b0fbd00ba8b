"""Networking as a machine part: addresses at create, the networkd file inside, the
bridge in the .nspawn settings, the host side before boot, everything freed at teardown.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.core.progress import Progress
from services.grammar.addresses import (
    AUTO,
    AddressRequest,
    Family,
    requests_from_json,
    requests_to_json,
)
from services.machines.parts import BasePart, NspawnSettings, PartOptions
from services.machines.records import MachineRecord
from services.network import messages
from services.network.links import wait_link_free
from services.network.service import Networking

PART_NAME = "network"
log = logging.getLogger(__name__)
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
            await wait_link_free(machine.name)
            for note in await self.net.ensure_host():
                await progress(note)

    async def after_start(self, machine: MachineRecord, leader: int,
                          progress: Progress) -> None:
        if self.net.of(machine.name):
            for note in await self.net.foreign_filters([machine.name]):
                log.warning("%s", note)
                await progress(note)

    async def reconcile(self, machines: Sequence[MachineRecord],
                        running: AbstractSet[str]) -> list[str]:
        """The host side of running machines with addresses, repaired if it drifted."""
        # Addresses held by a `net set` that completed but died before letting them go:
        # these machines have no operation now, so nothing will put them back.
        for machine in machines:
            if self.net.addresses.held(machine.name):
                self.net.addresses.release_held(machine.name)
        on_bridge = [m.name for m in machines if m.name in running and self.net.of(m.name)]
        return await self.net.repair(on_bridge)

    async def release(self, machine: MachineRecord) -> None:
        await self.net.release(machine.name)

    def describe(self, machine: MachineRecord) -> dict[str, Any]:
        addresses = self.net.of(machine.name)
        return {str(f): str(addresses[f]) if f in addresses else None for f in Family}
