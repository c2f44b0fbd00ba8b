"""Networking as one object: pools and allocations, the host bridge, the files inside
each machine, port forwards, ctbot's nftables table and the networkd export.

Nothing here touches the host until a machine needs the network: opening ctbot (for
`help`, say) never creates a bridge or a firewall table.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.core.errors import Conflict, InvalidInput, NotFound
from services.core.files import replace_file
from services.core.host_changes import HostChanges
from services.core.store import Store
from services.core.templating import render
from services.grammar.addresses import AddressRequest, Family, IPAddress, IPInterface
from services.grammar.ports import HostPort, PortSpec
from services.machines import rootfs
from services.network import messages
from services.network.addresses import AddressBook
from services.network.bridge import HostBridge
from services.network.config import NetworkConfig
from services.network.firewall import Firewall, Guard, Rules, host_ports_in_use
from services.network.forwards import ForwardTable, PortForward
from services.network.links import host_links, machine_mac, nspawn_link_names

log = logging.getLogger(__name__)

NETWORK_FILE = "etc/systemd/network/10-host0.network"
NETWORKD_WANTS = "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
NETWORKD_UNIT = "/lib/systemd/system/systemd-networkd.service"


class Networking:
    def __init__(self, store: Store, config: NetworkConfig) -> None:
        self.config = config
        self.changes = HostChanges(store)
        self.addresses = AddressBook(store, config.pools)
        self.bridge = HostBridge(config.bridge, config.pools)
        self.firewall = Firewall(config, lock_path=Path(store.path).parent / "nftables.lock",
                                 changes=self.changes)
        self._forwards = ForwardTable(store, self.addresses)

    # ------------------------------------------------------------------ host side

    async def ensure_host(self) -> list[str]:
        """The bridge, the firewall table and the sysctls they need; idempotent."""
        notes = await self.bridge.ensure()
        if notes:
            self.changes.record(f"bridge:{self.config.bridge}", "created")
        await self.apply_firewall()
        notes += [messages.sysctl_set(s) for s in self.firewall.ensure_host_settings()]
        return notes

    async def repair(self, running: Sequence[str]) -> list[str]:
        """Put back what ctbot owns on the host side of running machines ``running``:
        the bridge (made again, or brought up), each machine's link on it (attached
        again), the nftables table (loaded again if flushed or edited), the sysctls.
        Returns what it found and did; a foreign bridge is reported, never changed."""
        notes: list[str] = []
        if not running:  # only ctbot's table to check, if it ever loaded one
            if self.changes.get(self.firewall.key) and await self.firewall.drifted(self.rules()):
                await self.apply_firewall()
                notes.append(messages.table_reloaded(self.config.nft_table))
            return notes
        links = await host_links()
        bridge = links.get(self.config.bridge)
        if bridge is None:
            await self.ensure_host()
            notes.append(messages.bridge_gone(self.config.bridge))
            links = await host_links()
        elif problems := self.bridge.differences(bridge):
            return [messages.foreign_bridge(self.config.bridge, problems)]
        elif not bridge.up:
            await self.bridge.set_up(self.config.bridge)
            notes.append(messages.bridge_was_down(self.config.bridge))
        for machine in running:
            link = links.get(nspawn_link_names(machine)[0])
            if link is None:
                notes.append(messages.link_gone(machine, nspawn_link_names(machine)[0]))
            elif link.master != self.config.bridge or not link.up:
                await self.bridge.attach(link.name)
                notes.append(messages.link_reattached(machine, link.name, self.config.bridge,
                                                      link.master))
        listing = await self.firewall.listing()  # other tables are not changed by ours
        if await self.firewall.drifted(self.rules(), items=listing):
            await self.apply_firewall()
            notes.append(messages.table_reloaded(self.config.nft_table))
        notes += [messages.sysctl_set(s) for s in self.firewall.ensure_host_settings()]
        return notes + await self.foreign_filters(running, items=listing)

    async def foreign_filters(self, machines: Sequence[str], *,
                              items: list[dict[str, Any]] | None = None) -> list[str]:
        """What other nftables tables filter these machines' links (see
        Firewall.foreign_filters), one message per machine."""
        links = {nspawn_link_names(m)[0]: m for m in machines}
        found = await self.firewall.foreign_filters(list(links), items=items)
        return [messages.foreign_filter(links[link], link, tables)
                for link, tables in found.items()]

    async def teardown_host(self) -> list[str]:
        """Undo every host change ctbot recorded: its nftables table, its bridge, and
        the sysctls it changed (back to their values before, unless someone changed them
        since). The caller makes sure no machine is left."""
        done = []
        if await self.firewall.delete():
            done.append(messages.table_deleted(self.config.nft_table))
        for change in self.changes.all():
            kind, _, what = change.key.partition(":")
            if kind == "bridge" and what == self.config.bridge:
                if await self.bridge.delete():
                    done.append(messages.bridge_deleted(what))
            elif kind == "file":
                with contextlib.suppress(FileNotFoundError):
                    Path(what).unlink()
                    done.append(messages.file_removed(what))
            elif kind == "sysctl" and change.previous is not None:
                path = Path(what)
                if path.exists() and path.read_text().strip() == change.current:
                    path.write_text(change.previous)
                    done.append(messages.sysctl_restored(path, change.previous))
                elif path.exists():  # someone changed it since: theirs now
                    done.append(messages.sysctl_left(path, change.current))
            self.changes.forget(change.key)
        return done

    def rules(self, *, without: str | None = None) -> Rules:
        """What ctbot's tables say now (``without`` a machine being released)."""
        every = {name: a for name, a in self.addresses.all().items()
                 if name != without and name.partition("/")[0] != without}
        inner: dict[str, list[IPAddress]] = {}
        for name, a in every.items():
            if "/" in name:  # OUTER/INNER: its outer answers for it on the bridge
                inner.setdefault(name.partition("/")[0], []).extend(i.ip for i in a.values())
        guards = [Guard(name, nspawn_link_names(name)[0], machine_mac(name),
                        ipv4=a[Family.V4].ip if Family.V4 in a else None,
                        ipv6=a[Family.V6].ip if Family.V6 in a else None,
                        inner=tuple(inner.get(name, ())))
                  for name, a in every.items() if "/" not in name]
        return Rules([f for f in self._forwards.list()
                      if without not in (f.machine, f.machine.partition("/")[0])], guards)

    async def apply_firewall(self) -> None:
        await self.firewall.apply(self.rules())

    # ------------------------------------------------------------------ per machine

    def allocate(self, machine: str, requests: Mapping[Family, AddressRequest], *,
                 hold: bool = False) -> None:
        """All families or none (one transaction): a refused IPv6 leaves IPv4 as it was.
        ``hold``: the replaced addresses stay the machine's until the change completes
        (services/network/addresses.py)."""
        self.addresses.allocate_all(machine, requests, hold=hold)

    async def release(self, machine: str) -> None:
        """Free the machine's forwards and addresses; idempotent. The tables are loaded
        without the machine *before* the rows go: if nft fails, the rows are still there
        for the next attempt, and no rule is left pointing at an address handed out again."""
        if self.of(machine) or self.forwards(machine):
            await self.firewall.apply(self.rules(without=machine))
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
            gateways=gateways, dns=self.config.dns, mac=machine_mac(machine)).encode())
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

    def forward_reach(self) -> dict[str, Any]:
        """Where a forward answers besides the host's addresses (`port add` says so)."""
        return {"loopback": ["127.0.0.1"], "from_machines": self.config.outbound}

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

    def write_export(self, directory: Path, *, off_limits: Sequence[Path]) -> list[Path]:
        """Write ``export_files`` into ``directory`` (an absolute path on the host), each
        replaced by rename and never through a symlink planted there; recorded as host
        changes, so `host teardown` removes them. InvalidInput for a directory in
        ``off_limits`` (machines' roots, ctbot's own state) or in /proc, /sys, /dev, or
        for a path that is not a directory."""
        kernel = (Path("/proc"), Path("/sys"), Path("/dev"))
        # Checked as given too: /proc/PID/root/… resolves to where that process's root
        # is (the host's / for a host process), so resolving alone would let it through.
        for place in kernel:
            if directory == place or directory.is_relative_to(place):
                raise InvalidInput(messages.export_off_limits(directory, place))
        try:
            real = Path(os.path.realpath(directory, strict=False))
        except OSError as exc:
            raise InvalidInput(messages.export_not_a_directory(directory)) from exc
        for place in (*off_limits, *kernel):
            if real == place or real.is_relative_to(os.path.realpath(place)):
                raise InvalidInput(messages.export_off_limits(directory, place))
        if real.exists() and not real.is_dir():
            raise InvalidInput(messages.export_not_a_directory(directory))
        real.mkdir(parents=True, exist_ok=True)
        written = []
        for name, content in self.export_files().items():
            replace_file(real / name, content.encode())
            self.changes.record(f"file:{real / name}", "written by net export")
            written.append(real / name)
        return written
