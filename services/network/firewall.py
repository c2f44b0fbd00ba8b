"""ctbot's own nftables table: port forwards (DNAT), masquerading, and its guard rule.

The whole table is rendered from the store and loaded with ``nft -f -`` in one
transaction (nft(8): a file is applied atomically), replacing the previous one; no other
table is read or touched. What was loaded is fingerprinted (the rules as nft lists them
back), so that a table flushed or edited by someone else is noticed and loaded again.

Host settings this needs, each recorded in services/core/host_changes.py:
- ``net.ipv4.ip_forward``, ``net.ipv6.conf.all.forwarding`` = 1 when machines may reach
  beyond the host (``[network] outbound``);
- ``net.ipv4.conf.BRIDGE.route_localnet`` = 1, so that 127.0.0.1:PORT on the host reaches
  a forward (Linux drops 127/8 sources leaving the host otherwise); the table's guard
  rule keeps machines from using it to reach the host's loopback (CVE-2020-8558).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from services.core import host
from services.core.host_changes import HostChanges
from services.core.templating import render
from services.grammar import PortProtocol
from services.network.config import NetworkConfig
from services.network.forwards import PortForward
from services.network.messages import sysctl_name

log = logging.getLogger(__name__)

FORWARDING_SYSCTLS = (Path("/proc/sys/net/ipv4/ip_forward"),
                      Path("/proc/sys/net/ipv6/conf/all/forwarding"))


class Firewall:
    def __init__(self, config: NetworkConfig, *, lock_path: Path,
                 changes: HostChanges) -> None:
        self.config = config
        self._lock_path = lock_path
        self._changes = changes

    @property
    def key(self) -> str:
        return f"nft:inet {self.config.nft_table}"

    def ruleset(self, forwards: Sequence[PortForward]) -> str:
        """The table as nft(8) input."""
        pools = [p.network for p in self.config.pools.values()]
        return render(
            "network/nftables.nft.j2", table=self.config.nft_table, bridge=self.config.bridge,
            forwards=forwards, outbound=self.config.outbound, hairpin=self.config.outbound,
            pools=pools, masquerade=[n for n in pools if n.version == 4 or n.is_private])

    async def apply(self, forwards: Sequence[PortForward]) -> None:
        """Load the table. Under an exclusive flock: two processes (serve and a cmd)
        applying at once could otherwise load a snapshot without the other's change.
        Raises HostCommandFailed if nft refuses it."""
        ruleset = self.ruleset(forwards)
        with open(self._lock_path, "w") as lock:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            try:
                await host.run(["nft", "-f", "-"], input=ruleset.encode(), timeout=30)
                self._changes.record(self.key, f"{await self.fingerprint()} {_digest(ruleset)}")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    async def fingerprint(self) -> str | None:
        """A digest of the table's rules as the kernel has them; None if there is no table."""
        listed = await host.run(["nft", "-j", "list", "table", "inet", self.config.nft_table],
                                check=False, timeout=30)
        if listed.returncode != 0:
            return None
        rules = [{"chain": item["rule"]["chain"], "expr": item["rule"]["expr"]}
                 for item in json.loads(listed.stdout)["nftables"] if "rule" in item]
        blob = json.dumps(rules, sort_keys=True)
        return f"{hashlib.sha256(blob.encode()).hexdigest()[:16]} rules={len(rules)}"

    async def drifted(self, forwards: Sequence[PortForward]) -> bool:
        """True if the table is gone, its rules are not what ctbot last loaded, or what
        ctbot last loaded is not what the store says now (a `port add` killed between
        its row and its load)."""
        loaded = self._changes.get(self.key)
        wanted = f"{await self.fingerprint()} {_digest(self.ruleset(forwards))}"
        return loaded is None or wanted != loaded.current

    async def delete(self) -> bool:
        result = await host.run(["nft", "delete", "table", "inet", self.config.nft_table],
                                check=False, timeout=30)
        self._changes.forget(self.key)
        return result.returncode == 0

    def host_settings(self) -> dict[Path, str]:
        """The sysctls the forwards need: path → value."""
        wanted = {Path(f"/proc/sys/net/ipv4/conf/{self.config.bridge}/route_localnet"): "1"}
        if self.config.outbound:
            wanted |= {path: "1" for path in FORWARDING_SYSCTLS}
        return wanted

    def ensure_host_settings(self) -> list[str]:
        """Set what ``host_settings`` lists; returns what had to change."""
        changed = []
        for path, value in self.host_settings().items():
            try:
                if self._changes.set_sysctl(path, value):
                    changed.append(f"{sysctl_name(path)} = {value}")
            except OSError as exc:
                log.warning("cannot set sysctl path=%s error=%s", path, exc.strerror)
        return changed


def _digest(ruleset: str) -> str:
    return "ruleset=" + hashlib.sha256(ruleset.encode()).hexdigest()[:16]


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
