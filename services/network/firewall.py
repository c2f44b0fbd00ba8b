"""ctbot's own nftables table: port forwards (DNAT) and masquerading of the pools.

The whole table is rendered from the store and loaded with ``nft -f -`` in one
transaction (nft(8): a file is applied atomically), replacing the previous one; no other
table is read or touched. Forwarding sysctls are turned on only when machines may reach
beyond the host (``[network] outbound``).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from collections.abc import Sequence
from pathlib import Path

from services.core import host
from services.core.templating import render
from services.grammar import PortProtocol
from services.network.config import NetworkConfig
from services.network.forwards import PortForward

log = logging.getLogger(__name__)

FORWARDING_SYSCTLS = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")


class Firewall:
    def __init__(self, config: NetworkConfig, *, lock_path: Path) -> None:
        self.config = config
        self._lock_path = lock_path

    def ruleset(self, forwards: Sequence[PortForward]) -> str:
        """The table as nft(8) input."""
        return render(
            "network/nftables.nft.j2", table=self.config.nft_table, bridge=self.config.bridge,
            forwards=forwards, outbound=self.config.outbound,
            masquerade=[p.network for p in self.config.pools.values()
                        if p.network.version == 4 or p.network.is_private])

    async def apply(self, forwards: Sequence[PortForward]) -> None:
        """Load the table. Under an exclusive flock: two processes (serve and a cmd)
        applying at once could otherwise load a snapshot without the other's change.
        Raises HostCommandFailed if nft refuses it."""
        ruleset = self.ruleset(forwards)
        with open(self._lock_path, "w") as lock:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            try:
                await host.run(["nft", "-f", "-"], input=ruleset.encode(), timeout=30)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def enable_forwarding(self) -> None:
        """Machines reach beyond the host only if the host forwards their packets."""
        if not self.config.outbound:
            return
        for path in FORWARDING_SYSCTLS:
            try:
                if Path(path).read_text().strip() != "1":
                    Path(path).write_text("1")
                    log.info("enabled forwarding sysctl=%s", path)
            except OSError as exc:
                log.warning("cannot enable forwarding sysctl=%s error=%s", path, exc.strerror)


def host_ports_in_use(protocol: PortProtocol) -> set[int]:
    """Ports with a listening TCP socket, or a bound UDP socket, on the host
    (/proc/net/tcp{,6} and udp{,6}: proc(5))."""
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
