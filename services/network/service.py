"""Networking as one object: pools and allocations, the host bridge, the files inside
each machine, port forwards, ctbot's nftables table and the networkd export.

Nothing here touches the host until a machine needs the network: opening ctbot (for
`help`, say) never creates a bridge or a firewall table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from services.core.errors import Conflict, NotFound
from services.core.files import replace_file
from services.core.store import Store
from services.core.templating import render
from services.grammar import AddressRequest, Family, HostPort, IPInterface, PortSpec
from services.machines import rootfs
from services.network import messages
from services.network.addresses import AddressBook
from services.network.bridge import HostBridge
from services.network.config import NetworkConfig
from services.network.firewall import Firewall, host_ports_in_use
from services.network.forwards import ForwardTable, PortForward

log = logging.getLogger(__name__)

NETWORK_FILE = "etc/systemd/network/10-host0.network"
NETWORKD_WANTS = "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
NETWORKD_UNIT = "/lib/systemd/system/systemd-networkd.service"


class Networking:
    def __init__(self, store: Store, config: NetworkConfig) -> None:
        self.config = config
        self.addresses = AddressBook(store, config.pools)
        self.bridge = HostBridge(config.bridge, config.pools)
        self.firewall = Firewall(config, lock_path=Path(store.path).parent / "nftables.lock")
        self._forwards = ForwardTable(store, self.addresses)

    # ------------------------------------------------------------------ host side

    async def ensure_host(self) -> list[str]:
        """The bridge and the firewall table, made or checked; idempotent."""
        notes = await self.bridge.ensure()
        await self.apply_firewall()
        self.firewall.enable_forwarding()
        return notes

    async def apply_firewall(self) -> None:
        await self.firewall.apply(self._forwards.list())

    # ------------------------------------------------------------------ per machine

    def allocate(self, machine: str, requests: Mapping[Family, AddressRequest]) -> None:
        """All families or none (one transaction): a refused IPv6 leaves IPv4 as it was."""
        self.addresses.allocate_all(machine, requests)

    async def release(self, machine: str) -> None:
        """Free the machine's forwards and addresses; idempotent. The firewall is loaded
        without its forwards *before* the rows go: if nft fails, the rows are still there
        for the next attempt, and no rule is left pointing at an address handed out again."""
        forwards = self._forwards.list()
        if any(f.machine == machine for f in forwards):
            await self.firewall.apply([f for f in forwards if f.machine != machine])
            self._forwards.delete(machine)
        self.addresses.release(machine)

    def of(self, machine: str) -> dict[Family, IPInterface]:
        return self.addresses.of(machine)

    def write_machine_files(self, root: Path, machine: str) -> None:
        """The networkd file with the machine's addresses, and networkd enabled; no file
        for a machine without addresses (it has loopback only)."""
        addresses = self.of(machine)
        if not addresses:
            rootfs.remove_file(root, NETWORK_FILE)
            return
        gateways = [self.config.pools[f].gateway.ip for f in addresses]
        rootfs.write_file(root, NETWORK_FILE, render(
            "network/host0.network.j2", addresses=list(addresses.values()),
            gateways=gateways, dns=self.config.dns).encode())
        rootfs.write_symlink(root, NETWORKD_WANTS, NETWORKD_UNIT)

    # ------------------------------------------------------------------ port forwards

    def forwards(self, machine: str | None = None) -> list[PortForward]:
        return self._forwards.list(machine)

    async def add_forward(self, machine: str, spec: PortSpec) -> PortForward:
        """Forward ``spec.host_port`` to the machine. Conflict when the machine has no
        address, a host program listens on the port, or another machine has it."""
        if not self.of(machine):
            raise Conflict(messages.no_address(machine))
        if spec.host_port in host_ports_in_use(spec.protocol):
            # The forward applies to every address of the host: it would take the port
            # away from the program listening there (sshd on 22, say).
            raise Conflict(messages.host_port_busy(spec.host_port, spec.protocol))
        forward = PortForward(spec.host_port, spec.protocol, machine, spec.machine_port)
        owner = self._forwards.insert(forward)
        if owner is not None:
            raise Conflict(messages.host_port_forwarded(spec.host_port, spec.protocol, owner))
        try:
            await self.apply_firewall()
        except Exception:
            self._forwards.delete(machine, spec.host_port, spec.protocol)
            raise
        return next(f for f in self.forwards(machine)
                    if (f.host_port, f.protocol) == (spec.host_port, spec.protocol))

    async def remove_forward(self, machine: str, port: HostPort) -> None:
        if not self._forwards.delete(machine, port.port, port.protocol):
            raise NotFound(messages.no_forward(machine, port))
        await self.apply_firewall()

    # ------------------------------------------------------------------ export

    def export_files(self) -> dict[str, str]:
        """systemd-networkd files (systemd.netdev(5), systemd.network(5)) that recreate
        the bridge at boot: file name → content."""
        gateways = [p.gateway for p in self.config.pools.values()]
        bridge = self.config.bridge
        return {
            f"90-{bridge}.netdev": render("network/netdev.j2", bridge=bridge),
            f"90-{bridge}.network": render("network/bridge.network.j2", bridge=bridge,
                                           gateways=gateways),
        }

    def write_export(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, content in self.export_files().items():
            replace_file(directory / name, content.encode())
            written.append(directory / name)
        return written
