"""Machine networking as one service: pools and allocations, the host bridge, the
files inside each machine, port forwards and ctbot's own nftables table.

Nothing here runs until a machine needs the network: opening ctbot (for `help`, say)
never creates a bridge or a firewall table.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from services.core import host
from services.core.errors import Conflict, InvalidInput, NotFound
from services.core.store import Store
from services.core.templating import render
from services.machines import rootfs
from services.network.addresses import AddressBook, AddressRequest, Family, IPInterface, Pool
from services.network.bridge import HostBridge

log = logging.getLogger(__name__)

NETWORK_FILE = "etc/systemd/network/10-host0.network"
NETWORKD_WANTS = "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
NETWORKD_UNIT = "/lib/systemd/system/systemd-networkd.service"


class PortProtocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    bridge: str
    pools: dict[Family, Pool]
    dns: tuple[str, ...] = ()
    nft_table: str = "ctbot"
    outbound: bool = True


@dataclass(frozen=True, slots=True)
class PortForward:
    host_port: int
    protocol: PortProtocol
    machine: str
    machine_port: int
    targets: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = field(default=())

    def __str__(self) -> str:
        return f"{self.host_port}/{self.protocol} → {self.machine}:{self.machine_port}"


def parse_port_spec(raw: str) -> tuple[int, int, PortProtocol]:
    """``HOSTPORT:CTPORT[/tcp|udp]`` → (host port, machine port, protocol)."""
    spec, _, proto = raw.partition("/")
    try:
        protocol = PortProtocol(proto or "tcp")
    except ValueError:
        raise InvalidInput(f"`{raw}`: the protocol is tcp or udp, not `{proto}`") from None
    host_port, sep, machine_port = spec.partition(":")
    if not sep:
        raise InvalidInput(f"`{raw}`: write HOSTPORT:CTPORT[/tcp|udp], e.g. 8080:80")
    ports = []
    for text in (host_port, machine_port):
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
            raise InvalidInput(f"`{raw}`: `{text}` is not a port (1–65535)")
        ports.append(int(text))
    return ports[0], ports[1], protocol


class Networking:
    def __init__(self, store: Store, config: NetworkConfig) -> None:
        self._store = store
        self.config = config
        self.addresses = AddressBook(store, config.pools)
        self.bridge = HostBridge(config.bridge, config.pools)

    # ------------------------------------------------------------------ host side

    async def ensure_host(self) -> list[str]:
        """The bridge and the firewall table, made or checked; idempotent."""
        notes = await self.bridge.ensure()
        await self.apply_firewall()
        if self.config.outbound:
            _enable_forwarding()
        return notes

    async def apply_firewall(self) -> None:
        """Render the whole table from the store and load it in one nft transaction.

        Under an exclusive flock: two processes (serve and a cmd) applying at once could
        otherwise load a snapshot without the other's new forward."""
        lock_path = Path(self._store.path).parent / "nftables.lock"
        with open(lock_path, "w") as lock:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            try:
                await self._apply_firewall_locked()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    async def _apply_firewall_locked(self) -> None:
        ruleset = render(
            "network/nftables.nft.j2", table=self.config.nft_table, bridge=self.config.bridge,
            forwards=self.forwards(), outbound=self.config.outbound,
            masquerade=[p.network for p in self.config.pools.values()
                        if p.network.version == 4 or p.network.is_private])
        await host.run(["nft", "-f", "-"], input=ruleset.encode(), timeout=30)

    # ------------------------------------------------------------------ per machine

    def allocate(self, machine: str, ipv4: AddressRequest, ipv6: AddressRequest) -> None:
        self.addresses.allocate(machine, Family.V4, ipv4)
        self.addresses.allocate(machine, Family.V6, ipv6)

    def release(self, machine: str) -> None:
        self.addresses.release(machine)
        self._store.execute("DELETE FROM port_forwards WHERE machine = ?", (machine,))

    def of(self, machine: str) -> dict[Family, IPInterface]:
        return self.addresses.of(machine)

    def nspawn_network(self, machine: str) -> str:
        """The [Network] mode of the machine's .nspawn: on the bridge if it has an
        address, otherwise private (loopback only)."""
        return f"bridge:{self.config.bridge}" if self.of(machine) else "private"

    def write_machine_files(self, root: Path, machine: str) -> None:
        """The networkd file with the machine's addresses, and networkd enabled."""
        addresses = self.of(machine)
        gateways = [self.config.pools[f].gateway.ip for f in addresses]
        rootfs.write_file(root, NETWORK_FILE, render(
            "network/host0.network.j2", addresses=list(addresses.values()),
            gateways=gateways, dns=self.config.dns).encode())
        rootfs.write_symlink(root, NETWORKD_WANTS, NETWORKD_UNIT)

    # ------------------------------------------------------------------ port forwards

    def forwards(self, machine: str | None = None) -> list[PortForward]:
        rows = self._store.query(
            "SELECT * FROM port_forwards" + (" WHERE machine = ?" if machine else "")
            + " ORDER BY host_port, protocol", (machine,) if machine else ())
        result = []
        for r in rows:
            targets = tuple(i.ip for i in self.of(r["machine"]).values())
            result.append(PortForward(r["host_port"], PortProtocol(r["protocol"]), r["machine"],
                                      r["machine_port"], targets))
        return result

    async def add_forward(self, machine: str, spec: str) -> PortForward:
        host_port, machine_port, protocol = parse_port_spec(spec)
        if not self.of(machine):
            raise Conflict(f"`{machine}` has no address; give it one with `net set`")
        if host_port in host_ports_in_use(protocol):
            # The forward applies to every address of the host: it would take the port
            # away from the program listening there (sshd on 22, say).
            raise Conflict(f"host port {host_port}/{protocol} is in use by a program on "
                           "the host; forwarding it would cut that program off. Pick "
                           "another host port")
        with self._store.transaction() as tx:
            row = tx.execute("SELECT machine FROM port_forwards WHERE host_port = ? AND "
                             "protocol = ?", (host_port, str(protocol))).fetchone()
            if row is not None:
                raise Conflict(f"host port {host_port}/{protocol} already forwards to "
                               f"`{row['machine']}`")
            tx.execute("INSERT INTO port_forwards (host_port, protocol, machine, machine_port)"
                       " VALUES (?, ?, ?, ?)", (host_port, str(protocol), machine, machine_port))
        try:
            await self.apply_firewall()
        except Exception:
            self._store.execute("DELETE FROM port_forwards WHERE host_port = ? AND "
                                "protocol = ?", (host_port, str(protocol)))
            raise
        return next(f for f in self.forwards(machine) if f.host_port == host_port
                    and f.protocol is protocol)

    async def remove_forward(self, machine: str, spec: str) -> None:
        host_port_text, _, proto = spec.partition("/")
        host_port_text = host_port_text.split(":", 1)[0]
        if not host_port_text.isdigit():
            raise InvalidInput(f"`{spec}`: give the host port, e.g. 8080 or 8080/udp")
        protocol = PortProtocol(proto or "tcp") if proto in ("", "tcp", "udp") else None
        if protocol is None:
            raise InvalidInput(f"`{spec}`: the protocol is tcp or udp")
        cursor = self._store.execute(
            "DELETE FROM port_forwards WHERE host_port = ? AND protocol = ? AND machine = ?",
            (int(host_port_text), str(protocol), machine))
        if cursor.rowcount == 0:
            raise NotFound(f"`{machine}` has no forward of host port {host_port_text}/{protocol}")
        await self.apply_firewall()

    # ------------------------------------------------------------------ export

    def write_export(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, content in self.export_files().items():
            path = directory / name
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(content)
            tmp.rename(path)
            written.append(path)
        return written

    def export_files(self) -> dict[str, str]:
        """systemd-networkd files that recreate the bridge at boot."""
        gateways = [p.gateway for p in self.config.pools.values()]
        return {
            f"90-{self.config.bridge}.netdev": render("network/netdev.j2",
                                                      bridge=self.config.bridge),
            f"90-{self.config.bridge}.network": render("network/bridge.network.j2",
                                                       bridge=self.config.bridge,
                                                       gateways=gateways),
        }


def host_ports_in_use(protocol: PortProtocol) -> set[int]:
    """Ports with a listening TCP socket, or a bound UDP socket, on the host."""
    ports = set()
    for family in ("", "6"):
        try:
            lines = Path(f"/proc/net/{protocol}{family}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # TCP: state 0A is LISTEN; UDP: state 07 is a bound (unconnected) socket.
            if fields[3] == ("0A" if protocol is PortProtocol.TCP else "07"):
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _enable_forwarding() -> None:
    """Machines reach beyond the host only if the host forwards their packets."""
    for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
        try:
            if Path(path).read_text().strip() != "1":
                Path(path).write_text("1")
                log.info("enabled forwarding sysctl=%s", path)
        except OSError as exc:
            log.warning("cannot enable forwarding sysctl=%s error=%s", path, exc.strerror)

